"""Proximal Newton step for objectives with an ℓ1 part, solved by FISTA.

With ``g`` the gradient of the smooth part of the new objective at ``θ̂`` and ``M``
its curvature, the step is::

    θ̃ = argmin_b ⟨g, b − θ̂⟩ + ½ (b − θ̂)ᵀ M (b − θ̂) + factor · l1 ‖s∘b‖₁

FISTA (Beck & Teboulle 2009) with step ``1/L``, ``L ≥ λ_max(M)``, warm-started at
``θ̂``. Unlike the support-restricted shortcut, coordinates may enter or leave the
support.
"""

from __future__ import annotations

import numpy as np

__all__ = ["prox_newton_step"]


def prox_newton_step(matvec, lipschitz, grad, theta, penalty, factor=1.0, max_iter=2000, tol=1e-10):
    """Return the proximal Newton iterate and the number of FISTA iterations used.

    Parameters
    ----------
    matvec : callable
        ``v -> M v``.
    lipschitz : float
        An upper bound on the largest eigenvalue of ``M``.
    grad : ndarray of shape (p,)
        Gradient of the smooth part of the objective at ``theta``.
    theta : ndarray of shape (p,)
        Expansion point (the fitted parameters).
    penalty : ElasticNetPenalty
        Provides the ℓ1 proximal operator.
    factor : float
        Multiplies the ℓ1 strength (mean-scaled objectives after removal).
    """
    step = 1.0 / lipschitz
    b = z = theta.copy()
    t = 1.0
    scale = max(np.abs(theta).max(), 1.0)
    for it in range(1, max_iter + 1):
        grad_z = grad + matvec(z - theta)
        b_new = penalty.prox(z - step * grad_z, step, factor)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        z = b_new + ((t - 1.0) / t_new) * (b_new - b)
        done = np.abs(b_new - b).max() <= tol * scale
        b, t = b_new, t_new
        if done:
            break
    return b, it
