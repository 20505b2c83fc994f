"""Command line: ``skinfluence demo`` (or ``python -m skinfluence demo``)."""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def demo(n_exact: int = 20, seed: int = 0) -> None:
    """Approximate leave-one-out CV of a logistic regression on the bundled Adult data."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from . import FisherInfluence
    from .datasets import adult_design
    from .refit import exact_loo_predictions

    d = adult_design()
    X, y = d.X, d.y
    print(f"Adult (Becker & Kohavi 1996, CC BY 4.0): {X.shape[0]} training rows, {X.shape[1]} columns")
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        LogisticRegression(max_iter=1000).fit(X, y)
        t_fit = time.perf_counter() - t
        t = time.perf_counter()
        inf = FisherInfluence(LogisticRegression(max_iter=1000), polish=True).fit(X, y)
        proba = inf.approx_loocv(response_method="predict_proba")[:, 1]
        t_loo = time.perf_counter() - t
        print(f"one plain fit: {t_fit:.2f}s; fit + approximate LOO for all {len(y)} points: "
              f"{t_loo:.2f}s ({t_loo / t_fit:.1f} x one fit; BLAS pinned to 1 thread)")

        idx = np.random.default_rng(seed).choice(len(y), n_exact, replace=False)
        t = time.perf_counter()
        exact = exact_loo_predictions(inf.estimator_, X, y, idx, "predict_proba")[:, 1]
        t_exact = time.perf_counter() - t
    full = inf.estimator_.predict_proba(X[idx])[:, 1]
    print(f"\n{'row':>6} {'y':>2} {'P(y=1) full fit':>16} {'approx LOO':>11} {'exact LOO':>10}")
    for i, f, a, e in zip(idx, full, proba[idx], exact):
        print(f"{i:>6} {y[i]:>2} {f:>16.6f} {a:>11.6f} {e:>10.6f}")

    def logloss(p, yy):
        p = np.clip(p, 1e-15, 1 - 1e-15)
        return float(np.mean(-yy * np.log(p) - (1 - yy) * np.log(1 - p)))

    err = np.abs(proba[idx] - exact)
    print(f"\nmax |approx - exact| on these {n_exact} rows: {err.max():.2e} "
          f"(the LOO change itself: max {np.abs(full - exact).max():.2e})")
    print(f"LOO log-loss on these rows: approx {logloss(proba[idx], y[idx]):.6f}, "
          f"exact {logloss(exact, y[idx]):.6f}")
    print(f"approximate LOO log-loss, all rows: {logloss(proba, y):.5f}; accuracy "
          f"{np.mean((proba > 0.5) == y):.4f}")
    print(f"exact refits took {t_exact / n_exact:.2f}s each: ~{t_exact / n_exact * len(y) / 60:.0f} "
          f"minutes for all rows, {t_exact / n_exact * len(y) / t_loo:.0f} x the approximation")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="skinfluence", description="Influence functions for scikit-learn and torch models.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="approximate LOO-CV of a logistic regression on the bundled Adult data")
    p.add_argument("--n-exact", type=int, default=20, help="rows checked against exact refits")
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.n_exact, args.seed)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
