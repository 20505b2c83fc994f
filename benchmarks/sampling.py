"""Curvature samplers (docs/user_guide/maths.rst §3): what a sampled curvature keeps and what it costs.

Every influence estimate here is ``FisherInfluence`` / ``HessianInfluence`` with
``curvature_sampler=`` (the curvature from the sampled rows, importance-weighted; the
gradients from every row), compared with the same estimator on the full curvature.

1. **Faithfulness and consistency** (``--exp 1-adult 1-digits``): a tanh MLP 87 → 32 → 2 on ``--adult-n``
   rows of Adult, and a small digits CNN (``digits_cnn()``, 1,898 parameters, 1,437
   training images), both trained to a tight optimum by full-batch
   L-BFGS. For subsets of t ∈ ``--fractions`` of the rows and ``--seeds`` seeds, the
   Pearson correlation of each sampler's influence matrix (``attribute`` of
   ``--n-test`` test points × every training row) with the full-curvature one (mean ±
   std over seeds), and the spread across seeds: the RMS over entries of the seeds'
   standard deviation, relative to the RMS of the full-curvature matrix.
2. **Class removal on digits** (``--exp 2``): remove every training image of class
   ``--remove`` by one influence (Newton) step ``Δθ = M⁻¹ Σ_{i∈U} ∇(c_i ℓ_i)`` (+ the
   penalty's share) with the sampled curvature M. Metrics (docs/user_guide/maths.rst §2): EA =
   test accuracy on the retained classes, SA = accuracy on the removed training images,
   F1 = 2(1 − SA)·EA / ((1 − SA) + EA), exclusive loss = test loss on the retained
   classes, self loss = loss on the removed images; "one step" is the update itself,
   "best" the best F1 along the update direction (steps × 1, 2, 4, 8, 16: GIF's line
   search, which reads test labels). Retraining without the class (L-BFGS from the
   trained network) is the reference.
   Time (median over seeds) and peak memory (tracemalloc: numpy and Python
   allocations; torch's own CPU allocator is not traced) of fit + solve with the dense
   solver (``--cg``: also conjugate gradients).
3. **Adult logistic regression LOO** (``--exp 3``): ``approx_loocv`` (Newton step,
   decision function) with a sampled curvature vs the exact curvature on the whole
   train split: error relative to the exact-curvature LOO change, sign flips, time.
   The feature sampler runs with 64 k-means clusters per class here.

Trained networks are cached in ``benchmarks/.cache/`` (ignored by git). Threads are
pinned (``--threads``, default 1) and printed.

Run: ``python benchmarks/sampling.py [--exp 1-adult 1-digits 2 3] [--seeds 10] [--adult-n 2000]``
"""

import argparse
import statistics
import time
import tracemalloc
import warnings
from functools import partial

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from skinfluence import FisherInfluence, HessianInfluence
from skinfluence.datasets import adult_design
from skinfluence.models.torch import TorchModel
from skinfluence.sampling import FeatureSampler, LeverageSampler, LogitSampler, RandomSampler

from _common import WD, adult_mlp, adult_sample, digits_cnn, digits_split, pinned_threads, trained_net

SAMPLERS = {"random": RandomSampler, "feature": FeatureSampler, "logit": LogitSampler,
            "leverage": LeverageSampler}
DAMPING = 1e-4


# ------------------------------------------------------------------------- models
def trained(name, make, X, y, start=None, rounds=20):
    """The network ``make(seed=0)`` trained to a tight optimum by full-batch L-BFGS (``rounds`` pieces
    of 500 iterations) on (X, y), from ``start`` (a TorchModel; default its initialisation); cached."""
    t = time.perf_counter()
    module, _ = trained_net(f"sampling_{name}", partial(make, seed=0), X, y, max_iter=500 * rounds,
                            start=None if start is None else start.module.state_dict(),
                            checkpoints=range(500, 500 * rounds, 500), tolerance_grad=1e-12,
                            tolerance_change=1e-15)
    print(f"  {name}: {time.perf_counter() - t:.0f} s (0 when cached)")
    return TorchModel(module.eval(), weight_decay=WD)


# -------------------------------------------------------------------- helpers
def sampled(cls, sampler, model, **kw):
    """The influence estimator on ``model``, its curvature from ``sampler``'s rows (None: all)."""
    if sampler is not None:
        kw["curvature_sampler"] = sampler
    return cls(model, prefit=True, damping=DAMPING, **kw)


def corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def fmt(values, digits=3):
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")


# --------------------------------------------------------------- experiment 1
def faithfulness(name, model, X, y, Xt, yt, fractions, seeds):
    full = sampled(FisherInfluence, None, model)
    t = time.perf_counter()
    A_full = full.fit(X, y).attribute(Xt, yt)
    t_full = time.perf_counter() - t
    print(f"\n### {name}: n={len(y)}, p={full.adapter_.n_params}, {len(yt)} test points, "
          f"full curvature fit+attribute {t_full:.1f} s")
    rows = []
    for frac in fractions:
        for sname, cls in SAMPLERS.items():
            mats, times = [], []
            for seed in seeds:
                inf = sampled(FisherInfluence, cls(n_samples=frac, random_state=seed), model)
                t = time.perf_counter()
                mats.append(inf.fit(X, y).attribute(Xt, yt))
                times.append(time.perf_counter() - t)
            mats = np.array(mats)
            c = [corr(A, A_full) for A in mats]
            spread = np.sqrt(np.mean(mats.std(axis=0) ** 2)) / np.sqrt(np.mean(A_full ** 2))
            rows.append([f"{frac:.0%}", f"{len(inf.curvature_rows_)}", sname, fmt(c), f"{spread:.3f}",
                         f"{statistics.median(times):.2f}"])
            print("  ", rows[-1], flush=True)
    table(["t", "rows", "sampler", "corr with full (mean ± std)", "spread across seeds", "time (s)"], rows)


# --------------------------------------------------------------- experiment 2
def removal_metrics(model, Xt, yt, Xu, yu, removed):
    with torch.no_grad():
        out_t = model.module(torch.as_tensor(Xt))
        out_u = model.module(torch.as_tensor(Xu))
    keep = yt != removed
    ce = torch.nn.functional.cross_entropy
    ea = float((out_t[keep].argmax(1).numpy() == yt[keep]).mean())
    sa = float((out_u.argmax(1).numpy() == yu).mean())
    f1 = 2 * (1 - sa) * ea / ((1 - sa) + ea) if (1 - sa) + ea > 0 else 0.0
    el = float(ce(out_t[keep], torch.as_tensor(yt[keep])))
    sl = float(ce(out_u, torch.as_tensor(yu)))
    return f1, ea, sa, el, sl


def removal_step(inf, idx):
    """Δθ = M⁻¹ v_U, ``v_U = Σ_{i∈U} c_i ∇ℓ_i + s_U ∇π``, for a whole class U (the engine's
    removal gradients and solver; ``parameter_change`` refuses to remove a class)."""
    return inf.curvature_solver_.solve(inf.training_gradients(idx).sum(axis=0))


def class_removal(model, retrained, X, y, Xt, yt, removed, fractions, seeds, solvers):
    idx = np.flatnonzero(y == removed)
    Xu, yu = X[idx], y[idx]
    print(f"\n### digits CNN, removing class {removed} ({len(idx)} of {len(y)} training images)")
    base = removal_metrics(model, Xt, yt, Xu, yu, removed)
    ref = removal_metrics(retrained, Xt, yt, Xu, yu, removed)

    def run(sampler, solver):
        inf = sampled(FisherInfluence, sampler, model, solver=solver)
        t = time.perf_counter()
        inf.fit(X, y)
        delta = removal_step(inf, idx)
        return time.perf_counter() - t, inf, delta

    def peak(sampler, solver):
        tracemalloc.start()
        run(sampler, solver)
        mem = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        return mem

    def evaluate(inf, delta):
        theta = inf.adapter_.theta
        one = removal_metrics(inf.adapter_.with_params(theta + delta), Xt, yt, Xu, yu, removed)
        best = max((removal_metrics(inf.adapter_.with_params(theta + s * delta), Xt, yt, Xu, yu, removed)
                    for s in (1, 2, 4, 8, 16)), key=lambda m: m[0])
        return one, best

    rows = [["before removal", "", *[f"{v:.3f}" for v in base], "", "", ""],
            ["retrained without the class", "", *[f"{v:.3f}" for v in ref], "", "", ""]]
    cost = {}
    for solver in solvers:
        t_full, inf, delta = run(None, solver)
        t_full = statistics.median([t_full] + [run(None, solver)[0] for _ in range(2)])
        cost[solver] = (t_full, peak(None, solver))
        if solver == "dense":
            one, best = evaluate(inf, delta)
            rows.append(["full curvature", "", *[f"{v:.3f}" for v in one], f"{best[0]:.3f}",
                         f"{t_full:.2f}", f"{cost[solver][1]:.1f}"])
    print("  full curvature (time s, peak MiB):", cost, flush=True)
    for frac in fractions:
        for sname, cls in SAMPLERS.items():
            ones, bests, times = [], [], []
            for seed in seeds:
                t, inf, delta = run(cls(n_samples=frac, random_state=seed), "dense")
                one, best = evaluate(inf, delta)
                ones.append(one)
                bests.append(best[0])
                times.append(t)
            mem = peak(cls(n_samples=frac, random_state=seeds[0]), "dense")
            ones = np.array(ones)
            t_med = statistics.median(times)
            row = [f"{sname} {frac:.0%}", len(inf.curvature_rows_),
                   fmt(ones[:, 0]), *[f"{v:.3f}" for v in ones[:, 1:].mean(axis=0)],
                   fmt(bests), f"{t_med:.2f} ({t_med / cost['dense'][0] - 1:+.0%})",
                   f"{mem:.1f} ({mem / cost['dense'][1] - 1:+.0%})"]
            if "cg" in solvers:
                t_cg = statistics.median(run(cls(n_samples=frac, random_state=s), "cg")[0] for s in seeds[:3])
                m_cg = peak(cls(n_samples=frac, random_state=seeds[0]), "cg")
                row.append(f"{t_cg:.2f} ({t_cg / cost['cg'][0] - 1:+.0%}), "
                           f"{m_cg:.1f} MiB ({m_cg / cost['cg'][1] - 1:+.0%})")
            rows.append(row)
            print("  ", rows[-1], flush=True)
    table(["curvature", "rows", "F1 one step", "EA", "SA", "excl. loss", "self loss", "F1 best step",
           "time dense (s)", "peak MiB dense"] + (["CG: time (s), peak"] if "cg" in solvers else []), rows)


# --------------------------------------------------------------- experiment 3
def adult_loo(fractions, seeds):
    train = adult_design()
    X, y = train.X, train.y
    model = LogisticRegression(C=1.0, max_iter=1000, tol=1e-10).fit(X, y)
    eta = model.decision_function(X)

    def run(sampler):
        inf = HessianInfluence(model, prefit=True, curvature_sampler=sampler)
        t = time.perf_counter()
        loo = inf.fit(X, y).approx_loocv("ns", "decision_function")
        return time.perf_counter() - t, loo

    t_full = min(run(None)[0] for _ in range(3))
    _, loo_full = run(None)
    change = np.abs(loo_full - eta)
    print(f"\n### Adult logistic regression: n={len(y)}, p={X.shape[1] + 1}; exact-curvature LOO "
          f"fit+approx_loocv {t_full:.2f} s; mean |η_-i − η_i| = {change.mean():.2e}")
    rows = [["exact curvature", len(y), "0", "0", f"{t_full:.2f}"]]
    # one k-means cluster per row would take minutes on 30k rows: 64 clusters per class
    samplers = {**SAMPLERS, "feature": partial(FeatureSampler, n_clusters=64)}
    for frac in fractions:
        for sname, cls in samplers.items():
            errs, flips, times = [], [], []
            for seed in seeds:
                t, loo = run(cls(n_samples=frac, random_state=seed))
                errs.append(np.nanmean(np.abs(loo - loo_full)) / change.mean())
                flips.append(int(np.sum(np.sign(loo) != np.sign(loo_full))))
                times.append(t)
            rows.append([f"{sname} {frac:.0%}", int(round(frac * len(y))), fmt(errs), fmt(flips, 1),
                         f"{statistics.median(times):.2f}"])
            print("  ", rows[-1], flush=True)
    table(["curvature", "rows", "LOO error / mean LOO change", "sign flips vs exact-curvature LOO",
           "time (s)"], rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--exp", nargs="+", default=["1-adult", "1-digits", "2", "3"],
                    choices=["1-adult", "1-digits", "2", "3"])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--adult-n", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--remove", type=int, default=0)
    ap.add_argument("--cg", action="store_true", help="experiment 2: also time conjugate gradients")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    seeds = list(range(args.seeds))
    with pinned_threads(args.threads, f"seeds={args.seeds}, t={args.fractions}"):
        X_d, y_d, Xt_d, yt_d = digits_split(images=True)
        if "1-adult" in args.exp:
            X, y, Xt, yt = adult_sample(args.adult_n, args.n_test)
            mlp = trained("adult_mlp", partial(adult_mlp, h=32, dtype=torch.float64), X, y)
            faithfulness("Adult MLP 87-32-2", mlp, X, y, Xt, yt, args.fractions, seeds)
        if "1-digits" in args.exp:
            cnn = trained("digits_cnn", digits_cnn, X_d, y_d, rounds=5)
            faithfulness("digits CNN", cnn, X_d, y_d, Xt_d[:args.n_test], yt_d[:args.n_test],
                         args.fractions, seeds)
        if "2" in args.exp:
            cnn = trained("digits_cnn", digits_cnn, X_d, y_d, rounds=5)
            keep = y_d != args.remove
            # retrained without the class from the trained network (the optimum that the
            # Newton step aims at), by the same full-batch L-BFGS
            retrained = trained("digits_cnn", digits_cnn, X_d[keep], y_d[keep], start=cnn, rounds=5)
            class_removal(cnn, retrained, X_d, y_d, Xt_d, yt_d, args.remove, args.fractions, seeds,
                          ["dense", "cg"] if args.cg else ["dense"])
        if "3" in args.exp:
            adult_loo(args.fractions, seeds)


if __name__ == "__main__":
    main()
