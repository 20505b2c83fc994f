"""Re-damping without refitting: a sweep of six dampings against one fit, through the public API.

For each model, query and ``solver_options={"redamp": mode}`` of the dense solver, one process
times, ``--repeats`` times in turn: ``fit`` at damping 1e-3 (the curvature built and
factorised), one query, and the sweep: ``inf.set_params(damping=d)`` then the query, for six
dampings ``d`` (1e-4 … 1e-1). Printed: the medians, ``sweep / fit``, ``sweep / (fit + query)``
(what one damping costs a user who refits), the re-damping's own cost in fits
(``(sweep − 6 again) / fit``: the sweep less six repeats of the query at the fitted damping,
which reuse what the first query kept) and the
sweep's speed-up over six refits (six times fit + query, from the same medians); the last
damping's answer is checked against a fresh fit at that damping.

Models: the digits MLP 64-64-10 (4,810 parameters, L-BFGS to its optimum, the first
``--rows`` training rows: 1,200 rows are 12,000 Jacobian rows of the dense Fisher), and a
binary logistic regression on ``--glm-rows`` × ``--glm-features`` synthetic rows.
Queries: ``attribute`` (50 test points: solves) and ``loo`` (``loo_decision``: the dense inverse
and every training row's quadratic). Modes: ``cholesky`` (a Cholesky per damping), ``eigen``
(the eigendecomposition at the first re-damping, then ``Q diag(1/(λ+δ)) Qᵀ``), ``auto``
(Choleskys until they would have cost an eigendecomposition: ``EIGEN_COST``).

    python benchmarks/redamping.py                   # all, threads pinned to 1
    python benchmarks/redamping.py --models glm --repeats 5
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import torch  # noqa: F401 - loaded before pinned_threads, so that its threads are pinned too
from _common import WD, digits_mlp, digits_split, pinned_threads, trained_net

DAMPINGS = (1e-4, 3e-4, 3e-3, 1e-2, 3e-2, 1e-1)
FIT_DAMPING = 1e-3


def _mlp(args):
    from skinfluence.models.torch import TorchModel

    X, y, Xt, yt = digits_split()
    X, y = X[:args.rows], y[:args.rows]
    net, _ = trained_net(f"redamping_mlp64_{args.rows}", lambda: digits_mlp((64,), seed=0), X, y,
                         max_iter=args.train_iter)
    return TorchModel(net, weight_decay=WD), X, y, Xt[:50], yt[:50]


def _glm(args):
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(args.glm_rows + 50, args.glm_features, n_informative=50,
                               random_state=0)
    X, Xt, y, yt = X[:-50], X[-50:], y[:-50], y[-50:]
    return LogisticRegression(C=1.0, max_iter=2000, tol=1e-10).fit(X, y), X, y, Xt, yt


QUERIES = {"attribute": lambda inf, Xt, yt: inf.attribute(Xt, yt),
           "loo": lambda inf, Xt, yt: inf.loo_decision("ns")}


def measure(name, model, X, y, Xt, yt, query_name, mode, repeats):
    from skinfluence import FisherInfluence

    query = QUERIES[query_name]

    def make(damping):
        return FisherInfluence(model, prefit=True, solver="dense", damping=damping,
                               solver_options={"redamp": mode})

    times = {"fit": [], "query": [], "again": [], "sweep": []}
    for _ in range(repeats):     # in turn: fit, its query (twice), the sweep from that fit
        t = time.perf_counter()
        inf = make(FIT_DAMPING).fit(X, y)
        times["fit"].append(time.perf_counter() - t)
        for key in ("query", "again"):   # the first query keeps what later ones reuse
            t = time.perf_counter()
            query(inf, Xt, yt)
            times[key].append(time.perf_counter() - t)
        t = time.perf_counter()
        for d in DAMPINGS:
            inf.set_params(damping=d)
            last = query(inf, Xt, yt)
        times["sweep"].append(time.perf_counter() - t)
    fit, q, again, sweep = (float(np.median(times[k])) for k in ("fit", "query", "again", "sweep"))
    ref = query(make(DAMPINGS[-1]).fit(X, y), Xt, yt)
    err = float(np.abs(np.asarray(last) - np.asarray(ref)).max() / np.abs(np.asarray(ref)).max())
    kind = inf.curvature_solver_.info_.get("factorisation")
    print(f"{name:10s} {query_name:9s} {mode:8s} fit {fit:7.2f} s  query {q:7.2f} s  sweep {sweep:7.2f} s "
          f"({kind} at the end)  sweep/fit {sweep / fit:5.2f}  sweep/(fit+query) {sweep / (fit + q):5.2f}  "
          f"query again {again:6.2f} s  re-damping {(sweep - 6 * again) / fit:5.2f} fits  6 refits / sweep {6 * (fit + q) / sweep:5.2f}  rel. diff to a refit {err:.1e}", flush=True)
    return sweep / fit


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,glm")
    ap.add_argument("--queries", default="attribute,loo")
    ap.add_argument("--modes", default="cholesky,eigen,auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=1200, help="MLP training rows (x10 Jacobian rows)")
    ap.add_argument("--train-iter", type=int, default=2000, help="L-BFGS iterations of the MLP")
    ap.add_argument("--glm-rows", type=int, default=20_000)
    ap.add_argument("--glm-features", type=int, default=800)
    args = ap.parse_args(argv)
    from skinfluence.exceptions import InfluenceWarning

    with pinned_threads(args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", InfluenceWarning)
        for name in args.models.split(","):
            model, X, y, Xt, yt = {"mlp": _mlp, "glm": _glm}[name](args)
            print(f"-- {name}: {len(y)} rows; dampings {DAMPINGS}, fitted at {FIT_DAMPING}", flush=True)
            for query_name in args.queries.split(","):
                for mode in args.modes.split(","):
                    measure(name, model, X, y, Xt, yt, query_name, mode, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
