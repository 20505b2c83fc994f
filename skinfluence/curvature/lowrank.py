"""Low-rank inverses of a large curvature: a randomized Nyström sketch, and Lanczos.

For networks far beyond the dense limit, the curvature is split as ``M = K + D``: ``D`` its
diagonal part (the penalty's curvature, e.g. weight decay, which the operator carries
separately) and ``K`` the data term (plus the null-space projector). ``K`` is replaced by
a rank-``r`` eigen-approximation ``K ≈ U Λ Uᵀ`` (``U`` orthonormal, p × r) built from
curvature-vector products only, and ``D`` is kept exactly. With ``c = D + δ`` the damped
inverse is applied in closed form (Woodbury, an r × r system); for a uniform ``c``
(weight decay on every parameter, or no penalty) it reads::

    (M + δI)⁻¹ b  ≈  U diag(1/(λ + c)) Uᵀ b + (b − U Uᵀ b) / c,

which is exactly ``(U Λ Uᵀ + cI)⁻¹ b``: the data curvature outside ``span(U)`` is treated
as zero, where only the penalty and the damping are inverted (hence ``δ > 0`` is
required; ``damping="auto"`` gives ``0.1 · trace(M)/p``). Two ways to find ``U, Λ``:

* ``solver="arnoldi"``: the top-``r`` eigenpairs (largest magnitude) of ``K`` by
  implicitly restarted Lanczos (ARPACK's ``eigsh`` on the operator; one product per
  step). With exact eigenpairs and a uniform ``c`` the error is exactly that of
  truncating the spectrum: the approximation ``P`` satisfies
  ``‖(M + δI) P − I‖₂ = λ_{r+1} / c``, the first dropped eigenvalue against the diagonal,
  and ``P`` is exact on ``span(U)``. For ``r ≥ q − 1`` (``q`` active coordinates;
  ARPACK's limit) the eigendecomposition is computed densely from ``q`` products and
  the solve is exact.
* ``solver="nystrom"``: the randomized Nyström approximation
  ``K̂ = (KΩ)(ΩᵀKΩ)⁺(KΩ)ᵀ`` from one block of ``s = r + oversampling`` products with a
  Gaussian test matrix ``Ω`` (orthonormalised), in the numerically stable form of
  Tropp et al. (2017): a shift ``ν ≈ √q · ε · ‖KΩ‖`` is added before the core
  ``Ωᵀ(K + νI)Ω`` is pseudo-inverted by its eigendecomposition (eigenvalues below
  ``s · ε`` of the largest dropped), then removed from the eigenvalues of the result,
  which is truncated to rank ``r``. For a positive semi-definite ``K`` (a Fisher; a
  Hessian with negative curvature loses its negative part) ``0 ≼ K̂ ≼ K``, and the solve
  is ``(K̂ + D + δI)⁻¹ b`` exactly, so that ``‖x̂ − x‖ ≤ ‖K − K̂‖₂ / min(c) · ‖x‖`` for
  ``x = (M + δI)⁻¹ b``. In expectation over the sketch
  ``E trace(K − [K̂]_r) ≤ (1 + r/(s − r − 1)) Σ_{i>r} λ_i`` (Tropp et al. 2017, Thm 4.1),
  so a fast-decaying spectrum is captured almost exactly. One pass over the data (all
  products in one block) makes it much cheaper than Lanczos for the same rank; Lanczos
  is more accurate.

Down-dates (leave-one-out, unlearning) use the Woodbury identity on top of the low-rank
inverse: the removed rows' Jacobians ``U`` (m × p) and curvature ``C`` are small, and a
removed share ``diag(d)`` of the penalty is subtracted from ``D`` exactly.

``info_`` reports the rank, the eigenvalue range, the fraction of ``trace(K)`` the
eigenvalues capture (``Σλ`` plus Hutchinson probes of the remainder ``K − UΛUᵀ``: the
approximation as a control variate, Nyström++), the curvature-vector products and
seconds spent. Everything is deterministic given ``random_state``.
"""

from __future__ import annotations

import copy
import time
from numbers import Integral, Real

import numpy as np
from scipy import linalg
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from sklearn.utils import check_random_state

from .._utils import check_memory
from ..exceptions import CurvatureError
from .operators import symmetric_matrix
from .solvers import Solver, register_solver

__all__ = ["LowRankSolver", "NystromSolver", "ArnoldiSolver", "nystrom_eigen", "lanczos_eigen"]

_EPS = np.finfo(float).eps


def nystrom_eigen(matvec, q, sketch, rng):
    """Eigenpairs of the stable randomized Nyström approximation of a PSD operator.

    Parameters
    ----------
    matvec : callable
        ``V ↦ M V`` for ``V`` of shape (q, m).
    q : int
        Size of ``M``.
    sketch : int
        Number of test vectors ``s`` (≤ q).
    rng : RandomState

    Returns
    -------
    U : ndarray of shape (q, s')
        Orthonormal eigenvectors of ``M̂`` (``s' ≤ s``, by decreasing eigenvalue).
    lam : ndarray of shape (s',)
        Its eigenvalues (≥ 0).
    """
    Q, _ = np.linalg.qr(rng.standard_normal((q, sketch)))
    Y = matvec(Q)
    nu = np.sqrt(q) * _EPS * np.linalg.norm(Y, 2)
    Y += nu * Q                                           # Y_ν = (M + νI) Q
    core = Q.T @ Y
    w, V = linalg.eigh((core + core.T) / 2)
    keep = w > sketch * _EPS * max(w[-1], 0.0)            # the pseudo-inverse's cut
    if not keep.any():
        return np.zeros((q, 0)), np.zeros(0)
    B = Y @ (V[:, keep] / np.sqrt(w[keep]))               # M̂_ν = B Bᵀ
    U, sigma, _ = linalg.svd(B, full_matrices=False, overwrite_a=True, check_finite=False)
    return U, np.maximum(sigma**2 - nu, 0.0)


def lanczos_eigen(matvec, q, rank, rng, tol=1e-10, max_iter=None, ncv=None):
    """Top-``rank`` eigenpairs (largest magnitude) of a symmetric operator by ARPACK's
    implicitly restarted Lanczos; densely (``q`` products, exact) when ``rank ≥ q − 1``.

    Returns ``(U, lam)`` by decreasing eigenvalue, and ``trace(M)`` where it was computed
    densely (else None)."""
    if rank >= q - 1:
        w, V = linalg.eigh(symmetric_matrix(matvec, q))
        order = np.argsort(-np.abs(w))[:rank]
        order = order[np.argsort(-w[order])]
        return V[:, order], w[order], float(w.sum())
    op = LinearOperator((q, q), matvec=lambda v: matvec(v.reshape(q, 1))[:, 0],
                        matmat=matvec, dtype=float)
    try:
        w, V = eigsh(op, k=rank, which="LM", v0=rng.standard_normal(q), tol=tol,
                     maxiter=max_iter, ncv=ncv)
    except ArpackNoConvergence as err:
        raise CurvatureError(f"Lanczos found {len(err.eigenvalues)} of {rank} eigenpairs: pass a larger "
                             "'max_iter' or 'tol' in solver_options, or use solver='nystrom'") from None
    order = np.argsort(-w)
    return V[:, order], w[order], None


class LowRankSolver(Solver):
    """``(M + δI)⁻¹`` through a rank-``r`` eigen-approximation of ``M``'s data term (module docstring).

    Parameters
    ----------
    operator : CurvatureOperator
        The curvature, penalty included.
    damping : float
        ``δ > 0``, inverted alone outside the captured subspace.
    null_space : ndarray of shape (p, k), optional
        Orthonormal directions ``Z`` the objective ignores; ``Z Zᵀ`` is added to ``K``.
    active : ndarray of bool, shape (p,), optional
        Coordinates that move; the approximation is of ``M_AA`` and solves are 0 elsewhere.
    rank : int
        Eigenpairs kept.
    trace_probes : int
        Hutchinson probes for the captured fraction of the trace (0: not estimated).
    random_state : int, RandomState or None

    Attributes
    ----------
    U : ndarray of shape (q, r)
        Orthonormal eigenvectors on the active coordinates.
    eigenvalues : ndarray of shape (r,)
        Of ``K``, decreasing.
    diagonal : ndarray of shape (q,)
        ``c``: the operator's diagonal part plus the damping, kept exactly.
    info_ : dict
        ``rank``, ``eigenvalue_range``, ``trace_fraction`` (of ``trace(K)``), ``trace``, ``n_products``,
        ``seconds``, ``exact`` and solver specifics.
    """

    uses_random_state = True

    def _setup(self, operator, damping, null_space, active, rank, trace_probes, random_state):
        damping = float(damping)
        if not damping > 0:
            raise ValueError(
                f"solver={self.name!r} needs damping > 0 (got {damping}): outside the rank-r subspace "
                "only the penalty and the damping are inverted; pass damping='auto' (0.1 x the mean "
                "eigenvalue) or a positive value")
        if not isinstance(rank, Integral) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        if not isinstance(trace_probes, Integral) or isinstance(trace_probes, bool) or trace_probes < 0:
            raise ValueError(f"trace_probes must be a non-negative integer, got {trace_probes!r}")
        self.operator = operator
        self.n_params = p = operator.n_params
        self.damping = damping
        self.active = np.ones(p, bool) if active is None else np.asarray(active, bool)
        self.null_space = null_space if null_space is not None and null_space.size else None
        self.rank = int(rank)
        self.trace_probes = int(trace_probes)
        self._rng = check_random_state(random_state)
        self._q = int(self.active.sum())
        self.diagonal = np.asarray(operator.diagonal, dtype=float)[self.active] + damping   # c = D + δ

    def with_damping(self, damping):
        """The kept factors ``U, Λ`` with another damping: only the r × r core is refactorised."""
        damping = float(damping)
        if not damping > 0:
            raise ValueError(f"solver={self.name!r} needs damping > 0 (got {damping})")
        new = copy.copy(self)
        new.__dict__.pop("_inverse", None)   # the old damping's dense inverse
        new.damping = damping
        new.diagonal = np.asarray(self.operator.diagonal, dtype=float)[self.active] + damping
        new._core = new._factor(new.diagonal)
        new.info_ = dict(self.info_)
        return new

    def _matvec(self, V):
        """``K V = (M − D + Z Zᵀ)_AA V`` for ``V`` of shape (q, m): the part made low-rank."""
        a, all_active = self.active, self.active.all()
        E = V if all_active else np.zeros((self.n_params, V.shape[1]))
        if not all_active:
            E[a] = V
        out = self.operator.matvec(E) - self.operator.diagonal[:, None] * E
        if self.null_space is not None:
            out += self.null_space @ (self.null_space.T @ E)
        return out if all_active else out[a]

    def _finish(self, U, lam, start, products0, trace=None, **extra):
        """Keep ``rank`` eigenpairs, check positive definiteness, estimate the trace, fill ``info_``.

        ``trace(K)`` unless given: ``Σλ`` plus Hutchinson probes of the remainder
        ``K − U Λ Uᵀ`` (the approximation as a control variate, as in Nyström++; each probe
        term is ≥ 0 where the remainder is positive semi-definite)."""
        self.U, self.eigenvalues = U[:, :self.rank], lam[:self.rank]
        self._core = self._factor(self.diagonal)
        if trace is None and self.trace_probes:
            G = self._rng.choice([-1.0, 1.0], size=(self._q, self.trace_probes))
            R = self._matvec(G) - self.U @ (self.eigenvalues[:, None] * (self.U.T @ G))
            trace = float(self.eigenvalues.sum() + np.mean(np.einsum("qm,qm->m", G, R)))
        elif trace is None:
            trace = np.nan
        lam = self.eigenvalues
        self.info_ = {
            "method": self.name, "rank": int(lam.size), "exact": bool(lam.size == self._q),
            "eigenvalue_range": (float(lam.min()), float(lam.max())) if lam.size else (0.0, 0.0),
            "trace": float(trace), "trace_fraction": float(lam.sum() / trace) if trace > 0 else np.nan,
            "n_products": self.operator.n_matvecs - products0, "seconds": time.perf_counter() - start,
            **extra,
        }

    # ----------------------------------------------------------------- solves
    def _factor(self, c):
        """The r × r system of ``(U Λ Uᵀ + diag(c))⁻¹ = C⁻¹ − C⁻¹U Λ (I + UᵀC⁻¹U Λ)⁻¹ UᵀC⁻¹``,
        after checking that ``U Λ Uᵀ + diag(c)`` is positive definite."""
        U, lam = self.U, self.eigenvalues
        if not c.min() > 0:
            raise CurvatureError(f"the diagonal of the curvature plus damping reaches {c.min():.3g}; "
                                 "pass a larger damping")
        K = U.T @ (U / c[:, None])
        # PD ⇔ I + L_Kᵀ Λ L_K PD (K = L_K L_Kᵀ), an r × r check
        L = linalg.cholesky(K, lower=True) if lam.size else K
        if lam.size and 1 + linalg.eigvalsh(L.T @ (lam[:, None] * L))[0] <= 0:
            raise CurvatureError(
                f"the curvature has an eigenvalue {lam.min():.3g} below -{c.min():.3g} (its diagonal "
                f"plus damping): pass damping > {self.damping - lam.min() - c.min():.3g} (or, with a "
                "Hessian, use FisherInfluence)")
        return linalg.lu_factor(np.eye(lam.size) + K * lam) if lam.size else None

    def _apply(self, B, c=None, core=None):
        """``(U Λ Uᵀ + diag(c))⁻¹ B`` on the active coordinates, ``B`` of shape (q, m)."""
        c, core = (self.diagonal, self._core) if c is None else (c, core)
        CB = B / c[:, None]
        if core is None:
            return CB
        inner = linalg.lu_solve(core, self.U.T @ CB, check_finite=False)
        return CB - (self.U / c[:, None]) @ (self.eigenvalues[:, None] * inner)

    def solve(self, b):
        """``(M + δI)⁻¹ b`` (low-rank approximation) for ``b`` of shape (p,) or (p, m);
        zeros on inactive coordinates."""
        b = np.asarray(b, dtype=float)
        out = np.zeros(b.shape)
        bs = b[self.active].reshape(self._q, -1)
        out[self.active] = self._apply(bs).reshape(bs.shape[:1] + b.shape[1:])
        return out

    def inverse(self):
        """The dense approximate ``(M + δI)⁻¹`` (p × p), zero off the active coordinates.

        Raises
        ------
        MemoryError
            When ``p × p`` does not fit (the queries that need it, self-influence and
            leave-one-out, are then out of reach; attribution is not).
        """
        try:
            check_memory((self.n_params, self.n_params), "the inverse curvature")
        except MemoryError as err:
            raise MemoryError(f"{err}. solver={self.name!r} forms a dense inverse only where it fits; "
                              "attribute and influence_factors need none") from None
        return self.solve(np.eye(self.n_params))

    def downdated_solve(self, b, U, C, diag=None):
        """Solve ``(M − Uᵀ C U − diag(d) + δI) x = b`` by Woodbury on the low-rank inverse.

        Parameters
        ----------
        b : ndarray of shape (p,) or (p, k)
        U : ndarray of shape (m, p), or (n, K, p)
            Stacked Jacobians of the removed samples, or per-sample Jacobians.
        C : ndarray of shape (m, m), or (n, K, K)
            Their curvature, or its diagonal blocks.
        diag : ndarray of shape (p,) or float, optional
            Removed penalty curvature, subtracted from the exact diagonal part.
        """
        b = np.asarray(b, dtype=float)
        if U.ndim == 3:
            U = U.reshape(-1, U.shape[-1])
            C = linalg.block_diag(*C)
        a = self.active
        c, core = self.diagonal, self._core
        if diag is not None and np.any(diag):
            c = c - np.broadcast_to(np.asarray(diag, dtype=float), a.shape)[a]
            core = self._factor(c)
        Ua = U[:, a]
        bs = b[a].reshape(self._q, -1)
        Ab, AUt = self._apply(bs, c, core), self._apply(Ua.T, c, core)
        G = Ua @ AUt
        try:
            inner = np.linalg.solve(np.eye(len(G)) - G @ C, Ua @ Ab)
        except np.linalg.LinAlgError:
            raise CurvatureError("the curvature without these samples is singular "
                                 "(they carry directions no other sample does); add damping") from None
        out = np.zeros(b.shape)
        out[a] = (Ab + AUt @ (C @ inner)).reshape(bs.shape[:1] + b.shape[1:])
        return out


@register_solver("nystrom")
class NystromSolver(LowRankSolver):
    """Randomized Nyström sketch of the curvature, ``solver="nystrom"`` (module docstring).

    Parameters
    ----------
    operator, damping, null_space, active, random_state
        As for :class:`LowRankSolver`.
    rank : int, default=100
        Eigenpairs kept.
    oversampling : int, default=10
        Extra test vectors: the sketch has ``rank + oversampling`` columns (at most p).
    trace_probes : int, default=8
        Hutchinson probes of the uncaptured trace (``info_["trace_fraction"]``; 0: none).
    """

    options = {"rank": 100, "oversampling": 10, "trace_probes": 8}

    def __init__(self, operator, damping=0.0, null_space=None, active=None, *, rank=100,
                 oversampling=10, trace_probes=8, random_state=None):
        if not isinstance(oversampling, Integral) or isinstance(oversampling, bool) or oversampling < 0:
            raise ValueError(f"oversampling must be a non-negative integer, got {oversampling!r}")
        self._setup(operator, damping, null_space, active, rank, trace_probes, random_state)
        start, products0 = time.perf_counter(), operator.n_matvecs
        sketch = min(self.rank + int(oversampling), self._q)
        U, lam = nystrom_eigen(self._matvec, self._q, sketch, self._rng)
        self._finish(U, lam, start, products0, sketch=sketch)


@register_solver("arnoldi")
class ArnoldiSolver(LowRankSolver):
    """Top eigenpairs of the curvature by Lanczos, ``solver="arnoldi"`` (module docstring).

    Parameters
    ----------
    operator, damping, null_space, active, random_state
        As for :class:`LowRankSolver`.
    rank : int, default=100
        Eigenpairs kept (largest magnitude).
    tol : float, default=1e-10
        ARPACK's relative accuracy of the eigenvalues (0: machine precision).
    max_iter : int, optional
        ARPACK restarts (default ``10 q``).
    ncv : int, optional
        Lanczos vectors kept (default ``2 rank + 1``): memory ``8 · q · ncv`` bytes.
    trace_probes : int, default=8
        Hutchinson probes of the uncaptured trace.
    """

    options = {"rank": 100, "tol": 1e-10, "max_iter": None, "ncv": None, "trace_probes": 8}

    def __init__(self, operator, damping=0.0, null_space=None, active=None, *, rank=100,
                 tol=1e-10, max_iter=None, ncv=None, trace_probes=8, random_state=None):
        if not isinstance(tol, Real) or not tol >= 0:
            raise ValueError(f"tol must be a non-negative number, got {tol!r}")
        self._setup(operator, damping, null_space, active, rank, trace_probes, random_state)
        start, products0 = time.perf_counter(), operator.n_matvecs
        rank = min(self.rank, self._q)
        U, lam, trace = lanczos_eigen(self._matvec, self._q, rank, self._rng, tol, max_iter, ncv)
        self._finish(U, lam, start, products0, trace=trace)   # dense: the whole trace is known
