"""The fitted engine: a model, its per-sample pieces, its curvature and its solver.

The engine is the boundary between the estimators (a scikit-learn shell) and the maths:
everything a query, a stream, an iterated change or model selection needs of a fit is a
method of :class:`InfluenceEngine` (``estimator.engine_``). It owns rebuilding itself at
new parameters (polishing, Newton iterations) or on a changed objective (removed or
relabelled rows), from the :class:`EngineSpec` that the fit fixed once (curvature kind,
the solver chosen by the estimator's one hook, its options, the damping).

Notation (docs/user_guide/maths.rst): the fitted model minimises ``Σ_i c_i ℓ_i(θ) + π(θ)``. Per
training row it keeps the outputs ``η_i``, the loss gradients ``g_i = ∂ℓ_i/∂η`` and the
output curvatures ``W_i`` (Hessian or Fisher of ℓ_i in η), the data weights ``c_i``
and, for estimators that average their data term, ``s_i`` = the row's share of the
total weight (removing rows then also shifts the penalty's relative weight).

**Curvature rows.** The curvature ``M = Σ_{i∈S} w_i c_i J_iᵀ W_i J_i + ∇²π`` is built from
the rows ``S`` with importance weights ``w`` (all rows with ``w = 1`` unless a curvature
sampler chose a subset), while gradients, leave-one-out and attribution always cover
every row. ``M`` then estimates the full-data curvature, and a down-date for removed
rows ``U`` subtracts what the sample holds of them, ``Σ_{i∈U∩S} w_i c_i J_iᵀ W_i J_i``
(:func:`~._updates.held_weights`): the sampled curvature of the remaining rows, an
unbiased estimate of theirs and, for a Fisher, positive semi-definite (their exact terms,
of which the sample may hold less, could leave it indefinite).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._utils import check_memory
from ..curvature.operators import CurvatureOperator, model_curvature
from ..curvature.solvers import SOLVERS, make_solver
from ..models import make_adapter
from . import _updates

__all__ = ["InfluenceEngine", "EngineSpec", "SolverChoice", "AUTO_DAMPING"]

#: ``damping="auto"`` for networks: this fraction of the curvature's mean eigenvalue
AUTO_DAMPING = 0.1


class SolverChoice:
    """What an estimator's solver hook (``_choose_solver``) decides, once per fit.

    Parameters
    ----------
    name : str
        A registered solver (:data:`skinfluence.curvature.solvers.SOLVERS`).
    reason : str
        Why it was chosen (the estimator's ``solver_reason_``).
    options : dict, default=None
        Its keyword options (declared by the solver class).
    attributes : dict, default=None
        Fitted attributes the estimator then exposes (e.g. GIF's ``parameter_mask_``).
    """

    def __init__(self, name, reason, options=None, attributes=None):
        self.name, self.reason = name, reason
        self.options = dict(options or {})
        self.attributes = dict(attributes or {})


class EngineSpec:
    """How a fit builds its engine at any parameters or targets, fixed once in ``fit``.

    Parameters
    ----------
    kind : {"hessian", "fisher"}
    choice : SolverChoice
    damping : float or "auto"
        As requested; resolved (``damping_``) when the first curvature is built.
    adapter_options : dict
        Passed to :func:`~skinfluence.models.make_adapter` for a model at new parameters.
    rows, row_weights : ndarray or None
        The curvature rows and their importance weights.
    random_state, batch_size, verbose :
        The estimator's (solver seeds, rows per block, progress bars).
    """

    def __init__(self, kind, choice, damping, adapter_options, rows=None, row_weights=None,
                 random_state=None, batch_size=4096, verbose=0):
        self.kind, self.choice, self.damping = kind, choice, damping
        self.adapter_options = adapter_options
        self.rows, self.row_weights = rows, row_weights
        self.random_state, self.batch_size, self.verbose = random_state, batch_size, verbose
        self.damping_ = None

    def adapter(self, estimator):
        """The adapter of ``estimator`` with the fit's device, dtype and batch options."""
        return make_adapter(estimator, **self.adapter_options)

    def resolve_damping(self, operator, adapter, dense):
        """The damping used: as given, or ``"auto"``'s fraction of the mean eigenvalue."""
        if self.damping != "auto":
            return float(self.damping)
        if not adapter.is_network:  # a linear model
            return 0.0
        p = adapter.n_params
        if dense:
            trace = float(np.trace(operator.dense()))
        else:  # Hutchinson: E[vᵀMv] = trace(M) for Rademacher v
            rs = self.random_state
            V = np.random.default_rng(rs if isinstance(rs, int) else 0).choice([-1.0, 1.0], size=(p, 16))
            trace = float(np.mean(np.einsum("pm,pm->m", V, operator.matvec(V))))
        return AUTO_DAMPING * max(trace, 0.0) / p

    def make_solver(self, operator, adapter, damping=False):
        """The chosen solver of ``M = operator``, damped by ``damping_`` unless ``damping`` is given."""
        choice = self.choice
        cls = SOLVERS[choice.name]
        active = adapter.penalty.active_set(adapter.theta) if cls.dense else None
        options = {}
        if cls.uses_random_state:
            options["random_state"] = self.random_state
        if cls.uses_batch_size:
            options["batch_size"] = self.batch_size
        options.update(choice.options)
        solver = make_solver(choice.name, operator, damping=self.damping_ if damping is False else damping,
                             null_space=adapter.null_space(), active=active, **options)
        solver.verbose = self.verbose   # progress bars of iterative solvers
        return solver


class InfluenceEngine:
    """A fitted model (``adapter``) with its per-sample state and, once built, its solver.

    Parameters
    ----------
    adapter : ModelAdapter
    Z, y : the design and encoded targets of the training rows
    sample_weight : ndarray of shape (n,)
    kind : {"hessian", "fisher"}
    rows, row_weights : ndarray, optional
        The rows that build the curvature and their importance weights (all, 1).
    eta : ndarray, optional
        The outputs at ``adapter.theta`` if already known.
    spec : EngineSpec, optional
        How to rebuild (:meth:`at`, :meth:`with_target`); engines made by :meth:`build`
        carry it.

    Attributes
    ----------
    c, share, eta, g, W : per-row data weights, penalty shares, outputs, loss gradients
        ``∂ℓ/∂η`` and output curvatures (the adapter's ``output_curvature``, computed once:
        the same ``W_i`` build the curvature and its down-dates).
    solver, curvature : the solver and the curvature it inverts (damping excluded)
    residual : bool
        Whether removal steps keep the fit's residual gradient (set by the polishing
        policy, :func:`~._polish.polish_engine`).
    """

    def __init__(self, adapter, Z, y, sample_weight, kind, rows=None, row_weights=None, eta=None,
                 spec=None):
        self.adapter, self.Z, self.y, self.kind = adapter, Z, y, kind
        self.n = len(y)
        self.rows, self.row_weights = rows, row_weights
        self.spec = spec
        sw = self.sample_weight = sample_weight
        self.c = adapter.data_weights(y, sw)
        self.share = sw / sw.sum() if adapter.mean_scaled else np.zeros(self.n)
        self.eta = adapter.eta(Z) if eta is None else eta
        self.g = adapter.loss.gradient(y, self.eta)
        self.W = adapter.output_curvature(y, self.eta, kind)
        self.data_grad = adapter.total_gradient(Z, self.c[:, None] * self.g)
        self.pen_grad = adapter.penalty.gradient(adapter.theta)
        self.solver = self.curvature = None
        self.residual = False
        self._typical_loo = None

    # ---------------------------------------------------------------- building
    @classmethod
    def build(cls, spec, adapter, Z, y, sample_weight, eta=None, previous=None):
        """The engine at ``adapter.theta`` on targets ``(y, sample_weight)``, with a new
        factorisation unless ``previous`` (whose solver it then shares) is given."""
        engine = cls(adapter, Z, y, sample_weight, spec.kind, spec.rows, spec.row_weights, eta, spec)
        if previous is not None:
            engine.solver, engine.curvature = previous.solver, previous.curvature
            engine._typical_loo = previous._typical_loo
            return engine
        dense = SOLVERS[spec.choice.name].dense
        operator = engine.curvature_operator(dense)
        if dense:  # built once, for the damping and the solver alike
            operator = CurvatureOperator.from_matrix(operator.dense())
        if spec.damping_ is None and spec.damping == "auto" and SOLVERS[spec.choice.name].traces_curvature:
            solver = spec.make_solver(operator, adapter, damping=None)   # its trace is exact and free
            spec.damping_ = AUTO_DAMPING * max(solver.trace(), 0.0) / adapter.n_params
            solver.redamp(spec.damping_)
        else:
            if spec.damping_ is None:
                spec.damping_ = spec.resolve_damping(operator, adapter, dense)
            solver = spec.make_solver(operator, adapter)
        engine.solver, engine.curvature = solver, solver.curvature if dense else operator
        return engine

    def at(self, theta, eta=None, reuse_curvature=False):
        """This engine moved to ``theta`` (outputs ``eta`` if known), on the same targets;
        refactorised unless ``reuse_curvature``."""
        adapter = self.adapter.moved(theta, **self.spec.adapter_options)
        # the line search's outputs, unless the model stores θ rounded (float32)
        eta = eta if eta is not None and np.array_equal(adapter.theta, theta) else None
        return self.build(self.spec, adapter, self.Z, self.y, self.sample_weight, eta,
                          self if reuse_curvature else None)

    def with_target(self, y, sample_weight, theta=None):
        """The engine of a changed objective (rows removed by zero weights, or relabelled)
        at ``theta`` (default: here), with its own factorisation."""
        adapter = self.adapter if theta is None else self.adapter.moved(theta, **self.spec.adapter_options)
        return self.build(self.spec, adapter, self.Z, y, sample_weight)

    def curvature_operator(self, dense):
        """The curvature (penalty included) as an operator over the curvature rows; with
        ``dense`` its matrix is built (and the memory it needs checked) first."""
        ad = self.adapter
        if dense:
            try:
                check_memory((ad.n_params, ad.n_params), "the curvature")
            except MemoryError as error:
                raise MemoryError(f"{error}. {self._memory_advice()}") from None
        if self.rows is None:
            Z, y, c, eta, W = self.Z, self.y, self.c, self.eta, self.W
        else:
            r = self.rows
            Z, y, c, eta, W = self.Z[r], self.y[r], self.c[r] * self.row_weights, self.eta[r], self.W[r]
        weights = W * c[:, None, None]
        return model_curvature(ad, Z, y, c, self.kind, eta, weights).add_diagonal(
            ad.penalty.hessian_diagonal())

    def _memory_advice(self):
        """Which solver works where the dense curvature does not fit."""
        ad = self.adapter
        if not ad.penalty.is_smooth:
            return ("An ℓ1 penalty needs the dense curvature for its proximal steps: select fewer "
                    "features (e.g. SelectKBest) or use an ℓ2 penalty with solver='dual' or 'cg'")
        if ad.has_gram:
            return ("Pass solver='dual' (the n × n dual form, for more parameters than rows "
                    "and an ℓ2 penalty) or solver='cg' (curvature-vector products)")
        return "Pass solver='cg' (curvature-vector products) or select fewer parameters"

    def needs_new_curvature(self, theta, ratio):
        """Whether a step to ``theta`` moves the curvature by more than the error of a Newton
        step (a network's always; a non-quadratic GLM's beyond a leave-one-out step; any
        change of an ℓ1 support)."""
        ad = self.adapter
        return (ad.is_network or (ratio > 1 and not ad.constant_curvature)
                or not np.array_equal(ad.penalty.active_set(theta), self.solver.active))

    # ------------------------------------------------------------ the objective
    def objective(self, theta, eta):
        """``Σ c_i ℓ_i + π`` at ``theta`` with outputs ``eta``, up to a constant."""
        ad = self.adapter
        return float(self.c @ ad.loss.loss(self.y, eta)) + ad.penalty.value(theta)

    def objective_gradient(self, y, sample_weight, theta=None):
        """``∇(Σ c'_i ℓ_i + π)`` of the objective with targets ``(y, sample_weight)`` at
        ``theta`` (default: here), without building an engine there."""
        ad = self.adapter
        c = ad.data_weights(y, sample_weight)
        eta = self.eta if theta is None else ad.eta(self.Z, theta)
        th = ad.theta if theta is None else theta
        G = c[:, None] * ad.loss.gradient(y, eta)
        return ad.total_gradient(self.Z, G, theta) + ad.penalty.gradient(th)

    def removal_parts(self, idx):
        """``(Z_idx, G, s)``: the rows, their output weights ``G_i = c_i ∂ℓ_i/∂η_i`` and penalty
        shares, so that ``v_i = J_iᵀ G_i + s_i ∇π`` (:meth:`removal_gradients`)."""
        return self.Z[idx], self.c[idx, None] * self.g[idx], self.share[idx]

    def removal_gradients(self, idx, sparse=False):
        """Rows ``v_i = c_i ∇ℓ_i + s_i ∇π`` for training rows ``idx``; with ``sparse`` a
        linear model's sparse design gives a csr matrix (unless the penalty shares are
        nonzero: then every row is dense)."""
        ad = self.adapter
        Z, G, share = self.removal_parts(idx)
        share = share[:, None]
        if sparse and sp.issparse(Z) and ad.supports_sparse_rows and not share.any():
            return ad.gradients(Z, G, sparse=True)
        return ad.gradients(Z, G) + share * self.pen_grad[None, :]

    def newton_step(self):
        """Newton step from θ̂ towards the optimum (θ̂ minus the step is the next iterate).

        ℓ1 penalties take a proximal Newton step with the full curvature, so that zero
        coordinates whose gradient exceeds their threshold enter the support.
        """
        ad, pen = self.adapter, self.adapter.penalty
        if pen.is_smooth:
            return self.solver.solve(self.data_grad + pen.gradient(ad.theta))
        grad = self.data_grad + pen.smooth_gradient(ad.theta)
        return ad.theta - self.solver.prox_step(grad, ad.theta, pen)

    def typical_loo_step(self):
        """Median ‖leave-one-out step‖ over up to 256 rows (once per factorisation)."""
        if self._typical_loo is None:
            rng = np.random.default_rng(0)
            idx = rng.choice(self.n, size=min(256, self.n), replace=False)
            solver = self.solver
            norms = [solver.solve_norms(self.removal_gradients(block, solver.sparse_rows).T)
                     for block in self._dense_blocks(idx)]
            self._typical_loo = np.median(np.concatenate(norms))
        return self._typical_loo

    def _dense_blocks(self, idx):
        """``idx`` split so that each block's removal gradients take at most 64 MiB."""
        size = max(2**23 // self.adapter.n_params, 1)
        return np.array_split(idx, -(-len(idx) // size))

    @property
    def matrix_free(self):
        """Whether solves are costly: a network's curvature seen only through its products
        by a solver that iterates (a solve costs many passes over the data). A linear
        model's solves (dual, CG on its Gram operator) stay cheap and exact."""
        return not getattr(self.solver, "dense", False) and self.adapter.is_network

    def _sampled_curvature(self, rng, size):
        """The damped curvature over ``size`` random curvature rows (weighted to estimate the
        whole): products at a fraction of the full curvature's cost."""
        base = np.arange(self.n) if self.rows is None else np.asarray(self.rows)
        w = np.ones(len(base)) if self.row_weights is None else np.asarray(self.row_weights, float)
        pick = np.sort(rng.choice(len(base), size=min(size, len(base)), replace=False))
        r = base[pick]
        c = self.c[r] * w[pick] * (len(base) / len(pick))
        ad = self.adapter
        damping = float(getattr(self.solver, "damping", 0.0) or 0.0)
        return model_curvature(ad, self.Z[r], self.y[r], c, self.kind, self.eta[r]).add_diagonal(
            ad.penalty.hessian_diagonal() + damping)

    def step_estimates(self, removal_size=1, norm="euclidean", rows=32, curvature_rows=256):
        """Newton step to the optimum and a typical change, estimated without a solve.

        Each is the first conjugate-gradient iterate of its system, ``x ≈ u / λ_u`` with
        ``λ_u = uᵀMu / uᵀu`` the curvature's scale along ``u`` (CG's first iterate is
        ``(uᵀu / uᵀMu) u``): for the Newton step ``u`` is the objective's gradient; for the
        leave-one-out steps of ``rows`` random training rows ``λ`` is the scale along a
        random-sign combination of their removal gradients (``E[sᵀMs] / E[sᵀs]`` averages
        their own scales). One block product (two vectors) with the damped curvature of
        ``curvature_rows`` random rows (an unbiased estimate of ``uᵀMu``) and the rows'
        gradients: about a full-batch gradient, where a solve costs hundreds. The rows'
        gradients are taken in blocks of at most 64 MiB (never all ``rows × p`` at once).

        Returns
        -------
        (step, change, loo) : floats, or None where the curvature is not positive along them
            The step's size, the typical change of ``removal_size`` rows and the median
            leave-one-out step, in ``norm`` (``"curvature"``: ``√(xᵀMx) ≈ ‖u‖/√λ_u``).
        """
        ad = self.adapter
        rng = np.random.default_rng(0)
        idx = rng.choice(self.n, size=min(rows, self.n), replace=False)
        signs = rng.choice([-1.0, 1.0], size=len(idx)) / np.sqrt(len(idx))
        s, norms, start = np.zeros(ad.n_params), [], 0
        for block in self._dense_blocks(idx):
            V = np.asarray(self.removal_gradients(block), dtype=float)        # (m, p)
            s += V.T @ signs[start:start + len(block)]
            norms.append(np.linalg.norm(V, axis=1))
            start += len(block)
        del V
        g = self.data_grad + ad.penalty.gradient(ad.theta)
        B = np.column_stack([g, s])
        MB = self._sampled_curvature(rng, curvature_rows).matvec(B)
        quad = np.einsum("pm,pm->m", B, MB)
        sq = np.einsum("pm,pm->m", B, B)
        if np.any(quad <= 0) or np.any(sq <= 0):
            return None
        lam = quad / sq
        power = 0.5 if norm == "curvature" else 1.0
        sizes = np.concatenate(norms) / lam[1] ** power
        m = min(removal_size, self.n)
        loo = float(np.median(sizes))
        change = loo if m == 1 else float(np.sqrt(m * (1 - m / self.n) * np.mean(sizes ** 2)))
        if norm == "curvature" and m == 1:
            change = loo
        return float(np.sqrt(sq[0]) / lam[0] ** power), change, loo

    # ---------------------------------------------------------------- removals
    def change_step(self, idx, g_delta, W_delta, share, method, residual=None):
        """Δθ for a change of the objective on rows ``idx`` (see
        :func:`~._updates.newton_update`); residual as the polishing policy set it."""
        residual = self.residual if residual is None else residual
        return _updates.newton_update(self, idx, g_delta, W_delta, share, method, residual)

    def removal_step(self, idx, method="ns", residual=None):
        """Δθ when training rows ``idx`` (checked positions) are removed: the one removal
        step of leave-one-out folds, K-fold, unlearning and ``parameter_change``."""
        return self.change_step(idx, self.g[idx], self.W[idx], self.share[idx].sum(), method,
                                residual)

    def removal_outputs(self, removed, rows, method="ns"):
        """Outputs ``η`` on training rows ``rows`` of the model without rows ``removed``."""
        idx = self.check_indices(removed)
        self.check_removal(idx)
        ad = self.adapter
        return ad.eta(self.Z[rows], ad.theta + self.removal_step(idx, method))

    def cv_decision(self, folds, method="ns"):
        """Held-out outputs of each fold's model on its own rows, shape (n, K)."""
        out = np.full_like(self.eta, np.nan)
        for fold in folds:
            idx = self.check_indices(fold)
            out[idx] = self.removal_outputs(idx, idx, method)
        return out

    def loo_decision(self, method="ns", batch_size=None):
        """Leave-one-out outputs ``η_{-i}(x_i)`` (:func:`~._updates.loo_decision`)."""
        return _updates.loo_decision(self, method, batch_size or self.spec.batch_size)

    # ----------------------------------------------------------------- indices
    def check_indices(self, indices):
        """Training-row positions from integer positions or a boolean mask."""
        n = self.n
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise ValueError(f"a boolean mask must have shape ({n},)")
            idx = np.flatnonzero(idx)
        idx = np.atleast_1d(idx)
        if idx.size == 0:
            raise ValueError("indices is empty")
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError("indices must be a 1-d array of integer positions or a boolean mask")
        if idx.min() < -n or idx.max() >= n:
            raise IndexError(f"indices out of range for {n} training samples")
        idx = idx % n
        if np.bincount(idx, minlength=n).max() > 1:
            raise ValueError("indices contains duplicates")
        return idx

    def check_removal(self, idx):
        """Refuse a removal that leaves no data, or drops a class from a model whose classes
        would change (not a network's: its output layer keeps its units)."""
        if len(idx) >= self.n:
            raise ValueError("cannot remove every training sample")
        ad = self.adapter
        if ad.is_classifier and not ad.keeps_outputs:
            K, codes = len(ad.classes_), self.y.astype(int)
            left = np.bincount(codes, minlength=K) - np.bincount(codes[idx], minlength=K)
            if not left.all():
                gone = np.flatnonzero(left == 0)
                raise ValueError(
                    f"removing these samples removes every sample of class "
                    f"{ad.classes_[gone].tolist()}; the model would change its classes"
                )

