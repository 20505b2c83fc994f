"""Attribution quality of K-FAC, EK-FAC and the EK-FAC-preconditioned CG refinement, beside
kronfluence's EK-FAC and our dense Fisher, on the digits models of ``attribution_quality.py``.

The same trained models, test points and ground truth (``--n-subsets`` models retrained on
random halves, cached under ``--cache-dir``) as ``attribution_quality.py``; each row's time is
fit + attribute, all rows in one process. Rows:

* ``FisherInfluence(solver="kfac" | "ekfac")`` (exact Fisher), ``damping="auto"``
  (0.1 · the mean eigenvalue; for EK-FAC the exact ``trace(M)/p``) and the other fractions
  of ``--fractions`` by ``set_params(damping=...)``, which re-damps the same factors
  (time: the fit's + the new attribution's);
* ``solver="ekfac_cg"`` with ``max_iter`` in ``--cg-iters`` (damping "auto");
* ``solver="ekfac_lr"`` at the ranks ``--lr-ranks`` with ``--lr-steps`` Krylov blocks, its
  products by ``--lr-products`` (the route taken is in the row); ``--timing-repeats`` times
  it against EK-FAC, taken in turn, for every route listed;
* ``--objective``: the rows that separate our EK-FAC from kronfluence's (the penalty in the
  curvature or not, per-layer damping, the Fisher's flavour, the dense Fisher without the
  penalty), and each layer's mean eigenvalue against the penalty's;
* the dense ``FisherInfluence`` (damping "auto"), the reference;
* kronfluence 1.0 EK-FAC (``pip install kronfluence`` in a separate environment: it needs
  torchvision), its defaults: labels sampled from the model (its ``compute_train_loss(sample=True)``),
  its default ``damping_factor=1e-8`` (``ScoreArguments``; ``None`` would be its heuristic,
  0.1 · each layer's mean eigenvalue, also shown), float32 factors; and the same fed our
  exact Fisher's equivalent, the empirical Fisher (``sample=False``) at float64.

Run (2 shared cores; the ground truth is trained first if not cached)::

    python benchmarks/kfac_quality.py --models logreg,mlp,cnn --cnn-subsets 20 --n-test 360

(The commands behind ``RESULTS_kfac.md`` are listed there; its CNN tables use ``--cnn-subsets 12``.)
"""

import argparse
import os
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from skinfluence import FisherInfluence, set_threads  # noqa: E402


def kfac_rows(name, target, prefit, data, scorer, fractions=(0.001, 0.01, 0.1, 1.0), cg_iters=(5, 10, 20),
              lr_ranks=(16, 32, 64, 128), lr_steps=16, dense=True, solvers=("kfac", "ekfac"), lr_products="auto"):
    """Our Kronecker-factored rows (see the module docstring) for one model."""
    X, y, Xt, yt = data
    rows = []
    for solver in solvers:
        t = time.perf_counter()
        try:
            inf = FisherInfluence(target, prefit=prefit, solver=solver, damping="auto", random_state=0).fit(X, y)
        except Exception as exc:
            rows.append(scorer.failed(f"Fisher (exact), {solver}", "damping auto", exc, time.perf_counter() - t))
            continue
        t_fit = time.perf_counter() - t
        sol = inf.curvature_solver_
        mean = sol.trace() / inf.adapter_.n_params
        for f in fractions:
            t = time.perf_counter()
            inf.set_params(damping=f * mean)   # re-damped from the kept factors, no refit
            setting = f"damping {f:g}·tr/p" + (" (auto)" if f == 0.1 else "")
            rows.append(scorer.row(f"Fisher (exact), {solver}", setting, inf.attribute(Xt, yt),
                                   time.perf_counter() - t + t_fit))
    for it in cg_iters:
        rows.append(scorer.timed("Fisher (exact), ekfac_cg", f"max_iter {it}, damping auto",
                                 lambda it=it: FisherInfluence(target, prefit=prefit, solver="ekfac_cg", damping="auto",
                                                               solver_options={"max_iter": it, "tol": 0.0},
                                                               random_state=0).fit(X, y).attribute(Xt, yt)))
    for rank in lr_ranks:
        fitted = []

        def lr(rank=rank):
            fitted[:] = [FisherInfluence(target, prefit=prefit, solver="ekfac_lr", damping="auto", random_state=0,
                                         solver_options={"rank": rank, "steps": lr_steps, "products": lr_products})
                         .fit(X, y)]
            return fitted[0].attribute(Xt, yt)
        row = scorer.timed("Fisher (exact), ekfac_lr", f"rank {rank}, steps {lr_steps}, damping auto", lr)
        route = fitted[0].curvature_solver_.info_.get("products", "?") if fitted else "?"
        rows.append((row[0], f"{row[1]}, products from the {route}", *row[2:]))
    if not dense:
        return rows
    rows.append(scorer.timed("Fisher (exact), dense", "damping auto" if prefit else "damping 0",
                             lambda: FisherInfluence(target, prefit=prefit, damping="auto" if prefit else 0.0)
                             .fit(X, y).attribute(Xt, yt)))
    return rows


def lr_timing(name, target, prefit, data, ranks, steps, repeats, products=("auto",)):
    """Median fit + attribute times of EK-FAC and ``ekfac_lr`` at ``ranks`` (each product route
    of ``products``), taken in turn (``interleaved_times``) in this process, and their ratios
    to EK-FAC's."""
    from _common import interleaved_times

    X, y, Xt, yt = data

    def job(solver, options):
        def run():
            inf = FisherInfluence(target, prefit=prefit, solver=solver, damping="auto", solver_options=options,
                                  random_state=0).fit(X, y)
            inf.attribute(Xt, yt)
            return inf.curvature_solver_.info_.get("products", "")
        return run

    jobs = [(r, route) for r in ranks for route in products]
    fns = [job("ekfac", {})] + [job("ekfac_lr", {"rank": r, "steps": steps, "products": route}) for r, route in jobs]
    times, routes = interleaved_times(fns, repeats)
    print(f"[{name}] medians of {repeats}, taken in turn: EK-FAC {times[0]:.2f} s; "
          + "; ".join(f"ekfac_lr rank {r} ({route}: products from the {taken}): {t:.2f} s ({t / times[0]:.1f}x)"
                      for (r, route), taken, t in zip(jobs, routes[1:], times[1:])), flush=True)


def objective_rows(name, target, prefit, module, data, scorer):
    """What separates our EK-FAC from kronfluence's: the same factors on the curvature without
    the penalty (kronfluence's objective is the data loss alone), its damping rule (0.1 × each
    layer's mean eigenvalue, ``layer_damping``), its empirical and MC Fisher, and K-FAC. Also
    prints each layer's mean EK-FAC eigenvalue against the penalty's (weight decay's) curvature."""
    from skinfluence.models.torch import TorchModel

    X, y, Xt, yt = data
    bare = TorchModel(module, loss="cross_entropy", weight_decay=0.0)   # the estimator copies it
    rows = []
    for label, model, pf, solver, fisher, damping, layer in (
            ("EK-FAC, penalty in the curvature", target, prefit, "ekfac", "exact", "auto", False),   # our default
            ("EK-FAC, penalty in the curvature", target, prefit, "ekfac", "exact", 0.1, True),
            ("EK-FAC, penalty in the curvature", target, prefit, "ekfac", "exact", 1e-8, False),
            ("EK-FAC, no penalty", bare, True, "ekfac", "exact", 0.1, True),     # kronfluence's heuristic
            ("EK-FAC, no penalty", bare, True, "ekfac", "exact", "auto", False),
            ("EK-FAC, no penalty", bare, True, "ekfac", "exact", 1e-8, False),   # kronfluence's default
            ("EK-FAC, no penalty", bare, True, "ekfac", "empirical", 0.1, True),
            ("EK-FAC, no penalty", bare, True, "ekfac", "mc", 0.1, True),
            ("K-FAC, no penalty", bare, True, "kfac", "exact", 0.1, True),
            ("dense Fisher, no penalty", bare, True, "dense", "exact", "auto", False)):   # the exact curvature
        fitted = []

        def run(m=model, pf=pf, s=solver, f=fisher, d=damping, o={"layer_damping": layer} if solver != "dense" else {}):
            fitted[:] = [FisherInfluence(m, prefit=pf, solver=s, fisher=f, damping=d, solver_options=o,
                                         random_state=0).fit(X, y)]
            return fitted[0].attribute(Xt, yt)
        setting = f"fisher {fisher}, damping {damping}" + (" × layer mean" if layer else "")
        rows.append(scorer.timed(label, setting, run))
        if fitted and damping == "auto" and solver != "dense":
            sol = fitted[0].curvature_solver_
            print(f"    [{name}] {label}: damping_ {fitted[0].damping_:.3g}; per layer, the mean EK-FAC eigenvalue of "
                  "the data term / the mean penalty (and null-space) curvature: "
                  + ", ".join(f"{n or 'linear'} {L[3].mean():.3g} / {L[4].mean():.3g}" for n, L in sol.layers.items()),
                  flush=True)
    return rows


def trak_store_rows(name, modules, data, scorer, projections=(512, 2048), t_train=()):
    """TRAK as a configuration of ours: each model's projected training gradients in a
    ``GradientStore``, the Fisher of the projected gradients, the mean over the models
    (``InfluenceEnsemble(store={"projection": k, "curvature": "projected"})``). The members'
    own solver is unused by these queries: K-FAC, the cheapest (its one pass is in the time)."""
    from skinfluence import InfluenceEnsemble
    from skinfluence.models.torch import TorchModel

    X, y, Xt, yt = data
    wd = 0.0 if name == "logreg" else aq_wd()
    rows = []
    for k in projections:
        members = [FisherInfluence(TorchModel(m, loss="cross_entropy", weight_decay=wd), prefit=True, solver="kfac",
                                   damping="auto") for m in modules]
        rows.append(scorer.timed("TRAK from the store (ours)",
                                 f"projection {k}, projected Fisher, {len(members)} model(s)"
                                 + (" (+ their training)" if len(members) > 1 else ""),
                                 lambda ms=members, k=k: InfluenceEnsemble(ms, store={"projection": k,
                                                                                      "curvature": "projected"})
                                 .fit(X, y).attribute(Xt, yt), extra_time=sum(t_train[1:len(modules)])))
    return rows


def aq_wd():
    from _common import WD
    return WD


def kronfluence_rows(name, module, data, scorer):
    """kronfluence's EK-FAC on the same torch module (its defaults; and the empirical Fisher in float64)."""
    try:
        from kronfluence.analyzer import Analyzer, prepare_model
        from kronfluence.arguments import FactorArguments, ScoreArguments
        from kronfluence.task import Task
    except ImportError as exc:
        print(f"    kronfluence not importable ({exc}): skipped")
        return []
    from torch.utils.data import TensorDataset

    X, y, Xt, yt = data

    class Classification(Task):
        def compute_train_loss(self, batch, model, sample=False):
            x, t = batch
            logits = model(x.reshape(len(x), -1))
            if sample:  # labels drawn from the model (kronfluence's true Fisher)
                with torch.no_grad():
                    t = torch.multinomial(torch.softmax(logits.detach(), -1), 1).flatten()
            return torch.nn.functional.cross_entropy(logits, t, reduction="sum")

        def compute_measurement(self, batch, model):
            x, t = batch
            return torch.nn.functional.cross_entropy(model(x.reshape(len(x), -1)), t, reduction="sum")

    rows = []
    train = TensorDataset(torch.as_tensor(X), torch.as_tensor(y))
    test = TensorDataset(torch.as_tensor(Xt), torch.as_tensor(yt))
    # its ScoreArguments' default damping_factor is 1e-8 (absolute, on the Fisher of the mean loss);
    # None is its heuristic, 0.1 × each layer's mean eigenvalue
    for label, empirical, dtype, damping in (("kronfluence EK-FAC", False, torch.float32, 1e-8),
                                             ("kronfluence EK-FAC, empirical Fisher", True, torch.float64, 1e-8),
                                             ("kronfluence EK-FAC", False, torch.float32, None)):
        def run(empirical=empirical, dtype=dtype, damping=damping):
            import copy
            model = prepare_model(torch.nn.Sequential(copy.deepcopy(module)), Classification())  # a root Linear recurses
            torch.manual_seed(0)
            with tempfile.TemporaryDirectory() as tmp:
                an = Analyzer(f"kfac_{name}", model, Classification(), output_dir=tmp, disable_tqdm=True, cpu=True,
                              disable_model_save=True)
                fargs = FactorArguments(strategy="ekfac", use_empirical_fisher=empirical,
                                        activation_covariance_dtype=dtype, gradient_covariance_dtype=dtype,
                                        lambda_dtype=dtype, eigendecomposition_dtype=torch.float64)
                an.fit_all_factors("f", train, per_device_batch_size=256, factor_args=fargs, overwrite_output_dir=True)
                sargs = ScoreArguments(score_dtype=dtype, per_sample_gradient_dtype=dtype, precondition_dtype=dtype,
                                       damping_factor=damping)
                an.compute_pairwise_scores("s", "f", test, train, per_device_query_batch_size=128,
                                           per_device_train_batch_size=256, score_args=sargs,
                                           overwrite_output_dir=True)
                return an.load_pairwise_scores("s")["all_modules"].double().numpy()
        setting = ("its default damping 1e-8" if damping else "its heuristic damping 0.1 × layer mean") + (
            ", float64" if empirical else ", float32")
        rows.append(scorer.timed(label, setting, run))
    return rows


def main():
    import attribution_quality as aq

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="logreg,mlp,cnn")
    ap.add_argument("--n-subsets", type=int, default=50)
    ap.add_argument("--cnn-subsets", type=int, default=50)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--fractions", default="0.001,0.01,0.1,1")
    ap.add_argument("--cg-iters", default="5,10,20")
    ap.add_argument("--lr-ranks", default="16,32,64,128", help="ranks of solver='ekfac_lr'")
    ap.add_argument("--lr-steps", type=int, default=16, help="its Krylov blocks (passes over the data)")
    ap.add_argument("--lr-products", default="auto",
                    help="ekfac_lr's product route(s) (auto, model, factor; several for --timing-repeats)")
    ap.add_argument("--solvers", default="kfac,ekfac", help="the plain factored solvers' rows")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense reference")
    ap.add_argument("--timing-repeats", type=int, default=0,
                    help="also time EK-FAC against ekfac_lr at --lr-ranks, taken in turn, medians of this many")
    ap.add_argument("--no-peers", action="store_true", help="skip kronfluence")
    ap.add_argument("--trak", default="", help="projections k of TRAK-from-the-store rows (and dattri's TRAK)")
    ap.add_argument("--trak-members", type=int, default=1, help="models averaged by TRAK (logreg: on random halves)")
    ap.add_argument("--objective", action="store_true",
                    help="the rows that separate our EK-FAC from kronfluence's (objective_rows), every model")
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache",
                                                        "attribution"))   # attribution_quality.py's
    args = ap.parse_args()
    # what attribution_quality's helpers read
    args.n_loo, args.converged = 0, False
    args.n_ensemble = args.cnn_ensemble = args.logreg_trak = args.trak_members
    print(set_threads(args.threads), flush=True)   # the package's thread policy
    warnings.simplefilter("ignore")
    data = aq.load_data(args.n_test)
    X, y, Xt, yt = data
    models = aq.make_models()
    # warm-up: torch.func's first use imports torch._dynamo (~15 s here), not any method's cost
    net = torch.nn.Sequential(torch.nn.Linear(64, 10)).double()
    FisherInfluence(aq.TorchModel(net, loss="cross_entropy"), prefit=True, solver="ekfac", damping=1.0).fit(X[:20], y[:20])
    rows = []
    for name in args.models.split(","):
        half, _ = aq.ground_truth(name, models[name], data, args)
        scorer = aq.Scorer(name, half, None, args.cache_dir)
        fitted, modules, ckpts, t_train = aq.trained_models(name, models[name], X, y, args)
        prefit = name != "logreg"
        target = fitted[0] if prefit else models[name]
        out = kfac_rows(name, target, prefit, data, scorer, [float(f) for f in args.fractions.split(",")],
                        [int(i) for i in args.cg_iters.split(",") if i], [int(r) for r in args.lr_ranks.split(",") if r],
                        args.lr_steps, not args.no_dense, [s for s in args.solvers.split(",") if s],
                        args.lr_products.split(",")[0])
        if args.timing_repeats:
            lr_timing(name, target, prefit, data, [int(r) for r in args.lr_ranks.split(",") if r], args.lr_steps,
                      args.timing_repeats, args.lr_products.split(","))
        if args.trak:
            out += trak_store_rows(name, modules, data, scorer, [int(k) for k in args.trak.split(",")], t_train)
            if not args.no_peers:
                out += aq.dattri_methods(name, modules, ckpts, t_train, data, scorer, args, only=("trak",))
        if args.objective:
            out += objective_rows(name, target, prefit, modules[0], data, scorer)
        if not args.no_peers:
            out += kronfluence_rows(name, modules[0], data, scorer)
        rows += [(name, *r) for r in out]
    print("\n| model | method | setting | LDS | time (s) |\n|---|---|---|---|---|")
    for name, label, setting, lds, _, seconds in rows:
        print(f"| {name} | {label} | {setting} | {lds:.3f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
