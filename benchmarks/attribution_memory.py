"""Bounded-memory attribution: peak memory and time of streamed queries, n_jobs speed-up.

Run ``python benchmarks/attribution_memory.py`` (all sections) or with ``--only adult``,
``--only synthetic`` or ``--only njobs``. Every measured case runs in a fresh subprocess
(``--case NAME``), which reports its peak resident memory (``ru_maxrss``: imports, data,
fit and query together) and the peak of Python/numpy allocations during the query alone
(``tracemalloc``). ``ru_maxrss`` counts the file-backed pages of a memmap written through
(they are page cache, reclaimable), so the peak of ``RssAnon`` during the query (sampled
every 50 ms, data and model included) is reported too. BLAS threads are pinned to one in every process (printed).

* **adult**: ``FisherInfluence(LogisticRegression(max_iter=1000), polish=True)`` on Adult's
  training split (30,162 rows); the 10 most helpful and harmful training rows of each of
  the 15,060 test rows (``attribute(top_k=10)``, default ``memory_budget="512MiB"``),
  checked against the dense answer computed blockwise (factors times all training
  gradients, stable sort) in another process.
* **synthetic**: a 1,000,000 × 100 logistic regression (X stored as float32; the
  influence design is float64); 1,000 test points: ``top_k=10``, ``reduce="sum"`` and the
  full 1,000 × 1,000,000 matrix into a ``numpy.memmap`` (``out=``, 8 GB on disk). The
  fitted model is cached under ``benchmarks/.cache/``.
* **njobs**: blocked attribution (Adult, 4,000 test rows, ``top_k=10``) with ``n_jobs=1``
  and ``n_jobs=2`` in one process, interleaved, medians of wall and CPU time (the parent's
  and its worker processes').
"""

import os

# before numpy loads: BLAS then allocates one thread's buffers in every process (memory is measured)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import warnings  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from _common import cache_folder, cached, pinned_threads  # noqa: E402
N_SYN, P_SYN, N_SYN_TEST = 1_000_000, 100, 1_000
TOP = 10


def _rss_anon_mb():
    """Resident anonymous memory now (Linux): RSS without file-backed pages (a memmap's)."""
    with open("/proc/self/status") as status:
        return next(int(ln.split()[1]) / 1024 for ln in status if ln.startswith("RssAnon:"))


class _AnonPeak(threading.Thread):
    """Samples ``RssAnon`` every 50 ms for the life of the process."""

    peak = 0.0
    query = None   # the peak during the measured query

    def __init__(self):
        super().__init__(daemon=True)
        self.start()

    def run(self):
        while True:
            _AnonPeak.peak = max(_AnonPeak.peak, _rss_anon_mb())
            time.sleep(0.05)


def _report(**fields):
    fields["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if _AnonPeak.query is not None:
        fields["query_anon_peak_mb"] = _AnonPeak.query
    print("RESULT " + json.dumps(fields), flush=True)


def _traced(fn):
    """``(result, seconds, peak MiB of traced allocations)`` of ``fn()``; the process's
    ``RssAnon`` peak during the call is kept for the report."""
    _AnonPeak.peak = 0.0
    tracemalloc.start()
    t = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    _AnonPeak.query = max(_AnonPeak.peak, _rss_anon_mb())
    return out, seconds, peak


# ------------------------------------------------------------------ the models
def _adult():
    from sklearn.linear_model import LogisticRegression

    from skinfluence import FisherInfluence
    from skinfluence.datasets import adult_design

    train, test = adult_design(subset="train"), adult_design(subset="test")
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inf = FisherInfluence(LogisticRegression(max_iter=1000), polish=True).fit(train.X, train.y)
    return inf, test.X, test.y, time.perf_counter() - t


def _synthetic(seed, n):
    """``n`` rows of the synthetic logistic regression (float32 X), generated in chunks."""
    rng = np.random.default_rng(seed)
    beta = np.random.default_rng(0).standard_normal(P_SYN) / np.sqrt(P_SYN)
    X = np.empty((n, P_SYN), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    for i in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - i), P_SYN)).astype(np.float32)
        X[i:i + len(block)] = block
        y[i:i + len(block)] = rng.random(len(block)) < 1 / (1 + np.exp(-(block @ beta)))
    return X, y


def _synthetic_model():
    from sklearn.linear_model import LogisticRegression

    from skinfluence import FisherInfluence

    X, y = _synthetic(1, N_SYN)
    model = cached("memory_synthetic_lr", partial(LogisticRegression(tol=1e-8, max_iter=1000).fit, X, y),
                   N_SYN, P_SYN, 1)   # the data: _synthetic(1, N_SYN)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inf = FisherInfluence(model, prefit=True, polish=True).fit(X, y)
    fit_s = time.perf_counter() - t
    del X, y
    Xt, yt = _synthetic(2, N_SYN_TEST)
    return inf, Xt, yt, fit_s


# ------------------------------------------------------------------- the cases
def case_adult_topk():
    inf, X, y, fit_s = _adult()
    top, seconds, traced = _traced(lambda: inf.attribute(X, y, top_k=TOP))
    np.savez(cache_folder("memory") / "adult_top.npz", *top)
    _report(case="adult top_k=10", rows=f"{len(y)} x {inf.n_samples_}", fit_s=fit_s,
            query_s=seconds, traced_mb=traced)


def case_adult_check():
    """The dense answer, block by block: all factors against all training gradients."""
    inf, X, y, fit_s = _adult()
    got = np.load(cache_folder("memory") / "adult_top.npz")
    got = [got[f"arr_{i}"] for i in range(4)]
    F = inf.influence_factors(X, y)
    V = inf.training_gradients()
    same_idx = [0, 0]
    score_err = 0.0
    for sl in [slice(i, i + 1000) for i in range(0, len(y), 1000)]:
        A = F[sl] @ V.T
        for side, (idx, scores), sign in zip((0, 1), [(got[0], got[1]), (got[2], got[3])], (-1, 1)):
            want = np.argsort(sign * A, axis=1, kind="stable")[:, :TOP]
            same_idx[side] += int((want == idx[sl]).all(axis=1).sum())
            score_err = max(score_err, float(np.abs(np.take_along_axis(A, want, 1) - scores[sl]).max()))
    _report(case="adult dense check", n_test=len(y), rows_equal_helpful=same_idx[0],
            rows_equal_harmful=same_idx[1],
            max_score_diff=score_err, score_scale=float(np.abs(got[1]).max()))


def case_synthetic(query):
    inf, X, y, fit_s = _synthetic_model()
    n = inf.n_samples_
    if query == "top_k":
        call = lambda: inf.attribute(X, y, top_k=TOP)  # noqa: E731
    elif query == "sum":
        call = lambda: inf.attribute(X, y, reduce="sum")  # noqa: E731
    else:
        path = cache_folder("memory") / "synthetic_A.npy"
        out = np.lib.format.open_memmap(path, mode="w+", shape=(len(y), n))
        call = lambda: inf.attribute(X, y, out=out)  # noqa: E731
    result, seconds, traced = _traced(call)
    check = ""
    if query != "top_k":   # a few test rows against their dense rows
        F = inf.influence_factors(X[:3], y[:3])
        rows = np.arange(0, n, 997)
        dense = F @ inf.training_gradients(rows).T
        got = result[:3][:, rows] if query == "out" else None
        if query == "sum":
            full = inf.influence_factors(X, y).sum(axis=0) @ inf.training_gradients(rows).T
            check = float(np.abs(result[rows] - full).max() / np.abs(full).max())
        else:
            check = float(np.abs(got - dense).max() / np.abs(dense).max())
            out.flush()
            del result, out
            path.unlink()
    _report(case=f"synthetic {query}", rows=f"{len(y)} x {n}", fit_s=fit_s, query_s=seconds,
            traced_mb=traced, rel_err_vs_dense=check)


def case_njobs(repeats=3):
    import psutil

    inf, X, y, _ = _adult()
    X, y = X[:4000], y[:4000]
    me = psutil.Process()

    def cpu():
        procs = [me] + me.children(recursive=True)
        return sum(sum(p.cpu_times()[:2]) for p in procs if p.is_running())

    walls, cpus, outs = {1: [], 2: []}, {1: [], 2: []}, {}
    inf.set_params(n_jobs=2).attribute(X[:50], y[:50], top_k=TOP)   # start the workers
    for _ in range(repeats):
        for n_jobs in (1, 2):
            inf.set_params(n_jobs=n_jobs)
            c, t = cpu(), time.perf_counter()
            outs[n_jobs] = inf.attribute(X, y, top_k=TOP)
            walls[n_jobs].append(time.perf_counter() - t)
            cpus[n_jobs].append(cpu() - c)
    equal = all(np.array_equal(a, b) for a, b in zip(list(outs[1])[::2], list(outs[2])[::2]))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(list(outs[1])[1::2], list(outs[2])[1::2]))
    med = {k: float(np.median(v)) for k, v in {**{f"wall{k}": walls[k] for k in walls},
                                                 **{f"cpu{k}": cpus[k] for k in cpus}}.items()}
    _report(case="n_jobs", rows=f"{len(y)} x {inf.n_samples_}", cores=os.cpu_count(),
            load=os.getloadavg()[0], **med, speedup=med["wall1"] / med["wall2"],
            cpu_ratio=med["cpu2"] / med["cpu1"], equal_indices=equal, max_score_diff=diff)


CASES = {
    "adult-topk": case_adult_topk,
    "adult-check": case_adult_check,
    "synthetic-topk": lambda: case_synthetic("top_k"),
    "synthetic-sum": lambda: case_synthetic("sum"),
    "synthetic-out": lambda: case_synthetic("out"),
    "njobs": case_njobs,
}
SECTIONS = {"adult": ["adult-topk", "adult-check"],
            "synthetic": ["synthetic-topk", "synthetic-sum", "synthetic-out"],
            "njobs": ["njobs"]}


def _run(case):
    proc = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"case {case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def _fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SECTIONS))
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        from skinfluence import set_threads

        set_threads(1)
        _AnonPeak()
        return CASES[args.case]()
    import skinfluence

    print(f"skinfluence from {Path(skinfluence.__file__).parent}")
    with pinned_threads(1, "OMP/OPENBLAS/MKL_NUM_THREADS=1 in every process"):
        for section in [args.only] if args.only else list(SECTIONS):
            print(f"\n## {section}\n")
            for case in SECTIONS[section]:
                r = _run(case)
                print(" | ".join(f"{k}={_fmt(v)}" for k, v in r.items()), flush=True)


if __name__ == "__main__":
    main()
