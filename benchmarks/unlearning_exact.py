"""Unlearning and relabelling against exact refits: one Newton step vs iterated to convergence.

For each data set and GLM, removes (``unlearn``) or relabels (``relabel``) 1, 5, 20 rows
and 10% of the rows, chosen at random, and compares the parameters with an exact refit
at tight tolerance (``solver="newton-cholesky"``, ``tol=1e-14``, started from scratch):

* ``change``: ‖θ_refit − θ̂‖∞, the size of the effect being estimated;
* ``one step``: ‖θ_one − θ_refit‖∞ (the influence approximation, ``steps=1``);
* ``converged``: ‖θ_conv − θ_refit‖∞ (``steps="converge"``), with its Newton steps;
* time of the converged update / time of the exact refit (medians of ``--repeats``).

Classification relabels a row to the next class; regression relabels y to 2y.

Run: ``python benchmarks/unlearning_exact.py [--repeats 3] [--threads 1] [--seed 0]``
"""

import argparse
import warnings

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.linear_model import GammaRegressor, LogisticRegression, PoissonRegressor
from sklearn.preprocessing import StandardScaler

from skinfluence import FisherInfluence
from skinfluence.datasets import adult_design

from _common import median_time, pinned_threads


def _theta(est):
    return np.r_[np.ravel(est.coef_), np.ravel(est.intercept_)]


def _cases():
    sc = StandardScaler()
    bc = load_breast_cancer(return_X_y=True)
    wine = load_wine(return_X_y=True)
    dig = load_digits(return_X_y=True)
    dia = load_diabetes(return_X_y=True)
    adult = adult_design()
    lr = LogisticRegression(C=1.0, solver="newton-cholesky", tol=1e-14, max_iter=1000)
    return [
        ("breast cancer", lr, sc.fit_transform(bc[0]), bc[1]),
        ("wine", lr, sc.fit_transform(wine[0]), wine[1]),
        ("digits", lr, sc.fit_transform(dig[0]), dig[1]),
        ("Adult", lr, adult.X, adult.y),
        ("diabetes Poisson", PoissonRegressor(alpha=1e-3, solver="newton-cholesky", tol=1e-14,
                                              max_iter=1000), dia[0], dia[1]),
        ("diabetes Gamma", GammaRegressor(alpha=1e-3, solver="newton-cholesky", tol=1e-14,
                                          max_iter=1000), dia[0], dia[1]),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = []
    with pinned_threads(args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, est, X, y in _cases():
            n = len(y)
            inf = FisherInfluence(est, polish=True).fit(X, y)
            theta0 = _theta(inf.estimator_)
            classes = np.unique(y)
            rng = np.random.default_rng(args.seed)
            for m in (1, 5, 20, max(n // 10, 1)):
                idx = rng.choice(n, m, replace=False)
                for op in ("unlearn", "relabel"):
                    if op == "unlearn":
                        keep = np.setdiff1d(np.arange(n), idx)
                        refit = lambda: clone(est).fit(X[keep], y[keep])  # noqa: E731
                        one = lambda: inf.unlearn(idx)  # noqa: E731
                        conv = lambda: inf.unlearn(idx, steps="converge")  # noqa: E731
                    else:
                        if is_classifier(est):
                            pos = np.searchsorted(classes, y[idx])
                            new = classes[(pos + 1) % len(classes)]
                        else:
                            new = 2.0 * y[idx]
                        y2 = y.copy()
                        y2[idx] = new
                        refit = lambda: clone(est).fit(X, y2)  # noqa: E731
                        one = lambda: inf.relabel(idx, new)  # noqa: E731
                        conv = lambda: inf.relabel(idx, new, steps="converge")  # noqa: E731
                    try:
                        t_ref, exact = median_time(refit, args.repeats)
                    except ValueError as exc:  # e.g. a class removed
                        print(f"{name} {op} {m}: skipped ({exc})")
                        continue
                    t_one, e_one = median_time(one, args.repeats)
                    t_conv, e_conv = median_time(conv, args.repeats)
                    info = dict(inf.update_info_)
                    ref = _theta(exact)
                    rows.append((name, op, m, np.abs(ref - theta0).max(),
                                 np.abs(_theta(e_one) - ref).max(), np.abs(_theta(e_conv) - ref).max(),
                                 info["steps"], t_one / t_ref, t_conv / t_ref))
                    print(f"{name:17s} {op:8s} m={m:5d} change {rows[-1][3]:.2e}  one step "
                          f"{rows[-1][4]:.2e}  converged {rows[-1][5]:.2e} ({info['steps']} steps)  "
                          f"time one/refit {rows[-1][7]:.2f}  conv/refit {rows[-1][8]:.2f}", flush=True)
    print("\n| data, model | change | rows | ‖θ_refit − θ̂‖∞ | one step: error | converged: error "
          "(Newton steps) | time one step / refit | time converged / refit |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.2e} | {r[4]:.2e} | {r[5]:.1e} ({r[6]}) | "
              f"{r[7]:.2f} | {r[8]:.2f} |")


if __name__ == "__main__":
    main()
