"""Dense factorisation of a curvature matrix, and its low-rank down-dates.

The curvature ``M`` (Hessian or Fisher of the objective, plus damping) is factorised
once. Cholesky is tried first; where it fails the symmetric eigendecomposition tells
whether ``M`` is singular or indefinite, and the error says which damping would help.

**Another damping** (:meth:`DenseSolver.with_damping`, the estimators' ``set_params(damping=)``
after fit) never rebuilds ``M``: it is refactorised by Cholesky (``p³/3``), or solved from
the eigendecomposition ``M = Q diag(λ) Qᵀ`` computed once, as ``Q diag(1/(λ + δ)) Qᵀ``
(``O(p²)`` a solve, ``p³`` the inverse, no factorisation). The eigendecomposition costs
about ``EIGEN_COST`` Choleskys (LAPACK's tridiagonal reduction is memory-bound), so by
default (``redamp="auto"``) re-dampings are refactorised until that many Choleskys have been
spent, or at the first re-damping after one that formed the dense inverse (its every row's
quadratic costs a curvature build a damping), and the eigendecomposition is kept from then
on: a sweep of solves costs at most about twice the cheaper of the two (ski rental).
On the spectral path the leave-one-out quadratics ``U M⁻¹ Uᵀ = (UQ) diag(1/(λ + δ)) (UQ)ᵀ``
keep the projected rows ``UQ`` across dampings (no ``p²`` work a row after the first), and a
uniform shift ``M − sI`` (a mean-scaled weight decay's share) is one more damping. Singularity is judged at every damping as
at the first: from ``λ + δ`` where that proves ``M + δI`` well conditioned (Jacobi-scaled
condition ≤ p × unscaled, van der Sluis), else by the Cholesky checks below, so a damping
that makes a singular curvature solvable works and damping 0 on a singular one raises.

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

import copy
import hashlib

import numpy as np
import scipy.sparse as sp
from scipy import linalg

from .._linalg import block_gram
from ..exceptions import CurvatureError
from .operators import CurvatureOperator
from .proximal import prox_newton_step
from .solvers import InverseOperator, Solver, register_solver

__all__ = ["DenseSolver", "COND_LIMIT"]

#: smallest eigenvalue / largest below which the curvature counts as singular: solves lose
#: about 12 digits there, and rounding may make a singular matrix pass Cholesky
COND_LIMIT = 1e-12
#: largest p for which a Woodbury down-date refactorises M − diag(d) to keep d exact
EXACT_SHIFT_MAX_PARAMS = 4000
#: a symmetric eigendecomposition's cost in Choleskys of the same matrix (scipy's LAPACK, one
#: thread, p = 4,810: eigh 44.5 s, Cholesky 1.73 s); re-damping switches to it
#: (``redamp="auto"``) once the re-dampings' Choleskys would have cost as much, or after the
#: first dense inverse at a re-damping: it serves every row's quadratic (leave-one-out,
#: self-influence), O(n K p²) a damping here against O(n K² p) from the kept ``U Q``
EIGEN_COST = 25
#: bytes of projected rows ``U Q`` kept across dampings (the spectral path's quadratics
#: ``U M⁻¹ Uᵀ = (UQ) diag(1/(λ+δ)) (UQ)ᵀ``: leave-one-out at a new damping without ``p²`` work a row)
PROJECTED_MAX_BYTES = 2**30
#: the spectral solve is used where cond(M + δI) ≤ min(1/(p · COND_LIMIT), 1/SPECTRAL_LIMIT):
#: then the Jacobi-scaled condition, which the Cholesky path judges, is ≤ 1/COND_LIMIT as well,
#: and the solve keeps ~8 digits; elsewhere Cholesky refactorises and judges
SPECTRAL_LIMIT = 1e-8


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
    redamp : {"auto", "cholesky", "eigen"}, default="auto"
        How :meth:`with_damping` re-solves at another damping: a Cholesky per damping,
        the eigendecomposition computed at the first re-damping, or (``"auto"``) Choleskys
        until they have cost ``EIGEN_COST`` of them, then the eigendecomposition.
    """

    dense = True
    can_shift = True
    has_prox_step = True
    options = {"redamp": "auto"}

    def __init__(self, matrix, damping=0.0, null_space=None, active=None, *, redamp="auto"):
        if redamp not in ("auto", "cholesky", "eigen"):
            raise ValueError(f"redamp must be 'auto', 'cholesky' or 'eigen', got {redamp!r}")
        self.redamp = redamp
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
        self.info_ = {"factorisation": "cholesky"}
        self._eigen = None       # (Q, 1/(λ + δ)) where solves go through the eigendecomposition
        # shared by the solvers re-damped from this one: M's eigendecomposition once computed,
        # the factorisation work re-damping has spent (in Choleskys), projected rows U Q
        self._kept = {"eigen": None, "spent": 0, "projected": {}}
        self._chol = self._factor(M, self.damping)

    def with_damping(self, damping):
        """This curvature at another ``damping``, without a new curvature build: refactorised
        by Cholesky, or from ``M``'s eigendecomposition (computed once, kept by every solver
        re-damped from this one) as ``Q diag(1/(λ + δ)) Qᵀ`` (``redamp``, module docstring).

        Raises
        ------
        CurvatureError
            Where ``M + δI`` is singular or indefinite, as a fresh factorisation would.
        """
        damping = float(damping)
        kept = self._kept
        if (kept["eigen"] is None and self.matrix.size and self.redamp != "cholesky"
                and (self.redamp == "eigen" or kept["spent"] + 1 >= EIGEN_COST)):
            lam, Q = linalg.eigh(self.matrix, check_finite=False)   # at this solver's damping
            kept["eigen"] = (lam - self.damping, Q)
        spectral = self._spectral(damping)
        if spectral is not None:
            return spectral
        new = self._copy(damping)
        kept["spent"] += 1
        new._redamped = True
        new._chol = self._factor(new.matrix, damping)
        return new

    def _copy(self, damping):
        """This solver's state at ``damping``, not yet factorised."""
        new = copy.copy(self)
        for cache in ("_inverse", "_shift_cache"):   # both hold this damping's answers
            new.__dict__.pop(cache, None)
        new.damping = damping
        new.matrix = self.matrix.copy()
        new.matrix[np.diag_indices_from(new.matrix)] += damping - self.damping
        new._chol = new._eigen = None
        new.info_ = {"factorisation": "cholesky"}
        return new

    def _spectral(self, damping):
        """The solver at ``damping`` from the kept eigendecomposition, or None where there is
        none or ``M + δI`` is not well enough conditioned for it (then Cholesky judges)."""
        if self._kept["eigen"] is None:
            return None
        lam, Q = self._kept["eigen"]
        mu = lam + damping
        if not (mu.size and mu[-1] > 0 and mu[0] > max(SPECTRAL_LIMIT, mu.size * COND_LIMIT) * mu[-1]):
            return None
        new = self._copy(damping)
        new._eigen = (Q, 1.0 / mu)
        new.info_ = {"factorisation": "eigen"}
        return new

    @staticmethod
    def _factor(M, damping=0.0):
        if M.size == 0:
            return None
        if not np.all(np.isfinite(M)):
            raise CurvatureError("the curvature has non-finite entries (NaN or inf)")
        # Conditioning is judged after Jacobi scaling S M S (S = diag(M)^-1/2): Cholesky's
        # accuracy does not depend on the columns' units (van der Sluis), so X×1e12, X×1e-8
        # or one column ×1e6 is as well posed as X itself; only a near-dependence is singular.
        diag = np.diag(M)
        s = np.where(diag > 0, 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0)), 1.0)
        try:
            chol = linalg.cho_factor(M, lower=True, check_finite=False)
            d = np.abs(np.diag(chol[0])) * s          # the pivots of S M S's factor
            if d.min() ** 2 > COND_LIMIT * d.max() ** 2:  # well conditioned: cond ≥ (max d / min d)²
                return chol
        except linalg.LinAlgError:
            pass
        scaled = linalg.eigvalsh(s[:, None] * M * s[None, :])
        if scaled[0] > COND_LIMIT * scaled[-1]:  # a pivot was small, the matrix is not: fine
            return linalg.cho_factor(M, lower=True, check_finite=False)
        eig = linalg.eigvalsh(M)
        lo, hi = eig[0], eig[-1]
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
        if self._eigen is not None:
            Q, inv = self._eigen
            ba = b[self.active]
            xs = Q @ ((inv[:, None] if ba.ndim == 2 else inv) * (Q.T @ ba))
            return self._expand(xs, b.shape)
        if self._chol is None:
            return np.zeros_like(b)
        xs = linalg.cho_solve(self._chol, b[self.active], check_finite=False)
        return self._expand(xs, b.shape)

    def inverse(self):
        """Dense ``M⁻¹`` (p × p), zero rows and columns on inactive coordinates: from the
        Cholesky factor (LAPACK's ``potri``, ``2p³/3``) or as ``(Q D^½)(Q D^½)ᵀ`` (``syrk``, ``p³``)."""
        q = int(self.active.sum())
        if self._eigen is not None:
            Q, inv = self._eigen
            B = Q * np.sqrt(inv)
            low = linalg.blas.dsyrk(1.0, B.T, trans=1, lower=1)   # B Bᵀ, lower triangle
        elif self._chol is not None:
            if self.__dict__.get("_redamped"):   # quadratics of every row follow
                self._kept["spent"] += EIGEN_COST
            low, info = linalg.lapack.dpotri(self._chol[0], lower=1)
            if info:
                raise CurvatureError(f"inverting the factorised curvature failed (LAPACK info {info})")
        else:
            return np.zeros((self.n_params, self.n_params))
        inner = np.tril(low)
        inner += np.tril(inner, -1).T
        if q == self.n_params:
            return inner
        out = np.zeros((self.n_params, self.n_params))
        out[np.ix_(self.active, self.active)] = inner
        return out

    def inverse_operator(self):
        """The dense ``M⁻¹``, kept; on the spectral path the solves themselves, whose
        quadratics reuse the projected rows ``U Q`` across dampings (no ``p × p`` inverse)."""
        if self._eigen is not None:
            return InverseOperator(self)
        return super().inverse_operator()

    def _projected(self, U):
        """``U_A Q`` for dense rows ``U`` (m, p), kept (by content) across the dampings of this
        curvature while they take at most ``PROJECTED_MAX_BYTES``."""
        Ua = np.ascontiguousarray(U if self.active.all() else U[:, self.active], dtype=float)
        key = (Ua.shape, hashlib.blake2b(Ua.view(np.uint8), digest_size=16).digest())
        store = self._kept["projected"]
        P = store.get(key)
        if P is None:
            P = Ua @ self._eigen[0]
            if sum(x.nbytes for x in store.values()) + P.nbytes <= PROJECTED_MAX_BYTES:
                store[key] = P
        return P

    def quadratic(self, U, diagonal=False):
        """``U M⁻¹ Uᵀ`` or its diagonal; on the spectral path from ``(UQ) diag(1/(λ+δ)) (UQ)ᵀ``."""
        if self._eigen is None or sp.issparse(U):
            return super().quadratic(U, diagonal)
        P = self._projected(np.asarray(U))
        inv = self._eigen[1]
        return (P * P) @ inv if diagonal else (P * inv) @ P.T

    def quadratic_blocks(self, U, K):
        """Per-sample ``K × K`` blocks of ``U M⁻¹ Uᵀ``; on the spectral path from ``UQ``."""
        if self._eigen is None:
            return super().quadratic_blocks(U, K)
        U = U.toarray() if sp.issparse(U) else np.asarray(U)
        P = self._projected(U).reshape(U.shape[0] // K, K, -1)
        return np.einsum("mkr,mlr->mkl", P * self._eigen[1], P)

    def shifted(self, diag):
        """The solver of ``M − diag(d)`` (self where ``p`` is too large to refactorise)."""
        if self.n_params > EXACT_SHIFT_MAX_PARAMS:
            return self
        d = np.broadcast_to(np.asarray(diag, dtype=float), (self.n_params,))
        if self._eigen is not None and d.size and np.all(d == d[0]):   # a uniform shift: a damping
            spectral = self._spectral(self.damping - d[0])
            if spectral is not None:
                return spectral
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
