"""Fairness by influence-guided reweighing of the training data (Li & Liu, 2022).

Training point i gets a weight ``w_i = 1 − x_i``, ``x_i ∈ [0, 1]``. To first order,
removing the fraction ``x_i`` of point i changes a quantity ``Q`` of the fit by
``x_i · I_Q(i)``, where ``I_Q(i) = ∇Qᵀ M⁻¹ v_i`` is the influence of removing the
whole point (:meth:`~skinfluence.influence.BaseInfluence.removal_effect`). With ``f``
the influences on a smooth fairness gap ``Δ ≥ 0`` (measured on every row, or on the
validation rows only: ``gap_on``) and ``u`` those on the mean validation loss, the
weights solve the linear programme::

    min Σx   s.t.   fᵀx ≤ −β Δ,   uᵀx ≤ γ Σ_{u_i<0} u_i,   0 ≤ x ≤ 1

and, when it is infeasible (the gap cannot be cut by ``βΔ`` to first order), the
fallback::

    min fᵀx  s.t.   uᵀx ≤ 0,   Σx ≤ α n,   0 ≤ x ≤ 1.

The model is then refitted with ``sample_weight = w`` (a net: fine-tuned from its fitted
parameters on the weighted loss). With several candidate strengths ``β`` (``"auto"``), one
programme is solved and one model refitted per candidate, and the refit whose measured
gap (hard predictions) is smallest is kept. The smooth gap is the
difference of mean predicted probabilities of the favourable class between the
groups with the largest and the smallest mean (demographic parity), or the same on
the samples whose true label is favourable (equal opportunity).
"""

from __future__ import annotations

import copy
import numbers
from functools import partial
import warnings

import numpy as np
import pandas as pd
from scipy.optimize import linprog
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone, is_classifier
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_consistent_length, check_is_fitted

from .._sklearn_compat import Interval, StrOptions, _safe_indexing
from ..estimators import BaseInfluence, FisherInfluence, HessianInfluence
from .._parallel import parallel_map
from .._utils import check_sample_weight, final_step, is_skorch
from ..refit import fit_weighted, supports_sample_weight
from .metrics import demographic_parity_difference, encode_groups, equal_opportunity_difference

__all__ = ["InfluenceReweighing", "FairnessWarning"]

# beta="auto": the candidates searched (the measured gap picks one; see ``beta``)
AUTO_BETAS = tuple(float(b) for b in np.round(np.arange(0.2, 1.45, 0.1), 1))
_METRICS = {"demographic_parity": demographic_parity_difference,
            "equal_opportunity": equal_opportunity_difference}


class FairnessWarning(UserWarning):
    """The fairness target could not be met as asked (the fallback programme was used)."""


def solve_reweighing_lp(utility_influence, fairness_influence, gap, *, alpha, beta, gamma):
    """Solve the reweighing linear programme (see the module docstring) with HiGHS.

    Parameters
    ----------
    utility_influence, fairness_influence : ndarray of shape (n,)
        First-order change of the validation loss / fairness gap when each training
        point is removed.
    gap : float
        The current (smooth) fairness gap, ``≥ 0``.
    alpha, beta, gamma : float
        See :class:`InfluenceReweighing`.

    Returns
    -------
    x : ndarray of shape (n,)
        Fraction of each training point to remove, in [0, 1].
    fallback : bool
        Whether the primary programme was infeasible and the fallback was solved.

    Examples
    --------
    Removing point 0 lowers the gap by 0.1 and the loss by 0.01; point 1 raises both:

    >>> from skinfluence.fairness import solve_reweighing_lp
    >>> x, fallback = solve_reweighing_lp([-0.01, 0.02], [-0.1, 0.05], 0.1, alpha=0.1, beta=0.5, gamma=0.0)
    >>> x.round(3).tolist(), fallback
    ([0.5, 0.0], False)
    """
    u = np.asarray(utility_influence, dtype=float)
    f = np.asarray(fairness_influence, dtype=float)
    n = len(u)
    res = linprog(np.ones(n), A_ub=np.vstack([f, u]),
                  b_ub=[-beta * gap, gamma * u[u < 0].sum()], bounds=(0, 1), method="highs")
    fallback = res.status == 2
    if fallback:
        res = linprog(f, A_ub=np.vstack([u, np.ones(n)]), b_ub=[0.0, alpha * n],
                      bounds=(0, 1), method="highs")
    if res.status != 0:
        raise RuntimeError(f"the reweighing linear programme failed: {res.message}")
    return np.clip(res.x, 0.0, 1.0), fallback


def _weighted_refit(shared, weights):
    """A candidate's refit: the estimator fitted with the fairness weights (a net:
    fine-tuned from its fit, as the influence predicts a local change)."""
    estimator, warm, X, y = shared
    model = copy.deepcopy(estimator) if warm else clone(estimator)
    return fit_weighted(model, X, y, weights, warm_start=warm)


def _positive_proba(adapter, eta):
    """Probability of the favourable class (``classes_[1]``) and its η-gradient, (m,), (m, K)."""
    if adapter.n_outputs == 1:
        mu, dmu, _ = adapter.loss.link.derivatives(eta[:, 0])
        return mu, dmu[:, None]
    p = softmax(eta, axis=1)
    grad = -p[:, 1:2] * p  # ∂p₁/∂η_k = p₁(δ_1k − p_k)
    grad[:, 1] += p[:, 1]
    return p[:, 1], grad


def _gap_and_gradient(proba, dproba, codes, mask, sw):
    """Smooth gap ``max_a mean_a(p) − min_a mean_a(p)`` on ``mask`` and its η-gradient."""
    n_groups = codes.max() + 1
    den = np.bincount(codes[mask], weights=sw[mask], minlength=n_groups)
    means = np.bincount(codes[mask], weights=(sw * proba)[mask], minlength=n_groups) / den
    hi, lo = int(np.argmax(means)), int(np.argmin(means))
    coef = np.zeros(len(proba))
    coef[mask & (codes == hi)] += sw[mask & (codes == hi)] / den[hi]
    coef[mask & (codes == lo)] -= sw[mask & (codes == lo)] / den[lo]
    return float(means[hi] - means[lo]), coef[:, None] * dproba


class InfluenceReweighing(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Make a classifier fairer by reweighing its training data with influence functions.

    The estimator is fitted on a training part, the first-order effect of removing
    each training point on a smooth fairness gap and on the loss of a validation part
    is computed with an influence estimator, a linear programme picks the smallest
    removal that cuts the gap without costing validation loss, and the estimator is
    refitted with ``sample_weight = 1 − x`` (see the module docstring for the
    programme; it follows Li & Liu, "Achieving fairness at no utility cost via data
    reweighing with influence", ICML 2022).

    Binary classification only; the favourable outcome is ``classes_[1]``.

    Parameters
    ----------
    estimator : classifier
        Any binary classifier an influence estimator supports (LogisticRegression,
        SGDClassifier with log loss, a Pipeline ending in one, a skorch classifier).
        It is cloned; the original is never modified. A scikit-learn model is refitted
        from scratch with the weights; a skorch net is trained once, then that net is
        fine-tuned on the weighted loss for ``max_epochs`` more epochs (a warm start: a
        fresh initialisation would land in another local minimum, and influence
        functions describe a local change of the fitted parameters). A net is used as
        trained (no Newton polishing: stochastic training stops far from the optimum
        on the scale of one point's influence, and the influence estimator warns so).
    constraint : {"demographic_parity", "equal_opportunity"}, default="demographic_parity"
        Demographic parity: equal rates of favourable predictions across groups.
        Equal opportunity: equal true positive rates across groups.
    curvature : {"fisher", "hessian"}, default="fisher"
        The curvature of the influence functions: :class:`~skinfluence.FisherInfluence`
        or :class:`~skinfluence.HessianInfluence` (identical for a logistic regression).
    beta : float, array-like of float or "auto", default="auto"
        Fairness strength: the programme asks the smooth gap to fall by ``beta`` times
        its current value, to first order. 1 aims at a zero gap to first order; values
        above 1 make up for a linearisation that underestimates the change; 0 asks
        nothing of the gap. Large removals leave the first-order regime, so the gap need
        not fall monotonically in ``beta``. Several candidates (an array, ``≥ 0``) are
        each solved and refitted, and the one whose refitted model has the smallest gap
        (the ``constraint``'s metric of the hard predictions, on the rows ``gap_on``
        names; ties: the smaller ``beta``) is kept, as scikit-learn's ``*CV``
        estimators choose a hyperparameter; ``beta_search_`` lists them. Past the
        first candidate whose target is out of reach (the fallback programme, which
        does not depend on ``beta``), the larger ones share its solution and refit.
        "auto" searches 0.2, 0.3, ..., 1.4 (at most 13 refits; a float costs one).
        On Adult (LogisticRegression, sex; ``benchmarks/fairness_adult.py``, five
        validation splits) it chooses 0.7–0.8 for equal opportunity, test gap
        0.099 → at most 0.014 for 0.24–0.42 points of accuracy.
    gamma : float, default=0.3
        Utility requirement: the mean validation loss must change, to first order, by
        at most ``gamma`` times the largest reduction any reweighing could reach
        (``Σ_{u_i<0} u_i < 0``). Positive: the loss must fall, which steers the removal
        towards points that hurt both fairness and utility (on Adult's five benchmark
        splits with the ``beta`` search, equal opportunity: median test gap 0.004 for
        0.32 accuracy points with the default, against 0.015 for 0.35 with 0), and
        makes the programme reweigh even with ``beta=0``; 0: no loss increase;
        negative: an increase of that size is allowed.
    alpha : float, default=0.1
        Fallback budget, used only when the fairness target is out of reach to first
        order: the total removed weight is at most ``alpha`` times the number of
        training points, and the programme minimises the gap instead.
    validation_fraction : float in (0, 1) or None, default=0.2
        Share of the data (stratified by group and label) held out to measure the
        utility (and, with ``gap_on="validation"``, the gap); the final model is fitted
        on the rest. None uses the whole data for both (in-sample; every row is
        reweighed).
    gap_on : {"all", "validation"}, default="all"
        The rows on which the fairness gap is measured: its value and gradient (the
        programme's target) and the gap that chooses among ``beta`` candidates.
        "all": every row, the training part in-sample and the validation part held out;
        "validation": the held-out part only. A gap of a few hundredths is a difference
        of group rates, and on a small part it is mostly sampling noise (on Adult the
        20% validation part has about 220 positive women: its equal opportunity gap
        is 0.06 where the test set's is 0.10), which the programme then cuts instead of
        the model's bias; "all" measures it on five times the rows. An in-sample gap is
        biased when the model overfits the groups' rates (many parameters per row);
        then prefer "validation" with a larger ``validation_fraction``. The utility is
        always measured on the validation part.
    damping : float or "auto", default=0.0
        Added to the curvature's diagonal (needed for a singular or indefinite
        curvature, e.g. a network's Hessian); ``"auto"`` as for
        :class:`~skinfluence.HessianInfluence` (a tenth of the mean eigenvalue for
        networks, 0 for linear models).
    n_jobs : int, default=None
        Joblib workers over the ``beta`` candidates' refits (None: one, unless inside
        ``joblib.parallel_config``; -1: every core). Each worker gets its share of the
        :func:`~skinfluence.set_threads` budget.
    random_state : int, RandomState instance or None, default=None
        Seed of the validation split.

    Attributes
    ----------
    estimator_ : classifier
        The estimator refitted (a net: fine-tuned) with the fairness weights.
    influence_ : FisherInfluence or HessianInfluence
        The influence estimator fitted on the training part (its ``estimator_`` is the
        model before reweighing).
    sample_weight_ : ndarray of shape (n_samples,)
        The weights ``estimator_`` was fitted with, aligned with ``X`` (the user's
        sample weights times ``1 − x``; 0 on validation rows).
    validation_mask_ : ndarray of bool of shape (n_samples,)
        Rows held out for validation (all False when ``validation_fraction`` is None).
    utility_influence_, fairness_influence_ : ndarray of shape (n_train,)
        First-order change of the mean validation loss and of the smooth gap when each
        training row (``X[~validation_mask_]``) is removed.
    beta_ : float
        The fairness strength used (the chosen candidate).
    beta_search_ : dict of ndarray
        One entry per candidate ``beta`` (in increasing order): ``beta``, ``gap``
        (the hard-prediction gap of its refit on the ``gap_on`` rows, which chooses),
        ``smooth_gap`` (the same rows), ``accuracy`` (validation part), ``removed``
        (``Σx``) and ``fallback``.
    removal_ : ndarray of shape (n_train,)
        The programme's solution ``x``.
    fallback_ : bool
        Whether the fairness target was infeasible and the fallback programme was used.
    report_ : dict
        Before and after reweighing: ``gap_*`` (the fairness metric of the hard
        predictions, see :mod:`skinfluence.fairness.metrics`), ``smooth_gap_*`` and
        ``smooth_gap_predicted`` (the first-order prediction), on the ``gap_on`` rows
        (``gap_evaluated_on``: "all", "validation", or "training" when
        ``validation_fraction`` is None); ``accuracy_*`` and ``log_loss_*`` on the
        validation part (``evaluated_on``: "validation", or "training"); and
        ``removed`` (``Σx``), ``fallback``.
    classes_ : ndarray of shape (2,)

    Notes
    -----
    ``sensitive_features`` only defines groups: if it is a column of ``X`` the column
    stays in ``X`` (as in fairlearn), so drop it yourself if the model must not see it.
    The influences are first order: large removals (strong ``beta``) move the model
    further than the linearisation sees, which is why the reweighed model's gap
    differs from ``smooth_gap_predicted``.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skinfluence.datasets import adult_design
    >>> from skinfluence.fairness import InfluenceReweighing, equal_opportunity_difference
    >>> train, test = adult_design(), adult_design(subset="test")
    >>> fair = InfluenceReweighing(LogisticRegression(max_iter=1000), constraint="equal_opportunity",
    ...                            random_state=0).fit(train.X, train.y, sensitive_features=train.sensitive)
    >>> gap = equal_opportunity_difference(test.y, fair.predict(test.X),
    ...                                    sensitive_features=test.sensitive)
    >>> round(fair.report_["gap_before"], 2) > round(fair.report_["gap_after"], 2)
    True
    """

    _parameter_constraints = {
        "estimator": [object],
        "constraint": [StrOptions(set(_METRICS))],
        "curvature": [StrOptions({"fisher", "hessian"})],
        "beta": [Interval(numbers.Real, 0, None, closed="left"), StrOptions({"auto"}), "array-like"],
        "gamma": [Interval(numbers.Real, None, 1, closed="right")],
        "alpha": [Interval(numbers.Real, 0, 1, closed="both")],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither"), None],
        "gap_on": [StrOptions({"all", "validation"})],
        "damping": BaseInfluence._parameter_constraints["damping"],
        "n_jobs": [numbers.Integral, None],
        "random_state": ["random_state"],
    }

    def __init__(self, estimator, *, constraint="demographic_parity", curvature="fisher",
                 beta="auto", gamma=0.3, alpha=0.1, validation_fraction=0.2, gap_on="all",
                 damping=0.0, n_jobs=None, random_state=None):
        self.estimator = estimator
        self.constraint = constraint
        self.curvature = curvature
        self.beta = beta
        self.gamma = gamma
        self.alpha = alpha
        self.validation_fraction = validation_fraction
        self.gap_on = gap_on
        self.damping = damping
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------------ input
    @staticmethod
    def _sensitive(X, sensitive_features):
        names = sensitive_features
        if isinstance(names, str):
            if not isinstance(X, pd.DataFrame):
                raise ValueError("sensitive_features names a column, but X is not a DataFrame")
            if names not in X.columns:
                raise ValueError(f"sensitive_features: column {names!r} is not in X")
            return X[names]
        # a list of column names (a list of labels, one per row, is taken as values)
        if (isinstance(X, pd.DataFrame) and isinstance(names, list) and names
                and len(names) < len(X) and all(isinstance(c, str) for c in names)):
            missing = [c for c in names if c not in X.columns]
            if missing:
                raise ValueError(f"sensitive_features: columns {missing} are not in X")
            return X[names]
        return sensitive_features

    def _split(self, n, codes, y):
        if self.validation_fraction is None:
            idx = np.arange(n)
            return idx, idx
        idx = np.arange(n)
        strata = codes * 2 + y
        try:
            tr, va = train_test_split(idx, test_size=self.validation_fraction, stratify=strata,
                                      random_state=self.random_state)
        except ValueError:  # a stratum too small to split: split at random
            tr, va = train_test_split(idx, test_size=self.validation_fraction,
                                      random_state=self.random_state)
        return np.sort(tr), np.sort(va)  # keep X's row order (= ~validation_mask_)

    def _check_groups(self, codes, y, n_groups, part):
        need = y == 1 if self.constraint == "equal_opportunity" else np.ones(len(y), bool)
        present = np.unique(codes[need])
        if len(present) < n_groups:
            what = "positive samples" if self.constraint == "equal_opportunity" else "samples"
            raise ValueError(f"the {part} part has no {what} of some sensitive group; "
                             "use more data or a different validation_fraction")

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y, *, sensitive_features, sample_weight=None):
        """Fit, reweigh the training data for fairness, and refit.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Binary labels.
        sensitive_features : array-like of shape (n_samples,) or (n_samples, k), or column name(s)
            Group membership, as an array, Series or DataFrame, or the name(s) of
            columns of a DataFrame ``X`` (two or more groups; several columns define
            intersectional groups). A named column stays in ``X``.
        sample_weight : array-like of shape (n_samples,), default=None
            Multiplied into the fairness weights.

        Returns
        -------
        self : InfluenceReweighing
            The fitted meta-estimator.
        """
        self._validate_params()
        betas = self._betas()
        if not is_classifier(self.estimator):
            raise TypeError(f"estimator must be a classifier, got {type(self.estimator).__name__}")
        last = final_step(self.estimator)
        if not supports_sample_weight(self.estimator):
            raise TypeError(f"{type(last).__name__}.fit does not accept sample_weight, which the "
                            "refit with the fairness weights needs")
        if y is None:
            raise ValueError("y is required")
        check_consistent_length(X, y)
        y_raw = np.asarray(y)
        if y_raw.ndim == 2 and y_raw.shape[1] == 1:
            y_raw = y_raw.ravel()
        target = type_of_target(y_raw, input_name="y")
        classes = np.unique(y_raw)
        if target != "binary" or len(classes) != 2:
            raise ValueError(f"InfluenceReweighing supports binary classification only; y has "
                             f"target type {target!r} with {len(classes)} classes")
        y01 = (y_raw == classes[1]).astype(int)
        n = len(y01)
        codes, groups = encode_groups(self._sensitive(X, sensitive_features), n)
        if len(groups) < 2:
            raise ValueError(f"sensitive_features has only one group ({groups[0]!r}); "
                             "fairness needs at least two")
        sw = check_sample_weight(sample_weight, n)

        tr, va = self._split(n, codes, y01)
        self._check_groups(codes[tr], y01[tr], len(groups), "training")
        self._check_groups(codes[va], y01[va], len(groups), "validation")
        X_tr, X_va = _safe_indexing(X, tr), _safe_indexing(X, va)
        y_tr, y_va = y_raw[tr], y_raw[va]

        Influence = FisherInfluence if self.curvature == "fisher" else HessianInfluence
        inf = Influence(self.estimator, damping=self.damping, polish=not is_skorch(last),
                        random_state=self.random_state)
        inf.fit(X_tr, y_tr, sample_weight=None if sample_weight is None else sw[tr])
        ad = inf.adapter_
        if ad.classes_ is None or len(ad.classes_) != 2:
            raise TypeError(f"{type(self.estimator).__name__} is not a binary classifier the "
                            "influence engine supports")

        # the gap (value, η-gradient, and the choice of beta) on the gap rows; the
        # utility (mean loss) on the validation rows
        in_sample = self.validation_fraction is None  # va is every row
        gap_rows = va if self.gap_on == "validation" or in_sample else np.arange(n)
        X_gap = X_va if gap_rows is va else _safe_indexing(X, gap_rows)
        y_gap, c_gap, sw_gap = y_raw[gap_rows], codes[gap_rows], sw[gap_rows]
        before = self._evaluate(ad, X_gap, y_gap, c_gap, sw_gap)
        before_va = before if gap_rows is va else self._evaluate(ad, X_va, y_va, codes[va], sw[va])
        g_loss = sw[va, None] * ad.loss.gradient(ad.encode_target(y_va), before_va["eta"])
        g_loss /= sw[va].sum()
        grads = np.vstack([inf.parameter_gradients(X_va, g_loss).sum(axis=0),
                           inf.parameter_gradients(X_gap, before["gap_gradient"]).sum(axis=0)])
        u, f = inf.removal_effect(grads)

        # one programme per candidate beta (the first infeasible one's fallback solution
        # does not depend on beta, so the larger ones share it); the distinct solutions are
        # refitted over n_jobs workers, and the smallest measured gap is kept
        plans = []
        for beta in betas:
            if not plans or not plans[-1][2]:
                x, fallback = solve_reweighing_lp(u, f, before["smooth_gap"], alpha=self.alpha,
                                                  beta=beta, gamma=self.gamma)
                plans.append((beta, x, bool(fallback)))
        weights = [np.zeros(n) for _ in plans]
        for w, (_, x, _) in zip(weights, plans):
            w[tr] = sw[tr] * (1.0 - x)
        warm = is_skorch(last)
        shared = (inf.estimator_ if warm else self.estimator, warm, X_tr, y_tr)
        fits = parallel_map(partial(_weighted_refit, shared), [w[tr] for w in weights],
                            n_jobs=self.n_jobs)
        search = {"beta": [], "gap": [], "smooth_gap": [], "accuracy": [], "removed": [],
                  "fallback": []}
        best = None
        for (beta, x, fallback), w, fitted in zip(plans, weights, fits):
            refit = inf.model_adapter(fitted)
            after = self._evaluate(refit, X_gap, y_gap, c_gap, sw_gap)
            after_va = after if gap_rows is va else self._evaluate(refit, X_va, y_va, codes[va],
                                                                   sw[va])
            for key, value in (("beta", beta), ("gap", after["gap"]),
                               ("smooth_gap", after["smooth_gap"]),
                               ("accuracy", after_va["accuracy"]), ("removed", x.sum()),
                               ("fallback", fallback)):
                search[key].append(value)
            if best is None or after["gap"] < best[0]["gap"]:  # ties: the smaller beta
                best = (after, after_va, fitted, w, x, fallback, beta)
        for beta in betas[len(plans):]:  # past the fallback: its solution and refit, shared
            search["beta"].append(beta)
            for key in search.keys() - {"beta"}:
                search[key].append(search[key][-1])
        after, after_va, self.estimator_, weights, x, fallback, self.beta_ = best
        if fallback:
            warnings.warn(
                f"the {self.constraint} target (cut the smooth gap {before['smooth_gap']:.3g} by "
                f"beta={self.beta_}) is out of reach to first order; minimised the gap with at "
                f"most alpha={self.alpha} of the training weight removed instead",
                FairnessWarning, stacklevel=2)

        self.influence_ = inf
        self.classes_ = self.estimator_.classes_
        self.sample_weight_ = weights
        self.validation_mask_ = np.zeros(n, bool)
        if self.validation_fraction is not None:
            self.validation_mask_[va] = True
        self.utility_influence_, self.fairness_influence_ = u, f
        self.removal_ = x
        self.fallback_ = fallback
        self.beta_search_ = {key: np.asarray(value, dtype=bool if key == "fallback" else float)
                             for key, value in search.items()}
        self.report_ = {
            "constraint": self.constraint,
            "gap_before": before["gap"], "gap_after": after["gap"],
            "smooth_gap_before": before["smooth_gap"], "smooth_gap_after": after["smooth_gap"],
            "smooth_gap_predicted": before["smooth_gap"] + float(f @ x),
            "accuracy_before": before_va["accuracy"], "accuracy_after": after_va["accuracy"],
            "log_loss_before": before_va["log_loss"], "log_loss_after": after_va["log_loss"],
            "removed": float(x.sum()), "fallback": self.fallback_,
            "evaluated_on": "training" if in_sample else "validation",
            "gap_evaluated_on": "training" if in_sample else self.gap_on,
        }
        return self

    def _betas(self):
        """The candidate fairness strengths, as floats in increasing order."""
        if isinstance(self.beta, str):  # "auto"
            return AUTO_BETAS
        if isinstance(self.beta, numbers.Real):
            return (float(self.beta),)
        betas = np.asarray(self.beta)
        if betas.ndim != 1 or betas.size == 0:
            raise ValueError(f"beta must be a number, 'auto' or a non-empty 1-d array of "
                             f"candidates; got an array of shape {betas.shape}")
        try:
            betas = betas.astype(float)
        except (TypeError, ValueError):
            raise ValueError(f"beta candidates must be numbers; got {self.beta!r}") from None
        if not np.isfinite(betas).all() or (betas < 0).any():
            raise ValueError(f"beta candidates must be finite and >= 0; got {self.beta!r}")
        return tuple(float(b) for b in np.unique(betas))

    def _evaluate(self, adapter, X, y, codes, sw):
        """Hard-prediction gap, smooth gap, accuracy and log loss of a model on (X, y)."""
        eta = adapter.eta(adapter.design(X))
        proba, dproba = _positive_proba(adapter, eta)
        pos = y == adapter.classes_[1]
        mask = pos if self.constraint == "equal_opportunity" else np.ones(len(y), bool)
        smooth, grad = _gap_and_gradient(proba, dproba, codes, mask, sw)
        pred = adapter.response(eta, "predict")
        return {
            "eta": eta,
            "gap": _METRICS[self.constraint](y, pred, sensitive_features=codes,
                                             pos_label=adapter.classes_[1], sample_weight=sw),
            "smooth_gap": smooth, "gap_gradient": grad,
            "accuracy": float(accuracy_score(y, pred, sample_weight=sw)),
            "log_loss": float(np.average(adapter.loss.loss(adapter.encode_target(y), eta), weights=sw)),
        }

    # ---------------------------------------------------------------- predicting
    def _estimator_has(attr):
        return lambda self: hasattr(self.estimator_ if hasattr(self, "estimator_")
                                    else self.estimator, attr)

    def predict(self, X):
        """Predict class labels with the reweighed estimator.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(X)

    def predict_proba(self, X):
        """Class probabilities of the reweighed estimator.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, 2)
            Columns in the order of ``classes_``.
        """
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X):
        """Decision function of the reweighed estimator.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Positive favours ``classes_[1]``.
        """
        check_is_fitted(self, "estimator_")
        return self.estimator_.decision_function(X)
