"""``polish="lbfgs"`` on L-BFGS-trained digits MLPs: convergence ratio reached, cost over training.

A user's calls: ``HessianInfluence(TorchModel(net, weight_decay=1e-3), prefit=True,
polish="lbfgs", polish_options={...})`` and the Fisher variant, on the networks of
``benchmarks/_common.py`` (tanh MLPs 64→32→10, 2,410 parameters, and 64→300→300→10, 112,810
parameters) trained by its L-BFGS trainer for ``--train-iter`` iterations on the 1,437
training rows of digits. For each it prints, in one process:

* the training's CPU seconds (``time.process_time``, one thread: robust to the other
  processes of a shared machine; the trained net is cached with the time it took) and the
  ratio of the unpolished fit;
* ``fit(polish="lbfgs")``'s CPU seconds, and over the training; the same for the unpolished
  fit (the curvature every fit builds), so that the finisher's own cost is the difference;
* ``convergence_ratio_`` after finishing (target < 0.05), the finisher's iterations and its
  gradient over a typical row's, and how many curvatures the fit built (counted by wrapping
  the engine's ``curvature_operator``: instrumentation only, the calls are the user's).

``--trace 400,1000,2000`` prints instead, at those L-BFGS iterations, why the net is not at
its optimum: the dense Hessian's and Fisher's extreme eigenvalues, the gradient over a typical
row's and the ratio in both curvatures (small nets only).

Run: ``python benchmarks/finisher.py [--nets 32,300x300] [--train-iter 400]
[--max-iter 2000] [--tol 1e-3] [--curvatures fisher,hessian] [--threads 1] [--trace K,...]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import torch
from _common import digits_mlp, digits_split, lbfgs, pinned_threads, trained_net

from skinfluence import FisherInfluence, HessianInfluence
from skinfluence.estimators import InfluenceEngine
from skinfluence.exceptions import InfluenceWarning
from skinfluence.models.torch import TorchModel

ESTIMATORS = {"fisher": FisherInfluence, "hessian": HessianInfluence}


class BuildCounter:
    """Counts curvature builds (the engine's ``curvature_operator`` calls) while active."""

    def __enter__(self):
        self.count, original = 0, InfluenceEngine.curvature_operator
        self._original = original

        def counted(engine, dense):
            self.count += 1
            return original(engine, dense)

        InfluenceEngine.curvature_operator = counted
        return self

    def __exit__(self, *exc):
        InfluenceEngine.curvature_operator = self._original


def cpu_time(fn):
    """``(CPU seconds, result, warnings raised)`` of ``fn()``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InfluenceWarning)
        t = time.process_time()
        out = fn()
        spent = time.process_time() - t
    return spent, out, [str(w.message) for w in caught if issubclass(w.category, InfluenceWarning)]


def run(hidden, args, X, y):
    name = "64-" + "-".join(map(str, hidden)) + "-10"
    net, trained = trained_net(f"finisher_mlp{name}_s0", lambda: digits_mlp(hidden, seed=0), X, y,
                               max_iter=args.train_iter)
    t_train = trained["cpu"]          # measured when the net was trained (and cached)
    model = TorchModel(net, weight_decay=1e-3)
    p = sum(q.numel() for q in net.parameters())
    print(f"-- MLP {name}: {p:,} parameters, {len(y)} rows; trained by {args.train_iter} L-BFGS "
          f"iterations in {t_train:.1f} CPU s", flush=True)
    rows = []
    for kind in args.curvatures.split(","):
        cls = ESTIMATORS[kind]
        try:
            t_raw, raw, _ = cpu_time(lambda: cls(model, prefit=True).fit(X, y))
            before = f"{raw.convergence_ratio_:.3g}"
        except Exception as exc:  # noqa: BLE001 - e.g. an indefinite Hessian at the trained net
            t_raw, before = float("nan"), f"none ({type(exc).__name__}: {str(exc)[:90]})"
        try:
            with BuildCounter() as builds:
                t_fin, done, said = cpu_time(lambda: cls(
                    model, prefit=True, polish="lbfgs",
                    polish_options={"max_iter": args.max_iter, "tol": args.tol}).fit(X, y))
        except Exception as exc:  # noqa: BLE001 - say so and go on (e.g. an indefinite Hessian)
            print(f"{cls.__name__}: failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        info = done.polish_info_
        extra = {k: info[k] for k in ("newton_iterations", "hessian_products") if k in info}
        print(f"{cls.__name__} (solver {done.solver_!r}): unpolished ratio {before} "
              f"(fit {t_raw:.1f} s = {t_raw / t_train:.2f}x training); polish='lbfgs' ratio "
              f"{done.convergence_ratio_:.3g} in {t_fin:.1f} s = {t_fin / t_train:.2f}x training "
              f"({(t_fin - t_raw) / t_train:.2f}x beyond the unpolished fit); {info['iterations']} "
              f"iterations, {info['evaluations']} gradients {extra}, gradient {info['gradient_ratio']:.2g} "
              f"of a row's; {builds.count} curvature build(s); Newton steps {done.n_polish_steps_}"
              + (f"; warned: {said[0][:300]}" if said else ""), flush=True)
        trace = info.get("trace") or []
        if trace:   # the gradient over a row's, every 100 iterations (best so far)
            best, marks = np.minimum.accumulate([r for _, r in trace]), []
            for (k, _), b in zip(trace, best):
                if k % 100 == 0:
                    marks.append(f"{k}: {b:.3g}")
            print("  best gradient over a row's by iteration: " + ", ".join(marks), flush=True)
        rows.append((name, kind, done.convergence_ratio_, t_fin / t_train))
    return rows


def trace(hidden, args, X, y):
    """Why a net is far from its optimum: at L-BFGS checkpoints, the dense Hessian's and
    Fisher's extreme eigenvalues, the gradient over a typical row's, and the ratio in each
    curvature (the Hessian's undamped, by its eigendecomposition; nan where indefinite)."""
    checkpoints = sorted(int(k) for k in args.trace.split(","))
    net = digits_mlp(hidden, seed=0)
    states = lbfgs(net, X, y, max_iter=checkpoints[-1], checkpoints=checkpoints)
    idx = np.random.default_rng(0).choice(len(y), 256, replace=False)
    print(f"-- trace of MLP 64-{'-'.join(map(str, hidden))}-10 (dense curvatures)", flush=True)
    for k, state in zip(checkpoints, states):
        net.load_state_dict(state)
        model = TorchModel(net, weight_decay=1e-3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InfluenceWarning)
            fisher = FisherInfluence(model, prefit=True, solver="dense").fit(X, y)
            hess = HessianInfluence(model, prefit=True, solver="dense", damping=1.0).fit(X, y)
        eng = fisher.engine_
        g = eng.data_grad + eng.pen_grad
        V = np.asarray(fisher.training_gradients(idx), float)
        lam, U = np.linalg.eigh(hess.curvature_)         # the undamped Hessian
        eg = np.linalg.eigvalsh(fisher.curvature_)
        ratio_h = float("nan")
        if lam[0] > 0:
            step = U @ ((U.T @ g) / lam)
            loo = np.median(np.linalg.norm(U @ ((U.T @ V.T) / lam[:, None]), axis=0))
            ratio_h = np.linalg.norm(step) / loo
        print(f"{k:5d} L-BFGS iterations: gradient {np.linalg.norm(g) / np.median(np.linalg.norm(V, axis=1)):.3g} "
              f"of a row's; Hessian eigenvalues {lam[0]:.3g} .. {lam[-1]:.3g} ({int((lam < 0).sum())} negative); "
              f"Fisher {eg[0]:.3g} .. {eg[-1]:.3g}; ratio (Fisher) {fisher.convergence_ratio_:.3g}, "
              f"(Hessian) {ratio_h:.3g}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="32,300x300", help="hidden sizes, e.g. 32 or 300x300, comma-separated")
    ap.add_argument("--train-iter", type=int, default=400)
    ap.add_argument("--max-iter", type=int, default=2000, help="polish_options['max_iter']")
    ap.add_argument("--tol", type=float, default=1e-3, help="polish_options['tol']")
    ap.add_argument("--curvatures", default="fisher,hessian")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trace", default=None,
                    help="instead: L-BFGS checkpoints (e.g. 400,1000,2000) at which to print the dense "
                         "curvatures' spectra and the ratios")
    args = ap.parse_args(argv)
    X, y, _, _ = digits_split()
    rows = []
    with pinned_threads(args.threads):
        print(f"torch {torch.__version__}; polish_options max_iter={args.max_iter}, tol={args.tol}")
        for spec in args.nets.split(","):
            hidden = tuple(int(h) for h in spec.split("x"))
            if args.trace:
                trace(hidden, args, X, y)
            else:
                rows += run(hidden, args, X, y)
    if rows:
        met = [r for r in rows if r[2] < 0.05 and r[3] <= 5]
        print(f"met (ratio < 0.05 within 5x training): {len(met)} of {len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
