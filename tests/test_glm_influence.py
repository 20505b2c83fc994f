"""GLM influence against exact refits on small data."""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import (
    ElasticNet,
    GammaRegressor,
    Lasso,
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
    Ridge,
    SGDClassifier,
    TweedieRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from skinfluence import CurvatureError, FisherInfluence, HessianInfluence, InfluenceWarning
from skinfluence.exceptions import NotFittedError

from conftest import coef_vector, exact_loo, refit_without

RNG = np.random.default_rng(0)


def _clf(n=150, d=5, classes=2, seed=0):
    X, y = make_classification(n, d, n_informative=3, n_redundant=0, n_classes=classes,
                               n_clusters_per_class=1, flip_y=0.1, random_state=seed)
    return X, y


def _reg(n=80, d=6, seed=0):
    X, y = make_regression(n, d, n_informative=4, noise=10.0, random_state=seed)
    return X, y


def _counts(n=150, d=4, seed=0, family="poisson"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * 0.4
    mu = np.exp(X @ rng.normal(size=d) * 0.8 + 1.0)
    y = rng.poisson(mu).astype(float) if family == "poisson" else rng.gamma(2.0, mu / 2.0)
    return X, y


TIGHT = dict(tol=1e-12, max_iter=100000)

# (name, estimator, data, response method)
CASES = [
    ("logistic-l2", LogisticRegression(C=0.5, **TIGHT), _clf(), "predict_proba"),
    ("logistic-none", LogisticRegression(C=np.inf, **TIGHT), _clf(d=3), "decision_function"),
    ("logistic-nointercept", LogisticRegression(fit_intercept=False, **TIGHT), _clf(), "decision_function"),
    ("logistic-l1", LogisticRegression(C=0.3, l1_ratio=1.0, solver="saga", **TIGHT), _clf(d=8), "decision_function"),
    ("logistic-enet", LogisticRegression(C=0.3, l1_ratio=0.5, solver="saga", **TIGHT), _clf(d=8), "decision_function"),
    ("logistic-multinomial", LogisticRegression(C=1.0, **TIGHT), _clf(classes=3), "predict_proba"),
    ("logistic-classweight", LogisticRegression(class_weight={0: 1.0, 1: 3.0}, **TIGHT), _clf(), "decision_function"),
    ("linear", LinearRegression(), _reg(), "predict"),
    ("ridge", Ridge(alpha=3.0), _reg(), "predict"),
    ("lasso", Lasso(alpha=2.0, **TIGHT), _reg(), "predict"),
    ("elasticnet", ElasticNet(alpha=1.0, l1_ratio=0.5, **TIGHT), _reg(), "predict"),
    ("poisson", PoissonRegressor(alpha=0.01, **TIGHT), _counts(), "predict"),
    ("gamma", GammaRegressor(alpha=0.01, **TIGHT), _counts(family="gamma"), "predict"),
    ("tweedie", TweedieRegressor(power=1.5, alpha=0.01, **TIGHT), _counts(family="gamma"), "predict"),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name,est,data,method", CASES, ids=IDS)
@pytest.mark.parametrize("cls", [HessianInfluence, FisherInfluence])
def test_ns_loo_matches_exact_refits(name, est, data, method, cls):
    X, y = data
    idx = np.arange(12)
    inf = cls(est).fit(X, y)
    approx = inf.approx_loocv(method="ns", response_method=method)[idx]
    exact = exact_loo(est, X, y, idx, method)
    full = getattr(inf.estimator_, method)(X[idx])
    change = np.abs(exact - full)
    err = np.abs(approx - exact)
    # NS error is second order in the step: on these n ≈ 100 problems it recovers
    # ≥ 85% of the leave-one-out change on average (≥ 98% for most; exactly for
    # quadratic objectives), ≥ 75% for the worst point (3× class weights)
    assert err.mean() <= 0.15 * change.mean() + 1e-9, (err.mean(), change.mean())
    assert err.max() <= 0.25 * change.max() + 1e-9, (err.max(), change.max())
    ij = inf.approx_loocv(method="ij", response_method=method)[idx]
    assert np.abs(ij - exact).mean() < 0.25 * change.mean() + 1e-9


@pytest.mark.parametrize("name,est,data", [(n, e, d) for n, e, d, _ in CASES if n in
                                            ("ridge", "linear", "lasso")])
def test_quadratic_losses_are_exact(name, est, data):
    X, y = data
    inf = FisherInfluence(est).fit(X, y)
    exact = exact_loo(est, X, y, range(10), "predict")
    np.testing.assert_allclose(inf.approx_loocv()[:10], exact, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name,est,data,method", CASES, ids=IDS)
def test_unlearn_matches_retraining(name, est, data, method):
    X, y = data
    U = [1, 4, 7, 30]
    inf = HessianInfluence(est).fit(X, y)
    approx = inf.unlearn(U)
    exact = refit_without(est, X, y, U)
    change = np.abs(coef_vector(exact) - coef_vector(inf.estimator_)).max()
    assert np.abs(coef_vector(approx) - coef_vector(exact)).max() <= 0.15 * change + 1e-8
    assert type(approx) is type(est)
    assert approx is not inf.estimator_


@pytest.mark.parametrize("name,est,data,method", [c for c in CASES if c[0] in
                                                   ("logistic-l2", "logistic-multinomial", "ridge", "poisson", "lasso")])
def test_relabel_matches_retraining(name, est, data, method):
    X, y = data
    if name == "logistic-multinomial":  # flipping a class moves a small multinomial model far
        X, y = _clf(n=600, classes=3)
    idx = [2, 5]
    if name.startswith("logistic"):
        classes = np.unique(y)
        y_new = np.array([classes[(np.searchsorted(classes, y[i]) + 1) % len(classes)] for i in idx])
    else:
        y_new = y[idx] * 1.5 + 1.0
    inf = HessianInfluence(est).fit(X, y)
    approx = inf.relabel(idx, y_new)
    y2 = y.copy().astype(float) if not name.startswith("logistic") else y.copy()
    y2[idx] = y_new
    exact = clone(est).fit(X, y2)
    change = np.abs(exact.coef_ - inf.estimator_.coef_).max()
    assert np.abs(approx.coef_ - exact.coef_).max() <= 0.15 * change + 1e-8


def test_pregibon_one_step_for_unpenalised_logistic():
    """unlearn([i]) is one Newton step on the leave-i-out objective, computed here by hand."""
    X, y = _clf(n=120, d=3)
    est = LogisticRegression(C=np.inf, **TIGHT).fit(X, y)
    inf = FisherInfluence(est, prefit=True).fit(X, y)
    Z = np.hstack([X, np.ones((len(X), 1))])
    theta = np.r_[est.coef_.ravel(), est.intercept_]
    i = 9
    keep = np.arange(len(y)) != i
    p = 1 / (1 + np.exp(-Z @ theta))
    grad = Z[keep].T @ (p[keep] - y[keep])
    H = (Z[keep] * (p * (1 - p))[keep, None]).T @ Z[keep]
    expected = theta - np.linalg.solve(H, grad)
    got = inf.unlearn([i])
    np.testing.assert_allclose(np.r_[got.coef_.ravel(), got.intercept_], expected, rtol=1e-8, atol=1e-10)


def test_attribution_correlates_with_actual_loss_changes():
    X, y = _clf(n=150, d=4, seed=3)
    Xt, yt = _clf(n=30, d=4, seed=4)
    est = LogisticRegression(C=0.5, **TIGHT)
    inf = FisherInfluence(est).fit(X, y)
    A = inf.attribute(Xt, yt)
    assert A.shape == (30, 150)
    base = inf.adapter_.loss.loss(yt.astype(float), inf.estimator_.decision_function(Xt)[:, None])
    idx = np.arange(0, 150, 5)
    actual = np.empty((30, len(idx)))
    for k, i in enumerate(idx):
        e = refit_without(est, X, y, [i])
        actual[:, k] = inf.adapter_.loss.loss(yt.astype(float), e.decision_function(Xt)[:, None]) - base
    r = np.corrcoef(A[:, idx].ravel(), actual.ravel())[0, 1]
    assert r > 0.98
    # sizes agree too: least-squares slope near 1
    slope = (A[:, idx].ravel() @ actual.ravel()) / (A[:, idx].ravel() @ A[:, idx].ravel())
    assert 0.8 < slope < 1.2
    # self-influence: its own LOO loss increase
    s = inf.self_influence()
    own = []
    for i in idx[:10]:
        e = refit_without(est, X, y, [i])
        own.append(inf.adapter_.loss.loss(y[i:i + 1].astype(float), e.decision_function(X[i:i + 1])[:, None])[0]
                   - inf.adapter_.loss.loss(y[i:i + 1].astype(float), inf.estimator_.decision_function(X[i:i + 1])[:, None])[0])
    np.testing.assert_allclose(s[idx[:10]], own, rtol=0.05, atol=1e-6)
    # the IJ self-influence is the diagonal of the attribution on the training set
    np.testing.assert_allclose(inf.self_influence("ij"), np.diag(inf.attribute(X, y)), rtol=1e-10)


def test_transform_predicts_decision_changes():
    X, y = _reg(n=60)
    inf = FisherInfluence(Ridge(alpha=1.0)).fit(X, y)
    T = inf.transform(X[:5])
    for i in (0, 3, 10):
        e = refit_without(Ridge(alpha=1.0), X, y, [i])
        # Ridge: IJ is first order in the removed weight; the direction must match
        change = e.predict(X[:5]) - inf.estimator_.predict(X[:5])
        assert np.corrcoef(T[:, i], change)[0, 1] > 0.99


def test_hessian_and_fisher_differ_for_gamma_and_match_dense_references():
    X, y = _counts(family="gamma")
    est = GammaRegressor(alpha=0.01, **TIGHT).fit(X, y)
    H = HessianInfluence(est, prefit=True).fit(X, y).curvature_
    F = FisherInfluence(est, prefit=True).fit(X, y).curvature_
    Z = np.hstack([X, np.ones((len(X), 1))])
    theta = np.r_[est.coef_, est.intercept_]
    n = len(y)

    def grad(t):  # gradient of mean half-deviance + alpha/2 |w|^2 by hand
        mu = np.exp(Z @ t)
        g = Z.T @ (1 - y / mu) / n
        return g + 0.01 * np.r_[t[:-1], 0.0]

    eps = 1e-6
    H_fd = np.column_stack([(grad(theta + eps * e) - grad(theta - eps * e)) / (2 * eps) for e in np.eye(len(theta))])
    np.testing.assert_allclose(H, H_fd, rtol=1e-5, atol=1e-8)
    F_ref = Z.T @ Z / n + np.diag(np.r_[np.full(X.shape[1], 0.01), 0.0])  # Gamma, log link: W = 1
    np.testing.assert_allclose(F, F_ref, rtol=1e-10)
    assert np.abs(H - F).max() > 1e-3


def test_sparse_pandas_and_sample_weight():
    X, y = _clf(n=120)
    Xs = sp.csr_matrix(np.where(np.abs(X) > 0.5, X, 0.0))
    w = RNG.uniform(0.5, 2.0, size=120)
    est = LogisticRegression(**TIGHT)
    dense = FisherInfluence(est).fit(Xs.toarray(), y, sample_weight=w)
    sparse = FisherInfluence(est).fit(Xs, y, sample_weight=w)
    np.testing.assert_allclose(sparse.approx_loocv(response_method="predict_proba"),
                               dense.approx_loocv(response_method="predict_proba"), atol=1e-10)
    np.testing.assert_allclose(sparse.attribute(Xs[:4], y[:4]), dense.attribute(Xs.toarray()[:4], y[:4]), atol=1e-10)
    frame = pd.DataFrame(Xs.toarray(), columns=[f"f{j}" for j in range(X.shape[1])])
    pdi = FisherInfluence(est).fit(frame, pd.Series(y), sample_weight=w)
    np.testing.assert_allclose(pdi.approx_loocv(response_method="predict_proba"),
                               dense.approx_loocv(response_method="predict_proba"), atol=1e-10)
    # weighted leave-one-out against exact refits
    exact = exact_loo(est, Xs.toarray(), y, range(8), "decision_function", sample_weight=w)
    approx = dense.approx_loocv(response_method="decision_function")[:8]
    full = dense.estimator_.decision_function(Xs.toarray()[:8])
    assert np.abs(approx - exact).max() <= 0.1 * np.abs(full - exact).max()


def test_mean_scaled_weights_lasso():
    X, y = _reg()
    w = RNG.uniform(0.5, 2.0, size=len(y))
    est = Lasso(alpha=1.0, **TIGHT)
    inf = FisherInfluence(est).fit(X, y, sample_weight=w)
    loo = inf.approx_loocv()
    n_same_support = 0
    for i in range(10):
        exact = refit_without(est, X, y, [i], sample_weight=w)
        # the proximal Newton step is exact for a quadratic loss with an l1 penalty
        np.testing.assert_allclose(inf.unlearn([i]).coef_, exact.coef_, rtol=1e-6, atol=1e-6)
        # the support-restricted shortcut is exact when the support does not change
        if np.array_equal(exact.coef_ != 0, inf.estimator_.coef_ != 0):
            n_same_support += 1
            np.testing.assert_allclose(loo[i], exact.predict(X[i:i + 1])[0], rtol=1e-7)
    assert n_same_support >= 5


def test_pipeline_holds_preprocessing_fixed():
    X, y = _clf()
    pipe = make_pipeline(StandardScaler(), LogisticRegression(**TIGHT))
    inf = FisherInfluence(pipe).fit(X, y)
    new = inf.unlearn([0, 1])
    assert type(new) is type(pipe) and new is not inf.estimator_
    Xs = inf.estimator_[0].transform(X)
    ref = FisherInfluence(LogisticRegression(**TIGHT)).fit(Xs, y)
    np.testing.assert_allclose(new[-1].coef_, ref.unlearn([0, 1]).coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(inf.approx_loocv(), ref.approx_loocv())


def test_sgd_classifier_polished():
    X, y = _clf()
    est = SGDClassifier(loss="log_loss", alpha=0.01, max_iter=5, tol=None, random_state=0)
    with pytest.warns(InfluenceWarning, match="not converged"):
        FisherInfluence(est).fit(X, y)
    inf = FisherInfluence(est, polish=True).fit(X, y)
    assert inf.convergence_ratio_ < 0.05 and inf.n_polish_steps_ > 0
    # the polished model is the exact optimum of SGD's objective: mean log-loss + alpha/2 |w|^2
    ref = LogisticRegression(C=1.0 / (0.01 * len(y)), **TIGHT).fit(X, y)
    np.testing.assert_allclose(inf.estimator_.coef_, ref.coef_, rtol=1e-4)


def test_user_estimator_is_never_mutated():
    X, y = _clf()
    est = LogisticRegression(max_iter=3).fit(X, y)
    before = copy.deepcopy(est.__dict__)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inf = FisherInfluence(est, prefit=True, polish=True).fit(X, y)
        inf.unlearn([0])
        inf.relabel([1], [0])
    for k, v in before.items():
        np.testing.assert_array_equal(np.asarray(est.__dict__[k], dtype=object), np.asarray(v, dtype=object))
    unfitted = LogisticRegression()
    FisherInfluence(unfitted).fit(X, y)
    assert not hasattr(unfitted, "coef_")


# ------------------------------------------------------------------ bad input
def test_bad_input_errors():
    X, y = _clf()
    est = LogisticRegression()
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        FisherInfluence(est).fit(Xn, y)
    Xi = X.copy()
    Xi[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        FisherInfluence(est).fit(Xi, y)
    with pytest.raises(ValueError, match="inconsistent"):
        FisherInfluence(est).fit(X, y[:-1])
    with pytest.raises(NotFittedError):
        FisherInfluence(LogisticRegression(), prefit=True).fit(X, y)
    with pytest.raises(TypeError, match="SVC is not supported.*LogisticRegression"):
        FisherInfluence(SVC()).fit(X, y)
    with pytest.raises(ValueError, match="positive=True"):
        FisherInfluence(Lasso(positive=True)).fit(*_reg())
    with pytest.raises(ValueError, match="damping"):
        FisherInfluence(est, damping=-1).fit(X, y)
    with pytest.raises(ValueError, match="solver"):
        FisherInfluence(est, solver="newton").fit(X, y)
    with pytest.raises(ValueError, match="sample_weight"):
        FisherInfluence(est).fit(X, y, sample_weight=np.ones(3))
    with pytest.raises(NotFittedError):
        FisherInfluence(est).approx_loocv()

    inf = FisherInfluence(LogisticRegression(**TIGHT)).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        inf.attribute(X[:, :3], y)
    with pytest.raises(ValueError, match="inconsistent"):
        inf.attribute(X[:5], y[:4])
    with pytest.raises(ValueError, match="unknown"):
        inf.attribute(X[:2], [0, 7])
    with pytest.raises(IndexError, match="out of range"):
        inf.unlearn([len(y)])
    with pytest.raises(ValueError, match="duplicates"):
        inf.unlearn([1, 1])
    with pytest.raises(ValueError, match="empty"):
        inf.unlearn([])
    with pytest.raises(ValueError, match="every sample of class"):
        inf.unlearn(np.flatnonzero(y == 1))
    with pytest.raises(ValueError, match="method"):
        inf.approx_loocv(method="exact")
    with pytest.raises(ValueError, match="response_method"):
        inf.approx_loocv(response_method="transform")


def test_singular_curvature_needs_damping():
    X, y = _reg()
    X = np.hstack([X, X[:, :1]])  # duplicated column, no penalty
    with pytest.raises(CurvatureError, match="damping"):
        FisherInfluence(LinearRegression()).fit(X, y)
    inf = FisherInfluence(LinearRegression(), damping=1e-6).fit(X, y)
    assert np.isfinite(inf.approx_loocv()).all()


def test_unconverged_estimator_warns_and_polish_fixes():
    X, y = _clf(n=300, d=6)
    with pytest.warns(InfluenceWarning, match="polish=True"):
        FisherInfluence(LogisticRegression(max_iter=2)).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inf = FisherInfluence(LogisticRegression(max_iter=2), polish=True).fit(X, y)
    ref = LogisticRegression(**TIGHT).fit(X, y)
    np.testing.assert_allclose(inf.estimator_.coef_, ref.coef_, rtol=1e-4)


@pytest.mark.parametrize("est", [Lasso(alpha=0.5, tol=0.5, max_iter=2),
                                 LogisticRegression(l1_ratio=1.0, C=0.3, solver="saga", tol=0.5, max_iter=3,
                                                    random_state=0)])
def test_l1_polishing_fixes_the_support(est):
    """Proximal Newton polishing lets coordinates enter and leave the support."""
    X, y = _reg(n=120, d=10) if isinstance(est, Lasso) else _clf(n=300, d=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = clone(est).fit(X, y)
        inf = HessianInfluence(est, polish=True).fit(X, y)
        ref = clone(est).set_params(**TIGHT).fit(X, y)
    assert not np.array_equal(raw.coef_ != 0, ref.coef_ != 0)  # the loose fit has the wrong support
    np.testing.assert_array_equal(inf.estimator_.coef_ != 0, ref.coef_ != 0)
    assert inf.convergence_ratio_ < 0.05  # within 5% of a leave-one-out step (~1/n relative)
    np.testing.assert_allclose(inf.estimator_.coef_, ref.coef_, rtol=0.05 / len(y))


def test_l1_multinomial_unlearn_keeps_the_intercept_shift():
    """The common shift of a multinomial's intercepts is not a direction to move along."""
    X, y = make_classification(300, 6, n_informative=4, n_classes=3, random_state=0)
    est = LogisticRegression(l1_ratio=1.0, C=0.05, solver="saga", tol=1e-10, max_iter=10000)
    inf = HessianInfluence(est).fit(X, y)
    drop = np.arange(60)
    un = inf.unlearn(drop)
    ref = refit_without(est, X, y, drop)
    assert un.intercept_.sum() == pytest.approx(inf.estimator_.intercept_.sum(), abs=1e-10)
    change = np.abs(ref.intercept_ - inf.estimator_.intercept_).max()
    assert np.abs(un.intercept_ - ref.intercept_).max() < 0.2 * change


def test_memory_guard(monkeypatch):
    import skinfluence._utils as utils

    X, y = _clf()
    inf = FisherInfluence(LogisticRegression(**TIGHT)).fit(X, y)
    monkeypatch.setattr(utils, "MAX_DENSE_BYTES", 1000)
    with pytest.raises(MemoryError, match="influence matrix"):
        inf.attribute(X, y)
    with pytest.raises(MemoryError, match="curvature"):
        FisherInfluence(LogisticRegression(**TIGHT)).fit(np.hstack([X] * 3), y)
