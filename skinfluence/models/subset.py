"""A model seen through a subset ``J`` of its parameters (the others held at their fitted values).

Gradients, Jacobians, the penalty and the write-back act on ``θ_J`` alone; outputs are
those of the full model with ``θ_J`` replaced. Curvature products can still act on the
full ``θ`` where a method needs that: :meth:`SubsetAdapter.curvature_columns` gives
``M[:, J] V`` (the columns of the full curvature that generalised influence functions
solve with), while :meth:`SubsetAdapter.curvature` is the block ``M_JJ`` (freezing the
other parameters).
"""

from __future__ import annotations

import numpy as np

from .base import ModelAdapter
from .penalties import ElasticNetPenalty

__all__ = ["SubsetAdapter"]


class SubsetAdapter(ModelAdapter):
    """The protocol of ``parent`` restricted to the parameters where ``mask`` is True.

    Parameters
    ----------
    parent : ModelAdapter
    mask : array-like of bool, shape (parent.n_params,)

    Attributes
    ----------
    mask : ndarray of bool, index : ndarray of int
        The subset, as a mask over the full θ and as positions.
    """

    def __init__(self, parent, mask):
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (parent.n_params,):
            raise ValueError(f"mask must be a boolean array of shape ({parent.n_params},), "
                             f"got {mask.dtype} of shape {mask.shape}")
        if not mask.any():
            raise ValueError("the parameter subset is empty")
        self.parent = parent
        self.mask = mask
        self.index = np.flatnonzero(mask)
        self.estimator = parent.estimator
        self.loss = parent.loss
        self.classes_ = parent.classes_
        self.mean_scaled = parent.mean_scaled
        self.data_dependent_weights = parent.data_dependent_weights
        self.theta = parent.theta[mask].copy()
        pen = parent.penalty
        self.penalty = ElasticNetPenalty(pen.l1, pen.l2, pen.scale[mask])
        if hasattr(parent, "curvature_matvec"):
            self.curvature_matvec = self._curvature_matvec

    @property
    def constant_curvature(self) -> bool:
        return self.parent.constant_curvature

    # --------------------------------------------------------------- embedding
    def embed(self, v):
        """``v`` on ``J`` (shape (|J|,) or (|J|, m)) as a full-length array, zero elsewhere."""
        v = np.asarray(v, dtype=float)
        out = np.zeros((self.parent.n_params,) + v.shape[1:])
        out[self.mask] = v
        return out

    def full_theta(self, theta=None):
        """The full parameter vector with ``θ_J = theta`` (the fitted one when None)."""
        full = self.parent.theta.copy()
        if theta is not None:
            full[self.mask] = theta
        return full

    # ------------------------------------------------------------------ protocol
    def data_weights(self, y, sample_weight):
        return self.parent.data_weights(y, sample_weight)

    def design(self, X):
        return self.parent.design(X)

    def eta(self, Z, theta=None):
        return self.parent.eta(Z, None if theta is None else self.full_theta(theta))

    def jacobians(self, Z):
        return self.parent.jacobians(Z)[..., self.mask]

    def gradients(self, Z, G):
        return self.parent.gradients(Z, G)[:, self.mask]

    def total_gradient(self, Z, G, theta=None):
        full = None if theta is None else self.full_theta(theta)
        return self.parent.total_gradient(Z, G, full)[self.mask]

    def jvp(self, Z, v):
        return self.parent.jvp(Z, self.embed(v))

    def jacobian_quadratic(self, Z, A):
        full = np.zeros((self.parent.n_params,) * 2)
        full[np.ix_(self.mask, self.mask)] = A
        return self.parent.jacobian_quadratic(Z, full)

    def output_curvature(self, y, eta, kind):
        return self.parent.output_curvature(y, eta, kind)

    def curvature(self, Z, y, c, kind="fisher", eta=None):
        """The block ``M_JJ`` of the full data curvature."""
        if hasattr(self.parent, "curvature_matvec"):  # p may be large: only |J| products
            return self.curvature_columns(Z, y, c, np.eye(len(self.index)), kind, eta)[self.mask]
        return self.parent.curvature(Z, y, c, kind, eta=eta)[np.ix_(self.mask, self.mask)]

    def curvature_columns(self, Z, y, c, V, kind="fisher", eta=None):
        """``M[:, J] V`` for ``V`` of shape (|J|,) or (|J|, m): full-length columns."""
        if hasattr(self.parent, "curvature_matvec"):
            return self.parent.curvature_matvec(Z, y, c, self.embed(V), kind, eta=eta)
        return self.parent.curvature(Z, y, c, kind, eta=eta)[:, self.mask] @ np.asarray(V, dtype=float)

    def _curvature_matvec(self, Z, y, c, V, kind="fisher", eta=None):
        return self.curvature_columns(Z, y, c, V, kind, eta)[self.mask]

    def null_space(self):
        """The parent's null-space directions that lie entirely inside ``J``."""
        null = self.parent.null_space()
        if null is None:
            return None
        inside = np.abs(null[~self.mask]).max(axis=0) == 0 if (~self.mask).any() else np.ones(null.shape[1], bool)
        return null[self.mask][:, inside] if inside.any() else None

    def with_params(self, theta):
        return self.parent.with_params(self.full_theta(theta))
