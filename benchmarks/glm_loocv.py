"""Approximate leave-one-out CV of GLMs on Adult against one plain fit and exact refits.

Prints, for LogisticRegression (income), Lasso (hours-per-week) and PoissonRegressor
(age in years) on the Adult train split (n = 30162, 87 one-hot/standardised columns):

* the time of ``FisherInfluence(...).fit`` + ``approx_loocv()`` as a ratio to one plain
  ``fit`` of the same estimator (median of ``--repeats``), with and without polishing;
* on ``--n-exact`` random points, the error of the approximate leave-one-out
  predictions and mean loss against exact refits (warm-started, tol=1e-10).

Run: ``python benchmarks/glm_loocv.py [--repeats 5] [--n-exact 40] [--threads 1]``
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import Lasso, LogisticRegression, PoissonRegressor

from skinfluence import FisherInfluence, InfluenceWarning
from skinfluence.datasets import adult_design, load_adult
from skinfluence.refit import exact_loo_predictions

from _common import median_time, pinned_threads


def _case(name, est, X, y, response, loss, args, rng):
    print(f"\n== {name}: {est!r}")
    t_fit, _ = median_time(lambda: clone(est).fit(X, y), args.repeats)
    rows = {}
    for polish in (False, True):
        def job():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InfluenceWarning)
                inf = FisherInfluence(est, polish=polish).fit(X, y)
            return inf, inf.approx_loocv(response_method=response)
        t, (inf, loo) = median_time(job, args.repeats)
        rows[polish] = (t, inf, loo)
        print(f"fit + approx_loocv (polish={polish!s:5}): {t:.3f}s = {t / t_fit:.2f} x one plain fit "
              f"({t_fit:.3f}s); convergence ratio {inf.convergence_ratio_:.2g}, "
              f"polish steps {inf.n_polish_steps_}")
    _, inf, loo = rows[True]
    idx = rng.choice(len(y), size=args.n_exact, replace=False)
    t0 = time.perf_counter()
    exact = exact_loo_predictions(inf.estimator_, X, y, idx, response)
    t_exact = (time.perf_counter() - t0) / len(idx) * len(y)
    full = getattr(inf.estimator_, response)(X[idx])
    approx = loo[idx]
    err, change = np.abs(approx - exact), np.abs(full - exact)
    le, la, lf = loss(y[idx], exact), loss(y[idx], approx), loss(y[idx], full)
    print(f"on {len(idx)} points vs exact refits: max |approx - exact| {err.max():.2e} "
          f"(the LOO change itself: max {change.max():.2e}, mean {change.mean():.2e}; "
          f"{1 - err.mean() / change.mean():.1%} of it recovered on average)")
    print(f"mean LOO loss: exact {le:.6f}  approx {la:.6f} (rel. error {abs(la - le) / le:.2e})  "
          f"no-refit {lf:.6f} (rel. error {abs(lf - le) / le:.2e})")
    print(f"exact LOO on all {len(y)} points would take ~{t_exact:.0f}s "
          f"({t_exact / rows[True][0]:.0f} x the approximation)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n-exact", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    d = adult_design()
    X, y, names = d.X, d.y, list(d.feature_names)
    with pinned_threads(args.threads):
        print(f"Adult train: X {X.shape}")

        def logloss(y_, p):
            p = np.clip(p[:, 1], 1e-15, 1 - 1e-15)
            return float(np.mean(-y_ * np.log(p) - (1 - y_) * np.log(1 - p)))

        _case("LogisticRegression, income", LogisticRegression(max_iter=1000), X, y,
              "predict_proba", logloss, args, rng)

        j = names.index("hours-per-week")
        Xl, yl = np.delete(X, j, axis=1), X[:, j]
        _case("Lasso, hours-per-week", Lasso(alpha=0.01), Xl, yl, "predict",
              lambda a, b: float(np.mean((a - b) ** 2)), args, rng)

        j = names.index("age")
        frame = load_adult().frame.loc[d.index]  # age in years, before standardising
        age = frame["age"].to_numpy(dtype=float)
        Xp = np.delete(X, j, axis=1)
        poisson_dev = lambda a, b: float(np.mean(2 * (np.where(a > 0, a * np.log(a / b), 0) - a + b)))  # noqa: E731
        _case("PoissonRegressor, age", PoissonRegressor(alpha=1e-3, max_iter=1000), Xp, age,
              "predict", poisson_dev, args, rng)


if __name__ == "__main__":
    main()
