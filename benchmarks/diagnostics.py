"""Regression diagnostics of every row against statsmodels, and the calibration of the
leave-one-out error estimates against exact refits.

1. Speed and agreement: ``HessianInfluence(est, prefit=True).fit(X, y).diagnostics()
   .summary_frame()`` against statsmodels' ``res.get_influence().summary_frame()`` (both
   from a fitted model, both computing the curvature), on randhie (Poisson, 20,190 rows)
   and Adult (logistic, 30,162 rows), at the same parameters; then a penalised logistic
   regression and a small network, which statsmodels cannot do (timed, and checked
   against one-row ``parameter_change`` queries).
2. Calibration: for each data set, the estimated error of every one-step (NS)
   leave-one-out output against its true error (exact refits: Newton to convergence on
   each leave-one-out objective), the Spearman rank correlation, the median ratio, and
   the worst error left after ``refine=k`` for k = 1% and 5% of the rows.

Run: ``python benchmarks/diagnostics.py [--quick]`` (one BLAS thread).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy.stats import spearmanr
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.linear_model import LogisticRegression, PoissonRegressor
from sklearn.preprocessing import StandardScaler

from _common import interleaved_times, pinned_threads
from skinfluence import FisherInfluence, HessianInfluence
from skinfluence.datasets import adult_design, load_adult

warnings.simplefilter("ignore")


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.nanmax(np.abs(a - b)) / np.nanmax(np.abs(b)))


def at_params(est, X, y, params):
    est.fit(X, y)
    params = np.asarray(params)
    est.coef_ = params[:-1].reshape(np.shape(est.coef_))
    est.intercept_ = params[-1] if np.ndim(est.intercept_) == 0 else params[-1:]
    return est


def randhie():
    d = sm.datasets.randhie.load_pandas()
    return d.exog.astype(float), d.endog.astype(float)


def adult_full_rank(n=None):
    """Adult with one level of each categorical dropped (a full-rank unpenalised design)."""
    frame = load_adult().frame.dropna()
    y = frame["income"].astype(int)
    X = frame.drop(columns=["income", "fnlwgt", "education"])
    num = X.select_dtypes("number").columns
    X[num] = (X[num] - X[num].mean()) / X[num].std()
    X = pd.get_dummies(X, drop_first=True, dtype=float)
    X = X.loc[:, X.std() > 0]
    if n is not None:
        keep = np.random.default_rng(0).choice(len(X), n, replace=False)
        X, y = X.iloc[keep], y.iloc[keep]
    return X.reset_index(drop=True), y.reset_index(drop=True)


def versus_statsmodels(name, X, y, family, est, repeats):
    res = sm.GLM(y, sm.add_constant(X, prepend=False, has_constant="add"),
                 family=family).fit(tol=1e-12, method="newton")
    est = at_params(est, X, y, res.params)

    def ours():
        return HessianInfluence(est, prefit=True).fit(X, y).diagnostics().summary_frame()

    def theirs():
        return res.get_influence().summary_frame()

    (t_ours, t_sm), (frame, sm_frame) = interleaved_times([ours, theirs], repeats)
    inf = HessianInfluence(est, prefit=True).fit(X, y)
    t = time.perf_counter()
    for i in range(200):
        inf.parameter_change([i])
    per_row = (time.perf_counter() - t) / 200
    print(f"  one-row parameter_change: {per_row * 1e3:.2f} ms per row, {per_row * len(y):.1f} s for "
          f"all rows ({per_row * len(y) / t_sm:.0f}x statsmodels' time)")
    diffs = {col: rel(frame[col], sm_frame[col]) for col in ("hat_diag", "cooks_d", "standard_resid",
                                                             "dffits_internal")}
    diffs["dfbetas"] = rel(frame.filter(like="dfb_").to_numpy(), sm_frame.filter(like="dfb_").to_numpy())
    print(f"{name}: n={len(y)}, p={X.shape[1] + 1}: ours {t_ours:.3f} s, statsmodels {t_sm:.3f} s, "
          f"speed ratio (statsmodels / ours) {t_sm / t_ours:.2f}x; max relative differences "
          + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    return t_ours, t_sm, diffs


def beyond_statsmodels(repeats):
    X, y = adult_full_rank()
    inf = HessianInfluence(LogisticRegression(C=0.05, tol=1e-10, max_iter=5000), polish=True).fit(X, y)
    (t,), (diag,) = interleaved_times([lambda: inf.diagnostics()], repeats)
    rows = np.argsort(-diag.cooks_distance[0])[:3]
    check = max(rel(-diag.d_params[i], inf.parameter_change([i])) for i in rows)
    print(f"Adult, penalised logistic (C=0.05): n={len(y)}, p={X.shape[1] + 1}: all rows' diagnostics "
          f"{t:.3f} s; d_params of the 3 largest Cook's distances vs one-row parameter_change: "
          f"max rel. diff {check:.1e}")
    out = [("adult-l2", t, check)]
    try:
        import torch
        from skinfluence.models.torch import TorchModel
    except ImportError:  # pragma: no cover
        return out
    Xd, yd = load_breast_cancer(return_X_y=True)
    Xd = StandardScaler().fit_transform(Xd)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
    opt = torch.optim.LBFGS(net.parameters(), max_iter=500, tolerance_grad=1e-12,
                            line_search_fn="strong_wolfe")
    Xt, yt = torch.as_tensor(Xd), torch.as_tensor(yd)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(Xt), yt) + 1e-2 / 2 * sum(
            (p**2).sum() for p in net.parameters())
        loss.backward()
        return loss
    opt.step(closure)
    inf = FisherInfluence(TorchModel(net, loss="cross_entropy", weight_decay=1e-2), prefit=True,
                          polish=True).fit(Xd, yd)
    (t,), (diag,) = interleaved_times([lambda: inf.diagnostics()], repeats)
    rows = np.argsort(-diag.cooks_distance[0])[:3]
    check = max(rel(-diag.d_params[i], inf.parameter_change([i])) for i in rows)
    print(f"breast cancer, MLP 30-16-2 (Gauss-Newton): n={len(yd)}, p={inf.adapter_.n_params}: "
          f"all rows' diagnostics {t:.3f} s; vs one-row parameter_change: max rel. diff {check:.1e}")
    out.append(("mlp", t, check))
    return out


def calibration_sets(quick):
    X, y = load_wine(return_X_y=True)
    yield "wine (multinomial logistic, C=1)", StandardScaler().fit_transform(X), y, \
        LogisticRegression(C=1.0, tol=1e-12, max_iter=10000)
    X, y = load_breast_cancer(return_X_y=True)
    yield "breast cancer (logistic, C=1)", StandardScaler().fit_transform(X), y, \
        LogisticRegression(C=1.0, tol=1e-12, max_iter=10000)
    X, y = load_diabetes(return_X_y=True)
    yield "diabetes (Poisson, alpha=1e-3)", StandardScaler().fit_transform(X), y, \
        PoissonRegressor(alpha=1e-3, tol=1e-12, max_iter=10000)
    Xr, yr = randhie()
    keep = np.random.default_rng(0).choice(len(yr), 500 if quick else 2000, replace=False)
    yield f"randhie {len(keep)} rows (Poisson, no penalty)", Xr.to_numpy()[keep], \
        yr.to_numpy()[keep], PoissonRegressor(alpha=0, tol=1e-12, max_iter=10000)
    d = sm.datasets.spector.load_pandas()
    yield "spector (logistic, no penalty)", d.exog.to_numpy(), d.endog.to_numpy(), \
        LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000)
    Xa, ya = adult_full_rank(500 if quick else 2000)
    yield f"Adult {len(ya)} rows (logistic, C=1)", Xa.to_numpy(), ya.to_numpy(), \
        LogisticRegression(C=1.0, tol=1e-12, max_iter=10000)


def mlp_case():
    """A small MLP (Hessian influence, L-BFGS to the optimum): the network row of the table."""
    import torch
    from skinfluence.models.torch import TorchModel
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 4))
    y = (X[:, 0] + 0.7 * X[:, 1] ** 2 - 0.5 + 0.5 * rng.standard_normal(120) > 0).astype(int)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    opt = torch.optim.LBFGS(net.parameters(), max_iter=2000, tolerance_grad=1e-13,
                            tolerance_change=1e-16, history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(Xt), yt) + 0.1 / 2 * sum(
            (p**2).sum() for p in net.parameters())
        loss.backward()
        return loss
    for _ in range(5):
        opt.step(closure)
    return "MLP 4-5-2 on 120 rows (Hessian, wd=0.1)", X, y, TorchModel(net, loss="cross_entropy",
                                                                        weight_decay=0.1)


def _take_rows(X, idx):
    return X.iloc[idx] if hasattr(X, "iloc") else X[idx]


def refit_check(inf, X, y, eta, rows):
    """``max |η_refined − η_refit|`` over ``rows``: scikit-learn refits (warm-started,
    tol=1e-13) without each row (linear models only)."""
    if not hasattr(inf.estimator_, "coef_"):
        return np.nan
    from skinfluence.refit import refit_without
    ad, worst = inf.adapter_, 0.0
    for i in rows:
        fit = refit_without(inf.estimator_, X, y, [i], tol=1e-13)
        exact = ad.eta(ad.design(_take_rows(X, [i])), inf.model_adapter(fit).theta)[0]
        worst = max(worst, float(np.abs(eta[i] - exact).max()))
    return worst


def calibrate(name, X, y, est):
    prefit = type(est).__name__ == "TorchModel"
    inf = HessianInfluence(est, polish=True, prefit=prefit).fit(X, y)
    t = time.perf_counter()
    eta0 = inf.loo_decision()
    t_loo = time.perf_counter() - t
    t = time.perf_counter()
    eta, err = inf.loo_decision(return_error=True)
    t_err = time.perf_counter() - t
    ad = inf.adapter_
    Z = ad.design(X)
    eta_fit = ad.eta(Z)
    exact = np.empty_like(eta)
    t = time.perf_counter()
    for i in range(len(y)):
        exact[i] = ad.eta(Z[[i]], ad.theta + inf.parameter_change([i], steps="converge"))[0]
    t_exact = time.perf_counter() - t
    true = np.linalg.norm(eta - exact, axis=1)
    change = np.linalg.norm(exact - eta_fit, axis=1)
    rho = spearmanr(err, true)[0]
    ratio = np.median(err / np.maximum(true, 1e-300))
    top = np.argsort(-change)[:10]          # the rows a user inspects: largest changes
    row = {"data": name, "n": len(y), "p": ad.n_params, "spearman": rho, "median est/true": ratio,
           "worst true error": true.max(),
           "worst rel. error (top-10 changes)": float((true[top] / change[top]).max())}
    for frac in (0.01, 0.05):
        k = int(np.ceil(frac * len(y)))
        refined = np.argsort(-err)[:k]
        left = true.copy()
        left[refined] = 0.0      # refined rows are converged (checked below on one run)
        row[f"worst left, refine {frac:.0%}"] = left.max()
        row[f"worst rel. top-10, refine {frac:.0%}"] = float((left[top] / change[top]).max())
    eta_r = inf.loo_decision(refine=0.05)
    ref = inf.loo_info_["refined"]
    row["|refined - Newton-converged|"] = float(np.abs(eta_r[ref] - exact[ref]).max())
    row["|refined - sklearn refit| (top 5)"] = refit_check(inf, X, y, eta_r, ref[np.argsort(-err[ref])[:5]])
    row["time LOO s"], row["time LOO+error s"], row["time exact s"] = t_loo, t_err, t_exact
    print(f"  {name}: Spearman {rho:.4f}, median est/true {ratio:.3f}, worst {true.max():.2e} -> "
          f"{row['worst left, refine 1%']:.2e} (1%) -> {row['worst left, refine 5%']:.2e} (5%); "
          f"refined rows vs scikit-learn refits {row['|refined - sklearn refit| (top 5)']:.1e}",
          flush=True)
    assert np.allclose(eta0, eta, equal_nan=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller calibration sets, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-calibration", action="store_true", help="speed part only")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    try:
        import torch  # noqa: F401 - loaded before the threads are pinned, so that they apply to it
    except ImportError:  # pragma: no cover
        pass
    with pinned_threads(args.threads):
        print("== all-rows diagnostics against statsmodels (same parameters) ==")
        Xr, yr = randhie()
        versus_statsmodels("randhie (Poisson)", Xr, yr, sm.families.Poisson(),
                           PoissonRegressor(alpha=0), repeats)
        Xa, ya = adult_full_rank()
        versus_statsmodels("Adult (logistic)", Xa, ya, sm.families.Binomial(),
                           LogisticRegression(C=np.inf), repeats)
        print("== beyond statsmodels ==")
        beyond_statsmodels(repeats)
        if args.no_calibration:
            return
        print("== calibration of the leave-one-out error estimates against exact refits ==")
        rows = [calibrate(*case) for case in calibration_sets(args.quick)]
        try:
            rows.append(calibrate(*mlp_case()))
        except ImportError:  # pragma: no cover
            pass
        table = pd.DataFrame(rows).set_index("data")
        print(table.to_markdown(floatfmt=".4g"))


if __name__ == "__main__":
    main()
