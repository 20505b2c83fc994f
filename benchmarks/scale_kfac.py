"""Influence on a million-parameter CNN with Kronecker-factored curvature: time and peak memory.

A ResNet-style CNN (stem 3→64, three residual stages of 64, 128 and 256 channels, the last two
with stride 2 and 1×1 projection shortcuts, global average pooling, linear head; no
normalisation layers; 1,23 M parameters at ``--width 64``) is trained briefly (Adam) on
``--n-train`` synthetic 32×32×3 images of 10 classes (a smooth random template per class plus
noise), then ``FisherInfluence(solver=--solver)`` (EK-FAC by default, exact Fisher,
``damping="auto"``, ``memory_budget=--budget``) is fitted
and ``attribute(X_test, y_test, top_k=--top-k)`` ranks every training row for ``--n-test``
queries. Reported: wall time and peak memory of the fit and of the queries (peak resident
memory of the process on CPU; ``torch.cuda.max_memory_allocated`` with ``--device cuda``),
and the top-k's self-consistency: the share of queries whose most helpful training row has
the query's label.

With ``--store`` the training gradients are computed once into a ``GradientStore``
(``memory``, or a directory for an on-disk memmap) and the queries read them from there,
instead of ``attribute`` recomputing every training gradient for each block of queries.
``--projection k_out,k_in`` stores each layer's per-sample gradient projected as
``P_out S P_inᵀ`` (the Kronecker-structured projection, never forming the 1.23M-float
gradient: at ``24,24`` 5,760 floats a row, 230 MB for 10,000 rows against 49 GB unprojected);
``--basis curvature`` takes the leading eigenvectors of each layer's K-FAC factors instead
of Gaussian matrices (EK-FAC's scores on the leading eigen-block: far closer for the same
size). ``--check m`` compares the store's top-k with ``attribute``'s on the first ``m`` queries (one
more pass over every training row's full gradient; with ``--save-top`` its top-k is saved too,
as ``exact_helpful``). ``--curvature-rows m`` fits the factors
on ``m`` random rows (``RandomSampler``); ``--save-top`` keeps the top-k and those rows for
``scale_kronfluence.py``, which runs kronfluence's EK-FAC on the same net, rows and queries.

Full size (a GPU: ``--device cuda``; under 4 minutes on an H100 is the aim, hence the MC
Fisher, one output column instead of the exact Fisher's nine, and 2,000 curvature rows)::

    timeout 230 python benchmarks/scale_kfac.py --device cuda --n-train 10000 --n-test 1000 --top-k 10 \
        --epochs 2 --threads 8 --fisher mc --curvature-rows 2000 --store memory --projection 24,24 \
        --basis curvature --check 0 --out $OUT/kfac.txt

The CPU run of ``benchmarks/RESULTS_scale.md`` (10,000 images, 1,000 queries, the whole process
under 2 GiB; then kronfluence on the first 100 queries, one batch)::

    python benchmarks/scale_kfac.py --n-train 10000 --n-test 1000 --epochs 1 --batch-size 64 \
        --budget 768MiB --store memory --projection 24,24 --basis curvature --curvature-rows 1000 \
        --fisher mc --check 0 --save-top top.npz
    python benchmarks/scale_kronfluence.py --n-train 10000 --n-test 1000 --epochs 1 --ours top.npz \
        --queries 100          # in the environment that holds kronfluence

``--budget`` is the estimator's ``memory_budget``: the working arrays of each phase; what the
process already holds (torch, the images and their copy, the factors, the store: about 1.1 GiB
at 10,000 images) comes on top.

A small CPU check: ``python benchmarks/scale_kfac.py --n-train 200 --n-test 20 --width 8``.
"""

import argparse
import ctypes
import os
import resource
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from skinfluence import FisherInfluence, set_threads  # noqa: E402
from skinfluence.models.torch import TorchModel  # noqa: E402
from skinfluence.sampling import RandomSampler  # noqa: E402

from _common import cached  # noqa: E402


WEIGHT_DECAY = 1e-4    # of the objective: mean cross-entropy + WEIGHT_DECAY/2 ‖θ‖²


class Block(torch.nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.conv2 = torch.nn.Conv2d(c_out, c_out, 3, padding=1)
        self.short = (torch.nn.Conv2d(c_in, c_out, 1, stride=stride) if stride != 1 or c_in != c_out
                      else torch.nn.Identity())

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.short(x))


class ResNet(torch.nn.Module):
    def __init__(self, width=64, classes=10, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        w = width
        self.stem = torch.nn.Conv2d(3, w, 3, padding=1)
        self.stages = torch.nn.Sequential(Block(w, w, 1), Block(w, 2 * w, 2), Block(2 * w, 4 * w, 2))
        self.head = torch.nn.Linear(4 * w, classes)

    def forward(self, x):
        x = self.stages(torch.relu(self.stem(x)))
        return self.head(x.mean(dim=(2, 3)))


def synthetic(n, seed, classes=10):
    """Images: a smooth random template per class (fixed) plus noise; float32, (n, 3, 32, 32)."""
    templates = torch.nn.functional.interpolate(
        torch.as_tensor(np.random.default_rng(123).standard_normal((classes, 3, 8, 8)), dtype=torch.float32),
        size=32, mode="bilinear", align_corners=False).numpy()
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = 0.6 * templates[y] + rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    return X.astype(np.float32), y


def train(module, X, y, epochs, device, batch=128):
    module.to(device).train()
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(yt), generator=g).split(batch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(module(Xt[idx].to(device)), yt[idx].to(device)).backward()
            opt.step()
    return module.cpu().eval()


def _status_mib(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Peak:
    """Wall time and peak memory of a phase: CUDA allocations on a GPU; on Linux the process's
    resident peak during the phase (``VmHWM``, reset at its start), with ``before`` the resident
    size at its start; elsewhere the process's lifetime peak (``ru_maxrss``)."""

    def __init__(self, device):
        self.cuda = device.startswith("cuda")
        self.before = float("nan")

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            try:   # give freed heap pages back first: the resident size at the start is what is held
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except OSError:
                pass
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")     # resets the peak resident size
                self.before = _status_mib("VmRSS")
            except OSError:
                pass
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.mib = torch.cuda.max_memory_allocated() / 2**20
        elif self.before == self.before:
            self.mib = _status_mib("VmHWM")
        else:
            self.mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.seconds = time.perf_counter() - self.t


def reporter(out):
    """``say(line)``: print it and rewrite ``out`` (if given) with every line so far, so that a
    run cut short keeps its figures."""
    lines = []

    def say(s):
        print(s, flush=True)
        lines.append(s)
        if out:
            with open(out, "w") as fh:
                fh.write("\n".join(lines) + "\n")
    return say


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=10_000)
    ap.add_argument("--n-test", type=int, default=1_000)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--queries", type=int, default=0,
                    help="score only the first this many of the --n-test queries (the data stay those of --n-test)")
    ap.add_argument("--first-queries", type=int, default=100, help="time these queries alone first")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--solver", default="ekfac")
    ap.add_argument("--fisher", default="exact", choices=["exact", "mc", "empirical"])
    ap.add_argument("--budget", default="2GiB")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--store", default="", help="'memory' or a directory: answer the queries from a GradientStore")
    ap.add_argument("--projection", default="", help="with --store: k (dense) or k_out,k_in (per layer, Kronecker)")
    ap.add_argument("--basis", default="random", choices=["random", "curvature"],
                    help="with --projection k_out,k_in: Gaussian, or the leading K-FAC eigenvectors")
    ap.add_argument("--check", type=int, default=10, help="with --store: compare with attribute on these queries")
    ap.add_argument("--curvature-rows", type=int, default=0, help="fit the factors on this many random rows")
    ap.add_argument("--save-top", default="", help="write the top-k (and the curvature rows) to this .npz")
    ap.add_argument("--out", help="also write the report to this file")
    ap.add_argument("--train-only", action="store_true", help="train (and cache) the net, then stop")
    args = ap.parse_args()
    print(set_threads(args.threads), flush=True)   # the package's thread policy
    warnings.filterwarnings("ignore")   # an Adam-trained net is not at an optimum: no polishing here
    say = reporter(args.out)
    say(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}), "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, dtype {args.dtype}")
    X, y = synthetic(args.n_train + args.n_test, seed=0)
    X, y, Xq, yq = X[:args.n_train], y[:args.n_train], X[args.n_train:], y[args.n_train:]
    net = ResNet(args.width)
    p = sum(q.numel() for q in net.parameters())
    t = time.perf_counter()
    state = cached("scale_resnet", lambda: train(net, X, y, args.epochs, args.device).state_dict(),
                   args.width, args.epochs, X, y)   # the trained net, kept for the peers' runs
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        acc = float((net(torch.as_tensor(Xq)).argmax(1).numpy() == yq).mean())
    say(f"ResNet width {args.width}: {p:,} parameters; {args.n_train:,} training images, {args.n_test:,} queries; "
        f"trained {args.epochs} epochs in {time.perf_counter() - t:.1f} s (or read from the cache; "
        f"query accuracy {acc:.3f})")
    if args.train_only:
        return
    if args.queries:
        Xq, yq = Xq[:args.queries], yq[:args.queries]
        args.n_test = len(yq)
    model = TorchModel(net, loss="cross_entropy", weight_decay=WEIGHT_DECAY)
    opts = dict(prefit=True, solver=args.solver, fisher=args.fisher, device=args.device, dtype=args.dtype,
                batch_size=args.batch_size, memory_budget=args.budget, random_state=0)
    if args.curvature_rows:
        opts["curvature_sampler"] = RandomSampler(args.curvature_rows, random_state=0)
    with Peak(args.device) as fit:
        inf = FisherInfluence(model, damping="auto", **opts).fit(X, y)
        sol = inf.curvature_solver_
    say(f"fit ({args.solver}, fisher={args.fisher}, curvature rows {args.curvature_rows or args.n_train:,}, "
        f"damping auto = {inf.damping_:.3g}): "
        f"{fit.seconds:.1f} s (the factors' {sol.info_['passes']} passes and eigendecompositions "
        f"{sol.info_['seconds']:.1f} s), peak memory {fit.mib:,.0f} MiB (resident at its start "
        f"{fit.before:,.0f} MiB)")
    if args.store:
        from skinfluence.gradient_store import GradientStore

        projection = None
        if args.projection:
            k = [int(v) for v in args.projection.split(",")]
            projection = tuple(k) if len(k) == 2 else k[0]
        with Peak(args.device) as built:
            store = GradientStore(inf, projection=projection, path=None if args.store == "memory" else args.store,
                                  memory_budget=args.budget, basis=args.basis).fit()
        say(f"gradient store (projection {projection or 'none'}, {args.basis} basis: {store.gradients_.shape[1]:,} "
            f"floats a row; "
            f"{'memory' if not store.on_disk_ else 'disk'}, float32, {store.gradients_.nbytes / 2**20:,.0f} MiB): "
            f"{built.seconds:.1f} s, peak memory {built.mib:,.0f} MiB (at its start {built.before:,.0f} MiB)")
        with Peak(args.device) as query:
            top = store.attribute(Xq, yq, top_k=args.top_k)
        same = float(np.mean(y[top.helpful_indices[:, 0]] == yq))
        say(f"store.attribute top_k={args.top_k} over {args.n_train:,} rows for {args.n_test:,} queries: "
            f"{query.seconds:.1f} s, peak memory {query.mib:,.0f} MiB (at its start {query.before:,.0f} MiB); "
            f"most helpful row shares the query's "
            f"label: {same:.3f}")
        if args.save_top:
            np.savez(args.save_top, helpful=top.helpful_indices, helpful_scores=top.helpful_scores,
                     curvature_rows=np.arange(args.n_train) if inf.curvature_rows_ is None else inf.curvature_rows_,
                     damping=inf.damping_, weight_decay=WEIGHT_DECAY)
        check = min(args.n_test, args.check)
        if check:   # the store's top-k against attribute's (every training gradient, unprojected)
            with Peak(args.device) as exact:
                ref = inf.attribute(Xq[:check], yq[:check], top_k=args.top_k)
            agree = np.mean([len(set(a) & set(b)) / args.top_k
                             for a, b in zip(ref.helpful_indices, top.helpful_indices[:check])])
            if args.save_top:
                np.savez(args.save_top, **dict(np.load(args.save_top)), exact_helpful=ref.helpful_indices)
            say(f"attribute (no store) for the first {check} queries: {exact.seconds:.1f} s; "
                f"top-{args.top_k} overlap with the store's: {agree:.3f}; its most helpful row shares the "
                f"query's label: {np.mean(y[ref.helpful_indices[:, 0]] == yq[:check]):.3f}")
        say(f"| {args.device} | {p:,} | {args.n_train:,} | {args.n_test:,} | {args.solver}, {args.fisher}, "
            f"store {projection or 'full'} {args.basis} | {fit.seconds:.1f} | {fit.mib:,.0f} | {built.seconds:.1f} + "
            f"{query.seconds:.1f} | {max(built.mib, query.mib):,.0f} | {same:.3f} |")
        return
    if 0 < args.first_queries < args.n_test:   # a first figure, should the full run be cut short
        with Peak(args.device) as first:
            inf.attribute(Xq[:args.first_queries], yq[:args.first_queries], top_k=args.top_k)
        say(f"attribute top_k={args.top_k} for the first {args.first_queries} queries: {first.seconds:.1f} s, "
            f"peak memory {first.mib:,.0f} MiB")
    with Peak(args.device) as query:
        top = inf.attribute(Xq, yq, top_k=args.top_k)
    same = float(np.mean(y[top.helpful_indices[:, 0]] == yq))
    say(f"attribute top_k={args.top_k} over {args.n_train:,} rows for {args.n_test:,} queries (budget {args.budget}): "
        f"{query.seconds:.1f} s, peak memory {query.mib:,.0f} MiB; most helpful row shares the query's label: "
        f"{same:.3f}")
    say(f"| {args.device} | {p:,} | {args.n_train:,} | {args.n_test:,} | {args.solver} | {fit.seconds:.1f} | "
        f"{fit.mib:,.0f} | {query.seconds:.1f} | {query.mib:,.0f} | {same:.3f} |")


if __name__ == "__main__":
    main()
