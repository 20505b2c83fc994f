"""Proximal Newton step for objectives with an ℓ1 part.

With ``g`` the gradient of the smooth part of the new objective at ``θ̂`` and ``M``
its curvature, the step is the minimiser of the quadratic model::

    q(b) = ⟨g, b − θ̂⟩ + ½ (b − θ̂)ᵀ M (b − θ̂) + Σ_j λ_j |b_j|,   λ = factor · l1 · s

Coordinates may enter or leave the support. It is solved by a sign-guessing active
set ("feature-sign search", Lee, Battle, Raina & Ng 2007): fix the signs of the free
coordinates, solve the linear system on them, walk back to the first sign change if
the solution leaves the orthant, free zero coordinates whose gradient exceeds their
threshold (one at a time), repeat. Every step lowers ``q``, and a fold or a removal
usually changes few signs, so two or three small Cholesky solves give the exact
minimiser. Should the active set stall (a block whose Cholesky fails, no decrease)
or need more than ``ACTIVE_SET_MAX_ITER`` solves (many coordinates entering: each
costs a factorisation), FISTA (Beck & Teboulle 2009) finishes from where it stopped.
``M`` must be positive definite on the coordinates that end up free: directions the
objective ignores (a multinomial's common intercept shift) must be given curvature
by the caller, as a nearly singular block can factorise and move along them.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve

__all__ = ["prox_newton_step"]

ACTIVE_SET_MAX_ITER = 100


def _model(M, g, theta, lam):
    """The quadratic model ``q`` and its smooth gradient, as functions of ``b``."""
    def smooth_grad(b):
        return g + M @ (b - theta)

    def q(b):
        d = b - theta
        return g @ d + 0.5 * d @ (M @ d) + lam @ np.abs(b)

    return q, smooth_grad


def _active_set(M, g, theta, lam, max_iter, rtol=1e-9):
    """Feature-sign search from ``b = θ̂``; returns ``b`` and whether it is optimal."""
    q, smooth_grad = _model(M, g, theta, lam)
    m_max = np.abs(M).max()
    b, sign = theta.copy(), np.sign(theta)
    free = (b != 0) | (lam == 0)
    for _ in range(max_iter):
        # minimiser on the free coordinates with their signs fixed (the others are 0)
        F = np.flatnonzero(free)
        target = np.zeros_like(b)
        try:
            target[F] = cho_solve(cho_factor(M[np.ix_(F, F)]), M[F] @ theta - g[F] - lam[F] * sign[F])
        except (LinAlgError, ValueError):
            return b, False
        flips = free & (lam > 0) & (np.sign(target) != sign)
        if flips.any():
            # walk towards the target; stop at the best point where a coordinate hits 0
            d = target - b
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(flips & (d != 0), -b / d, np.inf)
            s = min([*np.unique(t[(t > 0) & (t < 1)]), 1.0], key=lambda s: q(b + s * d))
            new = b + s * d
            new[t == s] = 0.0  # the coordinates that stop exactly at zero
            if q(new) >= q(b):
                return b, False
            b, sign = new, np.sign(new)
            free = (b != 0) | (lam == 0)
            continue
        # optimal on the free set: the zero coordinate that most exceeds its threshold
        # enters, downhill; alone, its solved value keeps that sign (the reduced objective
        # is convex in it with a negative slope at 0), so each entry makes progress
        b = target
        r = smooth_grad(b)
        excess = np.where(free, -np.inf, np.abs(r) - lam)
        scale = max(np.abs(r).max(), lam.max(), m_max * np.abs(b).max(), 1e-300)
        j = np.argmax(excess)
        if excess[j] <= rtol * scale:
            return b, True
        free[j], sign[j] = True, -np.sign(r[j])
    return b, False


def _fista(M, g, theta, lam, b, penalty, factor, max_iter, tol):
    """FISTA on ``q`` from ``b`` with step ``1/λ_max(M)``."""
    step = 1.0 / np.linalg.eigvalsh(M)[-1]
    z, t = b.copy(), 1.0
    scale = max(np.abs(theta).max(), 1.0)
    _, smooth_grad = _model(M, g, theta, lam)
    for _ in range(max_iter):
        b_new = penalty.prox(z - step * smooth_grad(z), step, factor)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        z = b_new + ((t - 1.0) / t_new) * (b_new - b)
        done = np.abs(b_new - b).max() <= tol * scale
        b, t = b_new, t_new
        if done:
            break
    return b


def prox_newton_step(M, grad, theta, penalty, factor=1.0, max_iter=2000, tol=1e-10):
    """Return the proximal Newton iterate: the minimiser of the quadratic model ``q``.

    Parameters
    ----------
    M : ndarray of shape (p, p)
        Curvature of the smooth part (symmetric positive semi-definite; positive
        definite on the coordinates that end up free, e.g. through damping).
    grad : ndarray of shape (p,)
        Gradient of the smooth part of the objective at ``theta``.
    theta : ndarray of shape (p,)
        Expansion point (the fitted parameters).
    penalty : ElasticNetPenalty
        Its ``l1`` and ``scale`` give the thresholds ``λ``; its ``prox`` the FISTA steps.
    factor : float
        Multiplies the ℓ1 strength (mean-scaled objectives after removal).
    max_iter, tol : int, float
        Limits of the FISTA fallback (relative change of the iterate).
    """
    lam = factor * penalty.l1 * penalty.scale
    b, optimal = _active_set(M, grad, theta, lam, ACTIVE_SET_MAX_ITER)
    return b if optimal else _fista(M, grad, theta, lam, b, penalty, factor, max_iter, tol)
