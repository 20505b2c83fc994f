"""The dual (``n × n``) form of a linear model's curvature, for ``p ≫ n`` (sparse text).

A GLM's curvature is ``M = Zᵀ C Z + D``: ``Z`` the ``n × p`` design of the curvature
rows, ``C = diag(c_i W_i)`` and ``D`` the ℓ2 penalty's diagonal plus damping. On the
penalised coordinates ``P`` (``D > 0``) Woodbury's identity, in the form that tolerates
``C_i = 0`` (saturated rows, zero weights), reads::

    M_PP⁻¹ = D⁻¹ − D⁻¹ Z_Pᵀ S B⁻¹ S Z_P D⁻¹,   B = I + S Q S,   S = C^{1/2},   Q = Z_P D⁻¹ Z_Pᵀ

so only the ``n × n`` kernel ``Q`` and the Cholesky factor of ``B`` (eigenvalues ≥ 1) are
stored. The few unpenalised coordinates ``F`` (the intercept) are eliminated exactly by
the Schur complement ``T = M_FF − M_FP Y`` with ``Y = M_PP⁻¹ M_PF`` (``|P| × |F|``). A
Hessian with negative weights (a non-canonical link away from the optimum) uses
``S = |C|^{1/2}``, ``Σ = sign(C)`` and ``B = I + Σ S Q S`` (LU), the middle factor then
being ``B⁻¹ Σ``.

Leave-one-out and K-fold need quadratics of rows ``U`` (``J_i M⁻¹ J_iᵀ``, a fold's
``Z_F M⁻¹ Z_Fᵀ``); with ``E = U_P D⁻¹ Z_Pᵀ S`` (``m × n``) and ``V = U_P Y − U_F``::

    U M⁻¹ Uᵀ = U_P D⁻¹ U_Pᵀ − E B⁻¹ Σ Eᵀ + V T⁻¹ Vᵀ

all from ``n × n`` and ``m × n`` arrays (``m ≤ batch_size``). Costs: ``O(nnz · n)`` for the
kernel and ``n³/3`` for the factor, once; ``O(nnz + n² + p)`` per solved column. Removals
(:meth:`DualSolver.downdated_solve`) are Woodbury steps on top, with an ``m × m`` system.
Registered as ``solver="dual"`` (:mod:`.solvers`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy import linalg

from ..exceptions import CurvatureError
from .operators import GramOperator
from .solvers import DENSE_MAX_PARAMS, InverseOperator, Solver, register_solver

__all__ = ["DualSolver", "DUAL_MAX_FREE"]

#: most unpenalised coordinates the Schur complement eliminates (dense |F| × |F|)
DUAL_MAX_FREE = 64


def _dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x, dtype=float)


@register_solver("dual")
class DualSolver(Solver):
    """``M⁻¹`` of ``M = Zᵀ C Z + D`` through the ``n × n`` dual form (module docstring).

    Parameters
    ----------
    operator : GramOperator
        A single-output linear model's curvature, penalty diagonal included.
    damping : float, default=0.0
        Added to the diagonal.
    null_space : None
        Single-output linear models have none (accepted for the factory).
    active : ndarray of bool, shape (p,), optional
        Coordinates that move; solves return 0 on the others.
    batch_size : int, default=4096
        Rows of ``U`` per block in :meth:`quadratic` (bounds the ``m × n`` arrays).
    random_state : ignored
        The dual form is deterministic (accepted for the factory).

    Attributes
    ----------
    info_ : dict
        ``n_samples`` (curvature rows), ``n_free`` (unpenalised coordinates eliminated),
        ``kernel_mib`` (memory of the ``n × n`` factor).
    """

    sparse_rows = True
    uses_batch_size = True

    def __init__(self, operator, damping=0.0, null_space=None, active=None, batch_size=4096,
                 random_state=None):
        if not isinstance(operator, GramOperator):
            raise ValueError("solver='dual' needs a linear model's curvature (a weighted Gram "
                             "matrix of its design); use solver='cg' for networks")
        if operator.n_outputs != 1 or (null_space is not None and np.size(null_space)):
            raise ValueError(
                f"solver='dual' supports single-output linear models (binary logistic, linear, "
                f"Poisson/Gamma/Tweedie); this one has {operator.n_outputs} outputs: use "
                f"solver='cg' (or 'dense' for up to {DENSE_MAX_PARAMS} parameters)")
        p = operator.n_params
        self.n_params, self.curvature = p, operator
        self.damping, self.null_space = float(damping), None
        self.active = np.ones(p, bool) if active is None else np.asarray(active, bool)
        self.batch_size = int(batch_size)
        d = operator.diagonal + self.damping
        if (d[self.active] < 0).any():
            raise CurvatureError("the curvature has a negative diagonal term; pass damping >= "
                                 f"{-d[self.active].min():.3g}")
        self._P, self._F = self.active & (d > 0), self.active & (d == 0)
        if self._F.sum() > DUAL_MAX_FREE:
            raise ValueError(
                f"solver='dual' needs an ℓ2 penalty on all but a few coordinates; {self._F.sum()} "
                f"are unpenalised: use a penalised model (e.g. LogisticRegression(C=...), Ridge), "
                f"pass damping > 0, or use solver='cg'")
        Z = operator.design.tocsr() if sp.issparse(operator.design) else np.asarray(operator.design)
        w = operator.weights[:, 0, 0]
        self._Zp, self._dinv = Z[:, self._P], 1.0 / d[self._P]
        self._s = np.sqrt(np.abs(w))
        self._sign = np.sign(w) if (w < 0).any() else None
        n = len(w)
        B = self._s[:, None] * self._kernel(self._Zp) * self._s[None, :]
        if self._sign is not None:
            B *= self._sign[:, None]
        B[np.diag_indices_from(B)] += 1.0
        if not np.all(np.isfinite(B)):
            raise CurvatureError("the curvature has non-finite entries (NaN or inf)")
        self._B = (linalg.cho_factor(B, lower=True, check_finite=False) if self._sign is None
                   else linalg.lu_factor(B, check_finite=False))
        self.info_ = {"n_samples": n, "n_free": int(self._F.sum()), "kernel_mib": 8 * n * n / 2**20}
        self._Y = None
        if self._F.any():  # Schur complement over the unpenalised coordinates
            Zf = _dense(Z[:, self._F])
            self._MPF = _dense(self._Zp.T @ (w[:, None] * Zf))
            self._Y = self._solve_penalised(self._MPF)
            T = Zf.T @ (w[:, None] * Zf) - self._MPF.T @ self._Y
            ev = linalg.eigvalsh(T)
            if not ev[0] > 1e-12 * max(ev[-1], 1.0):
                raise CurvatureError(
                    "the curvature is singular along the unpenalised coordinates (e.g. an "
                    f"intercept without weighted rows; eigenvalues from {ev[0]:.3g}); pass damping > 0")
            self._T = linalg.cho_factor(T, lower=True, check_finite=False)

    # ------------------------------------------------------------ the dual pieces
    def _kernel(self, U_P):
        """``U_P D⁻¹ Z_Pᵀ`` (m × n), dense."""
        scaled = U_P @ sp.diags(self._dinv) if sp.issparse(U_P) else U_P * self._dinv
        return _dense(scaled @ self._Zp.T)

    def _middle(self, E):
        """``B⁻¹ Σ E`` for ``E`` of shape (n, m)."""
        if self._sign is None:
            return linalg.cho_solve(self._B, E, check_finite=False)
        return linalg.lu_solve(self._B, self._sign[:, None] * E, check_finite=False)

    def _solve_penalised(self, b):
        """``M_PP⁻¹ b`` for ``b`` of shape (|P|, m)."""
        t = self._dinv[:, None] * b
        u = self._middle(self._s[:, None] * np.asarray(self._Zp @ t))
        return t - self._dinv[:, None] * np.asarray(self._Zp.T @ (self._s[:, None] * u))

    # ------------------------------------------------------------------ protocol
    def solve(self, b):
        """``M⁻¹ b`` for ``b`` of shape (p,) or (p, m) (dense or sparse); 0 off ``active``."""
        b = _dense(b)
        B = b.reshape(self.n_params, -1)
        x = np.zeros_like(B)
        y = self._solve_penalised(B[self._P])
        if self._Y is not None:
            xF = linalg.cho_solve(self._T, B[self._F] - self._MPF.T @ y, check_finite=False)
            y -= self._Y @ xF
            x[self._F] = xF
        x[self._P] = y
        return x.reshape(b.shape)

    def quadratic(self, U, diagonal=False):
        """``U M⁻¹ Uᵀ`` for rows ``U`` (m, p), dense or sparse, or only its diagonal (in blocks
        of ``batch_size`` rows)."""
        U = U.tocsr() if sp.issparse(U) else np.atleast_2d(np.asarray(U, dtype=float))
        if not diagonal:
            return self._quadratic_block(U, False)
        m, step = U.shape[0], max(self.batch_size, 1)
        return np.concatenate([self._quadratic_block(U[i:i + step], True)
                               for i in range(0, m, step)]) if m else np.zeros(0)

    def _quadratic_block(self, U, diagonal):
        U_P = U[:, self._P]
        E = self._kernel(U_P) * self._s[None, :]          # U_P D⁻¹ Z_Pᵀ S, (m, n)
        X = self._middle(E.T)                             # B⁻¹ Σ Eᵀ, (n, m)
        if diagonal:
            sq = U_P.multiply(U_P) if sp.issparse(U_P) else U_P**2
            q = np.asarray(sq @ self._dinv).ravel() - np.einsum("mn,nm->m", E, X)
        else:
            scaled = U_P @ sp.diags(self._dinv) if sp.issparse(U_P) else U_P * self._dinv
            q = _dense(scaled @ U_P.T) - E @ X
        if self._Y is not None:
            V = np.asarray(U_P @ self._Y) - _dense(U[:, self._F])
            TV = linalg.cho_solve(self._T, V.T, check_finite=False)
            q = q + (np.einsum("mf,fm->m", V, TV) if diagonal else V @ TV)
        return q

    def inverse(self):
        """Dense ``M⁻¹`` (p × p), only up to ``DENSE_MAX_PARAMS``; use
        :meth:`inverse_operator` or :meth:`solve` beyond."""
        if self.n_params > DENSE_MAX_PARAMS:
            raise MemoryError(
                f"the dual solver does not form the {self.n_params} × {self.n_params} inverse "
                f"({8 * self.n_params**2 / 2**30:.1f} GiB); use inverse_operator() or solve()")
        return self.solve(np.eye(self.n_params))

    def inverse_operator(self):
        """``M⁻¹`` as an :class:`~.solvers.InverseOperator` (never ``p × p``)."""
        return InverseOperator(self)

    def shifted(self, diag):
        """The solver of ``M − diag(d)`` (a mean-scaled penalty's share removed), cached for
        the last few ``d``."""
        d = np.broadcast_to(np.asarray(diag, dtype=float), (self.n_params,))
        cache = self.__dict__.setdefault("_shift_cache", {})
        key = d.tobytes()
        if key not in cache:
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            cache[key] = DualSolver(self.curvature.add_diagonal(-d), self.damping, None,
                                    self.active, self.batch_size)
        return cache[key]

    def downdated_solve(self, b, U, C, diag=None):
        """Solve ``(M − Uᵀ C U − diag(d)) x = b`` by a Woodbury step on the dual form.

        ``U`` holds the removed rows' Jacobians (m, p), dense or sparse (or (m, 1, p)),
        ``C`` their curvature (m × m, or its diagonal blocks (m, 1, 1)); ``d`` is applied
        exactly (:meth:`shifted`). With ``A = (M − diag(d))⁻¹`` and ``G = U A Uᵀ``::

            x = A (b + Uᵀ C (I − G C)⁻¹ U A b)
        """
        base = self.shifted(diag) if diag is not None and np.any(diag) else self
        if not sp.issparse(U) and np.ndim(U) == 3:
            U = np.asarray(U).reshape(-1, U.shape[-1])
        C = np.diag(C[:, 0, 0]) if C.ndim == 3 else np.asarray(C)
        Ab = base.solve(b)
        G = base.quadratic(U)
        try:
            inner = np.linalg.solve(np.eye(len(C)) - G @ C,
                                    np.asarray(U @ Ab).reshape(len(C), -1))
        except np.linalg.LinAlgError:
            raise CurvatureError("the curvature without these samples is singular "
                                 "(they carry directions no other sample does); add damping") from None
        correction = np.asarray(U.T @ (C @ inner))
        return Ab + base.solve(correction).reshape(Ab.shape)

    def prox_step(self, *args, **kwargs):
        raise ValueError("solver='dual' cannot take the proximal Newton steps of an ℓ1 penalty "
                         "(they need the dense curvature): use an ℓ2 penalty, or solver='dense' "
                         f"with at most {DENSE_MAX_PARAMS} features (e.g. after SelectKBest)")
