"""Elastic-net penalties on a parameter vector, with their proximal operator (soft thresholding).

One class covers the cases scikit-learn uses::

    π(θ) = l2/2 · Σ_j (s_j θ_j)² + l1 · Σ_j s_j |θ_j|

``s_j`` is a per-coordinate scale: 1 for a penalised coefficient, 0 for an unpenalised
intercept (and 1/intercept_scaling for liblinear's penalised intercept). L2 is ``l1 = 0``,
L1 is ``l2 = 0``, no penalty is both zero.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ElasticNetPenalty"]


class ElasticNetPenalty:
    """Elastic-net penalty ``l2/2 ‖s∘θ‖² + l1 ‖s∘θ‖₁``.

    Parameters
    ----------
    l1, l2 : float
        Strengths of the ℓ1 and squared-ℓ2 parts.
    scale : ndarray of shape (p,)
        Per-coordinate scale ``s_j`` (0 where a coordinate is not penalised).
    """

    def __init__(self, l1: float, l2: float, scale: np.ndarray):
        self.l1 = float(l1)
        self.l2 = float(l2)
        self.scale = np.asarray(scale, dtype=float)

    @property
    def is_smooth(self) -> bool:
        return self.l1 == 0.0

    def value(self, theta):
        st = self.scale * theta
        return 0.5 * self.l2 * st @ st + self.l1 * np.abs(st).sum()

    def smooth_gradient(self, theta):
        return self.l2 * self.scale**2 * theta

    def gradient(self, theta):
        """Gradient of the smooth part plus the ℓ1 subgradient ``l1 s sign(θ)`` (0 at θ_j = 0)."""
        return self.smooth_gradient(theta) + self.l1 * self.scale * np.sign(theta)

    def hessian_diagonal(self):
        return self.l2 * self.scale**2

    def active_set(self, theta, tol: float = 0.0):
        """Coordinates that move freely: unpenalised by ℓ1, or nonzero."""
        return (self.l1 * self.scale == 0) | (np.abs(theta) > tol)

    def prox(self, v, step, factor: float = 1.0):
        """Proximal map of ``step · factor · l1 ‖s∘θ‖₁`` (soft thresholding)."""
        t = step * factor * self.l1 * self.scale
        return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)
