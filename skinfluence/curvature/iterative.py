"""Iterative solvers for ``M x = b`` that only multiply by ``M``: CG and LiSSA.

Used when the parameter vector is too long for a dense ``p × p`` curvature. Both take
a :class:`~skinfluence.curvature.operators.CurvatureOperator` (never a model) and solve
all right-hand sides of a block at once (one operator product per iteration for the
whole block).

* **CG** needs ``M`` positive definite (a Fisher, or a Hessian at a strict minimum, or
  enough damping); a direction of non-positive curvature stops it with a
  :class:`~skinfluence.exceptions.CurvatureError`. It stops when
  ``‖M x − b‖ ≤ tol ‖b‖`` for every column.
* **LiSSA** (Agarwal et al. 2017, here deterministic: the full operator in every step)
  sums the Neumann series ``x = s⁻¹ Σ_k (I − M/s)^k b``, which converges when every
  eigenvalue of ``M`` lies in ``(0, 2s)``. The scale ``s`` starts at a power-iteration
  estimate of ``λ_max``; if the steps grow (or become non-finite) the iteration is
  restarted with ``4 s``, unless the growing direction has negative curvature (its
  Rayleigh quotient is read off two successive steps), which no scale can fix and is
  reported as an error. It returns a converged answer or an error, never garbage.
  Convergence is geometric with rate ``1 − λ_min/s``: slow for ill-conditioned ``M``,
  which is why CG is the default.

The error of either is the stated residual tolerance; ``info_`` reports iterations,
restarts and the final scale.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
from sklearn.utils import check_random_state

from .._parallel import progress
from ..exceptions import CurvatureError
from .operators import symmetric_matrix
from .solvers import Solver, register_solver

__all__ = ["conjugate_gradient", "lissa", "IterativeSolver", "CGSolver", "LissaSolver"]


def _as_block(b):
    b = np.asarray(b, dtype=float)
    return b.reshape(b.shape[0], -1), b.shape


def conjugate_gradient(matvec, B, tol=1e-10, maxiter=None, verbose=0):
    """Solve ``M X = B`` column-wise by conjugate gradients (columns iterate together).

    ``verbose >= 1`` shows a progress bar over the iterations.

    Returns
    -------
    X : ndarray like B
    info : dict with ``iterations`` and ``residual`` (largest relative residual)
    """
    B, shape = _as_block(B)
    p, m = B.shape
    maxiter = 10 * p if maxiter is None else maxiter
    X = np.zeros_like(B)
    R = B.copy()
    P = R.copy()
    rr = np.einsum("pm,pm->m", R, R)
    bnorm = np.sqrt(rr)
    bnorm[bnorm == 0] = 1.0
    it = 0
    done = np.sqrt(rr) <= tol * bnorm
    for _ in progress(range(maxiter), verbose, "CG iterations"):
        if done.all():
            break
        it += 1
        AP = matvec(P)
        pAp = np.einsum("pm,pm->m", P, AP)
        live = ~done
        if np.any(pAp[live] <= 0):
            raise CurvatureError(
                "conjugate gradients met a direction of non-positive curvature: the curvature is "
                "not positive definite; pass damping > 0 (or, with a Hessian, use FisherInfluence)"
            )
        alpha = np.where(live, rr / np.where(live, pAp, 1.0), 0.0)
        X += alpha * P
        R -= alpha * AP
        rr_new = np.einsum("pm,pm->m", R, R)
        beta = np.where(live, rr_new / np.where(rr > 0, rr, 1.0), 0.0)
        P = R + beta * P
        rr = rr_new
        done = np.sqrt(rr) <= tol * bnorm
    res = float((np.sqrt(rr) / bnorm).max()) if m else 0.0
    return X.reshape(shape), {"iterations": it, "residual": res}


def lissa(matvec, B, scale, tol=1e-8, maxiter=10_000, max_restarts=10, truncate=False, verbose=0):
    """Solve ``M X = B`` by the Neumann series with scale ``s``, rescaling on divergence.

    Parameters
    ----------
    matvec : callable
    B : ndarray of shape (p,) or (p, m)
    scale : float
        Initial ``s`` (should exceed ``λ_max / 2``).
    tol : float
        Stop when the step ``‖x_k − x_{k−1}‖ ≤ tol ‖x_k‖`` for every column.
    truncate : bool, default=False
        Return the iterate after ``maxiter`` steps instead of raising (``info["truncated"]``).
    verbose : int, default=0
        From 1, a progress bar over the iterations (one per scale tried).

    Returns
    -------
    X, info : info has ``iterations``, ``restarts``, the final ``scale`` and ``truncated``.
    """
    B, shape = _as_block(B)
    s = float(scale)
    if not s > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    restarts = 0
    total = 0
    while True:
        X = B.copy()                       # s · x_0
        prev_step, prev = None, np.inf
        growing = 0
        diverged = False
        for k in progress(range(1, maxiter + 1), verbose, f"LiSSA iterations (scale {s:.3g})"):
            step = B - matvec(X) / s       # s · (x_k − x_{k−1}) = (I − M/s)^k b
            X += step
            total += 1
            d = np.linalg.norm(step, axis=0)
            dn = d.max() if d.size else 0.0
            if not np.isfinite(dn) or not np.all(np.isfinite(X)):
                diverged = True
                break
            growing = growing + 1 if dn > prev * (1 + 1e-12) else 0
            if growing >= 3:               # the steps grow: some eigenvalue has |1 − λ/s| > 1
                # its Rayleigh quotient, from M·step_{k−1} = s (step_{k−1} − step_k)
                j = int(np.argmax(d))
                u = prev_step[:, j]
                lam = s * (1.0 - step[:, j] @ u / (u @ u))
                if lam <= 0:
                    raise CurvatureError(
                        f"LiSSA diverges along a direction of non-positive curvature (eigenvalue "
                        f"≈ {lam:.3g}): pass damping > {-lam:.3g} (or, with a Hessian, use FisherInfluence)"
                    )
                diverged = True
                break
            prev, prev_step = dn, step
            if np.all(d <= tol * np.maximum(np.linalg.norm(X, axis=0), 1e-300)):
                return (X / s).reshape(shape), {"iterations": k, "restarts": restarts, "scale": s,
                                                "total_iterations": total, "truncated": False}
        if not diverged and truncate:
            return (X / s).reshape(shape), {"iterations": maxiter, "restarts": restarts, "scale": s,
                                            "total_iterations": total, "truncated": True}
        if not diverged:
            raise CurvatureError(
                f"LiSSA did not converge in {maxiter} iterations (scale {s:.3g}); the curvature is "
                "ill-conditioned or singular: increase damping or use solver='cg'"
            )
        restarts += 1
        if restarts > max_restarts:
            raise CurvatureError(f"LiSSA diverged after {max_restarts} rescalings (scale {s:.3g})")
        s *= 4.0


class IterativeSolver(Solver):
    """Inverse of a curvature operator by CG or LiSSA, with :class:`~.factor.DenseSolver`'s interface.

    Registered as ``solver="cg"`` and ``solver="lissa"``.

    Parameters
    ----------
    operator : CurvatureOperator
        Penalty curvature included.
    method : {"cg", "lissa"}
    damping : float
        Added to the diagonal.
    null_space : ndarray of shape (p, r), optional
        As for :class:`~.factor.DenseSolver`: ``Z Zᵀ`` is added to the operator.
    active : ndarray of bool, shape (p,), optional
        Coordinates that move; the system is solved on them alone (``M_AA x_A = b_A``)
        and the others are 0.
    tol, max_iter : stopping rule of the iteration (``maxiter``: the old spelling of
        ``max_iter``, deprecated).
    truncate : bool, default=False
        LiSSA only: return the iterate reached after ``maxiter`` steps instead of raising.
        A truncated Neumann series is a spectral filter that shrinks the directions of
        small curvature (a regulariser, like damping), not the exact ``M⁻¹ b``;
        ``info_["truncated"]`` says when it happened.
    random_state : seeds LiSSA's power iteration for the initial scale.
    verbose : int, default=0
        From 1, a progress bar over the iterations of each solve.
    """

    downdates_by_products = True
    uses_random_state = True
    options = {"tol": 1e-10, "max_iter": None, "truncate": False}

    def __init__(self, operator, method="cg", damping=0.0, tol=1e-10, max_iter=None,
                 null_space=None, random_state=None, active=None, truncate=False, verbose=0,
                 maxiter=None):
        if maxiter is not None:
            warnings.warn("maxiter is renamed max_iter (scikit-learn's spelling); maxiter will "
                          "stop working in a future release", FutureWarning, stacklevel=3)
            max_iter = maxiter if max_iter is None else max_iter
        if method not in ("cg", "lissa"):
            raise ValueError(f"method must be 'cg' or 'lissa', got {method!r}")
        self.operator = operator.add_diagonal(float(damping))
        self.method = method
        self.damping = float(damping)
        self.tol = tol
        self.max_iter = max_iter
        self.truncate = bool(truncate)
        self.n_params = operator.n_params
        self.active = np.ones(self.n_params, bool) if active is None else np.asarray(active, bool)
        self._null = null_space if null_space is not None and null_space.size else None
        self.info_ = {}
        self._scale = None
        # LiSSA's scale is found on the first solve (fit solves nothing): its seed is drawn now,
        # so that copies (pickles) of a fitted estimator find the same scale
        self._random_state = int(check_random_state(random_state).randint(2**31)) \
            if random_state is None or isinstance(random_state, np.random.RandomState) else random_state
        self.verbose = verbose

    def with_damping(self, damping):
        """The same operator with another damping on its diagonal (nothing to refactorise)."""
        new = copy.copy(self)
        new.operator = self.operator.add_diagonal(float(damping) - self.damping)
        new.damping, new.info_, new._scale = float(damping), {}, None
        return new

    def _matvec(self, V):
        out = self.operator.matvec(V)
        if self._null is not None:
            out = out + self._null @ (self._null.T @ V)
        return out

    def solve(self, b):
        """``M⁻¹ b`` for ``b`` of shape (p,) or (p, m)."""
        return self._solve_with(self._matvec, np.asarray(b, dtype=float))

    def _solve_with(self, matvec, b):
        if b.size == 0:
            return np.zeros_like(b)
        a = self.active
        if not a.all():  # the system on the active coordinates: M_AA x_A = b_A
            def full(V, matvec=matvec):
                E = np.zeros((self.n_params,) + V.shape[1:])
                E[a] = V
                return matvec(E)[a]
            x = np.zeros_like(b)
            x[a] = self._iterate(full, b[a])
            return x
        return self._iterate(matvec, b)

    def _iterate(self, matvec, b):
        if self.method == "cg":
            x, info = conjugate_gradient(matvec, b, tol=self.tol, maxiter=self.max_iter,
                                         verbose=self.verbose)
        else:
            if self._scale is None:
                lam = self.operator.max_eigenvalue(random_state=self._random_state)
                self._scale = 1.1 * lam if lam > 0 else 1.0
            x, info = lissa(matvec, b, self._scale, tol=self.tol,
                            maxiter=self.max_iter or 10_000, truncate=self.truncate,
                            verbose=self.verbose)
            self._scale = info["scale"]
        self.info_ = info
        return x

    def inverse(self, block=512):
        """Dense ``M⁻¹`` by ``p`` solves (in blocks of columns): only for moderate ``p``."""
        return symmetric_matrix(self.solve, self.n_params, block)

    def downdated_solve(self, b, U, C, diag=None):
        """Solve ``(M − Uᵀ C U − diag(d)) x = b`` by iterating with the down-dated operator.

        ``U``, ``C`` as in :meth:`~.factor.DenseSolver.downdated_solve`: stacked Jacobians
        (m × p) and the m × m curvature, or per-sample Jacobians (n, K, p) and their
        K × K blocks. The down-date is applied exactly (no Woodbury step needed).
        """
        if U.ndim == 3:
            n, K, p = U.shape
            Uf = U.reshape(-1, p)
            product = lambda V: Uf.T @ np.matmul(C, (Uf @ V).reshape(n, K, -1)).reshape(n * K, -1)  # noqa: E731
        else:
            Uf = U
            product = lambda V: Uf.T @ (C @ (Uf @ V).reshape(Uf.shape[0], -1))  # noqa: E731
        d = np.zeros(self.n_params) if diag is None else np.broadcast_to(diag, (self.n_params,))
        return self.solve_downdated(b, lambda V: product(V) + d[:, None] * V)

    def solve_downdated(self, b, down):
        """Solve ``(M − D) x = b``, ``D`` given by its products ``down(V) = D V`` (``V`` of
        shape (p, m)): a network's removed rows as a curvature operator, so that their
        per-sample Jacobians are never formed (each iteration's product over the removed
        rows costs a small share of the one over all rows)."""
        def matvec(V):
            V2 = V.reshape(self.n_params, -1)
            return (self._matvec(V2) - down(V2)).reshape(V.shape)

        return self._solve_with(matvec, np.asarray(b, dtype=float))


@register_solver("cg")
class CGSolver(IterativeSolver):
    """Conjugate gradients (see :class:`IterativeSolver`)."""

    def __init__(self, operator, **options):
        super().__init__(operator, "cg", **options)


@register_solver("lissa")
class LissaSolver(IterativeSolver):
    """LiSSA, converged or truncated at ``max_iter`` (see :class:`IterativeSolver`)."""

    def __init__(self, operator, **options):
        super().__init__(operator, "lissa", **options)
