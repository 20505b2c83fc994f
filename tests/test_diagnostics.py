"""Regression diagnostics against statsmodels, and the error estimates of leave-one-out steps
against exact refits."""

import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.datasets import load_wine
from sklearn.linear_model import (Lasso, LinearRegression, LogisticRegression, GammaRegressor,
                                  PoissonRegressor)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skinfluence import FisherInfluence, HessianInfluence
from skinfluence.models import make_adapter
from skinfluence.sampling import leverage_scores

sm = pytest.importorskip("statsmodels.api")


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def _at(est, X, y, params):
    """``est`` fitted, then set to statsmodels' parameters (constant last): both sides see
    one θ, so the comparison tests the definitions, not two optimisers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    params = np.asarray(params)
    est.coef_ = params[:-1].reshape(np.shape(est.coef_))
    est.intercept_ = params[-1] if np.ndim(est.intercept_) == 0 else params[-1:]
    return est


def _glm(dataset, family):
    d = dataset.load_pandas()
    X, y = d.exog.copy(), d.endog
    if "INCOME" in X:   # cpunish: income in thousands (the dense solver refuses a condition
        X["INCOME"] /= 1000   # number beyond 1e12, which income in dollars gives)
    res = sm.GLM(y, sm.add_constant(X, prepend=False), family=family).fit(tol=1e-14, method="newton")
    return X, y, res


def test_ols_every_diagnostic_matches_statsmodels():
    d = sm.datasets.stackloss.load_pandas()
    X, y = d.exog, d.endog
    si = sm.OLS(y, sm.add_constant(X, prepend=False)).fit().get_influence()
    diag = HessianInfluence(LinearRegression()).fit(X, y).diagnostics()
    for ours, theirs in [("hat_matrix_diag", "hat_matrix_diag"),
                         ("resid_studentized", "resid_studentized_internal"),
                         ("resid_studentized_external", "resid_studentized_external"),
                         ("dfbetas", "dfbetas"), ("d_params", "dfbeta"),
                         ("params_one", "params_not_obsi"), ("sigma2_not_obsi", "sigma2_not_obsi")]:
        assert rel(getattr(diag, ours), getattr(si, theirs)) < 1e-10, ours
    for ours, theirs in [(diag.cooks_distance, si.cooks_distance), (diag.dffits, si.dffits),
                         (diag.dffits_internal, si.dffits_internal)]:
        assert rel(ours[0], theirs[0]) < 1e-10
        assert rel(ours[1], theirs[1]) < 1e-10
    ours, theirs = diag.summary_frame(), si.summary_frame()
    assert list(ours.columns) == list(theirs.columns)
    assert rel(ours.to_numpy(), theirs.to_numpy()) < 1e-10


@pytest.mark.parametrize("dataset, family, est", [
    (sm.datasets.spector, sm.families.Binomial(), LogisticRegression(C=np.inf)),
    (sm.datasets.cpunish, sm.families.Poisson(), PoissonRegressor(alpha=0)),
])
def test_canonical_glm_diagnostics_match_statsmodels(dataset, family, est):
    X, y, res = _glm(dataset, family)
    si = res.get_influence()
    for cls in (HessianInfluence, FisherInfluence):
        diag = cls(_at(est, X, y, res.params), prefit=True).fit(X, y).diagnostics()
        for ours, theirs in [("hat_matrix_diag", "hat_matrix_diag"),
                             ("resid_studentized", "resid_studentized"),
                             ("dfbetas", "dfbetas"), ("d_params", "d_params"),
                             ("params_one", "params_one")]:
            assert rel(getattr(diag, ours), getattr(si, theirs)) < 1e-8, ours
        assert rel(diag.cooks_distance[0], si.cooks_distance[0]) < 1e-8
        assert rel(diag.cooks_distance[1], si.cooks_distance[1]) < 1e-8
        assert rel(diag.dffits_internal[0], si.d_fittedvalues_scaled) < 1e-8
        assert rel(diag.bse, res.bse) < 1e-8
        frame = diag.summary_frame()
        theirs = si.summary_frame()
        assert rel(frame[theirs.columns].to_numpy(), theirs.to_numpy()) < 1e-8


def test_gamma_log_link_diagnostics_match_statsmodels():
    """Non-canonical: the Hessian estimator matches statsmodels' observed-information
    diagnostics and the Fisher estimator its expected-information ones (``d_params``
    differs by definition: statsmodels' is not the Newton step)."""
    X, y, res = _glm(sm.datasets.scotland, sm.families.Gamma(sm.families.links.Log()))
    est = _at(GammaRegressor(alpha=0), X, y, res.params)
    for cls, observed in ((HessianInfluence, True), (FisherInfluence, False)):
        si = res.get_influence(observed=observed)
        diag = cls(est, prefit=True).fit(X, y).diagnostics()
        assert rel(diag.hat_matrix_diag, si.hat_matrix_diag) < 1e-8
        assert rel(diag.resid_studentized, si.resid_studentized) < 1e-8
        assert rel(diag.cooks_distance[0], si.cooks_distance[0]) < 1e-8
        assert abs(diag.scale / res.scale - 1) < 1e-8
    # the Hessian estimator's standard errors are statsmodels' (Newton fit: observed information)
    diag = HessianInfluence(est, prefit=True).fit(X, y).diagnostics()
    assert rel(diag.bse, res.bse) < 1e-8
    # our d_params is the Newton step: far closer to the exact refits than statsmodels' formula
    si = res.get_influence()
    exact = np.asarray(res.params) - np.asarray(si._res_looo["params"])
    assert np.linalg.norm(diag.d_params - exact) < np.linalg.norm(si.d_params - exact) / 5


def test_leverages_are_scale_invariant():
    d = sm.datasets.cpunish.load_pandas()
    X, y = d.exog.to_numpy(), d.endog.to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = PoissonRegressor(alpha=0, tol=1e-12, max_iter=10000).fit(X, y)
    assert abs(leverage_scores(make_adapter(est), X, y).sum() - 7) < 1e-8   # was 6
    rng = np.random.default_rng(0)
    X = rng.standard_normal((150, 4))
    y = (X[:, 0] + rng.standard_normal(150) > 0).astype(int)
    base = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(X, y)
    ref = leverage_scores(make_adapter(base), X, y)
    ref_diag = HessianInfluence(base, prefit=True).fit(X, y).diagnostics(params=False).hat_matrix_diag
    assert rel(ref, ref_diag) < 1e-10
    for scale in (1e6, 1e-6, 1e3, 1e-3):
        Xs = X.copy()
        Xs[:, 1] *= scale
        est = LogisticRegression(C=np.inf).fit(X, y)
        est.coef_ = base.coef_.copy()
        est.coef_[0, 1] /= scale
        est.intercept_ = base.intercept_.copy()
        assert rel(leverage_scores(make_adapter(est), Xs, y), ref) < 1e-8
        if scale in (1e3, 1e-3):   # (the dense solver refuses a condition number beyond 1e12)
            h = HessianInfluence(est, prefit=True).fit(Xs, y).diagnostics(params=False)
            assert rel(h.hat_matrix_diag, ref) < 1e-8


@pytest.mark.parametrize("make", [
    lambda: LogisticRegression(C=0.3, tol=1e-12, max_iter=5000),      # ℓ2, binary
    lambda: PoissonRegressor(alpha=0.05, tol=1e-12, max_iter=5000),   # mean-scaled ℓ2: shares
    lambda: Lasso(alpha=0.05, tol=1e-12, max_iter=100000),            # ℓ1: support changes
])
def test_all_rows_parameter_changes_equal_one_row_queries(make):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((80, 4))
    eta = X @ np.array([0.8, -0.5, 0.3, 0.0])
    y = {"LogisticRegression": (eta + rng.logistic(size=80) > 0).astype(int),
         "PoissonRegressor": rng.poisson(np.exp(eta)).astype(float),
         "Lasso": eta + 0.3 * rng.standard_normal(80)}[type(make()).__name__]
    inf = HessianInfluence(make(), polish=True).fit(X, y)
    diag = inf.diagnostics()
    for i in (0, 7, int(np.argmax(diag.hat_matrix_diag)), int(np.argmax(diag.cooks_distance[0]))):
        assert np.allclose(-diag.d_params[i], inf.parameter_change([i]), rtol=1e-8, atol=1e-12)
    # leave-one-out outputs from the changes are approx_loocv's
    eta_loo = np.einsum("np,np->n", diag.params_one, np.c_[X, np.ones(80)])
    assert np.allclose(eta_loo, inf.loo_decision()[:, 0], rtol=1e-8, atol=1e-10)
    assert 0 < diag.hat_matrix_diag.sum() < 5 + 1e-9     # effective degrees of freedom


def test_multinomial_pipeline_diagnostics():
    X, y = load_wine(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, tol=1e-12, max_iter=5000))
    inf = HessianInfluence(pipe, polish=True).fit(X, y)
    diag = inf.diagnostics()
    assert diag.d_params.shape == (len(y), 14 * 3) and diag.k_vars == 14 * 3 - 1   # the free intercepts' sum
    assert np.allclose(-diag.d_params[5], inf.parameter_change([5]), rtol=1e-8, atol=1e-12)
    # Cook's distance of several outputs: Δθᵀ M Δθ / (k c̄), M the penalised curvature
    M, c = inf.curvature_, inf._fitted().c.mean()
    delta = diag.d_params[:10]
    assert np.allclose(diag.cooks_distance[0][:10],
                       np.einsum("np,pq,nq->n", delta, M, delta) / (diag.k_vars * c), rtol=1e-8)
    # traces of K × K blocks of rank K − 1: in (0, K − 1); residuals are norms
    assert np.all(diag.resid_studentized >= 0) and np.all(np.isfinite(diag.resid_studentized_external))
    assert np.all((diag.hat_matrix_diag > 0) & (diag.hat_matrix_diag < 2))
    assert list(diag.summary_frame().columns[:2]) == ["dfb_x0[0]", "dfb_x0[1]"]


def test_network_leverages_through_its_gauss_newton_matrix():
    torch = pytest.importorskip("torch")
    from skinfluence.models.torch import TorchModel
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = (X[:, 0] + 0.5 * rng.standard_normal(60) > 0).astype(int)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    inf = FisherInfluence(TorchModel(net, loss="cross_entropy", weight_decay=1e-2), prefit=True,
                          damping=1e-3).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diag = inf.diagnostics()
    model, ad = inf._fitted(), inf.adapter_
    J = ad.jacobians(model.Z)
    A = np.linalg.inv(inf.curvature_ + inf.damping_ * np.eye(ad.n_params))
    want = np.einsum("n,nkl,nlp,pq,nkq->n", model.c, model.W, J, A, J)
    assert rel(diag.hat_matrix_diag, want) < 1e-8
    assert np.allclose(-diag.d_params[3], inf.parameter_change([3]), rtol=1e-7, atol=1e-12)
    _, err = inf.loo_decision(return_error=True)
    assert err.shape == (60,) and np.all(np.isfinite(err) & (err >= 0))


def _exact_loo(inf):
    ad, model = inf.adapter_, inf._fitted()
    out = np.empty((inf.n_samples_, ad.n_outputs))
    for i in range(inf.n_samples_):
        out[i] = ad.eta(model.Z[[i]], ad.theta + inf.parameter_change([i], steps="converge"))[0]
    return out


def test_loo_error_estimates_are_calibrated_and_refine_makes_rows_exact():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 3))
    y = (X @ [2.0, -1.0, 0.5] + rng.logistic(size=120) > 0).astype(int)
    inf = HessianInfluence(LogisticRegression(C=5, tol=1e-12, max_iter=5000), polish=True).fit(X, y)
    eta, err = inf.loo_decision(return_error=True)
    exact = _exact_loo(inf)
    true = np.linalg.norm(eta - exact, axis=1)
    assert spearmanr(err, true)[0] > 0.95
    assert 0.8 < np.median(err / true) < 1.25
    P, err_k = inf.approx_loocv(response_method="predict_proba", return_error=True, refine=6)
    refined = inf.loo_info_["refined"]
    assert np.array_equal(np.sort(np.argsort(-err)[:6]), refined)
    exact_P = inf.adapter_.response(exact, "predict_proba")
    assert np.allclose(P[refined], exact_P[refined], atol=1e-10)
    assert np.all(err_k[refined] < 1e-8)
    rest = np.setdiff1d(np.arange(120), refined)
    assert np.array_equal(err_k[rest], err[rest])
    eta_ij, err_ij = inf.loo_decision("ij", return_error=True)
    assert np.all(err_ij >= err - 1e-15)          # the NS estimate plus the NS/IJ gap
    with pytest.raises(ValueError, match="refine must be"):
        inf.approx_loocv(refine=1.5)
    with pytest.raises(ValueError, match="refine must be"):
        inf.approx_loocv(refine=-1)


def test_l1_loo_error_estimates():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((90, 4))
    y = (X @ [2.0, -1.0, 0.0, 0.0] + rng.logistic(size=90) > 0).astype(int)
    est = LogisticRegression(l1_ratio=1.0, solver="saga", C=0.5, tol=1e-12, max_iter=100000)
    inf = HessianInfluence(est, polish=True).fit(X, y)
    eta, err = inf.loo_decision(return_error=True)
    true = np.linalg.norm(eta - _exact_loo(inf), axis=1)
    assert spearmanr(err, true)[0] > 0.8


def test_unlearn_reports_an_error_estimate():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((100, 3))
    y = (X @ [3.0, -1.0, 0.5] + rng.logistic(size=100) > 0).astype(int)
    inf = HessianInfluence(LogisticRegression(C=10, tol=1e-12, max_iter=5000), polish=True).fit(X, y)
    rows = np.argsort(-inf.diagnostics(params=False).cooks_distance[0])[:5]
    one = inf.parameter_change(rows)
    inf.unlearn(rows)
    estimate = inf.update_info_["error_estimate"]
    exact = inf.parameter_change(rows, steps="converge")
    true = np.linalg.norm(one - exact)
    assert 0.75 < estimate / true < 1.33
    assert inf.update_info_["error_estimate"] < 1e-6 * np.linalg.norm(exact)
    # relabelling: the changed rows keep their weight, their targets flip
    flip = 1 - y[rows]
    one = inf.relabel(rows, flip)
    estimate = inf.update_info_["error_estimate"]
    exact = inf.relabel(rows, flip, steps="converge")
    true = np.linalg.norm(np.r_[one.coef_.ravel(), one.intercept_]
                          - np.r_[exact.coef_.ravel(), exact.intercept_])
    assert 0.75 < estimate / true < 1.33


def test_influence_plot_draws_every_row():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skinfluence.plotting import influence_plot
    d = sm.datasets.stackloss.load_pandas()
    inf = HessianInfluence(LinearRegression()).fit(d.exog, d.endog)
    ax = influence_plot(inf, n_labels=3)
    diag = inf.diagnostics(params=False)
    offsets = ax.collections[0].get_offsets()
    assert np.allclose(offsets[:, 0], diag.hat_matrix_diag)
    assert np.allclose(offsets[:, 1], diag.resid_studentized_external)
    largest = np.argsort(-diag.cooks_distance[0])[:3]
    assert sorted(t.get_text() for t in ax.texts) == sorted(map(str, largest)) and 20 in largest
    with pytest.raises(TypeError, match="influence_plot needs"):
        influence_plot(np.zeros(3))
    plt.close("all")


def test_sparse_design_and_other_solvers_give_the_dense_answers():
    import scipy.sparse as sp
    X = sp.random(120, 300, density=0.03, random_state=0, format="csr")
    y = (np.random.default_rng(0).random(120) > 0.5).astype(int)
    est = LogisticRegression(C=1.0, tol=1e-10, max_iter=5000)
    ref = HessianInfluence(est, polish=True).fit(X, y)
    want, want_err = ref.diagnostics(), ref.loo_decision(return_error=True)[1]
    for solver in ("dual", "cg"):
        inf = HessianInfluence(est, polish=True, solver=solver,
                               solver_options={"tol": 1e-12} if solver == "cg" else None).fit(X, y)
        diag = inf.diagnostics()
        assert rel(diag.hat_matrix_diag, want.hat_matrix_diag) < 1e-10
        assert rel(diag.dfbetas, want.dfbetas) < 1e-8
        assert rel(inf.loo_decision(return_error=True)[1], want_err) < 1e-8


def test_pipeline_parameter_names_are_the_transformed_features():
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.preprocessing import OneHotEncoder
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"colour": rng.choice(["red", "blue", "green"], 60), "size": rng.normal(size=60)})
    y = X["size"] * 2 + (X["colour"] == "red") + 0.1 * rng.normal(size=60)
    pipe = make_pipeline(make_column_transformer((OneHotEncoder(drop="first"), ["colour"]),
                                                 remainder="passthrough"), LinearRegression())
    frame = HessianInfluence(pipe).fit(X, y).diagnostics().summary_frame()
    assert list(frame.columns[:4]) == ["dfb_onehotencoder__colour_green", "dfb_onehotencoder__colour_red",
                                       "dfb_remainder__size", "dfb_const"]
