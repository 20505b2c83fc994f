"""Newton iterations on a changed objective: unlearning and relabelling beyond one step.

The one-step update of :mod:`._updates` is the influence approximation. Removing rows
(their weights set to 0) or relabelling them defines a new objective whose optimum an
exact refit finds; damped Newton steps from the fitted θ̂ reach it, each rebuilding the
curvature at the current parameters (one Gram matrix and one factorisation for a GLM)
and line-searched on the new objective (:class:`~._polish.NewtonPolisher`
with the ``"parameters"`` yardstick). With one step only, the Newton decrement left
after it says whether that step was in its regime.
"""

from __future__ import annotations

import warnings
from numbers import Integral

import numpy as np

from ..exceptions import InfluenceWarning
from ._polish import NewtonPolisher

__all__ = ["iterate_change", "decrement_ratio"]

#: relative last step below which the iteration has converged, and where it stops
CONVERGED, STOP = 1e-6, 1e-12


def iterate_change(engine, delta, target, steps, check=False):
    """``(Δθ, info)`` after ``steps`` Newton steps on the changed objective.

    Parameters
    ----------
    engine : InfluenceEngine
        The fitted engine.
    delta : ndarray of shape (p,)
        The first (influence) step.
    target : (y, sample_weight)
        The changed objective's encoded targets and weights (0 for removed rows).
    steps : int >= 1 or "converge"
    check : bool
        With one step: compare the changed objective's Newton decrement ``√(gᵀM⁻¹g)`` after
        the step with before it (0 for a quadratic objective) and warn above 0.1.
    """
    if not (steps == "converge" or (isinstance(steps, Integral) and steps >= 1)):
        raise ValueError(f"steps must be a positive integer or 'converge', got {steps!r}")
    ad = engine.adapter
    theta = ad.theta
    info = {"steps": 1, "converged": None, "one_step_error": None}
    if steps == 1:
        if check and ad.penalty.is_smooth:
            ratio = info["decrement_ratio"] = decrement_ratio(engine, delta, target)
            if ratio > 0.1:
                warnings.warn(
                    f"one Newton step leaves {ratio:.0%} of the changed objective's Newton "
                    "decrement: the one-step answer is far from the refit's (large or confidently "
                    "fitted changes); pass steps='converge'", InfluenceWarning, stacklevel=5)
        return delta, info
    start = engine.with_target(*target, theta=theta + delta)
    here = engine.with_target(*target)
    first = 1
    if here.objective(theta, here.eta) < start.objective(start.adapter.theta, start.eta):
        start, first = here, 0  # the first step overshot: damped Newton from θ̂ instead
    polisher = NewtonPolisher(polish=True, threshold=CONVERGED, target=STOP, yardstick="parameters",
                              max_steps=50 if steps == "converge" else steps - 1)
    model, ratio, n = polisher.solve(start)
    final = model.adapter.theta - theta
    return final, {"steps": first + n, "converged": bool(ratio <= CONVERGED),
                   "one_step_error": float(np.linalg.norm(delta - final)
                                           / max(np.linalg.norm(final), 1e-300))}


def decrement_ratio(engine, delta, target):
    """``√(r₁ᵀM⁻¹r₁ / r₀ᵀM⁻¹r₀)``: the changed objective's gradient after and before the step,
    each less the fitted objective's own gradient at θ̂ (the fit's optimisation error, which
    the step does not address and fit already reports). A change that moves nothing (rows of
    weight 0) has ratio 0, and so does a quadratic objective, where one step is exact."""
    solve, ad = engine.solver.solve, engine.adapter
    fitted = engine.data_grad + ad.penalty.gradient(ad.theta)
    r0 = engine.objective_gradient(*target) - fitted
    r1 = engine.objective_gradient(*target, theta=ad.theta + delta) - fitted
    before = float(r0 @ solve(r0))
    after = max(float(r1 @ solve(r1)), 0.0)
    # below rounding (a change of nothing, or exact up to round-off) there is nothing to compare
    tiny = 1e-20 * max(float(fitted @ fitted), float(engine.data_grad @ engine.data_grad), 1e-300)
    return float(np.sqrt(after / before)) if before > tiny else 0.0
