"""Approximate cross-validation from one fit: held-out outputs, predictions and scores.

The estimator is fitted once on all the data and its curvature factorised
(:class:`~skinfluence.HessianInfluence` or :class:`~skinfluence.FisherInfluence`).
Each split's model is then one Newton step away (``method="ns"``: with the
curvature down-dated by the split's removed samples; ``"ij"``: with the full-data
curvature; ℓ1 models take a proximal Newton step, so coefficients may enter or
leave the support), and :class:`~sklearn.model_selection.LeaveOneOut` has a closed
form for all n points from the one factorisation.

Accuracy: NS is exact for a quadratic objective (Ridge, Lasso, ElasticNet,
LinearRegression, up to the solver's tolerance) and otherwise has error
O((m/n)²) in the parameters for a fold of m of n samples of a smooth, strongly
convex objective; IJ has error O(m/n).
"""

from __future__ import annotations

from functools import partial
from numbers import Integral, Real

import numpy as np
from sklearn.base import is_classifier
from sklearn.metrics import check_scoring
from sklearn.model_selection import LeaveOneOut, check_cv
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import indexable

from .._sklearn_compat import HasMethods, Interval, StrOptions, validate_params, _num_samples, _safe_indexing
from .._parallel import parallel_map
from ..estimators import BaseInfluence, FisherInfluence, HessianInfluence
from ._scoring import score_split

__all__ = ["approx_cross_val_predict", "approx_cross_val_score"]

_RESPONSE_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function")


# --------------------------------------------------------------------------- helpers
#: the parameters every approximate-CV entry point shares, declared once
APPROX_CV_CONSTRAINTS = {
    "method": [StrOptions({"ns", "ij"})],
    "curvature": [StrOptions({"hessian", "fisher"})],
    "polish": BaseInfluence._parameter_constraints["polish"],
    "damping": BaseInfluence._parameter_constraints["damping"],
}
PARALLEL_CONSTRAINTS = {"n_jobs": [Integral, None], "verbose": ["verbose"]}


def _influence(estimator, *, curvature="hessian", polish=True, damping=0.0, prefit=False,
               removal_size=1):
    """An unfitted influence estimator of the requested curvature, polished for removals of
    ``removal_size`` rows."""
    classes = {"hessian": HessianInfluence, "fisher": FisherInfluence}
    return classes[curvature](estimator, polish=polish, damping=damping, prefit=prefit,
                              removal_size=removal_size)


def removal_size(splits, n):
    """Rows removed by the smallest split (1 for leave-one-out, ``splits == []``): the job's
    scale, which sets how close to the optimum the fit is polished."""
    return min((n - np.count_nonzero(np.bincount(train, minlength=n)) for train, _ in splits),
               default=1) or 1


def fitted_influence(estimator, X, y, sample_weight, splits, *, curvature="hessian", polish=True,
                     damping=0.0, prefit=False):
    """The influence estimator the splits' answers come from, fitted and polished for them.

    It is the estimator with ``removal_size`` = the rows the smallest split removes, so
    the one polishing policy of :meth:`~skinfluence.HessianInfluence.fit` applies:
    leave-one-out (``splits == []``) polishes to 5% of a leave-one-out step; splits that
    remove m > 1 rows take residual Newton steps, whose error from the fit's distance to the
    optimum is second order, so the fit is polished only until that distance is at most
    one typical change of m rows, both in the curvature's norm
    (``benchmarks/RESULTS_selection.md``: exact refits on both Adult designs).
    """
    inf = _influence(estimator, curvature=curvature, polish=polish, damping=damping,
                     prefit=prefit, removal_size=removal_size(splits, _num_samples(X)))
    return inf.fit(X, y, sample_weight=sample_weight)


def removal_step(influence, removed, method="ns"):
    """Parameter change when the training rows ``removed`` go: the engine's removal step
    (residual for a fit polished for removals of several rows; exact for a Ridge path); with
    balanced class weights, the Newton step of the fold's own objective."""
    if getattr(influence.adapter_, "data_dependent_weights", False):
        return influence.parameter_change(removed, method)
    engine = influence.engine_
    idx = engine.check_indices(removed)
    engine.check_removal(idx)
    return engine.removal_step(idx, method)


def _sample_weight(estimator, params):
    """The ``sample_weight`` among fit ``params`` (the only fit parameter supported)."""
    params = dict(params or {})
    sw = params.pop("sample_weight", None)
    if isinstance(estimator, Pipeline):  # routed to the last step by its name
        sw = params.pop(f"{estimator.steps[-1][0]}__sample_weight", sw)
    if params:
        raise ValueError(
            f"approximate cross-validation supports only sample_weight as a fit parameter; "
            f"got {sorted(params)}"
        )
    return sw


def _check_xy(X, y):
    if y is None:
        raise ValueError("y is required: approximate cross-validation needs the training loss")
    X, y = indexable(X, y)
    if _num_samples(X) < 2:
        raise ValueError(f"at least two samples are needed for cross-validation, got "
                         f"n_samples={_num_samples(X)}")
    return X, y


def _splits(cv, X, y, groups, estimator):
    """The checked splitter and its splits (none for leave-one-out: the closed form needs
    no index arrays, and n of them cost O(n²))."""
    cv = check_cv(cv, y, classifier=is_classifier(estimator))
    return cv, [] if isinstance(cv, LeaveOneOut) else list(cv.split(X, y, groups))


def held_out_outputs(influence, X, splits, method="ns", n_jobs=None, verbose=0):
    """Approximate natural-scale outputs of each split's model on its test rows.

    Parameters
    ----------
    influence : fitted :class:`~skinfluence.BaseInfluence`
        Fitted on ``X`` (all rows).
    X : {array-like, sparse matrix} of shape (n_samples, n_features)
    splits : list of (train, test) index arrays
    method : {"ns", "ij"}
    n_jobs : int, default=None
        Splits computed in parallel (joblib, BLAS threads limited in the workers).
    verbose : int, default=0
        A progress bar over the splits when >= 1.

    Returns
    -------
    list of ndarray of shape (len(test), K)
        Every sample outside ``train`` is removed (:func:`removal_step`) and the
        resulting model evaluated on ``test`` (for K-fold: the fold's own rows; for e.g.
        ``ShuffleSplit`` with ``train_size + test_size < 1``: a subset of them).
    """
    return parallel_map(partial(_split_outputs, influence, X, method), splits, n_jobs, verbose,
                        desc="splits")


def _split_outputs(influence, X, method, split):
    """One split's held-out outputs (see :func:`held_out_outputs`)."""
    train, test = split
    test = np.asarray(test)
    kept = np.zeros(influence.n_samples_, bool)
    kept[train] = True
    removed = np.flatnonzero(~kept)
    if removed.size == 0:  # the split trains on every row: the fitted model itself
        ad = influence.adapter_
        return ad.eta(ad.design(_safe_indexing(X, test)))
    if getattr(influence.adapter_, "data_dependent_weights", False):   # the fold's own weights
        ad = influence.adapter_
        return ad.eta(influence.engine_.Z[test], ad.theta + removal_step(influence, removed, method))
    return influence.engine_.removal_outputs(removed, test, method)


# ---------------------------------------------------------------------------- public
@validate_params(
    {"estimator": [HasMethods(["fit"])], "X": ["array-like", "sparse matrix"],
     "y": ["array-like", None], "groups": ["array-like", None], "cv": ["cv_object"],
     "params": [dict, None], "response_method": [StrOptions(set(_RESPONSE_METHODS))],
     **APPROX_CV_CONSTRAINTS, **PARALLEL_CONSTRAINTS},
    prefer_skip_nested_validation=False,
)
def approx_cross_val_predict(
    estimator,
    X,
    y,
    *,
    groups=None,
    cv=None,
    params=None,
    method="ns",
    response_method="predict",
    curvature="hessian",
    polish=True,
    damping=0.0,
    n_jobs=None,
    verbose=0,
):
    """Approximate cross-validated predictions, from one fit.

    Returns what :func:`sklearn.model_selection.cross_val_predict` returns, with each
    fold's refit replaced by a Newton step from the model fitted on all the data.

    Parameters
    ----------
    estimator : estimator object
        A model supported by skinfluence (see :func:`skinfluence.models.supported_estimators`),
        possibly a Pipeline ending in one. It is cloned; the object passed is not modified.
    X : {array-like, sparse matrix} of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    groups : array-like of shape (n_samples,), default=None
        Group labels for group splitters (e.g. ``GroupKFold``).
    cv : int, cross-validation generator or iterable, default=None
        As in scikit-learn (``check_cv``): None is 5-fold, an int is the number of
        folds (stratified for classifiers), ``LeaveOneOut()`` uses the closed-form
        leave-one-out from one factorisation. The test folds must partition the
        samples.
    params : dict, default=None
        Fit parameters; only ``sample_weight`` is supported.
    method : {"ns", "ij"}, default="ns"
        Newton step with the down-dated curvature, or infinitesimal jackknife.
    response_method : {"predict", "predict_proba", "predict_log_proba", "decision_function"}
        The estimator method whose cross-validated output is returned (scikit-learn's
        ``method`` argument; the name ``method`` is taken by the approximation).
    curvature : {"hessian", "fisher"}, default="hessian"
        Curvature of the Newton steps (:class:`~skinfluence.HessianInfluence` or
        :class:`~skinfluence.FisherInfluence`); they agree for canonical links.
    polish : bool or "lbfgs", default=True
        Take Newton steps with the factorised curvature when the full-data fit stopped
        short of the optimum (e.g. ``LogisticRegression(tol=1e-4)``), so that the
        approximation refers to the optimum, as exact refits to the same tolerance
        approximately do. The estimators' one polishing policy, with ``removal_size`` of
        :class:`~skinfluence.HessianInfluence` the rows the smallest split removes:
        leave-one-out polishes to 5% of a leave-one-out step, K-fold (residual steps) to
        one typical change of a fold, so it needs fewer Newton steps. ``"lbfgs"`` first
        finishes the fit by full-batch L-BFGS. If False an
        :class:`~skinfluence.InfluenceWarning` is raised instead.
    damping : float or "auto", default=0.0
        Added to the curvature's diagonal (needed for singular curvatures).
    n_jobs : int, default=None
        Number of joblib workers over the folds (None: 1 unless in a
        ``joblib.parallel_config`` context; -1: all cores), each with its BLAS threads
        limited so that the workers do not oversubscribe the cores. The answers equal
        the sequential ones. The one fit is not parallelised.
    verbose : int, default=0
        A progress bar over the folds when >= 1.

    Returns
    -------
    predictions : ndarray of shape (n_samples,) or (n_samples, n_classes)

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skinfluence.model_selection import approx_cross_val_predict
    >>> X, y = make_classification(200, 5, random_state=0)
    >>> approx_cross_val_predict(LogisticRegression(), X, y, cv=5).shape
    (200,)
    """
    X, y = _check_xy(X, y)
    cv, splits = _splits(cv, X, y, groups, estimator)
    n = _num_samples(X)
    if not isinstance(cv, LeaveOneOut):
        tests = np.concatenate([np.asarray(test) for _, test in splits])
        if len(tests) != n or not np.array_equal(np.sort(tests), np.arange(n)):
            raise ValueError("approx_cross_val_predict needs test folds that partition the samples")
    inf = fitted_influence(estimator, X, y, _sample_weight(estimator, params), splits,
                           curvature=curvature, polish=polish, damping=damping)
    if isinstance(cv, LeaveOneOut):
        eta = inf.loo_decision(method)
    else:
        eta = np.full((n, inf.adapter_.n_outputs), np.nan)
        for (_, test), out in zip(splits, held_out_outputs(inf, X, splits, method, n_jobs, verbose)):
            eta[test] = out
    return inf.adapter_.response(eta, response_method)


@validate_params(
    {"estimator": [HasMethods(["fit"])], "X": ["array-like", "sparse matrix"],
     "y": ["array-like", None], "groups": ["array-like", None], "cv": ["cv_object"],
     "scoring": [str, callable, list, tuple, set, dict, None], "params": [dict, None],
     **APPROX_CV_CONSTRAINTS, **PARALLEL_CONSTRAINTS},
    prefer_skip_nested_validation=False,
)
def approx_cross_val_score(
    estimator,
    X,
    y,
    *,
    groups=None,
    scoring=None,
    cv=None,
    params=None,
    method="ns",
    curvature="hessian",
    polish=True,
    damping=0.0,
    n_jobs=None,
    verbose=0,
):
    """Approximate cross-validation scores, from one fit.

    Returns what :func:`sklearn.model_selection.cross_val_score` returns, with each
    split's refit replaced by a Newton step from the model fitted on all the data.

    Parameters
    ----------
    estimator, X, y, groups, cv, params, method, curvature, polish, damping, n_jobs, verbose
        As in :func:`approx_cross_val_predict`; any scikit-learn splitter is accepted
        here (the test folds need not partition the samples).
    scoring : str or callable, default=None
        A scorer name (see ``sklearn.metrics.get_scorer_names()``) or a callable
        ``scorer(estimator, X, y)``; None uses the estimator's ``score``. The scorer
        sees an object whose ``predict``/``predict_proba``/``decision_function``
        return the approximate held-out outputs. ``"accuracy"``, ``"neg_log_loss"``,
        ``"neg_mean_squared_error"``, ``"neg_root_mean_squared_error"``,
        ``"neg_mean_absolute_error"``, ``"r2"`` and the default score of classifiers
        and least-squares regressors are computed from those outputs directly, to
        the same value, without scikit-learn's per-call input checks.

    Returns
    -------
    scores : ndarray of shape (n_splits,)
        One score per split. With ``cv=LeaveOneOut()`` the pooled leave-one-out
        predictions are scored once, as :class:`~sklearn.linear_model.RidgeCV` does
        (shape (1,)): for averaged metrics (accuracy, squared error) this is the mean
        of scikit-learn's per-sample scores, and it is defined for metrics such as
        R² or ROC AUC that one sample cannot give.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skinfluence.model_selection import approx_cross_val_score
    >>> X, y = make_classification(200, 5, random_state=0)
    >>> approx_cross_val_score(LogisticRegression(), X, y, cv=5).shape
    (5,)
    """
    X, y = _check_xy(X, y)
    if isinstance(scoring, (list, tuple, set, dict)):
        raise ValueError("approx_cross_val_score takes a single scoring; use ApproxGridSearchCV "
                         "for several metrics")
    scorer = check_scoring(estimator, scoring=scoring)
    cv, splits = _splits(cv, X, y, groups, estimator)
    inf = fitted_influence(estimator, X, y, _sample_weight(estimator, params), splits,
                           curvature=curvature, polish=polish, damping=damping)
    return split_scores(inf, X, y, splits, {"score": scorer}, method,
                        loo=isinstance(cv, LeaveOneOut), scorings={"score": scoring},
                        n_jobs=n_jobs, verbose=verbose)["score"]


def split_scores(influence, X, y, splits, scorers, method="ns", loo=False, score_params=None,
                 scorings=None, n_jobs=None, verbose=0):
    """Score each split's approximate held-out outputs with each of ``scorers``.

    ``score_params`` (per-sample arrays such as ``sample_weight``) are indexed like
    the test rows. ``scorings`` maps a scorer's name to the scoring it was made from
    (a name or None), which lets the common metrics skip scikit-learn's input checks.
    Returns a dict ``name -> ndarray of shape (n_splits,)``; with ``loo`` the pooled
    leave-one-out outputs are scored once (shape (1,)).
    """
    score_params, scorings = score_params or {}, scorings or {}
    if loo:
        pieces = [(np.arange(influence.n_samples_), influence.loo_decision(method))]
    else:
        outputs = held_out_outputs(influence, X, splits, method, n_jobs, verbose)
        pieces = [(test, eta) for (_, test), eta in zip(splits, outputs)]
    out = {name: np.empty(len(pieces)) for name in scorers}
    for i, (test, eta) in enumerate(pieces):
        for name, scorer in scorers.items():
            out[name][i] = score_split(influence, scorings.get(name, scorer), scorer, eta, X, y,
                                       test, score_params)
    return out
