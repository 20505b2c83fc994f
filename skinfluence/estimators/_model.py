"""The fitted state every influence query reads: a model, its per-sample pieces, its curvature.

Notation (docs/user_guide/maths.rst): the fitted model minimises ``Σ_i c_i ℓ_i(θ) + π(θ)``. Per
training row it keeps the outputs ``η_i``, the loss gradients ``g_i = ∂ℓ_i/∂η`` and the
output curvatures ``W_i`` (Hessian or Fisher of ℓ_i in η), the data weights ``c_i``
and, for estimators that average their data term, ``s_i`` = the row's share of the
total weight (removing rows then also shifts the penalty's relative weight).

**Curvature rows.** The curvature ``M = Σ_{i∈S} w_i c_i J_iᵀ W_i J_i + ∇²π`` is built from
the rows ``S`` with importance weights ``w`` (all rows with ``w = 1`` unless a curvature
sampler chose a subset), while gradients, leave-one-out and attribution always cover
every row. ``M`` then estimates the full-data curvature, and a down-date for removed
rows ``U`` subtracts their own terms ``Σ_{i∈U} c_i J_iᵀ W_i J_i`` (unweighted), whether or
not they were sampled: the full data lose exactly those terms, so the down-dated
``M`` estimates the curvature of the remaining data.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._utils import check_memory
from ..curvature.operators import model_curvature

__all__ = ["InfluenceModel"]


class InfluenceModel:
    """A fitted model (``adapter``) with its per-sample state and, once set, its solver.

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
    """

    def __init__(self, adapter, Z, y, sample_weight, kind, rows=None, row_weights=None, eta=None):
        self.adapter, self.Z, self.y, self.kind = adapter, Z, y, kind
        self.n = len(y)
        self.rows, self.row_weights = rows, row_weights
        sw = sample_weight
        self.c = adapter.data_weights(y, sw)
        self.share = sw / sw.sum() if adapter.mean_scaled else np.zeros(self.n)
        self.eta = adapter.eta(Z) if eta is None else eta
        self.g = adapter.loss.gradient(y, self.eta)
        self.W = adapter.loss.curvature(y, self.eta, kind)
        self.data_grad = adapter.total_gradient(Z, self.c[:, None] * self.g)
        self.pen_grad = adapter.penalty.gradient(adapter.theta)
        self.solver = self.curvature = None
        self._typical_loo = None

    # ---------------------------------------------------------------- curvature
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
            Z, y, c, eta = self.Z, self.y, self.c, self.eta
        else:
            r = self.rows
            Z, y, c, eta = self.Z[r], self.y[r], self.c[r] * self.row_weights, self.eta[r]
        return model_curvature(ad, Z, y, c, self.kind, eta).add_diagonal(ad.penalty.hessian_diagonal())

    def _memory_advice(self):
        """Which solver works where the dense curvature does not fit."""
        ad = self.adapter
        if not ad.penalty.is_smooth:
            return ("An ℓ1 penalty needs the dense curvature for its proximal steps: select fewer "
                    "features (e.g. SelectKBest) or use an ℓ2 penalty with solver='dual' or 'cg'")
        if hasattr(ad, "curvature_weights"):
            return ("Pass solver='dual' (the n × n dual form, for more parameters than rows "
                    "and an ℓ2 penalty) or solver='cg' (curvature-vector products)")
        return "Pass solver='cg' (curvature-vector products) or select fewer parameters"

    def set_solver(self, solver, curvature):
        self.solver, self.curvature = solver, curvature
        self._typical_loo = None

    def share_solver(self, other):
        """Use ``other``'s factorised curvature (and its yardstick) at this θ."""
        self.solver, self.curvature, self._typical_loo = other.solver, other.curvature, other._typical_loo

    def needs_new_curvature(self, theta, ratio):
        """Whether a step to ``theta`` moves the curvature by more than the error of a Newton
        step (a network's always; a non-quadratic GLM's beyond a leave-one-out step; any
        change of an ℓ1 support)."""
        ad = self.adapter
        return (hasattr(ad, "curvature_matvec") or (ratio > 1 and not ad.constant_curvature)
                or not np.array_equal(ad.penalty.active_set(theta), self.solver.active))

    # ------------------------------------------------------------ the objective
    def objective(self, theta, eta):
        """``Σ c_i ℓ_i + π`` at ``theta`` with outputs ``eta``, up to a constant."""
        ad = self.adapter
        return float(self.c @ ad.loss.loss(self.y, eta)) + ad.penalty.value(theta)

    def removal_gradients(self, idx, sparse=False):
        """Rows ``v_i = c_i ∇ℓ_i + s_i ∇π`` for training rows ``idx``; with ``sparse`` a
        linear model's sparse design gives a csr matrix (unless the penalty shares are
        nonzero: then every row is dense)."""
        ad, Z, G = self.adapter, self.Z[idx], self.c[idx, None] * self.g[idx]
        share = self.share[idx, None]
        if sparse and sp.issparse(Z) and hasattr(ad, "jacobian_rows") and not share.any():
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
            sparse = getattr(solver, "sparse_rows", False)
            size = max(2**23 // self.adapter.n_params, 1)   # dense blocks of at most 64 MiB
            norms = [solver.solve_norms(self.removal_gradients(block, sparse).T)
                     if hasattr(solver, "solve_norms")
                     else np.linalg.norm(solver.solve(self.removal_gradients(block).T), axis=0)
                     for block in np.array_split(idx, -(-len(idx) // size))]
            self._typical_loo = np.median(np.concatenate(norms))
        return self._typical_loo

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
        """Refuse a removal that leaves no data or drops a class."""
        if len(idx) >= self.n:
            raise ValueError("cannot remove every training sample")
        ad = self.adapter
        if ad.is_classifier:
            K, codes = len(ad.classes_), self.y.astype(int)
            left = np.bincount(codes, minlength=K) - np.bincount(codes[idx], minlength=K)
            if not left.all():
                gone = np.flatnonzero(left == 0)
                raise ValueError(
                    f"removing these samples removes every sample of class "
                    f"{ad.classes_[gone].tolist()}; the model would change its classes"
                )
