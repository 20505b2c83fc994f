"""kronfluence's EK-FAC on the million-parameter CNN of ``scale_kfac.py``: time, peak memory and
top-k agreement with ours.

Run in the environment that holds kronfluence (its own venv, torch pinned), after
``scale_kfac.py --store memory --save-top TOP.npz`` on the same sizes: the trained net comes from
that script's cache, the factors are fitted on the same curvature rows (``TOP.npz``) with
kronfluence's sampled (MC) Fisher, at the damping ours chose plus the weight decay (both
curvatures are the mean loss's; kronfluence's objective has no weight decay, so it enters as
damping: the same curvature), and the
pairwise scores of the first ``--queries`` queries against every training row are computed in one
pass over the training rows (the preconditioned query gradients, ``queries × p`` floats, are held
in memory: 1,000 queries of 1.23 M parameters would take 4.9 GB, so a subset is scored and the
time per query reported). Reported: the factors' time, the scores' time, the resident peak of
each, and the mean overlap of the two top-k's::

    python benchmarks/scale_kfac.py --n-train 10000 --n-test 1000 --store memory --projection 24,24 \\
        --curvature-rows 2000 --fisher mc --check 0 --save-top /tmp/top.npz
    /path/to/kronfluence-venv/bin/python benchmarks/scale_kronfluence.py --n-train 10000 --n-test 1000 \\
        --ours /tmp/top.npz --queries 100
"""

import argparse
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import cached  # noqa: E402
from scale_kfac import Peak, ResNet, reporter, synthetic  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=10_000)
    ap.add_argument("--n-test", type=int, default=1_000)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--queries", type=int, default=100, help="score this many queries (the first ones)")
    ap.add_argument("--ours", required=True, help="the .npz that scale_kfac.py --save-top wrote")
    ap.add_argument("--batch", type=int, default=64, help="kronfluence's per-device batch sizes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--damping", type=float, default=None,
                    help="kronfluence's damping_factor (default: ours plus the weight decay, the same curvature)")
    ap.add_argument("--query-batch", type=int, default=0,
                    help="queries per batch (default: all --queries in one); with --low-rank, batches are "
                         "accumulated so that the training rows are read once")
    ap.add_argument("--low-rank", type=int, default=0,
                    help="kronfluence's query_gradient_low_rank (its setting for many queries: each layer's "
                         "preconditioned query gradient kept at this rank)")
    ap.add_argument("--save-top", default="", help="write kronfluence's top-k to this .npz")
    ap.add_argument("--out", help="also write the report to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task
    from torch.utils.data import Subset, TensorDataset

    say = reporter(args.out)

    say(f"kronfluence EK-FAC, torch {torch.__version__}, threads {torch.get_num_threads()}")
    X, y = synthetic(args.n_train + args.n_test, seed=0)
    X, y, Xq, yq = X[:args.n_train], y[:args.n_train], X[args.n_train:], y[args.n_train:]

    def missing():
        raise SystemExit("the trained net is not cached: run scale_kfac.py on the same sizes first")

    net = ResNet(args.width)
    net.load_state_dict(cached("scale_resnet", missing, args.width, args.epochs, X, y))
    net.eval()
    ours = np.load(args.ours)
    # ours: the mean loss + weight_decay/2 ‖θ‖², damped by δ; kronfluence: the mean loss's Fisher damped
    # by its damping_factor. The same curvature: damping_factor = δ + weight_decay.
    rows = ours["curvature_rows"]
    damping = float(ours["damping"]) + float(ours["weight_decay"]) if args.damping is None else args.damping

    class Classification(Task):
        def compute_train_loss(self, batch, model, sample=False):
            x, t = batch
            logits = model(x)
            if sample:      # labels drawn from the model: the MC Fisher
                with torch.no_grad():
                    t = torch.multinomial(torch.softmax(logits.detach(), -1), 1).flatten()
            return torch.nn.functional.cross_entropy(logits, t, reduction="sum")

        def compute_measurement(self, batch, model):
            x, t = batch
            return torch.nn.functional.cross_entropy(model(x), t, reduction="sum")

    model = prepare_model(net, Classification())
    train = TensorDataset(torch.as_tensor(X), torch.as_tensor(y))
    q = min(args.queries, args.n_test)
    test = TensorDataset(torch.as_tensor(Xq[:q]), torch.as_tensor(yq[:q]))
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        an = Analyzer("scale", model, Classification(), output_dir=tmp, disable_tqdm=True, cpu=True,
                      disable_model_save=True)
        fargs = FactorArguments(strategy="ekfac", use_empirical_fisher=False)
        with Peak("cpu") as fit:
            an.fit_all_factors("f", Subset(train, rows.tolist()), per_device_batch_size=args.batch,
                               factor_args=fargs, overwrite_output_dir=True)
        say(f"factors (EK-FAC, MC Fisher, {len(rows):,} curvature rows): {fit.seconds:.1f} s, peak memory "
            f"{fit.mib:,.0f} MiB (at its start {fit.before:,.0f} MiB)")
        batch = args.query_batch or q
        low = dict(query_gradient_low_rank=args.low_rank, query_gradient_accumulation_steps=-(-q // batch)
                   ) if args.low_rank else {}
        sargs = ScoreArguments(damping_factor=damping, **low)
        with Peak("cpu") as scores:
            an.compute_pairwise_scores("s", "f", test, train, per_device_query_batch_size=batch,
                                       per_device_train_batch_size=args.batch, score_args=sargs,
                                       overwrite_output_dir=True)
            S = an.load_pairwise_scores("s")["all_modules"].double().numpy()     # (q, n_train)
        say(f"pairwise scores, {q:,} queries x {args.n_train:,} training rows (damping {damping:.3g}; query "
            f"batches of {batch}{f', low rank {args.low_rank}, accumulated' if args.low_rank else ''}): "
            f"{scores.seconds:.1f} s ({scores.seconds / q:.2f} s a query; {scores.seconds / q * args.n_test:,.0f} s "
            f"for {args.n_test:,} at that rate), peak memory {scores.mib:,.0f} MiB (at its start "
            f"{scores.before:,.0f} MiB)")
    top = np.argsort(-S, axis=1)[:, :args.top_k]          # kronfluence: positive = helpful
    if args.save_top:
        np.savez(args.save_top, helpful=top)
    mine = ours["helpful"][:q]
    overlap = np.mean([len(set(a) & set(b)) / args.top_k for a, b in zip(top, mine)])
    first = float(np.mean(top[:, 0] == mine[:, 0]))
    same = float(np.mean(y[top[:, 0]] == yq[:q]))
    say(f"top-{args.top_k} overlap with ours on the {q} queries: {overlap:.3f}; same most helpful row: {first:.3f}; "
        f"kronfluence's most helpful row shares the query's label: {same:.3f}")


if __name__ == "__main__":
    main()
