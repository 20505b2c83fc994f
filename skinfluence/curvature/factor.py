"""Dense factorisation of a curvature matrix, and its low-rank down-dates.

The curvature ``M`` (Hessian or Fisher of the objective, plus damping) is factorised
once. Cholesky is tried first; where it fails the symmetric eigendecomposition tells
whether ``M`` is singular or indefinite, and the error says which damping would help.

Leave-one-out, K-fold and unlearning need ``(M − Uᵀ C U)⁻¹ v``: the curvature without
some samples, where ``U`` stacks their Jacobians (``m × p``) and ``C`` their weighted
output curvatures (``m × m``, block diagonal). With ``A = M⁻¹`` and ``G = U A Uᵀ``
the Woodbury identity in the form that allows a singular ``C`` (softmax curvature is
singular) reads::

    (M − Uᵀ C U)⁻¹ = A + A Uᵀ C (I − G C)⁻¹ U A

so ``U (M − UᵀCU)⁻¹ v = (I − G C)⁻¹ U A v``. When ``m ≥ p`` forming and factorising
``M − Uᵀ C U`` directly is cheaper, and is what :meth:`DenseSolver.downdated_solve`
does then.

Registered as ``solver="dense"`` (:mod:`.solvers`). It also takes the proximal Newton
steps of ℓ1 models (:meth:`DenseSolver.prox_step`), with the same damping and null space.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from .._linalg import block_gram
from ..exceptions import CurvatureError
from .operators import CurvatureOperator
from .proximal import prox_newton_step
from .solvers import Solver, register_solver

__all__ = ["DenseSolver", "COND_LIMIT"]

#: smallest eigenvalue / largest below which the curvature counts as singular: solves lose
#: about 12 digits there, and rounding may make a singular matrix pass Cholesky
COND_LIMIT = 1e-12
#: largest p for which a Woodbury down-date refactorises M − diag(d) to keep d exact
EXACT_SHIFT_MAX_PARAMS = 4000


@register_solver("dense")
class DenseSolver(Solver):
    """Factorised symmetric positive definite curvature restricted to ``active`` coordinates.

    Parameters
    ----------
    matrix : ndarray of shape (p, p) or CurvatureOperator
        The curvature, penalty included (an operator is made dense once).
    damping : float
        Added to the diagonal before factorising.
    active : ndarray of bool, shape (p,), optional
        Coordinates that move; the others are held fixed (ℓ1 zeros). Solves return 0
        there.
    null_space : ndarray of shape (p, r), optional
        Orthonormal directions the objective is invariant to (e.g. adding a constant
        to every class's intercept of a multinomial model). ``Z Zᵀ`` is added to ``M``,
        which makes solves act as the pseudo-inverse on the gradients (orthogonal to
        ``Z``).
    """

    dense = True
    can_shift = True
    has_prox_step = True

    def __init__(self, matrix, damping=0.0, null_space=None, active=None):
        matrix = (matrix.dense() if isinstance(matrix, CurvatureOperator)
                  else np.asarray(matrix, dtype=float))
        p = matrix.shape[0]
        self.n_params = p
        self.curvature = matrix
        self.active = np.ones(p, bool) if active is None else np.asarray(active, bool)
        self.damping = float(damping)
        self.null_space = null_space if null_space is not None and null_space.size else None
        M = matrix[np.ix_(self.active, self.active)].copy()
        if self.null_space is not None:
            Z = self.null_space[self.active]
            M += Z @ Z.T
        M[np.diag_indices_from(M)] += self.damping
        self.matrix = M
        self.info_ = {}
        self._chol = self._factor(M, self.damping)

    @staticmethod
    def _factor(M, damping=0.0):
        if M.size == 0:
            return None
        if not np.all(np.isfinite(M)):
            raise CurvatureError("the curvature has non-finite entries (NaN or inf)")
        try:
            chol = linalg.cho_factor(M, lower=True, check_finite=False)
            d = np.abs(np.diag(chol[0]))
            if d.min() ** 2 > COND_LIMIT * d.max() ** 2:  # well conditioned: cond ≥ (max d / min d)²
                return chol
        except linalg.LinAlgError:
            pass
        eig = linalg.eigvalsh(M)
        lo, hi = eig[0], eig[-1]
        if lo > COND_LIMIT * hi:  # a pivot was small, the matrix is not: fine
            return linalg.cho_factor(M, lower=True, check_finite=False)
        kind = "indefinite" if lo < -1e-10 * max(hi, 1.0) else "singular"
        advice = (", or use FisherInfluence, whose curvature is positive semi-definite"
                  if kind == "indefinite" else "")
        cond = f", condition beyond {1 / COND_LIMIT:.0e}" if kind == "singular" else ""
        raise CurvatureError(
            f"the curvature is {kind} (eigenvalues from {lo - damping:.3g} to {hi - damping:.3g}"
            f"{cond}); pass damping >= "
            f"{damping + max(-lo, 0) + 1e-8 * max(hi, 1.0):.3g} or a stronger penalty{advice}"
        )

    def prox_step(self, grad, theta, penalty, l1_factor=1.0, downdate=None):
        """Proximal Newton iterate from ``theta`` with smooth gradient ``grad``.

        The quadratic model uses the full curvature (coordinates may enter or leave the
        support), minus ``downdate`` (a ``p × p`` matrix: removed samples' curvature),
        with the damping, and a unit curvature along the null space so that the step does
        not move along directions the objective ignores, as the factorised solves do not.
        """
        M = self.curvature - downdate if downdate is not None else self.curvature.copy()
        M[np.diag_indices_from(M)] += self.damping
        if self.null_space is not None:
            M += self.null_space @ self.null_space.T
        return prox_newton_step(M, grad, theta, penalty, l1_factor)

    # ----------------------------------------------------------------- solves
    def _expand(self, xs, shape):
        out = np.zeros(shape)
        out[self.active] = xs
        return out

    def solve(self, b):
        """``M⁻¹ b`` for ``b`` of shape (p,) or (p, m); zeros on inactive coordinates."""
        b = np.asarray(b, dtype=float)
        if self._chol is None:
            return np.zeros_like(b)
        xs = linalg.cho_solve(self._chol, b[self.active], check_finite=False)
        return self._expand(xs, b.shape)

    def inverse(self):
        """Dense ``M⁻¹`` (p × p), zero rows and columns on inactive coordinates."""
        return self.solve(np.eye(self.n_params))

    def shifted(self, diag):
        """The solver of ``M − diag(d)`` (self where ``p`` is too large to refactorise)."""
        if self.n_params > EXACT_SHIFT_MAX_PARAMS:
            return self
        d = np.broadcast_to(np.asarray(diag, dtype=float), (self.n_params,))
        key = d.tobytes()
        cache = self.__dict__.setdefault("_shift_cache", {})
        if key not in cache:
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            cache[key] = DenseSolver(self.curvature - np.diag(d), self.damping, self.null_space,
                                     self.active)
        return cache[key]

    def downdated_solve(self, b, U, C, diag=None):
        """Solve ``(M − Uᵀ C U − diag(d)) x = b``.

        The diagonal ``d`` (the penalty weight a mean-scaled objective loses with the
        removed samples) is applied exactly: when ``M − UᵀCU`` is formed (``m ≥ p``), and on
        the Woodbury path by factorising ``M − diag(d)`` (cached for the last few ``d``:
        equal folds share one) while ``p ≤ EXACT_SHIFT_MAX_PARAMS``; beyond, where that
        factorisation would cost more than the solve, it is dropped, an error of the order
        of the removed weight share.

        Parameters
        ----------
        b : ndarray of shape (p,) or (p, r)
        U : ndarray of shape (m, p), or (n, K, p)
            Stacked Jacobians of the removed samples, or the per-sample Jacobians.
        C : ndarray of shape (m, m), or (n, K, K)
            Their weighted output curvature (block diagonal), or its diagonal blocks
            (with per-sample ``U``: the m × m matrix is then never formed).
        """
        b = np.asarray(b, dtype=float)
        per_sample = U.ndim == 3
        if per_sample:
            K = U.shape[1]
            U = U.reshape(-1, U.shape[-1])
        a = self.active
        Ua = U if a.all() else U[:, a]
        if Ua.shape[0] >= Ua.shape[1]:
            M = self.matrix - (block_gram(Ua.reshape(-1, K, Ua.shape[1]), C) if per_sample
                               else Ua.T @ (C @ Ua))
            if diag is not None:
                M[np.diag_indices_from(M)] -= np.broadcast_to(diag, a.shape)[a]
            xs = linalg.cho_solve(self._factor(M, self.damping), b[a], check_finite=False)
            return self._expand(xs, b.shape)
        if C.ndim == 3:
            C = linalg.block_diag(*C)
        base = self.shifted(diag) if diag is not None and np.any(diag) else self
        Ab = base.solve(b)
        AUt = base.solve(U.T)
        G = U @ AUt
        m = G.shape[0]
        try:
            inner = np.linalg.solve(np.eye(m) - G @ C, U @ Ab)
        except np.linalg.LinAlgError:
            raise CurvatureError("the curvature without these samples is singular "
                                 "(they carry directions no other sample does); add damping") from None
        return Ab + AUt @ (C @ inner)
