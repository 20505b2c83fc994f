"""Generalized influence (GIF) on scikit-learn's digits: unlearning, relabelling, backdoor, cost.

Two networks, trained to their optimum by full-batch L-BFGS (float64, tanh, weight decay
1e-3 on the mean cross-entropy):

* ``cnn``: conv 8 → pool → conv 16 → pool → fc 32 → fc 10 (3,658 parameters);
* ``mlp``: 64 → 300 → 300 → 10 (112,810 parameters), over-parameterised for 1,078 rows.

Digits are split per seed into train 60% / validation 20% / test 20% (stratified). The
protocol follows the authors' code (docs/user_guide/maths.rst §2): the curvature is the Hessian of
the *retained* objective estimated on one batch of 512 retained training rows; the
right-hand side is the removed rows' gradient in that objective's scale (their mean
loss share plus the weight-decay share); parameters are selected on the removed rows;
modified LiSSA runs ``--max-iter`` steps (truncated, as the authors run it). The step is
then applied as a direction, normalised to ``γ = --gamma`` per step, up to
``--max-steps`` steps, stopping once the removed training rows' accuracy is 0; the
checkpoint is chosen by the *validation* F1 (the paper selects on test data; here the
test split is only used for the reported numbers).

Methods on the same curvature: GIF (selection rule × ratio), Freezing (``H_JJ⁻¹ g_J``) and
Projecting (``(H⁻¹g)_J``) with J from ``highest_outputs``, the full influence function
(J = all, the same truncated iteration), Basu et al.'s second-order group influence
(around the full-data curvature: the retained batch plus the removed rows' Hessian),
and retraining from scratch without the removed rows (same L-BFGS budget).

Experiments (``--experiments``):

1. ``removal``: remove every training row of class 0. EA: test accuracy on the other
   classes; SA: accuracy on the removed training rows; F1 = 2(1−SA)EA/((1−SA)+EA).
   Times are CPU seconds (``time.process_time``, one thread: robust to the other
   processes of a shared machine) relative to retraining's (``solve``: selection +
   gradient + solver; ``total``: plus the line search over steps).
2. ``label``: relabel every training 1 as 7. Scores: EA on test rows of the other
   classes, relabel accuracy (test 1s predicted 7), their harmonic mean.
3. ``backdoor``: 10% of training digits get a 3×3 checkerboard in the lower-right corner
   and label 4; the poisoned net is cleaned by relabelling those rows to their true
   labels. Clean accuracy, relabel accuracy (triggered test digits classified as their
   true label), attack success (triggered non-4 test digits classified 4).
4. ``cost``: time of the influence step (cnn, GIF 10%, 100 LiSSA steps) against
   retraining as the data grow (digits augmented with ±1-pixel shifts and noise, 1×,
   10×, 50×; retraining: Adam, 10 epochs of batches of 128, measured).

Trained networks and each run's results are cached in ``benchmarks/.cache/`` (ignored by git).

Run: ``python benchmarks/gif_digits.py --experiments removal --models cnn mlp --seeds 3``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from skinfluence.curvature.gif import GIFSolver
from skinfluence.curvature.operators import CurvatureOperator, model_curvature
from skinfluence.metrics import unlearning_f1
from skinfluence.models import make_adapter
from skinfluence.models.torch import TorchModel
from skinfluence.selection import RULES, select_parameters
from skinfluence.unlearning import unlearning_path

from _common import WD, cache_folder, digits_three_way, gif_net, gif_nets, pinned_threads

RESULTS = cache_folder("gif_digits")   # each run's results (tables: --from-cache)
BATCH = 512


# ------------------------------------------------------------------------ models
MODELS = gif_nets()


def add_trigger(X):
    X = X.copy()
    X[:, 0, 5:8, 5:8] = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], float)
    return X


# ---------------------------------------------------------------- the influence
class Problem:
    """A trained net, the rows whose loss changes (U) and the new objective's curvature.

    ``y_new`` are the changed rows' new labels (None: removed). The right-hand side is
    ``g = (Σ_U [∇ℓ_i(old) − ∇ℓ_i(new)] + m_removed·λθ̂) / n_new`` and ``H`` the Hessian of
    the new mean objective on ``BATCH`` rows of the new training set.
    """

    def __init__(self, net, Xtr, ytr, U, y_new=None, seed=0, kind="hessian"):
        self.adapter = make_adapter(TorchModel(net, weight_decay=WD), dtype="float64", device="cpu")
        ad = self.adapter
        self.U, self.XU, self.yU = U, Xtr[U], ytr[U]
        n, m = len(ytr), len(U)
        removed = y_new is None
        n_new = n - m if removed else n
        ZU = ad.design(self.XU)
        G = ad.loss.gradient(self.yU, ad.eta(ZU))
        if not removed:
            G = G - ad.loss.gradient(np.asarray(y_new), ad.eta(ZU))
        self.g = (ad.total_gradient(ZU, G) + (m * WD * ad.theta if removed else 0.0)) / n_new
        y_after = ytr.copy()
        keep = np.ones(n, bool)
        if removed:
            keep[U] = False
        else:
            y_after[U] = y_new
        rng = np.random.default_rng(seed)
        rows = rng.choice(np.flatnonzero(keep), min(BATCH, keep.sum()), replace=False)
        Zb = ad.design(Xtr[rows])
        op = (hessian_operator(ad, Zb, y_after[rows], 1 / len(rows)) if kind == "hessian" else
              model_curvature(ad, Zb, y_after[rows], np.full(len(rows), 1 / len(rows)), kind))
        self.kind = kind
        self.H = op.add_diagonal(ad.penalty.hessian_diagonal())
        # the removed rows' Hessian in the same scale (second-order influence expands in it)
        self.D = None
        if removed:
            self.D = (hessian_operator(ad, ZU, self.yU, 1 / n_new) if kind == "hessian" else
                      model_curvature(ad, ZU, self.yU, np.full(m, 1 / n_new), kind))

    def direction(self, method, rule="highest_outputs", ratio=1.0, max_iter=100, seed=0):
        """(Δθ, info, seconds) of one method."""
        ad = self.adapter
        t = time.process_time()
        if method in ("full", "second_order"):
            mask = np.ones(ad.n_params, bool)
        else:
            mask, _ = select_parameters(ad, self.XU, self.yU, rule=rule, ratio=ratio, random_state=seed)
        opts = dict(max_iter=max_iter, normalizer=1.0, normalizer_step=5.0)
        if method == "second_order":
            full = CurvatureOperator(ad.n_params, lambda V: self.H.matvec(V) + self.D.matvec(V))
            solver = GIFSolver(full, subset=mask, strategy="second_order", **opts)
            d = solver.solve_downdated(self.g, self.D.matvec)
        else:
            solver = GIFSolver(self.H, subset=mask, strategy=method, **opts)
            d = solver.solve(self.g)
        return d, solver.info_, time.process_time() - t


def hessian_operator(ad, Z, y, c):
    """Hessian of ``c Σ_i ℓ_i`` (cross-entropy) by one forward-over-reverse product per call.

    The same matrix as ``model_curvature(ad, Z, y, c, "hessian")`` (whose Gauss–Newton
    part and second-derivative part cost two separate passes; this is ~2x faster on
    these nets), checked against it in :func:`check_operator`.
    """
    from torch.func import functional_call, grad, jvp

    x, t = ad._t(Z), torch.as_tensor(np.asarray(y), device=ad.device)

    def loss(theta):
        out = functional_call(ad.module, ad._params(theta), (x,))
        return c * torch.nn.functional.cross_entropy(out, t, reduction="sum")

    g = grad(loss)

    def matvec(V):
        V = np.asarray(V, dtype=float)
        cols = V.reshape(ad.n_params, -1).T
        out = [jvp(g, (ad._theta_t,), (ad._t(v),))[1] for v in cols]
        return ad._np(torch.stack(out).T).reshape(V.shape)

    return CurvatureOperator(ad.n_params, matvec)


def check_operator(ad, Z, y):
    c = 1 / len(y)
    v = np.random.default_rng(0).standard_normal(ad.n_params)
    a = hessian_operator(ad, Z, y, c).matvec(v)
    b = model_curvature(ad, Z, y, np.full(len(y), c), "hessian").matvec(v)
    assert np.linalg.norm(a - b) <= 1e-10 * np.linalg.norm(b), "fast HVP disagrees with the engine's"


def logits(ad, X, theta):
    return ad.eta(ad.design(X), theta)


def acc(ad, X, y, theta):
    return float(np.mean(logits(ad, X, theta).argmax(1) == y)) if len(y) else np.nan


def ratio_to(t, t_retrain):
    return np.nan if t_retrain is None else t / t_retrain


def run_path(ad, d, score_val, args):
    """Line search along d: (θ of the best validation checkpoint, steps, seconds)."""
    t = time.process_time()
    path = unlearning_path(ad, d, score_val, step_size=args.gamma, max_steps=args.max_steps,
                           metric="score", stop_self_accuracy=args.stop_sa, build=lambda th: th)
    return path.theta, path.best_step, time.process_time() - t


def methods(ratios, rules, rule_ratios, base_ratios):
    """GIF with highest_outputs at ``ratios``, the other rules at ``rule_ratios``,
    Freezing / Projecting at ``base_ratios``, then the full and second-order IF."""
    out = [("gif", "highest_outputs", q) for q in ratios]
    out += [("gif", r, q) for r in rules if r != "highest_outputs" for q in rule_ratios]
    out += [(m, "highest_outputs", q) for m in ("freezing", "projecting") for q in base_ratios]
    return out + [("full", "-", 1.0), ("second_order", "-", 1.0)]


# ------------------------------------------------------------------ experiments
def exp_removal(args, model, seed, cls=0):
    Xtr, ytr, Xva, yva, Xte, yte = digits_three_way(seed)
    net, _ = gif_net(model, Xtr, ytr, seed)
    U = np.flatnonzero(ytr == cls)
    keep = ytr != cls
    net_re, t_re = gif_net(model, Xtr[keep], ytr[keep], seed)
    P = Problem(net, Xtr, ytr, U, seed=seed, kind=args.curvature)
    ad = P.adapter
    check_operator(ad, ad.design(Xtr[:64]), ytr[:64])
    vk, tk = yva != cls, yte != cls

    def score_val(th):
        ea, sa = acc(ad, Xva[vk], yva[vk], th), acc(ad, P.XU, P.yU, th)
        return {"score": unlearning_f1(ea, sa), "self_accuracy": sa}

    def report(a, th):
        ea, sa = acc(a, Xte[tk], yte[tk], th), acc(a, P.XU, P.yU, th)
        return {"EA": ea, "SA": sa, "F1": unlearning_f1(ea, sa)}

    ad_re = make_adapter(TorchModel(net_re, weight_decay=WD), device="cpu")
    rows = [{"method": "before", "rule": "-", "ratio": "-", **report(ad, None), "solve": 0, "total": 0},
            {"method": "retrain", "rule": "-", "ratio": "-", **report(ad_re, None), "solve": 1, "total": 1,
             "time_s": t_re}]
    rules = args.rules if model == "cnn" else args.mlp_rules
    for method, rule, ratio in methods(args.ratios, rules, args.rule_ratios, args.rule_ratios):
        if args.only and method not in args.only and f"{method}:{rule}" not in args.only:
            continue
        d, info, ts = P.direction(method, rule, ratio, args.max_iter, seed)
        th, steps, tp = run_path(ad, d, score_val, args)
        rows.append({"method": method, "rule": rule, "ratio": ratio, **report(ad, th), "solve": ratio_to(ts, t_re),
                     "total": ratio_to(ts + tp, t_re), "steps": steps, "restarts": info.get("n_restarts", 0),
                     "c": info.get("normalizer")})
        if args.verbose:
            print(seed, rows[-1], flush=True)
    with open(RESULTS / f"removal_{model}{'' if args.curvature == 'hessian' else '_' + args.curvature}_seed{seed}.json",
              "w") as f:
        json.dump(rows, f, default=float)               # one file per seed: runs can be merged
    return rows


def _relabel_rows(P, net_re, t_re, report, score_val, args, seed):
    """Rows of a relabelling experiment: before, retrained, and each method's best step."""
    ad = P.adapter
    ad_re = make_adapter(TorchModel(net_re, weight_decay=WD), device="cpu")
    rows = [{"method": "before", "rule": "-", "ratio": "-", **report(ad, None), "solve": 0, "total": 0},
            {"method": "retrain", "rule": "-", "ratio": "-", **report(ad_re, None), "solve": 1, "total": 1,
             "time_s": t_re}]
    args2 = argparse.Namespace(**{**vars(args), "stop_sa": None})
    for method, rule, ratio in methods(args.label_ratios, [], [], args.label_ratios)[:-1]:
        d, info, ts = P.direction(method, rule, ratio, args.max_iter, seed)
        th, steps, tp = run_path(ad, d, score_val, args2)
        rows.append({"method": method, "rule": rule, "ratio": ratio, **report(ad, th), "solve": ratio_to(ts, t_re),
                     "total": ratio_to(ts + tp, t_re), "steps": steps})
    return rows


def exp_label(args, model, seed, src=1, dst=7):
    Xtr, ytr, Xva, yva, Xte, yte = digits_three_way(seed)
    net, _ = gif_net(model, Xtr, ytr, seed)
    U = np.flatnonzero(ytr == src)
    y_re = ytr.copy()
    y_re[U] = dst
    net_re, t_re = gif_net(model, Xtr, y_re, seed)
    P = Problem(net, Xtr, ytr, U, y_new=np.full(len(U), dst), seed=seed, kind=args.curvature)
    ad = P.adapter
    vo, to = (yva != src), (yte != src)

    def pieces(Xs, ys, other, th):
        ea = acc(ad, Xs[other], ys[other], th)
        ra = float(np.mean(logits(ad, Xs[~other], th).argmax(1) == dst))
        return ea, ra

    def score_val(th):
        ea, ra = pieces(Xva, yva, vo, th)
        return {"score": unlearning_f1(ea, 1 - ra)}

    def report(a, th):
        ea = acc(a, Xte[to], yte[to], th)
        ra = float(np.mean(logits(a, Xte[~to], th).argmax(1) == dst))
        return {"EA": ea, "relabel": ra, "H": unlearning_f1(ea, 1 - ra)}

    return _relabel_rows(P, net_re, t_re, report, score_val, args, seed)


def exp_backdoor(args, model, seed, target=4, frac=0.1):
    Xtr, ytr, Xva, yva, Xte, yte = digits_three_way(seed)
    rng = np.random.default_rng(seed)
    U = np.sort(rng.choice(len(ytr), int(frac * len(ytr)), replace=False))
    Xp, yp = Xtr.copy(), ytr.copy()
    Xp[U] = add_trigger(Xtr[U])
    yp[U] = target
    net, _ = gif_net(model, Xp, yp, seed)
    net_re, t_re = gif_net(model, Xp, ytr, seed)          # the same images, true labels
    P = Problem(net, Xp, yp, U, y_new=ytr[U], seed=seed, kind=args.curvature)
    ad = P.adapter
    Xva_t, Xte_t = add_trigger(Xva), add_trigger(Xte)

    def pieces(a, Xc, yc, Xt, th):
        clean = acc(a, Xc, yc, th)
        pred = logits(a, Xt, th).argmax(1)
        return clean, float(np.mean(pred == yc)), float(np.mean(pred[yc != target] == target))

    def score_val(th):
        c, r, _ = pieces(ad, Xva, yva, Xva_t, th)
        return {"score": unlearning_f1(c, 1 - r)}

    def report(a, th):
        c, r, s = pieces(a, Xte, yte, Xte_t, th)
        return {"clean": c, "relabel": r, "attack": s}

    return _relabel_rows(P, net_re, t_re, report, score_val, args, seed)


def augmented(X, y, times, seed):
    if times == 1:
        return X, y
    rng = np.random.default_rng(seed)
    out = [X]
    for _ in range(times - 1):
        dx, dy = rng.integers(-1, 2, 2)
        Xs = np.roll(np.roll(X, dx, axis=3), dy, axis=2)
        out.append(np.clip(Xs + 0.05 * rng.standard_normal(X.shape), 0, 1))
    return np.concatenate(out), np.tile(y, times)


def exp_cost(args, model, seed, cls=0):
    Xtr, ytr, *_ = digits_three_way(seed)
    net, _ = gif_net(model, Xtr, ytr, seed)
    rows = []
    for times in args.sizes:
        Xa, ya = augmented(Xtr, ytr, times, seed)
        keep = ya != cls
        torch.manual_seed(seed)
        fresh = MODELS[model]()   # from the generator just seeded, as randperm below
        opt = torch.optim.Adam(fresh.parameters(), lr=3e-3, weight_decay=WD)
        Xk, yk = torch.as_tensor(Xa[keep]), torch.as_tensor(ya[keep])
        t = time.process_time()
        for _ in range(10):
            perm = torch.randperm(len(yk))
            for i in range(0, len(yk), 128):
                b = perm[i:i + 128]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(fresh(Xk[b]), yk[b]).backward()
                opt.step()
        t_re = time.process_time() - t
        t = time.process_time()
        P = Problem(net, Xa, ya, np.flatnonzero(ya == cls), seed=seed)
        t_setup = time.process_time() - t
        row = {"n": len(ya), "retrain_s": t_re, "setup_s": t_setup}
        for method, ratio in (("gif", 0.1), ("freezing", 0.1), ("full", 1.0)):
            _, _, ts = P.direction(method, "highest_outputs", ratio, args.max_iter, seed)
            row[f"{method}_s"] = t_setup + ts
        rows.append(row)
        if args.verbose:
            print(row, flush=True)
    return rows


# ------------------------------------------------------------------------ tables
def summarise(rows_by_seed, cols):
    """Mean ± std over seeds of each (method, rule, ratio)."""
    groups = {}
    for rows in rows_by_seed:
        for r in rows:
            groups.setdefault((r["method"], r["rule"], str(r["ratio"])), []).append(r)
    lines = ["| method | rule | J ratio | " + " | ".join(cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    for (m, rule, ratio), rs in groups.items():
        cells = []
        for c in cols:
            v = np.array([r.get(c, np.nan) for r in rs], float)
            s = 100 if c in ("EA", "SA", "relabel", "clean", "attack") else 1
            if np.isnan(v).all():
                cells.append("-")
            elif c in ("solve", "total"):                  # seeds timed by wall clock are NaN
                cells.append(f"{np.nanmean(v):.2f}")
            else:
                d = 0 if c == "steps" else 2
                cells.append(f"{s * np.nanmean(v):.{d}f} ± {s * np.nanstd(v):.{d}f}")
        q = ratio if ratio == "-" else f"{100 * float(ratio):g}%"
        lines.append(f"| {m} | {rule} | {q} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


COLUMNS = {"removal": ["EA", "SA", "F1", "steps", "solve", "total"],
           "label": ["EA", "relabel", "H", "steps", "solve", "total"],
           "backdoor": ["clean", "relabel", "attack", "steps", "solve", "total"]}


def parser():
    """The command line's options (their defaults are the experiments' settings)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experiments", nargs="+", default=["removal"],
                    choices=["removal", "label", "backdoor", "cost"])
    ap.add_argument("--models", nargs="+", default=["cnn"], choices=list(MODELS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.3])
    ap.add_argument("--rule-ratios", type=float, nargs="+", default=[0.05, 0.3],
                    help="ratios of the other selection rules, Freezing and Projecting")
    ap.add_argument("--label-ratios", type=float, nargs="+", default=[0.05, 0.3])
    ap.add_argument("--rules", nargs="+", default=list(RULES))
    ap.add_argument("--mlp-rules", nargs="+", default=["highest_outputs", "random"])
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--gamma", type=float, default=0.1)
    ap.add_argument("--max-steps", type=int, default=100)
    ap.add_argument("--stop-sa", type=float, default=0.0)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="append the tables to this markdown file")
    ap.add_argument("--curvature", default="hessian", choices=["hessian", "fisher"])
    ap.add_argument("--only", nargs="+", default=None,
                    help="removal: run only these methods (e.g. full gif:highest_outputs)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--from-cache", action="store_true",
                    help="only print the tables of the runs saved in benchmarks/.cache/gif_digits")
    return ap


def main():
    args = parser().parse_args()
    if args.from_cache:
        for exp, cols in COLUMNS.items():
            for model in args.models:
                for tag in ("", "_fisher"):
                    seeds = sorted(RESULTS.glob(f"{exp}_{model}{tag}_seed*.json"))
                    path = RESULTS / f"{exp}_{model}{tag}.json"
                    if seeds:
                        per_seed = [json.loads(f.read_text()) for f in seeds]
                    elif path.exists():
                        per_seed = json.loads(path.read_text())
                    else:
                        continue
                    print(f"### {exp} — {model}{tag} ({len(per_seed)} seeds)", summarise(per_seed, cols), "",
                          sep="\n")
        return
    with pinned_threads(args.threads):
        out = []
        for exp in args.experiments:
            for model in args.models:
                t0 = time.process_time()
                if exp == "cost":
                    rows = exp_cost(args, model, 0)
                    lines = ["| n | retrain (Adam, 10 epochs) CPU s | GIF 10% CPU s | Freezing 10% CPU s | full IF CPU s |",
                             "|---|---|---|---|---|"]
                    lines += [f"| {r['n']} | {r['retrain_s']:.1f} | {r['gif_s']:.1f} | {r['freezing_s']:.1f} | "
                              f"{r['full_s']:.1f} |" for r in rows]
                    table = "\n".join(lines)
                else:
                    fn = {"removal": exp_removal, "label": exp_label, "backdoor": exp_backdoor}[exp]
                    per_seed = [fn(args, model, s) for s in range(args.first_seed, args.first_seed + args.seeds)]
                    cols = COLUMNS[exp]
                    table = summarise(per_seed, cols)
                    tag = "" if args.curvature == "hessian" else f"_{args.curvature}"
                    with open(RESULTS / f"{exp}_{model}{tag}.json", "w") as f:
                        json.dump(per_seed, f, default=float)
                head = f"### {exp} — {model}, {args.curvature} ({args.seeds if exp != 'cost' else 1} seeds, {time.process_time() - t0:.0f} s)"
                print(head, table, "", sep="\n", flush=True)
                out.append(head + "\n\n" + table + "\n")
        if args.out:
            with open(args.out, "a") as f:
                f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
