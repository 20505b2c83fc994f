"""The influence estimators: a thin scikit-learn shell over the engine.

Each estimator chooses a curvature (``_curvature_kind``), a solver (its one hook,
:meth:`BaseInfluence._choose_solver`, called once per fit) and the rows that build the
curvature (``curvature_sampler``); the state lives in the fitted engine
(:class:`~._model.InfluenceEngine`, ``engine_``) and every query is written once in
:mod:`._updates`.
"""

from __future__ import annotations

import copy
import inspect
import re
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_consistent_length, check_is_fitted, validate_data

from .._sklearn_compat import HasMethods, Interval, StrOptions, _fit_context
from .._parallel import FitStages
from .._utils import (check_sample_weight, check_target, final_step, is_torch_model,
                      is_torch_module, parse_bytes)
from ..curvature.dual import DUAL_MAX_FREE  # (importing it registers solver="dual")
from ..curvature.solvers import SOLVERS, check_solver_options, choose_solver
from ..models import make_adapter
from ..refit import fit_weighted
from ._diagnostics import DiagnosticsMixin
from ._model import AUTO_DAMPING, EngineSpec, InfluenceEngine, SolverChoice
from ..curvature.operators import CurvatureOperator
from ._polish import polish_engine
from ._queries import InfluenceQueries

__all__ = ["BaseInfluence", "HessianInfluence", "FisherInfluence", "AUTO_DAMPING"]

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


_PARAMETERS = """    estimator : estimator object
        A supported scikit-learn linear model (LogisticRegression, LinearRegression,
        Ridge, Lasso, ElasticNet, PoissonRegressor, GammaRegressor, TweedieRegressor,
        SGDClassifier with ``loss="log_loss"``), a Pipeline ending in one, or a skorch
        net / torch module. It is cloned and fitted by :meth:`fit` unless ``prefit``.
    prefit : bool, default=False
        Use the already fitted ``estimator`` as it is (a deep copy; the user's object is
        never modified).
    damping : float or "auto", default=0.0
        Added to the diagonal of the curvature. Needed when it is singular (no penalty
        and collinear features, unpenalised multinomial with separable data) or
        indefinite (a Hessian away from a minimum). ``"auto"``: for networks
        ``AUTO_DAMPING`` (0.1) times the curvature's mean eigenvalue ``trace(M)/p``
        (estimated by Hutchinson probes for iterative solvers), which raised the linear
        datamodeling score of every network in ``benchmarks/attribution_quality.py``
        (digits MLP Hessian 0.828 → 0.861, Fisher 0.819 → 0.823; CNN Fisher 0.548 →
        0.554, and its Hessian, indefinite undamped, 0.589); 0 for linear models, where it
        only cost leave-one-out accuracy. The value used is ``damping_``. Changed after
        ``fit`` (``set_params(damping=...)``), the next query re-solves from what ``fit``
        kept, without rebuilding the curvature (a sweep of dampings costs no refit).
    polish : bool or "lbfgs", default=False
        If the fitted parameters are too far from the optimum for the approximation to
        be meaningful, take Newton steps with the curvature (proximal Newton steps for
        ℓ1) until they are not, and use the polished model as ``estimator_``. ``"lbfgs"``
        first minimises the model's own objective by full-batch L-BFGS in float64, the
        finisher for networks trained by minibatch optimisers (whose Gauss–Newton steps
        stall far from the optimum), then checks and, near the optimum, takes Newton steps. If False, an
        :class:`~skinfluence.exceptions.InfluenceWarning` is raised instead. One policy
        (see ``removal_size``) serves every entry point; model selection
        (``approx_cross_val_*``, the searches) and the command line polish by default
        (``polish=True``) because their answers are compared with refits to the optimum.
    polish_options : dict, default=None
        ``polish="lbfgs"``'s ``{"max_iter": 2000, "tol": 1e-3}``: at most ``max_iter``
        L-BFGS iterations (one gradient evaluation each, a few more for line searches),
        stopping once the objective's gradient is ``tol`` times a typical row's removal
        gradient ``‖c_i ∇ℓ_i + s_i ∇π‖`` (measured as it goes), or early when its rate says
        the cap cannot be met (the warning then says how many iterations it would need).
        The curvature is then built once, where L-BFGS stopped, and the distance to the
        optimum checked; with the Hessian (``HessianInfluence``) and within one typical
        change of it, at most two exact Newton steps follow (each rebuilds the curvature
        of a network). ``polish_info_`` reports what L-BFGS did.
    removal_size : int, default=1
        Number of rows the changes to be estimated remove at once: 1 for leave-one-out
        and single-row queries, about n/K for K-fold cross-validation. For 1, polishing
        stops (and the convergence warning is raised) when the distance to the optimum
        is 5% of the median leave-one-out step, and removal steps assume the fit is at
        the optimum. For m > 1 rows, removal steps are Newton steps on the changed
        objective's own gradient (the fit's residual gradient kept), whose error from
        the optimisation error is second order, so polishing stops when the distance is
        ``RESIDUAL_TARGET`` (1) times a typical change of m rows (``√(m(1 − m/n))``
        times the root-mean-square leave-one-out step), both in the curvature's norm:
        fewer Newton steps. Approximate cross-validation fits with the smallest
        split's removal size, so ``cv_decision`` of such an estimator equals
        ``approx_cross_val_predict`` on the same folds.
    solver : str, default="auto"
        A registered solver (:data:`skinfluence.curvature.SOLVERS`: ``"dense"``, ``"dual"``,
        ``"cg"``, ``"lissa"``, ``"nystrom"``, ``"arnoldi"``, ...). ``"auto"`` chooses by shape
        and says why in ``solver_reason_``: dense while p ≤ ``DENSE_MAX_PARAMS`` and p ≤ n (or
        p ≤ 2,000); for a linear model with an ℓ2 penalty and more features than rows
        (sparse text), the n·K × n·K dual form ``"dual"`` (K outputs); CG beyond
        ``DENSE_MAX_PARAMS``. An ℓ1 penalty always takes the dense curvature. For networks
        far beyond the dense limit ``"nystrom"`` and ``"arnoldi"`` invert a low-rank
        approximation of the curvature (they need ``damping > 0``, e.g. ``"auto"``);
        ``"kfac"``, ``"ekfac"`` (per-layer Kronecker factors of ``nn.Linear`` / ``nn.Conv2d``
        layers, or of a linear model), ``"ekfac_cg"`` (CG on the exact curvature,
        preconditioned by EK-FAC) and ``"ekfac_lr"`` (EK-FAC with a low-rank correction
        fitted once) scale to millions of parameters.
    solver_options : dict, default=None
        Keyword options of the chosen solver, e.g. ``{"rank": 200, "oversampling": 20}``
        for ``"nystrom"``, ``{"rank": 200, "tol": 1e-8}`` for ``"arnoldi"``,
        ``{"tol": 1e-8, "max_iter": 500}`` for ``"cg"`` (``maxiter``, the old spelling, is
        accepted with a FutureWarning), ``{"redamp": "eigen"}`` for ``"dense"`` (re-damping
        from the curvature's eigendecomposition rather than a Cholesky per damping). Each solver declares its options
        (``Solver.options``); unknown keys raise, naming the valid ones.
    curvature_sampler : sampler object, default=None
        Chooses the rows (with importance weights) that build the curvature; gradients,
        leave-one-out and attribution still use every row. None: all rows.
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"}, default="auto"
        Torch models only: where the work runs.
    dtype : {"auto", "float64", "float32"}, default="auto"
        Torch models only: precision of the network's products (Jacobians, gradients,
        curvature products). ``"auto"``: the network's own dtype (float32 unless it is a
        float64 network), at the speed of its own training; curvatures are accumulated
        and factorised in float64 whatever it is. Linear models always work in float64.
    batch_size : int, default=4096
        Number of samples processed at a time (rows per Jacobian block); bounds memory.
    memory_budget : int or str, default="512MiB"
        Working memory of the streamed queries (:meth:`attribute`, :meth:`self_influence`,
        leave-one-out), in bytes or as ``"512MiB"``, ``"2GB"``: blocks of test and training
        rows are sized so that their arrays fit in it, shared among the ``n_jobs``
        workers. What a query returns (e.g. the full attribution matrix) and what the
        fitted estimator holds (its copy of the data, the curvature's factors) come on top:
        on a 1.23M-parameter CNN with 10,000 images, ``"768MiB"`` kept the whole process
        under 2 GiB (``benchmarks/RESULTS_scale.md``).
    n_jobs : int, default=None
        Workers (joblib) over blocks of test rows in :meth:`attribute` and of training
        rows in ``self_influence("ij")``; ``None`` means 1 unless in a
        ``joblib.parallel_config`` context (e.g. ``backend="dask"`` for a Dask cluster).
        BLAS threads are limited inside the workers; results equal the sequential ones.
    random_state : int, RandomState or None, default=None
        Seed for the randomised parts (Monte-Carlo Fisher, LiSSA, samplers).
    verbose : int, default=0
        Print the solver choice and the polishing result; from 1, show progress bars (fit
        stages, blocks of attribution and self-influence, CG and LiSSA iterations).
"""

_ATTRIBUTES = """    estimator_ : estimator
        The fitted (possibly polished) model the influences refer to.
    adapter_ : ModelAdapter
        Its :class:`~skinfluence.models.ModelAdapter`.
    curvature_ : ndarray of shape (n_params, n_params) or CurvatureOperator
        The curvature, penalty included, damping excluded.
    damping_ : float
        The damping used (``damping="auto"`` resolved).
    curvature_solver_ : Solver
        The solver object (see :mod:`skinfluence.curvature.solvers`).
    solver_ : str
        The solver used.
    solver_reason_ : str
        Why it was chosen.
    curvature_rows_ : ndarray of int or None
        Rows that built the curvature (None: all rows).
    curvature_weights_ : ndarray or None
        Their importance weights.
    convergence_ratio_ : float
        Newton step to the optimum relative to a typical change of ``removal_size`` rows.
    n_polish_steps_ : int
        Newton steps polishing took.
    update_info_ : dict
        Set by :meth:`unlearn`, :meth:`relabel` and :meth:`parameter_change`: the Newton
        steps taken, whether they converged, how far the first step was from the last
        (``one_step_error``), and ``error_estimate``: the estimated error ``‖Δθ − Δθ_refit‖``
        of the answer (one step, from :meth:`unlearn` and :meth:`relabel`: the next Newton
        step on the changed objective; converged: the last step).
    loo_info_ : dict
        Set by :meth:`approx_loocv` and :meth:`loo_decision` with ``return_error`` or
        ``refine``: ``"error"`` (estimated error of each leave-one-out output),
        ``"param_error"`` (of its parameters) and ``"refined"`` (the rows converged exactly).
    sample_weight_ : ndarray of shape (n_samples,)
        The training weights.
    y_encoded_ : ndarray of shape (n_samples,)
        Training targets as the loss reads them (class codes for classifiers).
    n_samples_ : int
        Number of training rows.
    n_features_in_ : int
        Number of features seen in :meth:`fit`.
    feature_names_in_ : ndarray of str
        Their names, where ``X`` had string column names.
"""


#: the parameters every influence estimator shares, with their defaults, written once (the
#: constructors are :func:`influence_init`'s); model selection and fairness validate the
#: ones they share through ``BaseInfluence._parameter_constraints``
PARAMETERS = {"prefit": False, "damping": 0.0, "polish": False, "removal_size": 1,
              "solver": "auto", "solver_options": None, "curvature_sampler": None,
              "device": "auto", "dtype": "auto", "batch_size": 4096,
              "memory_budget": "512MiB", "n_jobs": None, "random_state": None, "verbose": 0,
              "polish_options": None}


def influence_init(**own):
    """The constructor of an influence estimator, written once.

    Parameters
    ----------
    **own
        The estimator's own parameters and their defaults, before the shared ones
        (``PARAMETERS``: ``prefit``, ``damping``, ``polish``, ``removal_size``, ``solver``,
        ``solver_options``, ...).

    Returns
    -------
    callable
        ``__init__(self, estimator, *, <own>, <PARAMETERS>)``, which stores every argument
        as an attribute (scikit-learn's convention), with a real signature for
        ``get_params``.
    """
    P = inspect.Parameter
    params = ([P("self", P.POSITIONAL_OR_KEYWORD), P("estimator", P.POSITIONAL_OR_KEYWORD)]
              + [P(name, P.KEYWORD_ONLY, default=value) for name, value in {**own, **PARAMETERS}.items()])
    signature = inspect.Signature(params)

    def __init__(self, estimator, **kwargs):
        bound = signature.bind(self, estimator, **kwargs)
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            setattr(self, name, value)

    __init__.__signature__ = signature
    __init__.__doc__ = "Store the parameters (see the class docstring)."
    return __init__


class BaseInfluence(DiagnosticsMixin, InfluenceQueries, TransformerMixin, BaseEstimator):
    __doc__ = f"""Shared machinery of the influence estimators (use a subclass).

    Parameters
    ----------
{_PARAMETERS}
    Attributes
    ----------
{_ATTRIBUTES}"""

    _curvature_kind: str = ""
    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit"]), HasMethods(["forward"])],
        "prefit": ["boolean"],
        "damping": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "polish": ["boolean", StrOptions({"lbfgs"})],
        "removal_size": [Interval(Integral, 1, None, closed="left")],
        "solver": [str],
        "solver_options": [dict, None],
        "curvature_sampler": [HasMethods(["fit"]), None],
        "device": [str],
        "dtype": [StrOptions({"auto", "float64", "float32"})],
        "polish_options": [dict, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "memory_budget": [Interval(Integral, 1, None, closed="left"), str],
        "n_jobs": [Integral, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    # defined in the class itself, so that scikit-learn's set_output wraps its output
    transform = InfluenceQueries.transform

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.sparse = True
        return tags

    __init__ = influence_init()

    # ------------------------------------------------------------------ fitting
    def _adapter_options(self):
        return dict(device=self.device, dtype=self.dtype, batch_size=self.batch_size,
                    random_state=self.random_state)

    def model_adapter(self, estimator):
        """The model adapter of a fitted ``estimator``, with this object's device, dtype and
        batch options.

        Parameters
        ----------
        estimator : fitted estimator
            A model of the kinds :func:`~skinfluence.models.make_adapter` supports.

        Returns
        -------
        ModelAdapter
        """
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
        if self.damping != "auto" and not np.isfinite(self.damping):
            raise ValueError(f"damping must be finite, got {self.damping!r}")
        parse_bytes(self.memory_budget)  # a clear error for a malformed size
        if not _DEVICE.match(self.device):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}")

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
        self._fit_params = None
        y = check_target(y, type(self).__name__)
        check_consistent_length(X, y)
        stages = FitStages(["estimator", "adapter", "curvature and factorisation", "polishing"],
                           self.verbose, f"{type(self).__name__}.fit")
        stages.start("estimator")
        est = self._fit_estimator(X, y, sample_weight)
        stages.start("adapter")
        adapter = self.model_adapter(est)
        Z = adapter.design(X)
        # the influence refers to the data as fitted: never a view of the user's array
        self._Z = Z.copy() if Z is X or (isinstance(X, np.ndarray) and np.shares_memory(Z, X)) else Z
        validate_data(self, X, skip_check_array=True)   # n_features_in_, feature_names_in_
        y_enc = adapter.encode_target(y)
        if not adapter.is_classifier and not np.all(np.isfinite(y_enc)):
            raise ValueError("y contains NaN or infinity")
        self.y_encoded_ = y_enc
        self._train_index = X.index if hasattr(X, "index") and hasattr(X, "columns") else None
        self.sample_weight_ = check_sample_weight(sample_weight, len(y_enc))
        self.n_samples_ = len(y_enc)
        self.curvature_rows_ = self.curvature_weights_ = None
        if self.curvature_sampler is not None:
            sampler = clone(self.curvature_sampler).fit(X, y, estimator=est, logits=adapter.eta(self._Z),
                                                        sample_weight=sample_weight)
            self.curvature_rows_ = np.asarray(sampler.sample_indices_)
            self.curvature_weights_ = np.asarray(sampler.sample_weight_, dtype=float)
        choice = self._choose_solver(adapter)
        self.solver_, self.solver_reason_ = choice.name, choice.reason
        for name, value in choice.attributes.items():
            setattr(self, name, value)
        spec = EngineSpec(self._curvature_kind, choice, self.damping, self._adapter_options(),
                          self.curvature_rows_, self.curvature_weights_, self.random_state,
                          self.batch_size, self.verbose)
        stages.start("curvature and factorisation")
        if self.polish == "lbfgs":   # its curvature is built once, where L-BFGS finishes
            engine = InfluenceEngine(adapter, self._Z, y_enc, self.sample_weight_, spec.kind,
                                     spec.rows, spec.row_weights, spec=spec)
        else:
            engine = InfluenceEngine.build(spec, adapter, self._Z, y_enc, self.sample_weight_)
        stages.start("polishing")
        what = f"{type(est).__name__}" if not self.polish else f"{self._curvature_kind} curvature"
        advice = ("Train it longer (or in float64), or pass polish='lbfgs' to finish it with "
                  "full-batch L-BFGS on its objective." if is_torch_model(final_step(est)) else None)
        if self.polish == "lbfgs":
            advice = None    # the finisher's own, from how it stopped
        engine, self.convergence_ratio_, self.n_polish_steps_ = polish_engine(
            engine, polish=self.polish, removal_size=self.removal_size, what=what, advice=advice,
            lbfgs_options=self.polish_options)
        stages.close()
        self.damping_ = spec.damping_
        self.polish_info_ = getattr(engine, "polish_info", None)
        self._set_engine(engine)
        self._fitted_damping = self.damping
        self._fit_params = self.get_params(deep=False)   # what later queries rebuild with
        if self.verbose:
            print(f"[{type(self).__name__}] solver={self.solver_!r} ({self.solver_reason_}); "
                  f"distance to the optimum {self.convergence_ratio_:.2g} of a typical change after "
                  f"{self.n_polish_steps_} Newton step(s)")
        return self

    def _choose_solver(self, adapter):
        """The one solver hook, called once per fit: a :class:`~._model.SolverChoice`
        (registered solver, why, its options, fitted attributes to expose). ``solver="auto"``
        chooses by the shape of the problem. A subclass (GIF) returns its own choice; the
        hook has no side effects."""
        if self.solver != "auto" and self.solver not in SOLVERS:
            raise ValueError(f"solver must be 'auto' or one of {sorted(SOLVERS)}, got {self.solver!r}")
        pen = adapter.penalty
        gram = adapter.has_gram   # a linear model: M = ZᵀCZ + D
        damped = self.damping != "auto" and self.damping > 0
        dual_ok = gram and (damped or (pen.l2 > 0 and (pen.scale == 0).sum() <= DUAL_MAX_FREE))
        rows = self.n_samples_ if self.curvature_rows_ is None else len(self.curvature_rows_)
        name, reason = choose_solver(self.solver, adapter.n_params, adapter.is_network or gram,
                                     n_samples=rows, n_outputs=adapter.n_outputs,
                                     dual_ok=dual_ok, smooth=pen.is_smooth)
        return SolverChoice(name, reason, check_solver_options(name, self.solver_options))

    def _set_engine(self, engine):
        self.engine_ = engine
        self.adapter_, self.estimator_ = engine.adapter, engine.adapter.estimator
        self.curvature_, self.curvature_solver_ = engine.curvature, engine.solver

    def _sync_damping(self):
        """Re-solve at ``damping`` if it was changed since :meth:`fit` (``set_params``), from
        what the fit kept: the dense curvature (refactorised, or its eigendecomposition), the
        curvature operator, low-rank or Kronecker factors; the engine, its gradients and its
        curvature are not rebuilt. Where the new damping leaves the curvature singular the
        error is raised and the fitted damping stays in force."""
        engine = self.engine_
        if self.damping == getattr(self, "_fitted_damping", self.damping):
            return
        spec, curvature = engine.spec, engine.curvature
        dense = getattr(engine.solver, "dense", False)
        operator = (CurvatureOperator.from_matrix(curvature) if isinstance(curvature, np.ndarray)
                    else curvature)
        resolved = copy.copy(spec)     # the spec changes only once the new solver stands
        resolved.damping = self.damping
        resolved.damping_ = resolved.resolve_damping(operator, engine.adapter, dense)
        solver = engine.solver.with_damping(resolved.damping_)
        if solver is None and engine.solver.traces_curvature:   # factors damped at solve time
            solver = copy.copy(engine.solver).redamp(resolved.damping_)
        if solver is None:   # a solver that keeps nothing damping-free: made anew
            solver = resolved.make_solver(operator, engine.adapter)
        vars(solver).pop("_inverse", None)   # a copy's cached M⁻¹ is the old damping's
        spec.damping, spec.damping_ = resolved.damping, resolved.damping_
        engine.solver = solver
        engine.curvature = solver.curvature if dense else curvature
        engine._typical_loo = None
        self.damping_ = spec.damping_
        self._fitted_damping = self.damping
        self._set_engine(engine)


class HessianInfluence(BaseInfluence):
    __doc__ = f"""Classical influence functions, with the Hessian of the training objective.

    For a GLM with a canonical link (logistic, Poisson with log link, linear) the Hessian
    equals the Fisher and both estimators agree; for a non-canonical link (Gamma,
    Tweedie with a log link) or a network the Hessian can be indefinite away from a
    minimum (then pass ``damping``, or use :class:`FisherInfluence`).

    Parameters
    ----------
{_PARAMETERS}
    Attributes
    ----------
{_ATTRIBUTES}
    See Also
    --------
    FisherInfluence : the Fisher (Gauss–Newton) curvature instead.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skinfluence import HessianInfluence
    >>> X, y = make_classification(200, 5, random_state=0)
    >>> inf = HessianInfluence(LogisticRegression(tol=1e-10)).fit(X, y)
    >>> inf.attribute(X[:3], y[:3]).shape
    (3, 200)
    >>> inf.approx_loocv(response_method="predict_proba").shape
    (200, 2)
    """

    _curvature_kind = "hessian"


class FisherInfluence(BaseInfluence):
    __doc__ = f"""Approximate Fisher influence functions (AFIF, Lev & Wilson).

    The Hessian is replaced by the Fisher information of the exponential-family loss
    (for a GLM ``Xᵀ W X`` with ``W = h'(η)² / V(μ)``; for a network the generalised
    Gauss–Newton ``Σ J_iᵀ Λ_i J_i``), which is positive semi-definite and needs no
    second derivative of the model.

    Parameters
    ----------
    fisher : {{"exact", "mc", "empirical"}}, default="exact"
        Torch models: analytic output Fisher, labels sampled from the model, or observed
        labels (gradient outer products). Linear models use the analytic Fisher.
{_PARAMETERS}
    Attributes
    ----------
{_ATTRIBUTES}
    See Also
    --------
    HessianInfluence : the Hessian curvature.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.linear_model import PoissonRegressor
    >>> from skinfluence import FisherInfluence
    >>> X, y = load_diabetes(return_X_y=True)
    >>> inf = FisherInfluence(PoissonRegressor(tol=1e-10), polish=True).fit(X, y)
    >>> inf.self_influence().shape
    (442,)
    >>> forgotten = inf.unlearn([0, 1, 2], steps="converge")   # a new PoissonRegressor
    >>> inf.update_info_["converged"]
    True
    """

    _curvature_kind = "fisher"
    _parameter_constraints = {**BaseInfluence._parameter_constraints,
                              "fisher": [StrOptions({"exact", "mc", "empirical"})]}

    __init__ = influence_init(fisher="exact")

    def _adapter_options(self):
        return {**super()._adapter_options(), "fisher": self.fisher}
