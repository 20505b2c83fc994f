"""How well an attribution predicts retraining: LDS and leave-one-out correlation.

An attribution ``A`` of shape (n_test, n_train) follows the convention of
:meth:`skinfluence.BaseInfluence.attribute`: ``A[j, i]`` is the loss of test point j
after removing training point i, minus its loss now. Read additively, it predicts
the loss of a model retrained on a subset ``S`` of the training rows as

    L_j(S) ≈ L_j(all) + Σ_{i ∉ S} A[j, i],

and both scores ask how well that prediction ranks or tracks real retraining
(Park et al. 2023, "TRAK"; Koh & Liang 2017).
"""

from __future__ import annotations


import numpy as np
from scipy.stats import rankdata

__all__ = ["linear_datamodeling_score", "loo_correlation"]

MIN_SUBSETS = 3  # a correlation over fewer retrained models means nothing


def _finite_array(name, value, ndim):
    arr = np.asarray(value, dtype=float)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values; drop the affected test points "
                         "or retrained models first")
    return arr


def _subset_masks(subsets, n_train):
    """Boolean (n_subsets, n_train) masks from masks or from lists of kept row indices."""
    if isinstance(subsets, np.ndarray) and subsets.dtype == bool:
        masks = subsets
    else:
        masks = np.zeros((len(subsets), n_train), dtype=bool)
        for m, kept in enumerate(subsets):
            kept = np.asarray(kept)
            if kept.dtype == bool or not np.issubdtype(kept.dtype, np.integer):
                raise TypeError("subsets must be a boolean array of shape (n_subsets, n_train) "
                                f"or a list of integer index arrays, got elements of dtype {kept.dtype}")
            if kept.size and (kept.min() < 0 or kept.max() >= n_train):
                raise ValueError(f"subset {m} has row indices outside [0, {n_train})")
            masks[m, kept] = True
    if masks.ndim != 2 or masks.shape[1] != n_train:
        raise ValueError(f"subsets must have shape (n_subsets, n_train={n_train}), got {masks.shape}")
    return masks


def _rowwise_correlation(a, b):
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (NaN if one is constant)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    norm = np.sqrt((a**2).sum(axis=1) * (b**2).sum(axis=1))
    out = np.full(len(a), np.nan)
    ok = norm > 0
    out[ok] = (a * b).sum(axis=1)[ok] / norm[ok]
    return out


def _mean_score(per_point, return_per_point):
    defined = ~np.isnan(per_point)
    if not defined.any():
        raise ValueError("the correlation is undefined for every test point: the predicted or the "
                         "actual losses are constant across the retrained models")
    score = float(per_point[defined].mean())
    return (score, per_point) if return_per_point else score


def _check_test_losses(name, losses, n_models, n_test):
    losses = _finite_array(name, losses, 2)
    if losses.shape != (n_models, n_test):
        raise ValueError(f"{name} must have shape (n_models={n_models}, n_test={n_test}), "
                         f"got {losses.shape}")
    return losses


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def linear_datamodeling_score(
    attributions,
    subset_losses,
    subsets,
    full_losses=None,
    *,
    return_per_point: bool = False,
):
    """Linear datamodeling score (LDS) of an attribution against retrained subset models.

    For each test point j, the losses predicted for the models retrained on the
    subsets, ``L_j(all) + Σ_{i ∉ S_m} A[j, i]``, are rank-correlated (Spearman) with
    the losses those models actually have. The score is the mean over test points.

    Parameters
    ----------
    attributions : array-like of shape (n_test, n_train)
        ``A[j, i]``: loss of test point j after removing training row i, minus its
        loss now (the convention of :meth:`~skinfluence.BaseInfluence.attribute`).
    subset_losses : array-like of shape (n_subsets, n_test)
        Loss of each test point under the model retrained on each subset.
    subsets : bool array of shape (n_subsets, n_train) or list of index arrays
        The training rows each model was retrained on (True / listed = kept).
    full_losses : array-like of shape (n_test,), default=None
        Loss of each test point under the model trained on all rows. It shifts each
        test point's predictions by a constant, which leaves the rank correlation
        unchanged; it is checked for shape when given.
    return_per_point : bool, default=False
        Also return the per-test-point scores.

    Returns
    -------
    score : float
        Mean LDS over the test points for which it is defined (a test point whose
        predicted or actual losses are constant over the subsets has none).
    per_point : ndarray of shape (n_test,)
        Only if ``return_per_point``: each test point's LDS (NaN where undefined).

    See Also
    --------
    loo_correlation : the same question for single-row removals.
    skinfluence.metrics.retrain_on_subsets : trains the subset models.

    Examples
    --------
    >>> import numpy as np
    >>> from skinfluence.metrics import linear_datamodeling_score
    >>> A = np.array([[1.0, 0.0, 2.0]])
    >>> subsets = np.array([[True, True, False], [False, True, True], [True, False, True]])
    >>> actual = np.array([[2.1], [0.9], [0.2]])     # loss after training on each subset
    >>> linear_datamodeling_score(A, actual, subsets)
    1.0
    """
    _check_bool("return_per_point", return_per_point)
    A = _finite_array("attributions", attributions, 2)
    n_test, n_train = A.shape
    masks = _subset_masks(subsets, n_train)
    if len(masks) < MIN_SUBSETS:
        raise ValueError(f"LDS needs at least {MIN_SUBSETS} retrained subsets, got {len(masks)}")
    actual = _check_test_losses("subset_losses", subset_losses, len(masks), n_test)
    predicted = (~masks).astype(float) @ A.T                     # (n_subsets, n_test): Σ_{i∉S} A[j, i]
    if full_losses is not None:
        full = _finite_array("full_losses", full_losses, 1)
        if full.shape != (n_test,):
            raise ValueError(f"full_losses must have shape (n_test={n_test},), got {full.shape}")
        predicted = predicted + full
    per_point = _rowwise_correlation(rankdata(predicted, axis=0).T, rankdata(actual, axis=0).T)
    return _mean_score(per_point, return_per_point)


def loo_correlation(
    attributions,
    loo_losses,
    removed,
    full_losses,
    *,
    method: str = "pearson",
    return_per_point: bool = False,
):
    """Correlation of attributed and actual loss changes when single rows are removed.

    For each test point j, the predicted changes ``A[j, removed[k]]`` are correlated
    with the actual changes ``loo_losses[k, j] − full_losses[j]`` over the removed rows
    k; the score is the mean over test points.

    Parameters
    ----------
    attributions : array-like of shape (n_test, n_train)
        As in :func:`linear_datamodeling_score`.
    loo_losses : array-like of shape (n_removed, n_test)
        Loss of each test point under the model retrained without row ``removed[k]``.
    removed : array-like of int of shape (n_removed,)
        The training row left out of each retrained model.
    full_losses : array-like of shape (n_test,)
        Loss of each test point under the model trained on all rows.
    method : {"pearson", "spearman"}, default="pearson"
        Linear or rank correlation.
    return_per_point : bool, default=False
        Also return the per-test-point correlations.

    Returns
    -------
    score : float
        Mean correlation over the test points for which it is defined.
    per_point : ndarray of shape (n_test,)
        Only if ``return_per_point``.

    Examples
    --------
    >>> import numpy as np
    >>> from skinfluence.metrics import loo_correlation
    >>> A = np.array([[0.1, -0.2, 0.3]])
    >>> full = np.array([1.0])
    >>> loo = np.array([[1.2], [0.6], [1.6]])          # retrained without rows 0, 1, 2
    >>> round(loo_correlation(A, loo, [0, 1, 2], full), 6)
    1.0
    """
    _check_bool("return_per_point", return_per_point)
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}")
    A = _finite_array("attributions", attributions, 2)
    n_test, n_train = A.shape
    removed = np.asarray(removed)
    if removed.ndim != 1 or not np.issubdtype(removed.dtype, np.integer):
        raise TypeError("removed must be a 1-d array of integer row indices")
    if len(removed) < MIN_SUBSETS:
        raise ValueError(f"LOO correlation needs at least {MIN_SUBSETS} removed rows, got {len(removed)}")
    if removed.min() < 0 or removed.max() >= n_train:
        raise ValueError(f"removed holds row indices outside [0, {n_train})")
    actual = _check_test_losses("loo_losses", loo_losses, len(removed), n_test)
    full = _finite_array("full_losses", full_losses, 1)
    if full.shape != (n_test,):
        raise ValueError(f"full_losses must have shape (n_test={n_test},), got {full.shape}")
    predicted = A[:, removed]                                    # (n_test, n_removed)
    actual = (actual - full).T
    if method == "spearman":
        predicted, actual = rankdata(predicted, axis=1), rankdata(actual, axis=1)
    return _mean_score(_rowwise_correlation(predicted, actual), return_per_point)
