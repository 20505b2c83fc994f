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
A multinomial model (``K`` outputs, curvature ``Σ_i z_i z_iᵀ ⊗ W_i``) is the same with the
``n·K`` rows ``z_i ⊗ √λ_ik v_ik`` of the eigen-decompositions ``W_i = Σ_k λ_ik v_ik v_ikᵀ``
(:func:`_as_gram`); its leave-one-out needs the per-sample ``K × K`` blocks
(:meth:`DualSolver.quadratic_blocks`). Registered as ``solver="dual"`` (:mod:`.solvers`).
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


def _as_gram(operator, null_space=None):
    """``operator`` (plus ``N Nᵀ`` for a null space ``N``) as a single-output
    :class:`GramOperator` ``Σ_j σ_j r_j r_jᵀ + D``.

    A K-output linear model's ``Σ_i z_i z_iᵀ ⊗ W_i``, with ``W_i = V_i Λ_i V_iᵀ``, has the
    rows ``r_ik = z_i ⊗ √|λ_ik| v_ik`` (``J_iᵀ`` times an eigenvector: ``n·K`` rows, sparse
    with the design) and weights ``sign λ_ik``; the null space's columns are rows of weight
    1. Any other symmetric operator small enough to be dense is split the same way into
    eigen-rows: correct, but no cheaper than the dense solver, and ``solver="auto"`` never
    takes it there.
    """
    if isinstance(operator, GramOperator):
        Z, K = operator.design, operator.n_outputs
        if K == 1:
            rows, weights = Z, operator.weights[:, 0, 0]
        else:
            lam, V = np.linalg.eigh(operator.weights)          # (n, K), (n, K, K)
            R = np.sqrt(np.abs(lam))[:, :, None] * np.swapaxes(V, 1, 2)   # row k: √|λ_k| v_kᵀ
            J = sp.kron(Z, sp.eye(K), format="csr") if sp.issparse(Z) else np.kron(Z, np.eye(K))
            rows = sp.block_diag(list(R), format="csr") @ J
            weights = np.where(np.abs(lam) > 1e-14 * np.abs(lam).max(initial=1e-300),
                               np.sign(lam), 0.0).ravel()
        if null_space is not None and np.size(null_space):
            stack = sp.vstack if sp.issparse(rows) else np.vstack
            rows = stack([rows, sp.csr_matrix(null_space.T) if sp.issparse(rows) else null_space.T])
            weights = np.concatenate([weights, np.ones(null_space.shape[1])])
        if rows is Z and K == 1:
            return operator
        return GramOperator(rows, weights[:, None, None], diagonal=operator.diagonal)
    if operator.n_params > DENSE_MAX_PARAMS:
        raise ValueError("solver='dual' needs a linear model's curvature (a weighted Gram matrix "
                         "of its design); use solver='cg' for networks")
    M = operator.dense()
    M[np.diag_indices_from(M)] -= operator.diagonal
    lam, V = linalg.eigh(M)
    keep = np.abs(lam) > 1e-12 * max(np.abs(lam).max(initial=0.0), 1e-300)
    rows = np.sqrt(np.abs(lam[keep]))[:, None] * V[:, keep].T
    gram = GramOperator(rows, np.sign(lam[keep])[:, None, None], diagonal=operator.diagonal)
    return _as_gram(gram, null_space)


@register_solver("dual")
class DualSolver(Solver):
    """``M⁻¹`` of ``M = Zᵀ C Z + D`` through the ``n × n`` dual form (module docstring).

    Parameters
    ----------
    operator : GramOperator or CurvatureOperator
        A linear model's curvature, penalty diagonal included; a K-output one is written
        with ``n·K`` rows, any other operator is made dense and split into eigen-rows (see
        :func:`_as_gram`).
    damping : float, default=0.0
        Added to the diagonal.
    null_space : ndarray of shape (p, r), optional
        Orthonormal directions the objective ignores (a multinomial model's common
        intercept shift): ``N Nᵀ`` is added, as rows of weight 1.
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
    uses_random_state = True
    can_shift = True

    def __init__(self, operator, damping=0.0, null_space=None, active=None, batch_size=4096,
                 random_state=None):
        self.curvature, self.null_space = operator, null_space
        operator = _as_gram(operator, null_space)
        p = operator.n_params
        self.n_params, self.damping = p, float(damping)
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
        self._Z, self._Zp, self._dinv = Z, Z[:, self._P], 1.0 / d[self._P]
        self._s = np.sqrt(np.abs(w))
        self._sign = np.sign(w) if (w < 0).any() else None
        n = len(w)
        self._split_columns()
        self._Q = self._kernel(self._Zp)                   # Z_P D⁻¹ Z_Pᵀ, kept for the design
        self._Q2 = self._Linv_diag = None
        B = self._s[:, None] * self._Q * self._s[None, :]
        if self._sign is not None:
            B *= self._sign[:, None]
        B[np.diag_indices_from(B)] += 1.0
        if not np.all(np.isfinite(B)):
            raise CurvatureError("the curvature has non-finite entries (NaN or inf)")
        # a clean lower factor (zeros above): its triangular inverse gives diag(B⁻¹)
        self._B = ((linalg.cholesky(B, lower=True, overwrite_a=True, check_finite=False), True)
                   if self._sign is None else linalg.lu_factor(B, check_finite=False))
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
                    f"intercept without weighted rows; eigenvalues from {ev[0]:.3g}); "
                    "pass damping > 0")
            self._T = linalg.cho_factor(T, lower=True, check_finite=False)

    # ------------------------------------------------------------ the dual pieces
    def _split_columns(self):
        """Frequent columns of a sparse design (a text's common words) are kept dense: their
        share of ``U D⁻¹ Zᵀ`` is a dense product instead of a costly sparse one."""
        self._freq = None
        if not sp.issparse(self._Zp):
            return
        n = self._Zp.shape[0]
        counts = np.bincount(self._Zp.indices, minlength=self._Zp.shape[1])
        limit = max(2**23 // max(n, 1), 1)                 # at most 64 MiB of dense columns
        freq = np.flatnonzero(counts > max(n / 40, 16))
        freq = freq[np.argsort(-counts[freq], kind="stable")[:limit]]
        if len(freq):
            self._freq = np.zeros(self._Zp.shape[1], bool)
            self._freq[freq] = True
            Zc = self._Zp.tocsc()
            self._Z_freq = Zc[:, self._freq].toarray()
            self._Z_rare = Zc[:, ~self._freq].tocsr()

    def _kernel(self, U_P, dinv=None):
        """``U_P D⁻¹ Z_Pᵀ`` (m × n), dense (``dinv`` replaces ``D⁻¹``)."""
        dinv = self._dinv if dinv is None else dinv
        if not sp.issparse(U_P):
            return _dense((U_P * dinv) @ self._Zp.T)
        if self._freq is None:
            return _dense((U_P @ sp.diags(dinv)) @ self._Zp.T)
        f = self._freq
        own = U_P is self._Zp                                # the kernel of the design itself
        U_P = U_P.tocsc()
        out = ((self._Z_freq if own else _dense(U_P[:, f])) * dinv[f]) @ self._Z_freq.T
        out += _dense((U_P[:, ~f] @ sp.diags(dinv[~f])).tocsr() @ self._Z_rare.T)
        return out

    def _is_design(self, U):
        """Whether the rows ``U`` are the curvature's own rows (then ``Q`` is reused)."""
        Z = self._Z
        if U.shape != Z.shape or sp.issparse(U) != sp.issparse(Z):
            return False
        if not sp.issparse(U):
            return np.array_equal(U, Z)
        U = U.tocsr()
        return (np.array_equal(U.indptr, Z.indptr) and np.array_equal(U.indices, Z.indices)
                and np.array_equal(U.data, Z.data))

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
        if not diagonal or (self._sign is None and self._is_design(U)):  # leverages: O(n) memory
            return self._quadratic_block(U, diagonal)
        m, step = U.shape[0], max(self.batch_size, 1)
        return np.concatenate([self._quadratic_block(U[i:i + step], True)
                               for i in range(0, m, step)]) if m else np.zeros(0)

    def solve_norms(self, b):
        """``‖M⁻¹ b‖`` of each column of ``b`` (p, m), dense or sparse, from ``n × m`` arrays.

        With ``t = D⁻¹ b_P``, ``u = S B⁻¹ Σ S Z_P t`` and ``y = M_PP⁻¹ b_P = t − D⁻¹ Z_Pᵀ u``:
        ``‖y‖² = ‖t‖² − 2 uᵀ Z_P D⁻¹ t + uᵀ Q₂ u`` with ``Q₂ = Z_P D⁻² Z_Pᵀ``; with
        unpenalised coordinates ``x_P = y − Y x_F`` adds ``x_Fᵀ (YᵀY x_F − 2 Yᵀy) + ‖x_F‖²``.
        """
        b = b.tocsr() if sp.issparse(b) else np.asarray(b, dtype=float).reshape(self.n_params, -1)
        bP = b[self._P]
        dinv = self._dinv
        t = sp.diags(dinv) @ bP if sp.issparse(b) else dinv[:, None] * bP
        r = self._s[:, None] * _dense(self._Zp @ t)
        Zt2 = _dense(self._Zp @ (sp.diags(dinv) @ t if sp.issparse(t) else dinv[:, None] * t))
        sq = (np.asarray(t.multiply(t).sum(axis=0)).ravel() if sp.issparse(t)
              else np.einsum("pm,pm->m", t, t))
        uniform = len(dinv) and np.ptp(dinv) <= 1e-15 * dinv.max()
        if self._sign is None and uniform:
            # u = S w, w = B⁻¹ r = L⁻ᵀ v, v = L⁻¹ r: uᵀ Q u = wᵀ (B − I) w = ‖v‖² − ‖w‖², Q₂ = Q/d
            v = linalg.solve_triangular(self._B[0], r, lower=True, check_finite=False)
            w = linalg.solve_triangular(self._B[0], v, lower=True, trans="T", check_finite=False)
            u = self._s[:, None] * w
            uQu = dinv[0] * (np.einsum("nm,nm->m", v, v) - np.einsum("nm,nm->m", w, w))
        else:
            if self._Q2 is None:
                self._Q2 = self._kernel(self._Zp, dinv**2)
            u = self._s[:, None] * self._middle(r)
            uQu = np.einsum("nm,nm->m", u, self._Q2 @ u)
        sq += uQu - 2 * np.einsum("nm,nm->m", Zt2, u)
        if self._Y is not None:
            MY = np.hstack([self._MPF, self._Y])              # (|P|, 2|F|)
            G = _dense(self._Zp @ (dinv[:, None] * MY))
            f = self._Y.shape[1]
            tY = _dense(t.T @ MY).T - G.T @ u                 # M_PFᵀ y and Yᵀ y
            xF = linalg.cho_solve(self._T, _dense(b[self._F]) - tY[:f], check_finite=False)
            YtY = self._Y.T @ self._Y
            sq += np.einsum("fm,fm->m", xF, YtY @ xF - 2 * tY[f:] + xF)
        return np.sqrt(np.maximum(sq, 0.0))

    def quadratic_blocks(self, U, K):
        """Diagonal ``K × K`` blocks of ``U M⁻¹ Uᵀ`` for rows ``U`` (m·K, p) stacked per
        sample (a multinomial model's ``J_i``): shape (m, K, K), in blocks of samples whose
        ``m·K × n`` arrays stay within 64 MiB."""
        if K == 1:
            return self.quadratic(U, diagonal=True)[:, None, None]
        U = U.tocsr() if sp.issparse(U) else np.asarray(U, dtype=float)
        m, n = U.shape[0] // K, len(self._s)
        step = max(min(self.batch_size, 2**23 // max(n * K, 1)), 1)
        return np.concatenate([self._blocks(U[i * K:(i + step) * K], K)
                               for i in range(0, m, step)]) if m else np.zeros((0, K, K))

    def _blocks(self, U, K):
        m = U.shape[0] // K
        U_P = U[:, self._P]
        E = self._kernel(U_P) * self._s[None, :]                      # (m·K, n)
        X = self._middle(E.T)                                         # (n, m·K)
        out = -np.einsum("mkn,nml->mkl", E.reshape(m, K, -1), X.reshape(-1, m, K))
        scaled = U_P @ sp.diags(self._dinv) if sp.issparse(U_P) else U_P * self._dinv
        for k in range(K):                                            # U_P D⁻¹ U_Pᵀ, per sample
            for l in range(K):
                prod = (scaled[k::K].multiply(U_P[l::K]) if sp.issparse(U_P)
                        else scaled[k::K] * U_P[l::K])
                out[:, k, l] += np.asarray(prod.sum(axis=1)).ravel()
        if self._Y is not None:
            V = np.asarray(U_P @ self._Y) - _dense(U[:, self._F])       # (m·K, |F|)
            TV = linalg.cho_solve(self._T, V.T, check_finite=False)
            out += np.einsum("mkf,fml->mkl", V.reshape(m, K, -1), TV.reshape(-1, m, K))
        return out

    def _quadratic_block(self, U, diagonal):
        U_P = U[:, self._P]
        if diagonal and self._sign is None and self._is_design(U):
            q = self._design_leverages()
        else:
            q = self._penalised_quadratic(U_P, diagonal)
        if self._Y is not None:
            V = np.asarray(U_P @ self._Y) - _dense(U[:, self._F])
            TV = linalg.cho_solve(self._T, V.T, check_finite=False)
            q = q + (np.einsum("mf,fm->m", V, TV) if diagonal else V @ TV)
        return q

    def _design_leverages(self):
        """``diag(Z_P M_PP⁻¹ Z_Pᵀ)`` of the curvature's own rows from ``diag(B⁻¹)``.

        ``S Q S B⁻¹ S Q S = K − I + B⁻¹`` for ``K = S Q S`` (as ``B = I + K``), so the
        leverage is ``(1 − B⁻¹_ii) / s_i²``: one triangular inverse (``n³/3``) instead of
        ``n`` solves. Rows with ``K_ii < 1e-3`` (nearly zero weight), where that quotient
        loses digits, take the direct formula.
        """
        if self._Linv_diag is None:
            Linv, info = linalg.lapack.dtrtri(self._B[0], lower=1)
            if info != 0:
                raise CurvatureError(f"the dual factor is singular (LAPACK dtrtri info={info})")
            self._Linv_diag = np.einsum("ij,ij->j", Linv, Linv)  # diag(B⁻¹) = diag(L⁻ᵀL⁻¹)
        k = self._s**2 * np.diag(self._Q)
        out = np.empty(len(k))
        big = k >= 1e-3
        out[big] = (1.0 - self._Linv_diag[big]) / self._s[big] ** 2
        small = np.flatnonzero(~big)
        if len(small):
            E = self._Q[small] * self._s[None, :]
            out[small] = np.diag(self._Q)[small] - np.einsum("mn,nm->m", E, self._middle(E.T))
        return out

    def _penalised_quadratic(self, U_P, diagonal):
        """``U_P M_PP⁻¹ U_Pᵀ`` or its diagonal."""
        E = self._kernel(U_P) * self._s[None, :]          # U_P D⁻¹ Z_Pᵀ S, (m, n)
        X = self._middle(E.T)                             # B⁻¹ Σ Eᵀ, (n, m)
        if diagonal:
            sq = U_P.multiply(U_P) if sp.issparse(U_P) else U_P**2
            return np.asarray(sq @ self._dinv).ravel() - np.einsum("mn,nm->m", E, X)
        else:
            scaled = U_P @ sp.diags(self._dinv) if sp.issparse(U_P) else U_P * self._dinv
            return _dense(scaled @ U_P.T) - E @ X

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
            cache[key] = DualSolver(self.curvature.add_diagonal(-d), self.damping, self.null_space,
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
        C = linalg.block_diag(*C) if C.ndim == 3 else np.asarray(C)
        Ab = base.solve(b)
        G = base.quadratic(U)
        try:
            inner = np.linalg.solve(np.eye(len(C)) - G @ C,
                                    np.asarray(U @ Ab).reshape(len(C), -1))
        except np.linalg.LinAlgError:
            raise CurvatureError("the curvature without these samples is singular (they carry "
                                 "directions no other sample does); add damping") from None
        correction = np.asarray(U.T @ (C @ inner))
        return Ab + base.solve(correction).reshape(Ab.shape)

    def prox_step(self, *args, **kwargs):
        raise ValueError("solver='dual' cannot take the proximal Newton steps of an ℓ1 penalty "
                         "(they need the dense curvature): use an ℓ2 penalty, or solver='dense' "
                         f"with at most {DENSE_MAX_PARAMS} features (e.g. after SelectKBest)")
