"""Newton polishing of a fitted engine, and the one polishing policy.

Influence approximations are expansions around the optimum; a model stopped short of it
(scikit-learn's default ``tol``, an Adam-trained net) carries an optimisation error that
can be as large as the effects being estimated. The yardstick is the Newton step to the
optimum relative to the change to be estimated (their ratio, ``convergence_ratio_``): the
median leave-one-out step, or for removals of m of n rows (a K-fold split)
``√(m(1 − m/n))`` times the root-mean-square leave-one-out step, the expected size of m
random leave-one-out steps added up (they sum to zero over all n rows at the optimum). An
optimisation error that is 5% of a leave-one-out step is a far smaller share of a fold's
change, so a K-fold job needs fewer Newton steps and fewer factorisations. Removal steps
that keep the fit's residual gradient (Newton steps on the changed objective,
``newton_update(..., residual=True)``, which approximate cross-validation takes) err only at
second order in that distance: for them polishing stops at ``RESIDUAL_TARGET`` of the change,
both measured in the curvature's norm ``√(xᵀMx)`` (Newton's local norm), which ignores the
optimisation error left in directions the objective barely curves in.
:class:`NewtonPolisher` follows scikit-learn's ``NewtonSolver`` in shape (setup, inner
solve, line search, convergence check, finalize): it takes Newton steps (proximal Newton
steps for ℓ1 penalties) with the model's own curvature, halving each until the objective
does not rise, and keeps the iterate closest to the optimum.

It works on the engine (:class:`~._model.InfluenceEngine`): ``newton_step()``,
``objective(θ, η)``, ``typical_loo_step()``, ``needs_new_curvature(θ, ratio)``,
``adapter`` (``theta``, ``eta``), and ``at(theta, eta, reuse_curvature)``, the engine at a
new θ (sharing the old one's factorised curvature if ``reuse_curvature``).

:func:`polish_engine` is the one polishing policy, used by every estimator's ``fit`` and so
by model selection: a job that removes one row at a time (``removal_size=1``: leave-one-out,
single-row unlearning, attribution) polishes to 5% of a leave-one-out step and takes plain
removal steps; a job that removes ``m > 1`` rows at once (K-fold) takes residual removal
steps and polishes to ``RESIDUAL_TARGET`` of its change in the curvature's norm.
"""

from __future__ import annotations

import copy
import numbers
import warnings

import numpy as np
from scipy.optimize import minimize

from ..curvature.operators import CurvatureOperator
from ..exceptions import InfluenceWarning

__all__ = ["NewtonPolisher", "RESIDUAL_TARGET", "LBFGS_OPTIONS", "lbfgs_finish", "polish_engine"]

#: distance to the optimum, in typical changes of the job and in the curvature's norm, at
#: which polishing stops for removal steps that keep the residual gradient: a Newton step
#: from a fit e away from the optimum, estimating a change Δ, travels about e + Δ, so its
#: (second-order) error is at most (1 + e/Δ)² times that of the same step from the optimum,
#: 4× at e = Δ
RESIDUAL_TARGET = 1.0


#: ``polish="lbfgs"``'s defaults (``polish_options``)
LBFGS_OPTIONS = {"max_iter": 2000, "tol": 1e-3}

#: after L-BFGS, exact Newton steps with the kept curvature (a Hessian; at most this many)
#: are taken only where the fit is within this many typical changes of the optimum: there
#: Newton's model of the objective holds (the reach of the curvature's reuse) and one step
#: squares the distance (a small net stopped at a gradient 0.37 of a row's: ratio 0.0044).
#: Farther out a network's objective is flat or not convex along some directions (a
#: 64-32-10 digits MLP after 400 L-BFGS iterations: Hessian eigenvalues down to -5e-5
#: against a largest of 1.2, trust-region Newton slower than L-BFGS), and Gauss–Newton
#: (Fisher) steps do not converge where the Hessian is nearly singular (0.61 stays 0.61):
#: a Fisher fit is only checked
LBFGS_NEWTON_REACH, LBFGS_NEWTON_STEPS = 1.0, 2

#: the finisher stops early, from a quarter to half of its cap, when at its rate so far it
#: would need more than this many times the cap (later, three times). Measured on digits
#: MLPs from 400 training iterations (cap 2,000, tol 1e-3): the 64-32-10 net, which
#: finishes in 1,009, projects at most 1.03× the cap (at iteration 700, inside a
#: 400-iteration stall); the 64-300-300-10 net projects 1.57× at iteration 500 and had
#: reached only 0.032 of a row's gradient (tol 1e-3) after 4,000
LBFGS_EARLY_STOP = 1.5


def lbfgs_finish(model, max_iter=LBFGS_OPTIONS["max_iter"], tol=LBFGS_OPTIONS["tol"], rows=32):
    """Minimise the model's own objective ``Σ c_i ℓ_i + π`` by full-batch L-BFGS.

    The finisher for networks trained by minibatch optimisers, whose Gauss–Newton or
    damped Newton steps promise descent only for short steps: L-BFGS needs only the
    objective and its gradient (one forward and one backward pass over the data per
    evaluation). Smooth penalties only; pass a float64 model (the finished parameters are
    then written back in the network's own precision). ``model`` needs no curvature: the
    estimator builds it once, at the finished parameters.

    It stops after ``max_iter`` iterations, or once the objective's gradient is ``tol``
    times the typical removal gradient ``‖v_i‖ = ‖c_i ∇ℓ_i + s_i ∇π‖`` (the median over
    ``rows`` random training rows, measured again every 10 iterations: a network that comes
    to fit its rows shrinks their gradients tenfold or more): the Newton step to the optimum
    is then about ``tol`` times a leave-one-out step where the curvature is alike along both
    (the convergence ratio the estimators report, which is checked afterwards, once, with
    the curvature). It also stops early, from a quarter of ``max_iter`` (and 50) on, when the rate at
    which that ratio (its best so far) fell since the start (log-linear, L-BFGS's regime; over
    the whole run, because on a network it stalls for hundreds of iterations where the
    objective is flat, then falls again) would need more than ``LBFGS_EARLY_STOP`` times
    ``max_iter`` iterations to reach ``tol`` (in the first half of the cap; later three
    times): ``info["projected_iterations"]`` says how many,
    ``info["start_ratio"]`` and ``info["best_ratio"]`` from what rate.

    Returns
    -------
    theta : ndarray of shape (p,)
    info : dict
        ``iterations``, ``evaluations``, ``gradient_ratio`` (the last gradient over the
        typical removal gradient), ``converged`` (it reached ``tol``), ``max_iter``, ``tol``,
        ``projected_iterations``, ``trace`` (``(iteration, gradient ratio)`` every 10 iterations).
    """
    ad = model.adapter
    if not ad.penalty.is_smooth:
        raise ValueError("polish='lbfgs' needs a smooth objective; use polish=True (proximal "
                         "Newton steps) for an ℓ1 penalty")
    idx = np.random.default_rng(0).choice(model.n, size=min(rows, model.n), replace=False)
    options = {**model.spec.adapter_options, **({"dtype": "float64"} if ad.is_network else {})}

    def typical(theta):
        """Median ‖v_i‖ over the sampled rows at ``theta`` (a network's Jacobians move with it)."""
        here = ad.moved(theta, **options) if ad.is_network else ad
        eta = here.eta(model.Z[idx], theta)
        V = here.gradients(model.Z[idx], model.c[idx, None] * here.loss.gradient(model.y[idx], eta))
        V = V + model.share[idx, None] * ad.penalty.gradient(theta)[None, :]
        return float(np.median(np.linalg.norm(np.asarray(V, float), axis=1)))

    last = {"grad": np.inf, "evaluations": 0, "history": [], "projected": None, "trace": [],
            "typical": typical(ad.theta)}

    def fun(theta):
        f, grad = ad.loss_and_gradient(model.Z, model.y, model.c, theta)
        f, grad = f + ad.penalty.value(theta), grad + ad.penalty.gradient(theta)
        last["evaluations"] += 1
        last["grad"] = np.linalg.norm(grad)
        return f, grad

    def ratio():
        return last["grad"] / last["typical"] if last["typical"] > 0 else 0.0

    def stop(intermediate_result):
        hist = last["history"]
        if len(hist) % 10 == 9:
            last["typical"] = typical(intermediate_result.x)
            last["trace"].append((len(hist) + 1, float(ratio())))
        if ratio() <= tol:
            raise StopIteration
        # the best ratio so far: L-BFGS's gradient is not monotone (it stalls and jumps where
        # the objective is flat or not convex), its best iterate's is
        hist.append(min(np.log(max(ratio(), 1e-300)), hist[-1] if hist else np.inf))
        k = len(hist)
        if k >= max(50, max_iter // 4) and k % 10 == 0 and tol > 0:
            rate = (hist[0] - hist[-1]) / (k - 1)          # log-decrease per iteration, so far
            need = np.inf if rate <= 0 else k + (hist[-1] - np.log(tol)) / rate
            if need > (LBFGS_EARLY_STOP if k <= max_iter // 2 else 3) * max_iter:
                last["projected"] = need
                raise StopIteration

    res = minimize(fun, ad.theta.copy(), jac=True, method="L-BFGS-B", callback=stop,
                   options={"maxiter": int(max_iter), "maxcor": 50, "ftol": 0.0, "gtol": 0.0})
    last["typical"] = typical(res.x)
    projected = last["projected"]
    return res.x, {"iterations": int(res.nit), "evaluations": last["evaluations"],
                   "gradient_ratio": float(ratio()), "converged": bool(ratio() <= tol),
                   "max_iter": int(max_iter), "tol": float(tol),
                   "projected_iterations": None if projected is None else float(projected),
                   "start_ratio": float(np.exp(hist[0])) if (hist := last["history"]) else None,
                   "best_ratio": float(np.exp(hist[-1])) if hist else None, "trace": last["trace"]}


class NewtonPolisher:
    """Polish a fitted model until its distance to the optimum is a small share of a LOO step.

    Parameters
    ----------
    polish : bool
        If False only check (and warn); if True take Newton steps.
    threshold : float, default=0.05
        Ratio above which influence is unreliable (warning).
    target : float, default=0.05
        Ratio at which polishing stops.
    max_steps : int, default=20
    reach : float, default=inf
        Newton steps are taken only while the ratio is at most this (beyond, the
        curvature's quadratic model is not trusted: the polisher only checks and warns).
    what : str
        The model and curvature named in warnings.
    removal_size : int, default=1
        With the ``"loo"`` yardstick: the number of rows the changes to be estimated
        remove at once.
    yardstick : {"loo", "parameters"}, default="loo"
        The step is measured against a typical leave-one-out step (polishing a fit for
        influence), or against ``max(‖θ‖, 1)`` (iterating a changed objective to its
        optimum: then the curvature is rebuilt at every step, for Newton's quadratic
        convergence).
    advice : str, optional
        What to tell a user whose model is too far from the optimum (``polish=False``).
    norm : {"euclidean", "curvature"}, default="euclidean"
        How the step and the typical change are measured with the ``"loo"`` yardstick:
        Euclidean, or in the curvature's own norm ``‖x‖_M = √(xᵀMx)`` (the local norm in
        which Newton steps converge, blind to directions the objective barely curves in,
        such as rare one-hot levels). Residual removal steps use the latter.
    """

    def __init__(self, *, polish, threshold=0.05, target=0.05, max_steps=20, what="model",
                 yardstick="loo", advice=None, removal_size=1, norm="euclidean", reach=np.inf):
        self.polish = polish
        self.reach = reach
        self.threshold, self.target, self.max_steps = threshold, target, max_steps
        self.what = what
        self.yardstick = yardstick
        self.removal_size = removal_size
        self.norm = norm
        self._scale = (None, None)  # (solver, typical change) for the model last measured
        self.advice = advice or ("Refit with a smaller tol / larger max_iter, or pass polish=True "
                                 "to take Newton steps with the factorised curvature.")

    # ------------------------------------------------------------------ stages
    def setup(self, model):
        self.model, self.n_steps = model, 0
        self.check_convergence()
        self.best = (self.ratio, model, 0)
        self.f = model.objective(model.adapter.theta, model.eta)

    def check_convergence(self):
        """Newton step to the optimum and its size relative to the job's typical change
        (``ratio``) and to a typical leave-one-out step (``loo_ratio``).

        With a network and a matrix-free solver (a solve costs many passes over the data) the check first
        estimates both sizes from one curvature product each (``step_estimates``: the
        first conjugate-gradient iterates); only if that estimate is above ``target`` and
        polishing is asked for is the Newton step solved for.
        """
        self.step = None
        if self.yardstick == "loo" and getattr(self.model, "matrix_free", False):
            est = self.model.step_estimates(self.removal_size, self.norm)
            if est is not None:
                step, change, loo = est
                self.ratio = step / change if change > 0 else 0.0
                self.loo_ratio = step / loo if loo > 0 else 0.0
                self.estimated = True
                if not self.polish or self.ratio <= self.target:
                    return self.ratio <= self.target
        self.estimated = False
        self.step = self.model.newton_step()
        if self.yardstick == "loo":
            scale = self.typical_change()
        else:
            scale = max(np.linalg.norm(self.model.adapter.theta), 1.0)
        size = self.size(self.step[:, None])[0] if self.yardstick == "loo" else np.linalg.norm(self.step)
        self.ratio = size / scale if scale > 0 else 0.0
        self.loo_ratio = self.ratio
        if self.yardstick == "loo" and (min(self.removal_size, self.model.n) > 1
                                        or self.norm != "euclidean"):
            loo = self.model.typical_loo_step()
            self.loo_ratio = np.linalg.norm(self.step) / loo if loo > 0 else 0.0
        return self.ratio <= self.target

    def typical_change(self):
        """Size of a typical change to be estimated, once per factorisation (see the module)."""
        model, m = self.model, min(self.removal_size, self.model.n)
        if m == 1 and self.norm == "euclidean":
            return model.typical_loo_step()
        if self._scale[0] is not model.solver:
            idx = np.random.default_rng(0).choice(model.n, size=min(256, model.n), replace=False)
            steps = model.solver.solve(model.removal_gradients(idx).T)
            rms = np.sqrt(np.mean(self.size(steps) ** 2))
            self._scale = (model.solver, np.sqrt(m * (1 - m / model.n)) * rms)
        return self._scale[1]

    def size(self, V):
        """Norms of the columns of ``V`` (p, r): Euclidean, or in the curvature's norm."""
        if self.norm == "euclidean":
            return np.linalg.norm(V, axis=0)
        M = self.model.curvature
        MV = M.matvec(V) if isinstance(M, CurvatureOperator) else M @ V
        return np.sqrt(np.maximum(np.einsum("pr,pr->r", V, MV), 0.0))

    def inner_solve(self):
        """The Newton direction (computed by the convergence check, or now)."""
        if self.step is None:
            self.step = self.model.newton_step()
        return self.step

    def line_search(self, step):
        """``(θ, η, f)`` of the longest step ``2⁻ᵏ·step`` that does not raise the objective, or None.

        A net's Gauss–Newton or damped curvature promises descent only for short steps;
        near the optimum the decrease is below the objective's rounding error, hence the
        tolerance.
        """
        model, theta = self.model, self.model.adapter.theta
        # polishing a fit stays near it; iterating a changed objective may start where a full
        # Newton step overshoots by orders of magnitude (a saturated softmax)
        halvings = 10 if self.yardstick == "loo" else 40
        for t in 0.5 ** np.arange(halvings):
            new = theta - t * step
            eta = model.adapter.eta(model.Z, new)
            f = model.objective(new, eta)
            if f <= self.f + 1e-10 * abs(self.f):
                return new, eta, f
        return None

    def finalize(self):
        """The model closest to the optimum, and its ratio; warns when it is not close enough."""
        if self.polish and self.ratio > self.best[0]:  # the step count is the best iterate's
            self.ratio, self.model, self.n_steps = self.best
        if self.ratio > self.threshold:
            if self.yardstick != "loo":
                msg = (f"Newton iterations on the changed objective stopped after {self.n_steps} "
                       f"step(s) with a last step of {self.ratio:.1e} of ‖θ‖: not converged")
            elif not self.polish:
                how = (" (estimated from one curvature product along each: the first "
                       "conjugate-gradient iterates)" if getattr(self, "estimated", False) else "")
                msg = (f"{self.what} is not converged enough for influence: the distance to the "
                       f"optimum is {self.ratio:.0%} of {self.job()}{how}. {self.advice}")
            else:
                msg = (f"polishing stopped {self.ratio:.0%} of {self.job()} away "
                       f"from the optimum after {self.n_steps} Newton step(s) with the {self.what}, "
                       "too far for influence to be reliable: " + (
                           "train the model closer to convergence first" if np.isinf(self.reach)
                           else f"Newton steps are taken within {self.reach:g} of it. {self.advice}"))
            warnings.warn(msg, InfluenceWarning, stacklevel=6)
        return self.model, self.ratio

    def job(self):
        """The change the distance to the optimum is measured against, in words."""
        if self.removal_size == 1:
            return "a typical leave-one-out change"
        return f"a typical change of {self.removal_size} removed rows"

    # -------------------------------------------------------------------- loop
    def solve(self, model):
        """Polish ``model``; returns ``(model, ratio, n_steps)``."""
        self.setup(model)
        while (self.polish and self.target < self.ratio <= self.reach
               and self.n_steps < self.max_steps):
            found = self.line_search(self.inner_solve())
            if found is None:
                break
            theta, eta, self.f = found
            # the curvature is kept only for steps within one leave-one-out step, whatever the
            # job: fold down-dates subtract the rows' curvature at the new θ from the kept M,
            # and a larger mismatch can leave M − M_fold indefinite (rare one-hot levels)
            reuse = self.yardstick == "loo" and not self.model.needs_new_curvature(theta, self.loo_ratio)
            self.model = self.model.at(theta, eta, reuse)
            self.n_steps += 1
            self.check_convergence()
            if self.ratio < self.best[0]:
                self.best = (self.ratio, self.model, self.n_steps)
        model, ratio = self.finalize()
        return model, ratio, self.n_steps


def _lbfgs_options(options):
    options = dict(options or {})
    unknown = sorted(set(options) - set(LBFGS_OPTIONS))
    if unknown:
        raise ValueError(f"polish_options {unknown} are not options of polish='lbfgs'; valid: "
                         f"{sorted(LBFGS_OPTIONS)}")
    max_iter, tol = options.get("max_iter", 1), options.get("tol", 0.0)
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise ValueError(f"polish_options['max_iter'] must be a positive integer, got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or tol < 0:
        raise ValueError(f"polish_options['tol'] must be a non-negative number, got {tol!r}")
    return {**LBFGS_OPTIONS, **options}


def _lbfgs_summary(info):
    out = (f"{info['iterations']} of at most {info['max_iter']} iterations, gradient "
           f"{info['gradient_ratio']:.2g} of a typical row's against tol {info['tol']:.2g}")
    if info.get("projected_iterations") is not None:
        need = info["projected_iterations"]
        out += ("; stopped early: it has stopped improving" if not np.isfinite(need) else
                f"; stopped early: its gradient fell from {info['start_ratio']:.3g} to "
                f"{info['best_ratio']:.3g} of a row's in {info['iterations']} iterations, at which "
                f"rate it would need about {need:.0f} iterations")
    return out


def _lbfgs_advice(info):
    """What to change, from how the finisher stopped (its ``info``)."""
    if info["converged"]:      # the gradient reached tol, the curvature's measure did not
        return (f"Its gradient reached tol ({info['tol']:.2g} of a row's) but the step to the optimum "
                "measured with the curvature is larger: lower polish_options['tol'].")
    if info.get("projected_iterations") is not None:
        return ("Raise polish_options['max_iter'] to what it would need, or train the model closer "
                "to the optimum first.")
    return "Raise polish_options['max_iter'] (or train the model closer to the optimum first)."


def polish_engine(engine, *, polish, removal_size=1, what="model", advice=None, lbfgs_options=None):
    """The one polishing policy, for a job that removes ``removal_size`` rows at a time.

    One row: polish to 5% of a typical leave-one-out step, plain removal steps. ``m > 1``
    rows: residual removal steps (``engine.residual``), whose error in the fit's distance
    to the optimum is second order, so polishing stops at ``RESIDUAL_TARGET`` of a typical
    change of m rows, both in the curvature's norm (``benchmarks/RESULTS_selection.md``).

    Parameters
    ----------
    engine : InfluenceEngine
        The fitted engine.
    polish : bool or "lbfgs"
        False: check and warn; True: Newton steps with the curvature; ``"lbfgs"``:
        full-batch L-BFGS on the objective first (:func:`lbfgs_finish`), then the curvature
        built once and the check, with up to ``LBFGS_NEWTON_STEPS`` exact Newton steps for
        a Hessian within ``LBFGS_NEWTON_REACH`` of the optimum.
    removal_size : int, default=1
        Rows the job removes at once.
    what : str, default="model"
        The model and curvature named in warnings.
    advice : str, default=None
        What to tell a user whose model is too far from the optimum.
    lbfgs_options : dict, default=None
        ``polish="lbfgs"``'s ``max_iter`` and ``tol`` (:data:`LBFGS_OPTIONS`); its report is
        left on the engine as ``polish_info``. The engine may come without a curvature
        (``fit`` builds none for ``"lbfgs"``): it is built at the finished parameters.

    Returns
    -------
    engine : InfluenceEngine
        The polished engine (the iterate closest to the optimum).
    ratio : float
        Its distance to the optimum in typical changes of the job.
    n_steps : int
        Newton steps taken.
    """
    info = None
    if polish == "lbfgs":
        options = _lbfgs_options(lbfgs_options)
        fine = engine
        if getattr(engine.adapter, "is_network", False) and str(engine.adapter.dtype) != "torch.float64":
            fine = copy.copy(engine)            # the objective in float64, whatever the net's dtype
            fine.adapter = engine.adapter.moved(engine.adapter.theta, **{
                **engine.spec.adapter_options, "dtype": "float64"})
        theta, info = lbfgs_finish(fine, **options)
        engine = engine.at(theta)      # the one curvature built, where L-BFGS stopped
        what = f"{what} finished by L-BFGS ({_lbfgs_summary(info)})"
        advice = advice or _lbfgs_advice(info)
        polish = engine.kind == "hessian"   # exact Newton steps; a Fisher fit is only checked
    if removal_size > 1:
        polisher = NewtonPolisher(polish=bool(polish), target=RESIDUAL_TARGET,
                                  threshold=RESIDUAL_TARGET, removal_size=removal_size,
                                  norm="curvature", what=what, advice=advice)
    else:
        polisher = NewtonPolisher(polish=bool(polish), what=what, advice=advice)
    if info is not None:   # exact Newton steps with the kept Hessian, only within their reach
        polisher.max_steps, polisher.reach = LBFGS_NEWTON_STEPS, LBFGS_NEWTON_REACH
    engine, ratio, steps = polisher.solve(engine)
    engine.residual = removal_size > 1
    engine.polish_info = info
    return engine, ratio, steps
