"""Approximate cross-validation and grid search on Adult against scikit-learn's exact CV.

Prints, with BLAS pinned to ``--threads`` (median time of ``--repeats`` runs each, the
contenders of a section taking turns):

Sections 0–2 run on two designs of the Adult train split (n = 30162): ``adult_design()``
(87 columns) and ``pd.get_dummies(drop_first=True)`` of every categorical column with every
column standardised (96 columns, constant ones dropped).

0. The fit's optimisation error in 10-fold answers: a ``LogisticRegression()`` fit polished
   to 5% of a fold's change with steps that assume ``∇L(θ̂) = 0`` (the previous default), vs
   residual Newton steps (the changed objective's own gradient) from the unpolished fit and
   from the fit polished to ``RESIDUAL_TARGET`` (the default): time, Newton steps, and the
   10-fold answers against exact refits to tol 1e-10 (|Δ accuracy|, |Δ log-loss| per fold).
1. ``approx_cross_val_score(LogisticRegression(), cv=10)`` vs ``cross_val_score``:
   |Δ accuracy| per fold and speed-up.
2. ``ApproxGridSearchCV`` over 12 values of C (5-fold, 5000 rows) vs ``GridSearchCV``
   and ``LogisticRegressionCV`` (same folds, same C grid, log-loss): best C and speed-up.
3. Ridge over 12 alphas (hours-per-week, all rows): ``ApproxGridSearchCV(cv=LeaveOneOut())``
   vs ``RidgeCV`` (exact closed form), and 5-fold vs ``RidgeCV(cv=5)`` and ``GridSearchCV``:
   best alpha, |Δ score|, speed ratio.
4. Lasso over 12 alphas (5-fold, 5000 rows): ``ApproxGridSearchCV`` (damping 1e-8) vs
   ``LassoCV`` and ``GridSearchCV``.
5. ``n_jobs``: the 12-C grid of section 2 (both designs) with ``n_jobs=2`` vs 1, with and
   without warm starts (with them each worker takes a run of 6 consecutive candidates):
   wall and CPU seconds (the process and its joblib workers), the machine's load, and the
   largest score difference. Runnable alone: ``--only njobs``.

Run: ``python benchmarks/model_selection.py [--repeats 3] [--threads 1] [--sections 012345]``
"""

import argparse
import os
import time
import warnings

import numpy as np
import pandas as pd
import psutil
from sklearn.metrics import log_loss
from sklearn.linear_model import Lasso, LassoCV, LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV
from sklearn.model_selection import GridSearchCV, KFold, LeaveOneOut, StratifiedKFold, cross_val_score

from skinfluence import HessianInfluence, InfluenceWarning
from skinfluence.datasets import adult_design, load_adult
from skinfluence.estimators import RESIDUAL_TARGET, NewtonPolisher
from skinfluence.model_selection import ApproxGridSearchCV, approx_cross_val_score

from _common import interleaved_times, pinned_threads


def dummies_design():
    """The common alternative encoding: get_dummies(drop_first=True), every column standardised."""
    frame = load_adult().frame.dropna()
    X = pd.get_dummies(frame.drop(columns="income"), drop_first=True).astype(float)
    X = X.loc[:, X.std() > 0]  # a level absent once missing rows are dropped
    return ((X - X.mean()) / X.std()).to_numpy(), frame["income"].to_numpy()


def polishing(X, y, repeats):
    """Section 0: the fold answers of three ways of handling the fit's optimisation error,
    against exact refits: polish to 5% of a fold's change and step as if ∇L(θ̂) = 0 (the
    previous default); residual steps (the changed objective's own gradient) from the
    unpolished fit; residual steps after polishing to ``RESIDUAL_TARGET`` (the default)."""
    est = LogisticRegression(max_iter=1000).fit(X, y)
    cv = StratifiedKFold(10)
    folds = list(cv.split(X, y))
    m = min(len(test) for _, test in folds)
    exact = [LogisticRegression(tol=1e-10, max_iter=10**4).fit(X[tr], y[tr]) for tr, _ in folds]

    def plain_polished():
        # the unpolished engine, polished as before to 5% of a fold's change (plain steps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InfluenceWarning)
            inf = HessianInfluence(est, prefit=True).fit(X, y)
        return NewtonPolisher(polish=True, removal_size=m).solve(inf.engine_)

    def residual(polish):
        # the estimators' policy for removals of m rows (what approximate CV fits)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InfluenceWarning)
            inf = HessianInfluence(est, prefit=True, polish=polish, removal_size=m).fit(X, y)
        return inf.engine_, inf.convergence_ratio_, inf.n_polish_steps_

    ways = {"polished to 0.05, plain steps": plain_polished,
            "unpolished, residual steps": lambda: residual(False),
            f"polished to {RESIDUAL_TARGET:g}, residual steps": lambda: residual(True)}
    times, fits = interleaved_times(list(ways.values()), repeats)
    for name, t, (engine, ratio, steps) in zip(ways, times, fits):
        d_acc, d_ll = [], []
        for (_, test), ex in zip(folds, exact):
            eta = engine.removal_outputs(test, test)
            p = 1 / (1 + np.exp(-eta[:, 0]))
            d_acc.append(abs(np.mean((p > 0.5) == y[test]) - ex.score(X[test], y[test])))
            d_ll.append(abs(log_loss(y[test], p) - log_loss(y[test], ex.predict_proba(X[test]))))
        print(f"{name:34s}: fit+polish {t:.3f}s, {steps} Newton steps, distance "
              f"{ratio:.2g} of a fold change; vs exact refits max |Δ accuracy| "
              f"per fold {max(d_acc):.5f}, max |Δ log-loss| per fold {max(d_ll):.2e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sections", default="012345")
    ap.add_argument("--only", choices=["njobs"], help="run one section alone (njobs: section 5)")
    args = ap.parse_args()
    if args.only == "njobs":
        args.sections = "5"
    d = adult_design()
    X, y, names = d.X, d.y, list(d.feature_names)
    rng = np.random.default_rng(0)
    sub = rng.choice(len(y), 5000, replace=False)
    designs = {"adult_design()": (X, y), "get_dummies(drop_first) standardised": dummies_design()}
    with pinned_threads(args.threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        print(f"Adult train: X {X.shape}; medians of {args.repeats} runs")
        for design, (Xd, yd) in designs.items():
            print(f"\n######## design {design}: X {Xd.shape}")
            if "0" in args.sections:
                print("== 0. the fit's optimisation error in 10-fold answers")
                polishing(Xd, yd, args.repeats)
            if "1" in args.sections:
                logistic_cv(Xd, yd, args.repeats)
            if "2" in args.sections:
                grid(Xd[sub], yd[sub], args.repeats)
            if "5" in args.sections:  # the grid's 5,000 rows (0.4 s of work), then all rows
                njobs(Xd[sub], yd[sub], args.repeats)
                njobs(Xd, yd, args.repeats)
        if "3" in args.sections:
            ridge(X, y, names, args.repeats)
        if "4" in args.sections:
            lasso(X, names, sub, args.repeats)


def logistic_cv(X, y, repeats):
    """Section 1: 10-fold CV of LogisticRegression on all rows."""
    lr = LogisticRegression(max_iter=1000)
    cv = StratifiedKFold(10)
    (t_fit, t_ex, t_ap), (_, ex, apx) = interleaved_times([
        lambda: LogisticRegression(max_iter=1000).fit(X, y),
        lambda: cross_val_score(lr, X, y, cv=cv, scoring="accuracy"),
        lambda: approx_cross_val_score(lr, X, y, cv=cv, scoring="accuracy")], repeats)
    print(f"== 1. LogisticRegression 10-fold accuracy, n = {len(y)}")
    print(f"one plain fit {t_fit:.2f}s; cross_val_score {t_ex:.2f}s; approx_cross_val_score {t_ap:.2f}s "
          f"-> {t_ex / t_ap:.1f}x faster (bound with one full fit ~ {t_ex / t_fit:.1f}x)")
    print(f"mean accuracy exact {ex.mean():.5f} approx {apx.mean():.5f}; "
          f"max |Δ accuracy| per fold {np.abs(ex - apx).max():.5f}, |Δ mean| {abs(ex.mean() - apx.mean()):.5f}")


def grid(Xs, ys, repeats):
    """Section 2: grid search over C, 5000 rows."""
    lr = LogisticRegression(max_iter=1000)
    Cs = np.logspace(-3, 2, 12)
    cv5 = StratifiedKFold(5)
    (t_gs, t_ags, t_lcv), (gs, ags, lcv) = interleaved_times([
        lambda: GridSearchCV(lr, {"C": Cs}, cv=cv5, scoring="neg_log_loss").fit(Xs, ys),
        lambda: ApproxGridSearchCV(lr, {"C": Cs}, cv=cv5, scoring="neg_log_loss").fit(Xs, ys),
        lambda: LogisticRegressionCV(Cs=Cs, cv=cv5, scoring="neg_log_loss", max_iter=1000).fit(Xs, ys)],
        repeats)
    i_gs, i_ags = gs.best_index_, ags.best_index_
    i_lcv = int(np.flatnonzero(np.isclose(Cs, lcv.C_[0]))[0])
    print("== 2. 12 values of C, 5-fold log-loss, 5000 rows")
    print(f"GridSearchCV {t_gs:.2f}s; LogisticRegressionCV {t_lcv:.2f}s; ApproxGridSearchCV {t_ags:.2f}s "
          f"-> {t_gs / t_ags:.1f}x faster than GridSearchCV, {t_lcv / t_ags:.1f}x than LogisticRegressionCV")
    print(f"best C: GridSearchCV {Cs[i_gs]:.4g} (index {i_gs}), LogisticRegressionCV {Cs[i_lcv]:.4g} "
          f"(index {i_lcv}), ApproxGridSearchCV {Cs[i_ags]:.4g} (index {i_ags})")
    diff = np.abs(gs.cv_results_["mean_test_score"] - ags.cv_results_["mean_test_score"])
    print(f"max |Δ mean log-loss| over the grid vs GridSearchCV {diff.max():.2e}")
    tight = GridSearchCV(LogisticRegression(tol=1e-10, max_iter=10**4), {"C": Cs}, cv=cv5,
                         scoring="neg_log_loss").fit(Xs, ys).cv_results_["mean_test_score"]
    print(f"against exact refits (tol 1e-10): max |Δ mean log-loss| approx "
          f"{np.abs(tight - ags.cv_results_['mean_test_score']).max():.2e}, GridSearchCV "
          f"{np.abs(tight - gs.cv_results_['mean_test_score']).max():.2e}")



def cpu_seconds():
    """User + system CPU seconds of this process and of each of its (joblib) workers, by pid."""
    me = psutil.Process()
    out = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            out[proc.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def njobs(Xs, ys, repeats):
    """Section 5: the 12-C grid with n_jobs=2 vs 1 (wall and CPU time)."""
    Cs = np.logspace(-3, 2, 12)
    cv5 = StratifiedKFold(5)
    print(f"== 5. n_jobs: 12 values of C, 5-fold log-loss, {len(ys)} rows; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for warm in (True, False):
        def search(n_jobs):
            return ApproxGridSearchCV(LogisticRegression(max_iter=1000), {"C": Cs}, cv=cv5, n_jobs=n_jobs,
                                      warm_start=warm, scoring="neg_log_loss").fit(Xs, ys)
        search(2)  # start the workers
        walls, cpus, outs = {1: [], 2: []}, {1: [], 2: []}, {}
        for _ in range(repeats):
            for n_jobs in (1, 2):
                before, t = cpu_seconds(), time.perf_counter()
                outs[n_jobs] = search(n_jobs)
                walls[n_jobs].append(time.perf_counter() - t)
                after = cpu_seconds()
                cpus[n_jobs].append(sum(v - before.get(pid, 0.0) for pid, v in after.items()))
        w1, w2 = np.median(walls[1]), np.median(walls[2])
        c1, c2 = np.median(cpus[1]), np.median(cpus[2])
        diff = np.abs(outs[1].cv_results_["mean_test_score"] - outs[2].cv_results_["mean_test_score"]).max()
        print(f"warm_start={warm!s:5s}: n_jobs=1 {w1:.2f}s wall, {c1:.2f}s CPU; n_jobs=2 {w2:.2f}s wall, "
              f"{c2:.2f}s CPU -> {w1 / w2:.2f}x wall speed-up (CPU ratio {c2 / c1:.2f}); best index "
              f"{outs[1].best_index_} vs {outs[2].best_index_}; max |Δ mean log-loss| {diff:.1e}")


def ridge(X, y, names, repeats):
    """Section 3: Ridge leave-one-out on hours-per-week (all rows)."""
    j = names.index("hours-per-week")
    Xr, yr = np.delete(X, j, axis=1), X[:, j]
    alphas = np.logspace(-2, 4, 12)
    (t_rcv, t_arcv), (rcv, arcv) = interleaved_times([
        lambda: RidgeCV(alphas=alphas).fit(Xr, yr),
        lambda: ApproxGridSearchCV(Ridge(), {"alpha": alphas}, cv=LeaveOneOut(),
                                   scoring="neg_mean_squared_error").fit(Xr, yr)], repeats)
    print("\n######## Ridge and Lasso on adult_design()\n== 3. Ridge leave-one-out, 12 alphas, n = 30162")
    print(f"RidgeCV {t_rcv:.2f}s; ApproxGridSearchCV(cv=LeaveOneOut()) {t_arcv:.2f}s "
          f"(ratio RidgeCV/approx {t_rcv / t_arcv:.2f})")
    print(f"best alpha RidgeCV {rcv.alpha_:.4g}, approx {arcv.best_params_['alpha']:.4g}; "
          f"best score RidgeCV {rcv.best_score_:.6f}, approx {arcv.best_score_:.6f} "
          f"(|Δ| {abs(rcv.best_score_ - arcv.best_score_):.1e})")
    kf = KFold(5)
    (t_rcv5, t_gs5, t_a5), (rcv5, gs5, a5) = interleaved_times([
        lambda: RidgeCV(alphas=alphas, cv=kf, scoring="neg_mean_squared_error").fit(Xr, yr),
        lambda: GridSearchCV(Ridge(), {"alpha": alphas}, cv=kf, scoring="neg_mean_squared_error").fit(Xr, yr),
        lambda: ApproxGridSearchCV(Ridge(), {"alpha": alphas}, cv=kf,
                                   scoring="neg_mean_squared_error").fit(Xr, yr)], repeats)
    print("== 3b. Ridge 5-fold, 12 alphas")
    print(f"RidgeCV(cv=5) {t_rcv5:.2f}s; GridSearchCV {t_gs5:.2f}s; ApproxGridSearchCV {t_a5:.2f}s "
          f"(ratio RidgeCV/approx {t_rcv5 / t_a5:.2f}, GridSearchCV/approx {t_gs5 / t_a5:.1f})")
    print(f"best alpha RidgeCV {rcv5.alpha_:.4g}, GridSearchCV {gs5.best_params_['alpha']:.4g}, approx "
          f"{a5.best_params_['alpha']:.4g}; max |Δ mean score| vs GridSearchCV over the grid "
          f"{np.abs(gs5.cv_results_['mean_test_score'] - a5.cv_results_['mean_test_score']).max():.1e}")



def lasso(X, names, sub, repeats):
    """Section 4: Lasso, 5-fold, 5000 rows."""
    j = names.index("hours-per-week")
    Xl, yl = np.delete(X, j, axis=1)[sub], X[sub, j]
    la = np.logspace(-4, -0.5, 12)
    kf = KFold(5)
    # Adult's one-hot design keeps every level next to the intercept, so for small alphas the
    # curvature on the support is singular: a tiny damping makes it invertible
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InfluenceWarning)
        (t_lasso, t_alasso, t_glasso), (lasso, alasso, glasso) = interleaved_times([
            lambda: LassoCV(alphas=la, cv=kf, max_iter=10000).fit(Xl, yl),
            lambda: ApproxGridSearchCV(Lasso(max_iter=10000), {"alpha": la}, cv=kf,
                                       scoring="neg_mean_squared_error", damping=1e-8).fit(Xl, yl),
            lambda: GridSearchCV(Lasso(max_iter=10000), {"alpha": la}, cv=kf,
                                 scoring="neg_mean_squared_error").fit(Xl, yl)], repeats)
    stopped = sorted({str(w.message).split(" of a typical")[0] for w in caught
                      if issubclass(w.category, InfluenceWarning)})
    # LassoCV's mse_path_ rows follow its alphas_, sorted decreasingly
    mse_lcv = lasso.mse_path_.mean(axis=1)[np.argsort(-lasso.alphas_)][np.argsort(np.argsort(-la))]
    d_mse = np.abs(mse_lcv + alasso.cv_results_["mean_test_score"]).max()
    print("== 4. Lasso, 12 alphas, 5-fold MSE, 5000 rows")
    print(f"LassoCV {t_lasso:.2f}s; GridSearchCV {t_glasso:.2f}s; ApproxGridSearchCV {t_alasso:.2f}s "
          f"-> {t_lasso / t_alasso:.2f}x vs LassoCV, {t_glasso / t_alasso:.1f}x vs GridSearchCV")
    print(f"best alpha LassoCV {lasso.alpha_:.4g}, GridSearchCV {glasso.best_params_['alpha']:.4g}, "
          f"approx {alasso.best_params_['alpha']:.4g}; max |Δ mean MSE| vs LassoCV {d_mse:.2e} "
          f"(MSE ~ {mse_lcv.min():.3f})")
    print(f"InfluenceWarnings (small alphas, singular design): {stopped}")
    exact = np.array([cross_val_score(Lasso(alpha=a, tol=1e-12, max_iter=10**6), Xl, yl, cv=kf,
                                      scoring="neg_mean_squared_error").mean() for a in la])
    print(f"against exact refits (tol 1e-12): max |Δ mean MSE| approx "
          f"{np.abs(exact - alasso.cv_results_['mean_test_score']).max():.1e}, "
          f"LassoCV {np.abs(exact + mse_lcv).max():.1e}")


if __name__ == "__main__":
    main()
