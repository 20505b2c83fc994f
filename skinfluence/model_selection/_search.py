"""Grid search over hyperparameters with approximate cross-validation (one fit per candidate)."""

from __future__ import annotations

import copy
import time
import warnings
from functools import partial

import numpy as np
from numbers import Integral, Real

from sklearn.base import clone, is_classifier
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import LeaveOneOut, ParameterGrid, ParameterSampler, check_cv
from sklearn.pipeline import Pipeline

from joblib import effective_n_jobs

from .._parallel import parallel_map, progress
from .._sklearn_compat import (BaseSearchCV, HasMethods, Interval, StrOptions, _fit_context, best_index,
                               format_search_results, routed_fit_params, search_scorers)
from .._utils import final_step
from ..refit import fit_weighted
from ._ridge_path import RidgePath
from ._validation import (APPROX_CV_CONSTRAINTS, _check_xy, _sample_weight, fitted_influence,
                          split_scores)

__all__ = ["ApproxGridSearchCV", "ApproxRandomizedSearchCV"]

def _split_params(estimator, params):
    """Candidate parameters that reach the preprocessing of a Pipeline (all others are the model's)."""
    if not isinstance(estimator, Pipeline):
        return {}
    last = estimator.steps[-1][0]
    return {k: v for k, v in params.items() if not k.startswith(f"{last}__") and k != last}


class _ApproxSearchCV(BaseSearchCV):
    """Hyper-parameter search scored by approximate cross-validation (one fit per
    candidate); subclasses say which candidates through ``_run_search``."""

    return_train_score = False  # train scores of the approximate split models are not computed
    pre_dispatch = None
    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit"])],
        "scoring": [str, callable, list, tuple, dict, None],
        "refit": ["boolean", str, callable],
        "cv": ["cv_object"],
        "warm_start": ["boolean"],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
        "error_score": [StrOptions({"raise"}), Real],
        **APPROX_CV_CONSTRAINTS,
    }

    def __init__(self, estimator, *, scoring=None, refit=True, cv=None, method="ns",
                 curvature="hessian", polish=True, damping=0.0, warm_start=True, n_jobs=None,
                 verbose=0, error_score=np.nan):
        self.estimator = estimator
        self.scoring = scoring
        self.refit = refit
        self.cv = cv
        self.method = method
        self.curvature = curvature
        self.polish = polish
        self.damping = damping
        self.warm_start = warm_start
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.error_score = error_score

    # ------------------------------------------------------------------ fitting
    def _fit_candidate(self, base, params, X, y, sample_weight, previous):
        """Fit one candidate, warm-started from ``previous = (params, fitted estimator)``."""
        est = clone(base).set_params(**clone(params, safe=False))
        model = final_step(est)
        if (self.warm_start and previous is not None and previous[1] is not None
                and "warm_start" in model.get_params()
                and _split_params(base, previous[0]) == _split_params(base, params)):
            warm = copy.deepcopy(final_step(previous[1]))
            warm.set_params(**model.get_params(deep=False))
            warm.set_params(warm_start=True)
            if isinstance(est, Pipeline):
                est.steps[-1] = (est.steps[-1][0], warm)
            else:
                est = warm
        return fit_weighted(est, X, y, sample_weight)

    def _scorings(self, names):
        """The scoring (a name, None or a callable) each scorer name was made from."""
        if isinstance(self.scoring, dict):
            return dict(self.scoring)
        if isinstance(self.scoring, (list, tuple, set)):
            return {s: s for s in self.scoring}
        return {name: self.scoring for name in names} if names == ["score"] else {}

    def _evaluate(self, base, params, X, y, sample_weight, previous, splits, scorers, loo,
                  score_params, shared):
        """``(fitted estimator, scores dict, fit seconds, per-split score seconds)``."""
        start = time.perf_counter()
        if RidgePath.applies(base, X, y, params, self.method, self.damping):
            # Ridge: every candidate shares the data's Grams and eigendecomposition
            if "ridge" not in shared:
                shared["ridge"] = RidgePath(base, X, y, sample_weight)
            inf, est = shared["ridge"].at(params.get("alpha", base.alpha)), None
        else:
            est = self._fit_candidate(base, params, X, y, sample_weight, previous)
            inf = fitted_influence(est, X, y, sample_weight, splits, curvature=self.curvature,
                                   polish=self.polish, damping=self.damping, prefit=True)
        fit_time = time.perf_counter() - start
        start = time.perf_counter()
        scores = split_scores(inf, X, y, splits, scorers, self.method, loo, score_params,
                              self._scorings(list(scorers)))
        return est, scores, fit_time, time.perf_counter() - start

    def _chunks(self, n):
        """Candidate positions per worker: one run of consecutive candidates each, so that
        warm starts and a Ridge path are shared along a run (one worker: the whole grid)."""
        return [c.tolist() for c in np.array_split(np.arange(n), min(effective_n_jobs(self.n_jobs), n))]

    def _evaluate_chunk(self, base, X, y, sample_weight, splits, scorers, loo, score_params,
                        chunk, verbose=0):
        """``(scores, fit seconds, score seconds)`` of each candidate of ``chunk`` in turn, each
        warm-started from the one before (a failed candidate restarts the chain)."""
        previous, shared, results = None, {}, []
        n_splits = 1 if loo else len(splits)
        for params in progress(chunk, verbose, desc="candidates"):
            try:
                est, scores, fit_time, score_time = self._evaluate(
                    base, params, X, y, sample_weight, previous, splits, scorers, loo,
                    score_params, shared)
                previous = (params, est)
            except Exception as exc:
                if self.error_score == "raise":
                    raise
                warnings.warn(f"Candidate {params} failed and is scored {self.error_score}: "
                              f"{type(exc).__name__}: {exc}", FitFailedWarning, stacklevel=2)
                scores = {name: np.full(n_splits, float(self.error_score)) for name in scorers}
                fit_time = score_time = 0.0
                previous = None
            results.append((scores, fit_time, score_time))
        return results

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, **params):
        """Run the search: one fit per candidate, approximate scores per split.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        **params : dict
            ``groups`` (for the splitter) and ``sample_weight`` (for the fits; also
            passed to scorers that accept it, as ``GridSearchCV`` does).

        Returns
        -------
        self : object
        """
        X, y = _check_xy(X, y)
        named, refit_metric, multimetric = search_scorers(self)
        routed = routed_fit_params(self, params)
        sample_weight = _sample_weight(self.estimator, routed.estimator.fit)
        score_params = dict(routed.scorer.score)

        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        loo = isinstance(cv, LeaveOneOut)
        splits = [] if loo else list(cv.split(X, y, **routed.splitter.split))  # LOO: closed form
        n_splits = 1 if loo else len(splits)
        self.n_splits_ = n_splits
        base = clone(self.estimator)
        candidates, out = [], []
        run_chunk = partial(self._evaluate_chunk, base, X, y, sample_weight, splits, named, loo,
                            score_params)

        def evaluate_candidates(candidate_params):
            """Fit and score each candidate (one fit each); returns the results so far."""
            candidate_params = list(candidate_params)
            if not candidate_params and not candidates:
                raise ValueError(f"the parameter grid {self._candidate_space()!r} has no candidates")
            if self.verbose:
                print(f"Fitting {len(candidate_params)} candidates once each, scoring "
                      f"{n_splits} approximate splits each")
            chunks = [[candidate_params[i] for i in c] for c in self._chunks(len(candidate_params))]
            if len(chunks) == 1:  # here, with a bar over the candidates
                done = [run_chunk(chunks[0], verbose=self.verbose)]
            else:  # a bar over the workers' runs
                done = parallel_map(run_chunk, chunks, self.n_jobs, self.verbose, desc="candidate runs")
            for scores, fit_time, score_time in (r for chunk in done for r in chunk):
                for k in range(n_splits):
                    test = {name: s[k] for name, s in scores.items()}
                    out.append({"fit_time": fit_time / n_splits, "score_time": score_time / n_splits,
                                "test_scores": test if multimetric else test["score"]})
            candidates.extend(candidate_params)
            return format_search_results(self, candidates, n_splits, out)

        self._run_search(evaluate_candidates)
        self.multimetric_ = multimetric
        results = format_search_results(self, candidates, n_splits, out)

        if self.refit or not self.multimetric_:
            self.best_index_ = best_index(self.refit, refit_metric, results)
            if not callable(self.refit):
                self.best_score_ = results[f"mean_test_{refit_metric}"][self.best_index_]
            self.best_params_ = results["params"][self.best_index_]
        if self.refit:
            start = time.perf_counter()
            best = clone(base).set_params(**clone(self.best_params_, safe=False))
            self.best_estimator_ = fit_weighted(best, X, y, sample_weight)
            self.refit_time_ = time.perf_counter() - start
            if hasattr(self.best_estimator_, "feature_names_in_"):
                self.feature_names_in_ = self.best_estimator_.feature_names_in_
        self.scorer_ = named if self.multimetric_ else named["score"]
        self.cv_results_ = results
        return self


class ApproxGridSearchCV(_ApproxSearchCV):
    """Exhaustive search over a parameter grid, scored by approximate cross-validation.

    Reads like :class:`~sklearn.model_selection.GridSearchCV` (same ``cv_results_``
    keys, ``best_*`` attributes, ``refit`` and ``predict``/``score`` delegation) but
    fits each candidate once, on all the data: its split models are Newton steps
    from that fit (see :func:`~skinfluence.model_selection.approx_cross_val_score`).

    Differences from ``GridSearchCV``:

    * Inside a Pipeline, the preprocessing steps are fitted once per candidate on all
      the data and held fixed in the split models; ``GridSearchCV`` refits them on
      each training fold. Supervised or strongly data-dependent preprocessing
      (target encoding, feature selection) can therefore look better than it would
      under exact CV; scalers and one-hot encoders barely change.
    * With ``cv=LeaveOneOut()`` the pooled leave-one-out predictions are scored once,
      as :class:`~sklearn.linear_model.RidgeCV` does: ``cv_results_`` has one split
      and ``n_splits_ == 1``.
    * Candidates are fitted in grid order; when the model has a ``warm_start``
      parameter (LogisticRegression, Lasso, ElasticNet, the GLM regressors, ...)
      each fit starts from the previous candidate's solution when only the model's
      own parameters changed (a regularisation path). The user's estimator is
      never modified and ``best_estimator_`` is a plain refit, as in GridSearchCV.
    * A plain ``Ridge`` whose candidates differ only in ``alpha`` (dense X, one target,
      ``method="ns"``, no damping) is not fitted per candidate: every alpha's split
      answers come exactly from the data's Grams, shared by the grid (leave-one-out from
      one eigendecomposition, as :class:`~sklearn.linear_model.RidgeCV` does).
    * Train scores are not computed (``return_train_score`` is not available).
    * ``n_jobs`` workers take one run of consecutive candidates each (the grid split in
      ``n_jobs`` parts): warm starts and the Ridge path are shared along a run, so each
      run's first candidate starts cold. Without ``warm_start`` the scores equal the
      sequential ones; with it they differ by the fits' tolerance at the runs' starts.

    Parameters
    ----------
    estimator : estimator object
        A model supported by skinfluence, or a Pipeline ending in one.
    param_grid : dict or list of dicts
        As in ``GridSearchCV``.
    scoring : str, callable, list, tuple or dict, default=None
        As in ``GridSearchCV`` (several metrics need ``refit`` to name one).
    refit : bool, str or callable, default=True
        Refit the best candidate on all the data (``best_estimator_``).
    cv : int, cross-validation generator or iterable, default=None
        As in ``GridSearchCV``; ``LeaveOneOut()`` uses the closed form.
    method : {"ns", "ij"}, default="ns"
        Newton step with the down-dated curvature, or infinitesimal jackknife.
    curvature : {"hessian", "fisher"}, default="hessian"
    polish : bool or "lbfgs", default=True
        Newton-polish fits that stopped short of the optimum (see
        :func:`~skinfluence.model_selection.approx_cross_val_score`).
    damping : float or "auto", default=0.0
    warm_start : bool, default=True
        Start each candidate's fit from the previous one's solution where possible.
    n_jobs : int, default=None
        Number of joblib workers over the candidates (None: 1 unless in a
        ``joblib.parallel_config`` context; -1: all cores), each with its BLAS threads
        limited so that the workers do not oversubscribe the cores.
    verbose : int, default=0
        A progress bar over the candidates (with ``n_jobs`` > 1: over the workers' runs)
        when >= 1.
    error_score : "raise" or float, default=np.nan
        Score of a candidate whose fit or approximation fails (with a
        ``FitFailedWarning``), or ``"raise"``.

    Attributes
    ----------
    cv_results_ : dict of ndarrays
        As in ``GridSearchCV``. ``fit_time`` of a split is its share of the
        candidate's one fit and factorisation plus its own down-date.
    best_estimator_, best_score_, best_params_, best_index_, scorer_, n_splits_,
    refit_time_, multimetric_
        As in ``GridSearchCV``.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skinfluence.model_selection import ApproxGridSearchCV
    >>> X, y = make_classification(300, 5, random_state=0)
    >>> search = ApproxGridSearchCV(LogisticRegression(), {"C": [0.01, 0.1, 1.0]}, cv=5)
    >>> search.fit(X, y).best_params_  # doctest: +SKIP
    {'C': 0.1}
    """

    _parameter_constraints: dict = {**_ApproxSearchCV._parameter_constraints, "param_grid": [dict, list]}

    def __init__(self, estimator, param_grid, *, scoring=None, refit=True, cv=None, method="ns",
                 curvature="hessian", polish=True, damping=0.0, warm_start=True, n_jobs=None,
                 verbose=0, error_score=np.nan):
        super().__init__(estimator, scoring=scoring, refit=refit, cv=cv, method=method, curvature=curvature,
                         polish=polish, damping=damping, warm_start=warm_start, n_jobs=n_jobs,
                         verbose=verbose, error_score=error_score)
        self.param_grid = param_grid

    def _candidate_space(self):
        return self.param_grid

    def _run_search(self, evaluate_candidates):
        """Evaluate every candidate of ``param_grid``, as ``GridSearchCV`` does."""
        evaluate_candidates(ParameterGrid(self.param_grid))


class ApproxRandomizedSearchCV(_ApproxSearchCV):
    """Randomized search over parameter distributions, scored by approximate cross-validation.

    The search of :class:`ApproxGridSearchCV` with ``n_iter`` candidates drawn from
    ``param_distributions`` (as :class:`~sklearn.model_selection.RandomizedSearchCV`
    draws them); every other parameter and attribute is the same.

    Parameters
    ----------
    estimator : estimator object
    param_distributions : dict or list of dicts
        Parameter names to distributions (with ``rvs``) or lists to sample from.
    n_iter : int, default=10
        Number of candidates drawn.
    random_state : int, RandomState or None, default=None
        Seeds the draws.
    scoring, refit, cv, method, curvature, polish, damping, warm_start, n_jobs, verbose, error_score
        As in :class:`ApproxGridSearchCV`.

    Attributes
    ----------
    cv_results_, best_estimator_, best_score_, best_params_, best_index_, scorer_, n_splits_
        As in :class:`ApproxGridSearchCV`.

    Examples
    --------
    >>> from scipy.stats import loguniform
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skinfluence.model_selection import ApproxRandomizedSearchCV
    >>> X, y = make_classification(300, 5, random_state=0)
    >>> search = ApproxRandomizedSearchCV(LogisticRegression(), {"C": loguniform(1e-3, 1e2)},
    ...                                   n_iter=5, cv=5, random_state=0).fit(X, y)
    >>> len(search.cv_results_["params"])
    5
    """

    _parameter_constraints: dict = {
        **_ApproxSearchCV._parameter_constraints,
        "param_distributions": [dict, list],
        "n_iter": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, estimator, param_distributions, *, n_iter=10, random_state=None, scoring=None,
                 refit=True, cv=None, method="ns", curvature="hessian", polish=True, damping=0.0,
                 warm_start=True, n_jobs=None, verbose=0, error_score=np.nan):
        super().__init__(estimator, scoring=scoring, refit=refit, cv=cv, method=method, curvature=curvature,
                         polish=polish, damping=damping, warm_start=warm_start, n_jobs=n_jobs,
                         verbose=verbose, error_score=error_score)
        self.param_distributions = param_distributions
        self.n_iter = n_iter
        self.random_state = random_state

    def _candidate_space(self):
        return self.param_distributions

    def _run_search(self, evaluate_candidates):
        """Evaluate ``n_iter`` candidates drawn from ``param_distributions``."""
        evaluate_candidates(ParameterSampler(self.param_distributions, self.n_iter,
                                             random_state=self.random_state))
