"""The influence estimators: a thin scikit-learn shell over the engine.

Each estimator chooses a curvature (``_curvature_kind``), a solver (:mod:`..curvature.solvers`,
through :meth:`BaseInfluence._make_solver`) and the rows that build the curvature
(``curvature_sampler``); the state lives in an :class:`~._model.InfluenceModel` and every
query is written once in :mod:`._updates`.
"""

from __future__ import annotations

import copy
import re
import warnings
from functools import partial
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_consistent_length, check_is_fitted, validate_data

from .._utils import (check_memory, check_method, check_sample_weight, check_target, final_step,
                      is_torch_model, is_torch_module)
from ..curvature.newton import NewtonPolisher, lbfgs_finish
from ..curvature.solvers import SOLVERS, choose_solver, make_solver
from ..exceptions import InfluenceWarning
from ..models import make_adapter
from ..refit import fit_weighted
from . import _updates
from ._model import InfluenceModel

__all__ = ["BaseInfluence", "HessianInfluence", "FisherInfluence"]

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class BaseInfluence(TransformerMixin, BaseEstimator):
    """Shared machinery of the influence estimators (not used directly).

    Parameters
    ----------
    estimator : estimator object
        A supported scikit-learn linear model (LogisticRegression, LinearRegression,
        Ridge, Lasso, ElasticNet, PoissonRegressor, GammaRegressor, TweedieRegressor,
        SGDClassifier with ``loss="log_loss"``), a Pipeline ending in one, or a skorch
        net / torch module. It is cloned and fitted by :meth:`fit` unless ``prefit``.
    prefit : bool, default=False
        Use the already fitted ``estimator`` as it is (a deep copy; the user's object is
        never modified).
    damping : float, default=0.0
        Added to the diagonal of the curvature. Needed when it is singular (no penalty
        and collinear features, unpenalised multinomial with separable data) or
        indefinite (a Hessian away from a minimum).
    polish : bool or "lbfgs", default=False
        If the fitted parameters are too far from the optimum for the approximation to
        be meaningful, take Newton steps with the curvature (proximal Newton steps for
        ℓ1) until they are not, and use the polished model as ``estimator_``. ``"lbfgs"``
        first minimises the model's own objective by full-batch L-BFGS in float64, the
        finisher for networks trained by minibatch optimisers (whose Gauss–Newton steps
        stall far from the optimum), then checks with Newton steps. If False, an
        :class:`~skinfluence.exceptions.InfluenceWarning` is raised instead.
    removal_size : int, default=1
        Number of rows the changes to be estimated remove at once: 1 for leave-one-out
        and single-row queries, about n/K for K-fold cross-validation. Polishing stops
        (and the convergence warning is raised) when the distance to the optimum is 5%
        of such a change: the median leave-one-out step for 1, and for m rows
        ``√(m(1 − m/n))`` times the root-mean-square leave-one-out step (the expected
        size of m random leave-one-out steps added up). A larger removal tolerates a
        larger optimisation error, so it needs fewer Newton steps; answers for smaller
        removals are then less accurate.
    solver : str, default="auto"
        A registered solver (:data:`skinfluence.curvature.SOLVERS`: ``"dense"``, ``"cg"``,
        ``"lissa"``, ...). Linear models always use the dense Cholesky factorisation.
        ``"auto"`` is dense while p ≤ ``DENSE_MAX_PARAMS`` and CG beyond.
    curvature_sampler : sampler object, default=None
        Chooses the rows (with importance weights) that build the curvature; gradients,
        leave-one-out and attribution still use every row. None: all rows.
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"}, default="auto"
        Torch models only: where the work runs.
    dtype : {"float64", "float32"}, default="float64"
        Torch models only: precision of the influence computations.
    batch_size : int, default=4096
        Number of samples processed at a time; bounds memory.
    random_state : int, RandomState or None, default=None
        Seed for the randomised parts (Monte-Carlo Fisher, LiSSA, samplers).
    verbose : int, default=0
        Print the solver choice and the polishing result.

    Attributes
    ----------
    estimator_ : the fitted (possibly polished) model the influences refer to
    adapter_ : its :class:`~skinfluence.models.ModelAdapter`
    curvature_ : ndarray of shape (p, p) or CurvatureOperator
        The curvature, penalty included, damping excluded.
    curvature_solver_ : the solver object (see :mod:`skinfluence.curvature.solvers`)
    solver_, solver_reason_ : str
        The solver used and why.
    curvature_rows_, curvature_weights_ : ndarray or None
        Rows that built the curvature and their importance weights (None: all rows).
    convergence_ratio_ : float
        Newton step to the optimum relative to a typical change of ``removal_size`` rows.
    n_polish_steps_ : int
    sample_weight_ : ndarray of shape (n_samples,)
    y_encoded_ : ndarray
        Training targets as the loss reads them (class codes for classifiers).
    n_samples_, n_features_in_, feature_names_in_
    """

    _curvature_kind: str = ""
    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit"]), HasMethods(["forward"])],
        "prefit": ["boolean"],
        "damping": [Interval(Real, 0, None, closed="left")],
        "polish": ["boolean", StrOptions({"lbfgs"})],
        "removal_size": [Interval(Integral, 1, None, closed="left")],
        "solver": [str],
        "curvature_sampler": [HasMethods(["fit"]), None],
        "device": [str],
        "dtype": [StrOptions({"float64", "float32"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.sparse = True
        return tags

    def __init__(self, estimator, *, prefit=False, damping=0.0, polish=False, removal_size=1,
                 solver="auto", curvature_sampler=None, device="auto", dtype="float64",
                 batch_size=4096, random_state=None, verbose=0):
        self.estimator = estimator
        self.prefit = prefit
        self.damping = damping
        self.polish = polish
        self.removal_size = removal_size
        self.solver = solver
        self.curvature_sampler = curvature_sampler
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    def _adapter_options(self):
        return dict(device=self.device, dtype=self.dtype, batch_size=self.batch_size,
                    random_state=self.random_state)

    def model_adapter(self, estimator):
        """The adapter of another fitted ``estimator`` of the same kind, with this object's
        device, dtype and batch options."""
        return make_adapter(estimator, **self._adapter_options())

    def _fit_estimator(self, X, y, sample_weight):
        est, last = self.estimator, final_step(self.estimator)
        if is_torch_module(last):
            if not self.prefit:
                raise ValueError(f"a torch module ({type(last).__name__}) cannot be fitted by "
                                 "skinfluence: train it, then pass prefit=True")
            return copy.deepcopy(est)
        if self.prefit:
            check_is_fitted(last)
            return copy.deepcopy(est)
        est = clone(est)
        if getattr(final_step(est), "copy_X", True) is False:  # it would centre the user's X in place
            final_step(est).set_params(copy_X=True)
        return fit_weighted(est, X, y, sample_weight)

    def _check_options(self):
        if not np.isfinite(self.damping):
            raise ValueError(f"damping must be finite, got {self.damping!r}")
        if not _DEVICE.match(self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")
        if self.solver != "auto" and self.solver not in SOLVERS:
            raise ValueError(f"solver must be 'auto' or one of {sorted(SOLVERS)}, got {self.solver!r}")

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the estimator (unless ``prefit``) and factorise its curvature.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : object
        """
        self._check_options()
        y = check_target(y, type(self).__name__)
        check_consistent_length(X, y)
        est = self._fit_estimator(X, y, sample_weight)
        adapter = self.model_adapter(est)
        Z = adapter.design(X)
        # the influence refers to the data as fitted: never a view of the user's array
        self._Z = Z.copy() if Z is X or (isinstance(X, np.ndarray) and np.shares_memory(Z, X)) else Z
        validate_data(self, X, skip_check_array=True)   # n_features_in_, feature_names_in_
        y_enc = adapter.encode_target(y)
        if not adapter.is_classifier and not np.all(np.isfinite(y_enc)):
            raise ValueError("y contains NaN or infinity")
        self.y_encoded_ = y_enc
        self.sample_weight_ = check_sample_weight(sample_weight, len(y_enc))
        self.n_samples_ = len(y_enc)
        self.curvature_rows_ = self.curvature_weights_ = None
        if self.curvature_sampler is not None:
            sampler = clone(self.curvature_sampler).fit(X, y, estimator=est, logits=adapter.eta(self._Z))
            self.curvature_rows_ = np.asarray(sampler.sample_indices_)
            self.curvature_weights_ = np.asarray(sampler.sample_weight_, dtype=float)
        self.solver_, self.solver_reason_ = choose_solver(self.solver, adapter.n_params,
                                                          hasattr(adapter, "curvature_matvec"))
        model = self._build(adapter)
        if self.polish == "lbfgs":
            model = self._rebuild(model, lbfgs_finish(model), None, False)
        what = f"{type(est).__name__}" if not self.polish else f"{self._curvature_kind} curvature"
        advice = ("Train it longer (or in float64), or pass polish='lbfgs' to finish it with "
                  "full-batch L-BFGS on its objective." if is_torch_model(final_step(est)) else None)
        polisher = NewtonPolisher(self._rebuild, polish=bool(self.polish), what=what, advice=advice,
                                  removal_size=self.removal_size)
        model, self.convergence_ratio_, self.n_polish_steps_ = polisher.solve(model)
        self._set_model(model)
        if self.verbose:
            print(f"[{type(self).__name__}] solver={self.solver_!r} ({self.solver_reason_}); "
                  f"distance to the optimum {self.convergence_ratio_:.2g} of a typical change after "
                  f"{self.n_polish_steps_} Newton step(s)")
        return self

    def _build(self, adapter, eta=None, previous=None, target=None):
        """The model at ``adapter.theta``, with a new factorisation unless ``previous`` is given.

        ``target = (y, sample_weight)`` replaces the training targets and weights (a
        changed objective: rows removed by zero weights, or relabelled).
        """
        y, sw = target or (self.y_encoded_, self.sample_weight_)
        model = InfluenceModel(adapter, self._Z, y, sw, self._curvature_kind,
                               self.curvature_rows_, self.curvature_weights_, eta)
        if previous is not None:
            model.share_solver(previous)
            return model
        dense = SOLVERS[self.solver_].dense
        operator = model.curvature_operator(dense)
        solver = self._make_solver(operator, adapter)
        model.set_solver(solver, solver.curvature if dense else operator)
        return model

    def _rebuild(self, model, theta, eta, reuse_curvature, target=None):
        """``model`` moved to ``theta`` (polishing), refactorised unless ``reuse_curvature``."""
        adapter = self.model_adapter(model.adapter.with_params(theta))
        # the line search's outputs, unless the model stores θ rounded (float32)
        eta = eta if np.array_equal(adapter.theta, theta) else None
        return self._build(adapter, eta, model if reuse_curvature else None, target)

    def _make_solver(self, operator, adapter):
        """The solver of ``M = operator`` (a subclass may choose another, e.g. GIF's)."""
        cls = SOLVERS[self.solver_]
        active = adapter.penalty.active_set(adapter.theta) if cls.dense else None
        options = {} if cls.dense else {"random_state": self.random_state}
        return make_solver(self.solver_, operator, damping=self.damping,
                           null_space=adapter.null_space(), active=active, **options)

    def _set_model(self, model):
        self._model = model
        self.adapter_, self.estimator_ = model.adapter, model.adapter.estimator
        self.curvature_, self.curvature_solver_ = model.curvature, model.solver

    # --------------------------------------------------------------- public API
    def _fitted(self):
        check_is_fitted(self, "curvature_solver_")
        return self._model

    def _design(self, X):
        Z = self.adapter_.design(X)
        validate_data(self, X, reset=False, skip_check_array=True)  # the feature names seen in fit
        return Z

    def parameter_gradients(self, X, output_gradients):
        """Parameter gradients ``J_iᵀ G_i`` of a quantity given by its η-gradients on ``X``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (m, n_features)
        output_gradients : ndarray of shape (m,) or (m, K)
            Derivative of the quantity with respect to each row's natural-scale output
            (e.g. ``∂ℓ/∂η`` for the loss, ``dμ/dη / m`` for a mean prediction).

        Returns
        -------
        ndarray of shape (m, n_params)
        """
        self._fitted()
        G = np.asarray(output_gradients, dtype=float)
        return self.adapter_.gradients(self._design(X), G.reshape(len(G), -1))

    def influence_factors(self, X, y):
        """Factors ``M⁻¹ ∇ℓ(x_j, y_j)`` of test points (one solve each), shape (m, n_params).

        Scores follow from them by :meth:`influences_from_factors`, over any block of
        training rows; ``attribute(X, y)`` is the two in turn.
        """
        model = self._fitted()
        Z = self._design(X)
        y_enc = self.adapter_.encode_target(check_target(y, "influence_factors"))
        check_consistent_length(Z, y_enc)
        g = self.adapter_.loss.gradient(y_enc, self.adapter_.eta(Z))
        return _updates.influence_factors(model, self.adapter_.gradients(Z, g))

    def influences_from_factors(self, factors, indices=None):
        """Scores ``factorsᵀ v_i`` of training rows ``indices`` (all by default), shape (m, len)."""
        model = self._fitted()
        rows = np.arange(self.n_samples_) if indices is None else model.check_indices(indices)
        check_memory((np.atleast_2d(factors).shape[0], len(rows)), "the influence matrix")
        return _updates.scores_from_factors(model, np.atleast_2d(factors), rows, self.batch_size)

    def removal_effect(self, gradients):
        """First-order change ``∇fᵀ M⁻¹ v_i`` of quantities with gradients ``∇f`` (p,) or
        (m, p) when each training point is removed: shape (n_train,) or (m, n_train)."""
        model = self._fitted()
        grads = np.asarray(gradients, dtype=float)
        check_memory((np.atleast_2d(grads).shape[0], self.n_samples_), "the influence matrix")
        out = self.influences_from_factors(_updates.influence_factors(model, grads))
        return out[0] if grads.ndim == 1 else out

    def attribute(self, X, y):
        """Influence of each training point on the loss of each test point.

        Returns
        -------
        A : ndarray of shape (n_test, n_train)
            ``A[j, i]`` ≈ loss of test point j after removing training point i, minus its
            loss now (first order). Positive: training point i helps test point j.
        """
        factors = self.influence_factors(X, y)
        check_memory((factors.shape[0], self.n_samples_), "the influence matrix")
        return self.influences_from_factors(factors)

    def transform(self, X):
        """Change of the decision function for ``X`` (binary and regression: the linear
        predictor; multiclass: the predicted class's logit) when each training point is
        removed, to first order: shape (n_samples, n_train)."""
        self._fitted()
        ad = self.adapter_
        Z = self._design(X)
        J = ad.jacobians(Z)                                  # (m, K, p)
        J = J[np.arange(len(J)), ad.eta(Z).argmax(axis=1)] if ad.n_outputs > 1 else J[:, 0]
        return self.removal_effect(J)

    def loo_decision(self, method="ns"):
        """Approximate leave-one-out natural-scale outputs ``η_{-i}(x_i)``, shape (n, K)."""
        return _updates.loo_decision(self._fitted(), check_method(method), self.batch_size)

    def approx_loocv(self, method="ns", response_method="predict"):
        """Approximate leave-one-out predictions for every training point: what
        ``cross_val_predict(estimator, X, y, cv=LeaveOneOut(), method=response_method)``
        would return, from one fit (``method``: "ns" Newton step or "ij" jackknife)."""
        eta = self.loo_decision(method)
        return self.adapter_.response(eta, response_method)

    def self_influence(self, method="ns"):
        """Each training point's own leave-one-out loss increase, shape (n_samples,)
        (``"ns"``: the loss at the approximate LOO output; ``"ij"``: first order)."""
        model = self._fitted()
        if check_method(method) == "ij":
            return _updates.ij_self_influence(model, self.batch_size)
        loss = self.adapter_.loss
        return loss.loss(model.y, self.loo_decision("ns")) - loss.loss(model.y, model.eta)

    def parameter_change(self, indices, method="ns", steps=1):
        """Change of the parameter vector when training rows ``indices`` are removed.

        Parameters
        ----------
        indices : array-like of int or bool mask
        method : {"ns", "ij"}, default="ns"
            First step with the curvature without those rows, or with the full one.
        steps : int or "converge", default=1
            Newton steps on the objective without those rows (each rebuilds the curvature
            at the current parameters and is line-searched; proximal for ℓ1). One step is
            the influence approximation; ``"converge"`` iterates to the exact optimum
            (to a relative step of 1e-12), which for a GLM costs one Gram matrix and one
            factorisation per step. ``update_info_`` reports the steps taken and, with
            several, how far the first step was from the last.

        Returns
        -------
        ndarray of shape (n_params,)
        """
        return self._iterate(*self._removal(indices, method), steps)

    def _removal(self, indices, method):
        """The first step of removing ``indices``, and the changed ``(targets, weights)``."""
        model = self._fitted()
        idx = model.check_indices(indices)
        model.check_removal(idx)
        delta = _updates.newton_update(model, idx, model.g[idx], model.W[idx],
                                       model.share[idx].sum(), check_method(method))
        sw = self.sample_weight_.copy()
        sw[idx] = 0.0
        return delta, (model.y, sw)

    def unlearn(self, indices, method="ns", steps=1):
        """The model as if ``indices`` had not been in the training data (a new fitted
        estimator of the user's type; ``estimator_`` is unchanged). ``steps`` as in
        :meth:`parameter_change`; a single step that leaves much of the changed
        objective's gradient warns."""
        delta = self._iterate(*self._removal(indices, method), steps, check=True)
        return self.adapter_.with_params(self.adapter_.theta + delta)

    def relabel(self, indices, y_new, method="ns", steps=1):
        """The model as if training rows ``indices`` had labels ``y_new`` (a new estimator).

        ``steps`` as in :meth:`parameter_change`: one Newton step is a poor model of a
        confidently misclassified logistic loss, ``"converge"`` gives the refit's answer.
        """
        model = self._fitted()
        idx = model.check_indices(indices)
        ad = self.adapter_
        y_new = check_target(y_new, "relabel") if np.ndim(y_new) else np.asarray(y_new)
        if y_new.ndim and y_new.shape != idx.shape:
            raise ValueError(f"y_new has {len(y_new)} labels for {len(idx)} indices")
        y_new = ad.encode_target(np.broadcast_to(y_new, idx.shape))
        eta = model.eta[idx]
        g_new = ad.loss.gradient(y_new, eta)
        W_new = ad.loss.curvature(y_new, eta, self._curvature_kind)
        delta = _updates.newton_update(model, idx, model.g[idx] - g_new, model.W[idx] - W_new,
                                       0.0, check_method(method))
        y = model.y.copy()
        y[idx] = y_new
        return ad.with_params(ad.theta + self._iterate(delta, (y, self.sample_weight_), steps, True))

    def _iterate(self, delta, target, steps, check=False):
        """Δθ after ``steps`` Newton steps on the changed objective ``target = (y, weights)``,
        the first being ``delta``; reports in ``update_info_``.

        With one step and ``check``, the Newton decrement of the changed objective after the
        step, relative to before it (``√(gᵀM⁻¹g)``, 0 for a quadratic objective), says
        whether one step was in its regime; above 0.1 it warns.
        """
        if not (steps == "converge" or (isinstance(steps, Integral) and steps >= 1)):
            raise ValueError(f"steps must be a positive integer or 'converge', got {steps!r}")
        theta = self.adapter_.theta
        info = {"steps": 1, "converged": None, "one_step_error": None}
        if steps == 1 and check and self.adapter_.penalty.is_smooth:
            ratio = self._decrement_ratio(delta, target)
            info["decrement_ratio"] = ratio
            if ratio > 0.1:
                warnings.warn(
                    f"one Newton step leaves {ratio:.0%} of the changed objective's Newton "
                    "decrement: the one-step answer is far from the refit's (large or confidently "
                    "fitted changes); pass steps='converge'", InfluenceWarning, stacklevel=3)
        if steps != 1:
            start = self._build(self.model_adapter(self.adapter_.with_params(theta + delta)),
                                target=target)
            here = self._build(self.adapter_, target=target)
            first = 1
            if here.objective(theta, here.eta) < start.objective(start.adapter.theta, start.eta):
                start, first = here, 0  # the first step overshot: damped Newton from θ̂ instead
            polisher = NewtonPolisher(partial(self._rebuild, target=target), polish=True,
                                      threshold=1e-6, target=1e-12, yardstick="parameters",
                                      max_steps=50 if steps == "converge" else steps - 1)
            model, ratio, n = polisher.solve(start)
            final = model.adapter.theta - theta
            info = {"steps": first + n, "converged": bool(ratio <= 1e-6),
                    "one_step_error": float(np.linalg.norm(delta - final)
                                            / max(np.linalg.norm(final), 1e-300))}
            delta = final
        self.update_info_ = info
        return delta

    def _decrement_ratio(self, delta, target):
        """``√(g₁ᵀM⁻¹g₁ / g₀ᵀM⁻¹g₀)``: the changed objective's gradient after and before the step."""
        y, sw = target
        ad, solve = self.adapter_, self._model.solver.solve
        gradients = []
        for adapter in (ad, self.model_adapter(ad.with_params(ad.theta + delta))):
            m = InfluenceModel(adapter, self._Z, y, sw, self._curvature_kind)
            gradients.append(m.data_grad + adapter.penalty.gradient(adapter.theta))
        g0, g1 = gradients
        before = float(g0 @ solve(g0))
        return float(np.sqrt(max(g1 @ solve(g1), 0.0) / before)) if before > 0 else 0.0

    def cv_decision(self, test_folds, method="ns"):
        """Approximate held-out outputs of each fold (an iterable of index arrays), shape
        (n, K); rows in no fold are NaN, a row in several keeps its last."""
        return _updates.cv_decision(self._fitted(), test_folds, check_method(method))


class HessianInfluence(BaseInfluence):
    """Classical influence functions, with the Hessian of the training objective.

    See :class:`BaseInfluence` for the parameters, attributes and methods. For a GLM with
    a canonical link (logistic, Poisson with log link, linear) the Hessian equals the
    Fisher and both estimators agree.
    """

    _curvature_kind = "hessian"


class FisherInfluence(BaseInfluence):
    """Approximate Fisher influence functions (AFIF, Lev & Wilson).

    The Hessian is replaced by the Fisher information of the exponential-family loss
    (for a GLM ``Xᵀ W X`` with ``W = h'(η)² / V(μ)``; for a network the generalised
    Gauss–Newton ``Σ J_iᵀ Λ_i J_i``), which is positive semi-definite and needs no
    second derivative of the model. See :class:`BaseInfluence` for the other parameters.

    Parameters
    ----------
    fisher : {"exact", "mc", "empirical"}, default="exact"
        Torch models: analytic output Fisher, labels sampled from the model, or observed
        labels (gradient outer products). Linear models use the analytic Fisher.
    """

    _curvature_kind = "fisher"
    _parameter_constraints = {**BaseInfluence._parameter_constraints,
                              "fisher": [StrOptions({"exact", "mc", "empirical"})]}

    def __init__(self, estimator, *, fisher="exact", prefit=False, damping=0.0, polish=False,
                 removal_size=1, solver="auto", curvature_sampler=None, device="auto",
                 dtype="float64", batch_size=4096, random_state=None, verbose=0):
        super().__init__(estimator, prefit=prefit, damping=damping, polish=polish,
                         removal_size=removal_size, solver=solver,
                         curvature_sampler=curvature_sampler, device=device, dtype=dtype,
                         batch_size=batch_size, random_state=random_state, verbose=verbose)
        self.fisher = fisher

    def _adapter_options(self):
        return {**super()._adapter_options(), "fisher": self.fisher}
