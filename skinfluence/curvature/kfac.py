"""Kronecker-factored curvature: K-FAC, EK-FAC, EK-FAC-preconditioned CG, and EK-FAC with a
low-rank correction.

For a layer with parameters ``V = [W | b]`` (``n_out × n_in``; a convolution's weight
flattened to ``C_out × C_in·k_h·k_w``), inputs ``a_it`` (a 1 appended for the bias; the
unfolded patches of a convolution at positions ``t``) and output gradients ``g_irt`` (the
columns ``r`` of ``L_i``, ``c_i W_i = L_i L_iᵀ``, pulled back to the layer's outputs), the
per-sample weight gradients are ``S_ir = Σ_t g_irt a_itᵀ`` and the exact Gauss–Newton
block is ``F = Σ_ir vec(S_ir) vec(S_ir)ᵀ`` (the Fisher's flavour, exact, Monte-Carlo or
empirical, is the output curvature ``W_i`` the model adapter gives). The curvature is
taken block-diagonal over layers and each block is approximated by a Kronecker product
(Martens & Grosse 2015; for convolutions Grosse & Martens 2016)::

    F ≈ A ⊗ G,   A = (1/N) Σ_it a_it a_itᵀ,   G = Σ_irt g_irt g_irtᵀ

(``N = Σ_i T_i`` positions), i.e. ``F V ≈ G V A``. It is exact for one sample with one
position, and for a layer whose ``Σ_r g_ir g_irᵀ`` is the same for every sample (a linear
model with a squared loss). With ``A = Q_A diag(λ_A) Q_Aᵀ`` and ``G = Q_G diag(λ_G) Q_Gᵀ``::

    (F + D + δI)⁻¹ V ≈ Q_G [ (Q_Gᵀ V Q_A) ⊘ (Λ + Δ + δ) ] Q_Aᵀ

with ``Λ = λ_G λ_Aᵀ`` (``solver="kfac"``) or, for EK-FAC (George et al. 2018),
``Λ_jk = Σ_ir (Q_Gᵀ S_ir Q_A)_jk²``: the exact block's diagonal in the Kronecker eigenbasis
(one more pass over the data), which is the best diagonal approximation in that basis.
``Δ`` is the diagonal of the penalty's curvature ``D`` (weight decay) and of the null-space
projector ``Z Zᵀ`` in the same basis, ``(Q_G∘Q_G)ᵀ d (Q_A∘Q_A)`` (exact for a uniform decay).
Factors and eigenbases are computed once; the damping ``δ`` enters at solve time only.

For ``HessianInfluence`` the factors are those of the Hessian's Gauss–Newton part (the
second-derivative term of the network is dropped; ``"ekfac_cg"`` iterates on the full Hessian).

Parameters outside ``nn.Linear`` / ``nn.Conv2d`` layers (batch-norm scales, embeddings,
a grouped convolution) get their exact block of the curvature, built from curvature
products (one product per such parameter), while there are at most ``max_exact``
(default 4,096) of them; beyond, the solver refuses them by name. Cross-layer blocks are
dropped.

``solver="ekfac_cg"`` closes the gap to the full curvature: conjugate gradients on the
exact operator (every layer, cross terms included, the penalty, damping and null space),
preconditioned by EK-FAC, to a relative residual ``tol`` or ``max_iter`` iterations
(default 10: a truncated, refined EK-FAC solve; each iteration is one curvature product
per right-hand side).

``solver="ekfac_lr"`` closes it at a cost that does not grow with the right-hand sides: the
extreme eigenpairs of ``K^(−1/2) G K^(−1/2)`` (``K`` the damped EK-FAC curvature, ``G`` the
exact one) from a block Krylov space of ``rank`` curvature products, fitted once per damping,
correct EK-FAC where it is furthest from ``G`` (:class:`EKFACLowRankSolver`).

Down-dates (leave-one-out, unlearning) apply the Woodbury identity to the approximate
inverse; a removed share of the penalty is subtracted from ``Δ`` (or, for the refinement,
from the operator) exactly.
"""

from __future__ import annotations

import copy
import time
from numbers import Integral, Real

import numpy as np
from scipy import linalg
from sklearn.utils import check_random_state

from .._utils import check_memory
from ..exceptions import CurvatureError
from .operators import factor_product
from .solvers import InverseOperator, Solver, register_solver

__all__ = ["KroneckerSolver", "KFACSolver", "EKFACSolver", "EKFACCGSolver", "EKFACLowRankSolver"]

#: most parameters outside Kronecker-factored layers that get an exact dense block
MAX_EXACT = 4096
#: largest square-root factor of the curvature ``ekfac_lr`` keeps on its own (``products="auto"``)
MAX_FACTOR_BYTES = 2**30


def _square_project(QG, d, QA):
    """Diagonal of ``(Q_A ⊗ Q_G)ᵀ diag(d) (Q_A ⊗ Q_G)`` as a matrix: ``(Q_G∘Q_G)ᵀ d (Q_A∘Q_A)``."""
    return (QG * QG).T @ d @ (QA * QA)


class KroneckerSolver(Solver):
    """``(M + δI)⁻¹`` by per-layer Kronecker factors (module docstring).

    Parameters
    ----------
    operator : CurvatureOperator
        The curvature, penalty included; its ``kronecker`` statistics (the model
        adapter's capability) must be available.
    damping : float or None
        ``δ``, added at solve time; None: set later by :meth:`redamp`.
    null_space : ndarray of shape (p, k), optional
        Directions ``Z`` the objective ignores; ``Z Zᵀ`` is added.
    active : ndarray of bool, optional
        Coordinates that move (solves are 0 elsewhere): every factored layer must be whole.
    correct : bool
        Eigenvalue correction (EK-FAC) instead of ``λ_G λ_Aᵀ``.
    max_exact : int, default=4096
        Most parameters outside factored layers that get an exact block.
    layer_damping : bool, default=False
        Scale the damping by each layer's mean eigenvalue (kronfluence's heuristic:
        ``damping=0.1`` is 0.1 × the layer's mean); the exact block keeps ``damping``.
    random_state : ignored (deterministic)

    Attributes
    ----------
    layers : dict
        Layer name -> ``(index, Q_A, Q_G, Λ, Δ)``.
    info_ : dict
        ``layers``, ``factored_params``, ``exact_params``, ``passes`` over the data, ``seconds``.
    """

    correct = False
    traces_curvature = True
    options = {"max_exact": MAX_EXACT, "layer_damping": False}
    _factored = None     # the operator with products from the model's kept factor (ekfac_lr)

    def __init__(self, operator, damping=0.0, null_space=None, active=None, *, max_exact=MAX_EXACT,
                 layer_damping=False, random_state=None):
        start = time.perf_counter()
        self.layer_damping = bool(layer_damping)
        source = getattr(operator, "kronecker", None)   # None: no factored layers, the exact block only
        if not isinstance(max_exact, Integral) or isinstance(max_exact, bool) or max_exact < 0:
            raise ValueError(f"max_exact must be a non-negative integer, got {max_exact!r}")
        self.operator = operator
        self.n_params = p = operator.n_params
        self.active = np.ones(p, bool) if active is None else np.asarray(active, bool)
        self.null_space = null_space if null_space is not None and null_space.size else None
        self._diagonal = np.asarray(operator.diagonal, dtype=float)

        stats = source.statistics() if source is not None and source.layers else {}
        self.layers = {}
        covered = np.zeros(p, bool)
        for name, (index, n_out, n_in) in (source.layers.items() if stats else ()):
            if not self.active[index.ravel()].all():
                raise ValueError(f"solver={self.name!r} factorises whole layers: it cannot hold some "
                                 f"parameters of layer {name!r} fixed (an ℓ1 support or a parameter subset)")
            A, G, count = stats[name]
            lam_a, QA = linalg.eigh(A / max(count, 1))
            lam_g, QG = linalg.eigh(G)
            self.layers[name] = [index, QA, QG, np.outer(np.maximum(lam_g, 0), np.maximum(lam_a, 0))]
            covered[index.ravel()] = True
        passes = 1
        if self.correct and self.layers:
            lam = source.statistics({n: (L[1], L[2]) for n, L in self.layers.items()})
            for name, L in self.layers.items():
                L[3] = lam[name]
            passes = 2
        for L in self.layers.values():
            L.append(self._extra_diagonal(L, self._diagonal))
        self._exact_setup(~covered & self.active, max_exact, source)
        self._trace = (sum(float(L[3].sum()) for L in self.layers.values())
                       + float(self._diagonal[covered].sum()) + self._rest_trace)
        self.info_ = {"method": self.name, "layers": list(self.layers),
                      "factored_params": int(covered.sum()), "exact_params": int((~covered).sum()),
                      "passes": passes, "seconds": time.perf_counter() - start}
        if damping is not None:     # None: set by redamp (damping="auto" from the trace)
            self.redamp(damping)

    def with_damping(self, damping):
        """This solver at another damping: the factors are shared, no pass over the data."""
        new = copy.copy(self)
        new.info_ = dict(self.info_)
        return new.redamp(damping)

    def trace(self):
        """``trace`` of the approximated curvature (penalty included): for EK-FAC the exact
        trace of the curvature's diagonal blocks (a rotation keeps it), free once fitted."""
        return self._trace

    def redamp(self, damping):
        """Use ``damping`` from now on (the factors are kept: no pass over the data)."""
        damping = float(damping)
        if not np.isfinite(damping) or damping < 0:
            raise ValueError(f"damping must be a finite non-negative number, got {damping}")
        self.damping = damping
        self._check_definite()
        return self

    # ------------------------------------------------------------------ pieces
    def _extra_diagonal(self, layer, diagonal):
        """``Δ``: the penalty's (and null space's) diagonal in the layer's eigenbasis."""
        index, QA, QG = layer[:3]
        extra = _square_project(QG, diagonal[index], QA)
        if self.null_space is not None:
            Zl = self.null_space[index.ravel()]                   # (n_out·n_in, k)
            live = np.abs(Zl).sum(axis=0) > 0
            for z in Zl[:, live].T:
                extra += (QG.T @ z.reshape(index.shape) @ QA) ** 2
        return extra

    def _exact_setup(self, rest, max_exact, source):
        """The exact block of the curvature over parameters outside the factored layers."""
        self._rest = np.flatnonzero(rest)
        self._rest_block, self._rest_trace = None, 0.0
        if not self._rest.size:
            return
        if self._rest.size > max_exact and source is None:
            raise ValueError(
                f"solver={self.name!r} needs a model whose layers it can factorise (a torch network or a "
                f"linear model); this curvature offers only products, and its {self._rest.size} "
                f"parameters exceed max_exact={max_exact} for an exact block: use 'cg' or 'nystrom'")
        if self._rest.size > max_exact:
            names = getattr(source.adapter, "_names", None)
            where = getattr(source.adapter, "param_slices", {})
            left = [n for n in (names or []) if rest[where[n]].any()] if names else []
            raise ValueError(
                f"solver={self.name!r} factorises nn.Linear and nn.Conv2d layers; {self._rest.size} "
                f"parameters lie elsewhere ({', '.join(left[:8]) or 'unnamed'}), more than "
                f"max_exact={max_exact} that would get an exact block: raise solver_options="
                "{'max_exact': ...}, freeze them (requires_grad=False), or use solver='cg'")
        E = np.zeros((self.n_params, self._rest.size))
        E[self._rest, np.arange(self._rest.size)] = 1.0
        B = self.operator.matvec(E)[self._rest]                   # includes the penalty
        self._rest_trace = float(np.trace(B))
        if self.null_space is not None:
            Zr = self.null_space[self._rest]
            B += Zr @ Zr.T
        self._rest_block = (B + B.T) / 2

    def _check_definite(self):
        low = [float((L[3] + L[4]).min()) for L in self.layers.values()]
        if low and min(low) + self.damping <= 0:
            raise CurvatureError(
                f"the Kronecker-factored curvature has a zero eigenvalue (dead units, or more "
                f"inputs than rows) and damping={self.damping:g}: pass damping > 0 (e.g. 'auto')")
        if self._rest_block is not None:
            try:
                self._rest_chol = linalg.cho_factor(
                    self._rest_block + self.damping * np.eye(self._rest.size))
            except linalg.LinAlgError:
                raise CurvatureError("the exact block of the parameters outside the factored layers "
                                     "is singular: pass damping > 0") from None

    # ------------------------------------------------------------------ solves
    def _layer_damping(self, lam):
        return self.damping * (lam.mean() if self.layer_damping else 1.0)

    def _precondition(self, B, shift=None, power=1.0):
        """``(Λ + Δ − shift + δ)^(−power)`` in each layer's eigenbasis, exact block elsewhere
        (``K⁻¹`` for ``power=1``, the symmetric ``K^(−1/2)`` for ``power=0.5``); ``B`` of
        shape (p, m). ``shift`` (p,) is a removed diagonal (a penalty share)."""
        X = np.zeros(B.shape)
        m = B.shape[1]
        for index, QA, QG, lam, extra in self.layers.values():
            O, D = index.shape
            den = lam + extra + self._layer_damping(lam)
            if shift is not None:
                den = den - _square_project(QG, shift[index], QA)
            if power != 1.0:
                den = den ** power
            rows = index.ravel()
            step = max(1, 2**23 // (O * D))       # columns at a time: temporaries of at most 64 MiB
            for j in range(0, m, step):
                # Q_Gᵀ V Q_A for the c matrices V at once, as two plain matrix products
                c = min(step, m - j)
                Bj = B[rows, j:j + c].astype(float, copy=False)
                V = (QG.T @ Bj.reshape(O, D * c)).reshape(O, D, c)
                V = V.transpose(0, 2, 1).reshape(O * c, D) @ QA                     # (O·c, D)
                V = (V.reshape(O, c, D) / den[:, None, :]).reshape(O * c, D) @ QA.T
                V = V.reshape(O, c, D).transpose(0, 2, 1).reshape(O, D * c)
                X[rows, j:j + c] = (QG @ V).reshape(O * D, c)
        if self._rest.size:
            if power != 1.0:     # the exact block's symmetric power, by its eigendecomposition
                if shift is None:    # kept: the block's own, shifted by the damping
                    if "_rest_eigen" not in self.__dict__:
                        self._rest_eigen = linalg.eigh(self._rest_block)
                    w, Q = self._rest_eigen
                    w = w + self.damping
                else:
                    w, Q = linalg.eigh(self._rest_block + np.diag(self.damping - shift[self._rest]))
                X[self._rest] = Q @ ((Q.T @ B[self._rest]) / w[:, None] ** power)
            elif shift is None:
                X[self._rest] = linalg.cho_solve(self._rest_chol, B[self._rest])
            else:
                X[self._rest] = np.linalg.solve(self._rest_block + self.damping * np.eye(self._rest.size)
                                                - np.diag(shift[self._rest]), B[self._rest])
        return X

    def _solve(self, B, shift=None):
        return self._precondition(B, shift)

    def _matvec(self, V, shift=None):
        """The exact damped curvature ``(M + Z Zᵀ − diag(shift) + δ) V`` (δ per layer as in
        the factors), which the refinements iterate on; one curvature product per column."""
        out = (self.operator if self._factored is None else self._factored).matvec(V) + self.damping * V
        if self.layer_damping:
            for index, _, _, lam, _ in self.layers.values():
                out[index.ravel()] += (self._layer_damping(lam) - self.damping) * V[index.ravel()]
        if self.null_space is not None:
            out += self.null_space @ (self.null_space.T @ V)
        if shift is not None:
            out -= shift[:, None] * V
        return out

    def solve(self, b):
        """``(M + δI)⁻¹ b`` (Kronecker-factored) for ``b`` of shape (p,) or (p, m); float32
        right-hand sides (a network's gradients) are converted a layer at a time."""
        b = np.asarray(b)
        if b.dtype != np.float32:
            b = b.astype(float, copy=False)
        return self._solve(b.reshape(self.n_params, -1)).reshape(b.shape)

    def inverse_operator(self):
        return InverseOperator(self)

    def inverse(self):
        """The dense approximate ``(M + δI)⁻¹`` (p × p), where it fits in memory."""
        check_memory((self.n_params, self.n_params), "the inverse curvature")
        return self.solve(np.eye(self.n_params))

    def downdated_solve(self, b, U, C, diag=None):
        """Solve ``(M − Uᵀ C U − diag(d) + δI) x = b`` by Woodbury on the approximate inverse.

        ``U`` (m, p) or (n, K, p) stacked Jacobians of the removed rows, ``C`` their
        curvature (m, m) or per-row blocks (n, K, K); ``diag`` a removed penalty share."""
        b = np.asarray(b, dtype=float)
        if U.ndim == 3:
            U = U.reshape(-1, U.shape[-1])
            C = linalg.block_diag(*C)
        shift = None
        if diag is not None and np.any(diag):
            shift = np.broadcast_to(np.asarray(diag, dtype=float), (self.n_params,))
        bs = b.reshape(self.n_params, -1)
        Ab, AUt = self._solve(bs, shift), self._solve(np.asarray(U, dtype=float).T, shift)
        try:
            inner = np.linalg.solve(np.eye(len(U)) - (U @ AUt) @ C, U @ Ab)
        except np.linalg.LinAlgError:
            raise CurvatureError("the curvature without these samples is singular; add damping") from None
        return (Ab + AUt @ (C @ inner)).reshape(b.shape)


@register_solver("kfac")
class KFACSolver(KroneckerSolver):
    """K-FAC: per-layer ``A ⊗ G`` (module docstring), ``solver="kfac"``.

    Parameters
    ----------
    operator, damping, null_space, active, max_exact, layer_damping, random_state
        As for :class:`KroneckerSolver`.
    """

    correct = False


@register_solver("ekfac")
class EKFACSolver(KroneckerSolver):
    """EK-FAC: K-FAC's eigenbasis with corrected eigenvalues (module docstring), ``solver="ekfac"``.

    Parameters
    ----------
    operator, damping, null_space, active, max_exact, layer_damping, random_state
        As for :class:`KroneckerSolver`.
    """

    correct = True


@register_solver("ekfac_cg")
class EKFACCGSolver(EKFACSolver):
    """Conjugate gradients on the exact curvature, preconditioned by EK-FAC, ``solver="ekfac_cg"``.

    Parameters
    ----------
    operator, damping, null_space, active, max_exact, layer_damping, random_state
        As for :class:`KroneckerSolver`.
    max_iter : int, default=10
        CG iterations (curvature products per right-hand side).
    tol : float, default=1e-6
        Relative residual ``‖(M + δI)x − b‖ / ‖b‖`` at which a column stops.
    """

    options = {**KroneckerSolver.options, "max_iter": 10, "tol": 1e-6}

    def __init__(self, operator, damping=0.0, null_space=None, active=None, *, max_iter=10, tol=1e-6,
                 max_exact=MAX_EXACT, layer_damping=False, random_state=None):
        if not isinstance(max_iter, Integral) or isinstance(max_iter, bool) or max_iter < 0:
            raise ValueError(f"max_iter must be a non-negative integer, got {max_iter!r}")
        if not isinstance(tol, Real) or not tol >= 0:
            raise ValueError(f"tol must be a non-negative number, got {tol!r}")
        super().__init__(operator, damping, null_space, active, max_exact=max_exact,
                         layer_damping=layer_damping, random_state=random_state)
        self.max_iter, self.tol = int(max_iter), float(tol)
        self.info_.update(iterations=0, residual=np.nan)

    def _solve(self, B, shift=None):
        """Preconditioned CG, all columns together, from the EK-FAC solution."""
        B = np.asarray(B, dtype=float)
        X = self._precondition(B, shift)
        if not self.max_iter:
            return X
        R = B - self._matvec(X, shift)
        Zp = self._precondition(R, shift)
        P = Zp.copy()
        rz = np.einsum("pm,pm->m", R, Zp)
        a = self.active                                   # held coordinates stay 0
        bnorm = np.linalg.norm(B[a], axis=0)
        bnorm[bnorm == 0] = 1.0
        it = 0
        for it in range(1, self.max_iter + 1):
            live = np.linalg.norm(R[a], axis=0) > self.tol * bnorm
            if not live.any():
                it -= 1
                break
            AP = self._matvec(P, shift)
            pAp = np.einsum("pm,pm->m", P, AP)
            if np.any(pAp[live] <= 0):
                raise CurvatureError("conjugate gradients met a direction of non-positive curvature: "
                                     "pass damping > 0")
            alpha = np.where(live, rz / np.where(live, pAp, 1.0), 0.0)
            X += alpha * P
            R -= alpha * AP
            Zp = self._precondition(R, shift)
            rz_new = np.einsum("pm,pm->m", R, Zp)
            beta = np.where(live, rz_new / np.where(rz != 0, rz, 1.0), 0.0)
            P = Zp + beta * P
            rz = rz_new
        self.info_.update(iterations=it, residual=float((np.linalg.norm(R[a], axis=0) / bnorm).max()))
        return X


@register_solver("ekfac_lr")
class EKFACLowRankSolver(EKFACSolver):
    """EK-FAC with a low-rank correction towards the exact curvature, ``solver="ekfac_lr"``.

    With ``K`` the damped EK-FAC curvature and ``G = M + Z Zᵀ + δ`` the exact damped one,
    ``S = K^(−1/2) G K^(−1/2)`` is the identity where EK-FAC is exact. Its extreme
    eigenpairs (directions where EK-FAC under- or over-estimates the curvature: the dropped
    cross-layer blocks and off-diagonal terms) are found once, by a block Krylov space
    ``[Ω, SΩ, …, S^(q−1)Ω]`` of ``rank`` columns and the Rayleigh–Ritz pairs ``(θ, U)`` of
    ``S`` on it (``rank`` curvature products in ``steps`` passes over the data); then::

        (M + δI)⁻¹ ≈ K^(−1/2) (I + U (Θ⁻¹ − I) Uᵀ) K^(−1/2)

    exact on ``K^(1/2) span(U)`` when ``span(U)`` is invariant under ``S``. A solve costs one
    EK-FAC solve and a rank-``r`` product (two EK-FAC solves with a removed penalty share),
    whatever the number of right-hand sides; the correction is refitted (``rank`` products)
    when the damping changes. Down-dates use Woodbury on this inverse; a removed penalty
    share enters ``K`` only.

    Parameters
    ----------
    operator, damping, null_space, active, max_exact, layer_damping
        As for :class:`KroneckerSolver`.
    rank : int, default=128
        Columns of the Krylov space (curvature products per fit).
    steps : int, default=16
        Krylov blocks (passes over the data): blocks of ``ceil(rank / steps)`` columns;
        more, narrower blocks find the extreme eigenpairs better for the same products
        (measured on the digits models, rank 64–192: 16 steps scored 0.005–0.025 higher
        than 8 at the same or lower cost).
    products : {"auto", "model", "factor"}, default="auto"
        How the ``rank`` curvature products are taken: through the model (a
        Jacobian-vector and a vector-Jacobian product per column), or as ``Bᵀ(B V)`` from
        the curvature's square-root factor ``B`` (n·(K−1) × p for K classes), built once by
        one per-sample gradient pass per output column and kept for later re-dampings
        (a network's Fisher only). ``"auto"`` times one model product and a product with a
        block of the factor's size and keeps the factor when it fits in ``MAX_FACTOR_BYTES``
        (1 GiB) and building it plus ``rank`` factor products is expected to take less than
        ``rank`` model products (a convolutional net's products are slow, a small MLP's
        are not). The two give the same products to rounding.
    random_state : int, RandomState or None
        The starting block ``Ω``.

    Attributes
    ----------
    info_ : dict
        EK-FAC's, plus ``rank``, ``n_products``, ``ritz_range`` (the extreme ``θ``),
        ``products`` (the route taken) and ``correction_seconds``.
    """

    uses_random_state = True
    options = {**KroneckerSolver.options, "rank": 128, "steps": 16, "products": "auto"}

    def __init__(self, operator, damping=0.0, null_space=None, active=None, *, rank=128, steps=16,
                 products="auto", max_exact=MAX_EXACT, layer_damping=False, random_state=None):
        for key, value in (("rank", rank), ("steps", steps)):
            if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if products not in ("auto", "model", "factor"):
            raise ValueError(f"products must be 'auto', 'model' or 'factor', got {products!r}")
        if products == "factor" and operator.factor is None:
            raise ValueError("products='factor' needs a network's Fisher (the Hessian and linear models "
                             "have no square-root factor here): use 'model' or 'auto'")
        self.rank, self.steps, self.products, self.random_state = int(rank), int(steps), products, random_state
        self._correction = None
        super().__init__(operator, damping, null_space, active, max_exact=max_exact,
                         layer_damping=layer_damping, random_state=random_state)

    def redamp(self, damping):
        """Use ``damping`` from now on: the factors are kept, the correction is refitted at
        the next solve (``rank`` curvature products)."""
        super().redamp(damping)
        self._correction = None
        return self

    def _factor_pays(self, n_products):
        """Whether building the model's square-root factor and taking ``n_products`` products
        from it is expected to be faster than ``n_products`` model products (``products="auto"``).

        Timed here: one model product (with the set-up of its rows, which the factor needs too)
        and one product with a block of at most 2²¹ entries, scaled to the factor's size. The
        factor's build is taken as 2 model products for each of its ``K`` per-sample gradient
        passes (measured: about one each on the digits CNN)."""
        if self.operator.factor is None:
            return False
        n, K, _ = self.operator.factor
        if 8 * n * K * self.n_params > MAX_FACTOR_BYTES:
            return False
        v = np.zeros(self.n_params)
        v[0] = 1.0
        t = time.perf_counter()
        self.operator.matvec(v)
        t_model = time.perf_counter() - t
        block = max(1, min(n * K, 2**21 // self.n_params))
        B = np.full((block, self.n_params), 0.5)          # a product's time does not depend on the values
        V = np.ones((self.n_params, 8))
        t = time.perf_counter()
        factor_product([B], V)
        t_factor = (time.perf_counter() - t) / 8 * n * K / block
        return 2 * K * t_model + n_products * t_factor < n_products * t_model

    def _fit_correction(self):
        start = time.perf_counter()
        a = self.active
        r = min(self.rank, int(a.sum()))
        width = -(-r // min(self.steps, r))
        check_memory((self.n_params, 3 * r), "the low-rank correction's Krylov basis",
                     "pass a smaller solver_options={'rank': ...}")
        if self._factored is None and (self.products == "factor" or self.products == "auto"
                                       and self._factor_pays(r)):
            check_memory((self.operator.factor[0] * self.operator.factor[1], self.n_params),
                         "the curvature's square-root factor",
                         "pass solver_options={'products': 'model'}")
            self._factored = self.operator.factored()
        operator = self.operator if self._factored is None else self._factored
        products0 = operator.n_matvecs

        def S(V):
            return self._precondition(self._matvec(self._precondition(V, power=0.5)), power=0.5)

        V = check_random_state(self.random_state).standard_normal((self.n_params, width))
        Qs, Ws = [], []
        while sum(q.shape[1] for q in Qs) < r:
            V[~a] = 0.0
            scale = max(float(np.linalg.norm(V, axis=0).max()), 1e-300)
            for _ in range(2):                 # block Gram–Schmidt, twice (full re-orthogonalisation)
                for Q in Qs:
                    V -= Q @ (Q.T @ V)
            Q, R = np.linalg.qr(V[:, :r - sum(q.shape[1] for q in Qs)])
            Q = Q[:, np.abs(np.diag(R)) > 1e-10 * scale]      # columns already in the space: dropped
            if not Q.shape[1]:                  # the Krylov space is invariant: S is exact on it
                break
            Qs.append(Q)
            Ws.append(S(Q))
            V = Ws[-1].copy()
        Q, W = np.hstack(Qs), np.hstack(Ws)
        T = Q.T @ W
        theta, Y = linalg.eigh((T + T.T) / 2)
        if theta[0] <= 0:
            raise CurvatureError(f"the damped curvature has a non-positive direction (Ritz value "
                                 f"{theta[0]:.3g} relative to EK-FAC): pass a larger damping")
        U = Q @ Y     # with K^(-1/2) U a solve is one EK-FAC solve and a rank-r product (K^(-1/2) symmetric)
        self._correction = (U, 1.0 / theta - 1.0, self._precondition(U, power=0.5))
        self.info_.update(rank=int(theta.size), n_products=operator.n_matvecs - products0,
                          products="model" if self._factored is None else "factor",
                          ritz_range=(float(theta[0]), float(theta[-1])),
                          correction_seconds=time.perf_counter() - start)

    def _solve(self, B, shift=None):
        if self._correction is None:
            self._fit_correction()
        U, d, KU = self._correction
        if shift is None:
            return self._precondition(B) + KU @ (d[:, None] * (KU.T @ B))
        Y = self._precondition(B, shift, power=0.5)
        return self._precondition(Y + U @ (d[:, None] * (U.T @ Y)), shift, power=0.5)
