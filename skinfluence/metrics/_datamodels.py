"""Retraining on subsets of the training rows: the ground truth of attribution scores."""

from __future__ import annotations

import numbers
import os
import sys
from collections.abc import Callable

import numpy as np
import joblib
from sklearn.base import clone, is_classifier
from sklearn.utils import Bunch, check_random_state
from sklearn.utils.validation import check_consistent_length
from threadpoolctl import threadpool_limits

from .._sklearn_compat import Interval, StrOptions, validate_params, _num_samples, _safe_indexing
from .._parallel import parallel_imap

__all__ = ["retrain_on_subsets"]


def _log_loss(estimator, X, y):
    """Per-sample ``−log p(y | x)`` from ``predict_proba``."""
    proba = np.asarray(estimator.predict_proba(X), dtype=float)
    classes = np.asarray(getattr(estimator, "classes_", np.arange(proba.shape[1])))
    y = np.asarray(y)
    if len(classes) == proba.shape[1]:
        col = np.searchsorted(classes, y)
        col = np.minimum(col, len(classes) - 1)
        missing = classes[col] != y
    else:  # e.g. a skorch net that saw fewer classes than it has outputs: labels index columns
        col = y.astype(int)
        missing = (col < 0) | (col >= proba.shape[1])
    if missing.any():
        raise ValueError(f"test labels {np.unique(y[missing]).tolist()} are not among the classes the "
                         "retrained model saw; use larger subsets or stratify them")
    return -np.log(np.clip(proba[np.arange(len(y)), col], 1e-300, None))


def _squared_error(estimator, X, y):
    """Per-sample ``½ (y − ŷ)²``."""
    return 0.5 * (np.asarray(y, dtype=float) - np.asarray(estimator.predict(X), dtype=float)) ** 2


_LOSSES = {"log_loss": _log_loss, "squared_error": _squared_error}


def _loss_key(loss):
    """What identifies a loss function in the cache: its name and, for Python functions, its code."""
    code = getattr(loss, "__code__", None)
    return (getattr(loss, "__module__", None), getattr(loss, "__qualname__", repr(loss)),
            None if code is None else (code.co_code, code.co_consts))


def _refit_task(shared, kept):
    """:func:`_fit_and_test_losses` with the arguments every refit shares in one tuple."""
    estimator, X, y, X_test, y_test, loss, torch_seed = shared
    return _fit_and_test_losses(estimator, X, y, X_test, y_test, kept, loss, torch_seed)


def _fit_and_test_losses(estimator, X, y, X_test, y_test, kept, loss, torch_seed):
    """Fit a clone of ``estimator`` on the ``kept`` rows; per-sample losses on the test rows.

    BLAS (and torch, if the estimator uses it) run on one thread, so that parallel
    workers do not oversubscribe the cores; torch's generator is seeded so that every
    subset model of a net starts from the same initialisation.
    """
    torch = sys.modules.get("torch")
    with threadpool_limits(1):
        if torch is not None:
            n_threads = torch.get_num_threads()
            torch.set_num_threads(1)
            torch.manual_seed(torch_seed)
        try:
            rows = np.flatnonzero(kept)
            est = clone(estimator).fit(_safe_indexing(X, rows), _safe_indexing(y, rows))
            losses = np.asarray(loss(est, X_test, y_test), dtype=float)
        finally:
            if torch is not None:
                torch.set_num_threads(n_threads)
    if losses.shape != (_num_samples(X_test),):
        raise ValueError(f"loss must return one value per test sample, got shape {losses.shape}")
    return losses


@validate_params(
    {
        "estimator": [object],
        "X": ["array-like", "sparse matrix"],
        "y": ["array-like"],
        "X_test": ["array-like", "sparse matrix"],
        "y_test": ["array-like"],
        "subsets": [Interval(numbers.Integral, 3, None, closed="left"), "array-like"],
        "subset_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "loss": [StrOptions(set(_LOSSES)), callable, None],
        "n_jobs": [numbers.Integral, None],
        "cache_dir": [str, os.PathLike, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def retrain_on_subsets(
    estimator,
    X,
    y,
    X_test,
    y_test,
    *,
    subsets=50,
    subset_fraction: float = 0.5,
    loss: str | Callable | None = None,
    n_jobs: int | None = None,
    cache_dir=None,
    random_state=None,
    verbose: int = 0,
) -> Bunch:
    """Retrain an estimator on subsets of its training rows and record its test losses.

    The result is what :func:`~skinfluence.metrics.linear_datamodeling_score` (random
    subsets) and :func:`~skinfluence.metrics.loo_correlation` (leave-one-out masks)
    score an attribution against. Each model is a fresh ``clone`` of ``estimator``
    fitted on its rows; the user's estimator is not touched.

    Parameters
    ----------
    estimator : estimator object
        Any scikit-learn estimator or skorch net (unfitted; it is cloned). Nets are
        retrained with torch's generator seeded identically for every subset, so
        that the models differ by their data, not their initialisation.
    X : {array-like, sparse matrix} of shape (n_train, n_features)
    y : array-like of shape (n_train,)
    X_test : {array-like, sparse matrix} of shape (n_test, n_features)
    y_test : array-like of shape (n_test,)
    subsets : int >= 3 or bool array-like of shape (n_subsets, n_train), default=50
        An int draws that many random subsets of ``subset_fraction`` of the rows;
        a boolean mask gives them explicitly (True = kept). Leave-one-out masks for
        rows ``idx``: ``~np.eye(n_train, dtype=bool)[idx]``.
    subset_fraction : float in (0, 1), default=0.5
        Fraction of the rows kept in each random subset.
    loss : {"log_loss", "squared_error"} or callable, default=None
        Per-sample test loss: a name, or ``loss(fitted_estimator, X_test, y_test)``
        returning shape (n_test,). None: log-loss for classifiers, ``½(y − ŷ)²``
        otherwise. Use the loss the attribution refers to.
    n_jobs : int, default=None
        Models trained in parallel by joblib (each worker's BLAS and torch limited
        to one thread).
    cache_dir : str or path-like, default=None
        A directory where each trained model's test losses are cached (one ``.npy``
        file keyed by a hash of the estimator, the data, the loss and the subset), so
        that a rerun or a longer run retrains nothing it has already trained.
    random_state : int, RandomState instance or None, default=None
        Draws the random subsets, and seeds torch for nets.
    verbose : int, default=0
        A progress bar over the models to train when ``verbose >= 1``.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``subsets``: bool ndarray (n_subsets, n_train);
        ``subset_losses``: ndarray (n_subsets, n_test), each subset model's test losses;
        ``full_losses``: ndarray (n_test,), the test losses of the model trained on all rows.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skinfluence import FisherInfluence
    >>> from skinfluence.metrics import linear_datamodeling_score, retrain_on_subsets
    >>> X, y = load_iris(return_X_y=True)
    >>> est = LogisticRegression(tol=1e-10, max_iter=1000)
    >>> truth = retrain_on_subsets(est, X[::2], y[::2], X[1::2], y[1::2], subsets=20, random_state=0)
    >>> A = FisherInfluence(est).fit(X[::2], y[::2]).attribute(X[1::2], y[1::2])
    >>> lds = linear_datamodeling_score(A, truth.subset_losses, truth.subsets, truth.full_losses)
    """
    check_consistent_length(X, y)
    check_consistent_length(X_test, y_test)
    n_train = _num_samples(X)
    rng = check_random_state(random_state)
    torch_seed = int(rng.randint(2**31 - 1))  # drawn first: the first k of n random subsets do not depend on n
    if isinstance(subsets, numbers.Integral):
        n_keep = int(round(subset_fraction * n_train))
        if not 0 < n_keep < n_train:
            raise ValueError(f"subset_fraction={subset_fraction} keeps {n_keep} of {n_train} rows; "
                             "a subset must keep at least one row and drop at least one")
        masks = np.zeros((subsets, n_train), dtype=bool)
        for m in range(subsets):
            masks[m, rng.choice(n_train, n_keep, replace=False)] = True
    else:
        masks = np.asarray(subsets)
        if masks.dtype != bool or masks.ndim != 2 or masks.shape[1] != n_train:
            raise ValueError(f"subsets must be an int or a boolean array of shape (n_subsets, n_train={n_train}), "
                             f"got dtype {masks.dtype} and shape {masks.shape}")
        if len(masks) < 1 or not masks.any(axis=1).all():
            raise ValueError("every subset must keep at least one training row")
    loss_fn = _LOSSES[loss] if isinstance(loss, str) else loss
    if loss_fn is None:
        loss_fn = _log_loss if is_classifier(estimator) else _squared_error

    everything = np.ones(n_train, dtype=bool)
    todo = [everything, *masks]
    results, paths = [None] * len(todo), [None] * len(todo)
    if cache_dir is not None:  # keys are computed here, where the estimator's classes are importable
        os.makedirs(cache_dir, exist_ok=True)
        base = joblib.hash((estimator, X, y, X_test, y_test, _loss_key(loss_fn), torch_seed))
        for m, kept in enumerate(todo):
            paths[m] = os.path.join(cache_dir, f"losses_{joblib.hash((base, kept))}.npy")
            if os.path.exists(paths[m]):
                results[m] = np.load(paths[m])
    missing = [m for m, r in enumerate(results) if r is None]
    shared = (estimator, X, y, X_test, y_test, loss_fn, torch_seed)
    fitted = parallel_imap(_refit_task, (todo[m] for m in missing), n_jobs, verbose, "retraining",
                           total=len(missing), shared=shared)   # each saved as it comes
    for m, losses in zip(missing, fitted):
        results[m] = losses
        if paths[m] is not None:
            np.save(paths[m], losses)
    return Bunch(subsets=masks, subset_losses=np.stack(results[1:]), full_losses=results[0])
