"""The dual (n × n) solver for p ≫ n linear models, CG for linear models, solver="auto" by shape.

The dual solver must give what the dense Cholesky path gives (to rounding) for every query,
and both must meet the influence approximation's own accuracy against exact refits.
"""

import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.linear_model import (GammaRegressor, LinearRegression, LogisticRegression,
                                  PoissonRegressor, Ridge)

import skinfluence._utils as utils
from skinfluence import FisherInfluence, HessianInfluence, InfluenceWarning
from skinfluence.curvature.dual import DualSolver
from skinfluence.curvature.factor import DenseSolver
from skinfluence.curvature.operators import GramOperator
from skinfluence.curvature.solvers import choose_solver
from skinfluence.refit import exact_loo_predictions

N, P = 60, 200


def _data(seed=0, n=N, p=P, density=0.1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)) * (rng.random((n, p)) < density)
    t = X[:, :5].sum(axis=1) + 0.5 * rng.standard_normal(n)
    return X, t, rng


def _case(name, X, t, rng):
    if name == "logistic":
        return LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000), (t > 0).astype(int)
    if name == "ridge":
        return Ridge(alpha=1.0, tol=1e-12), t
    if name == "poisson":
        y = rng.poisson(np.exp(0.3 * t.clip(-2, 2)))
        return PoissonRegressor(alpha=0.1, tol=1e-12, max_iter=10_000), y
    y = np.exp(0.2 * t + 0.3 * rng.standard_normal(len(t)))
    return GammaRegressor(alpha=0.1, tol=1e-12, max_iter=10_000), y


def _close(a, b, tol=1e-8):
    a, b = np.asarray(a, float), np.asarray(b, float)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(np.nanmax(np.abs(b)), 1.0))


def _fit(est, X, y, solver, cls=FisherInfluence, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InfluenceWarning)
        return cls(est, solver=solver, **kw).fit(X, y)


@pytest.mark.parametrize("fmt", ["dense", "csr"])
@pytest.mark.parametrize("name", ["logistic", "ridge", "poisson"])
def test_dual_equals_dense(name, fmt):
    X, t, rng = _data()
    est, y = _case(name, X, t, rng)
    Xf = sp.csr_matrix(X) if fmt == "csr" else X
    dense, dual = _fit(est, Xf, y, "dense"), _fit(est, Xf, y, "dual")
    assert dual.solver_ == "dual" and dual.curvature_solver_.info_["n_free"] == 1  # the intercept
    for method in ("ns", "ij"):
        _close(dual.loo_decision(method), dense.loo_decision(method))
        _close(dual.self_influence(method), dense.self_influence(method))
    _close(dual.approx_loocv(), dense.approx_loocv())
    folds = np.array_split(rng.permutation(N), 4)
    _close(dual.cv_decision(folds), dense.cv_decision(folds))
    _close(dual.parameter_change([1, 4, 7, 30]), dense.parameter_change([1, 4, 7, 30]))
    _close(dual.unlearn([2, 5]).coef_, dense.unlearn([2, 5]).coef_)
    _close(dual.attribute(Xf[:7], y[:7]), dense.attribute(Xf[:7], y[:7]))


def _gram(seed, n=40, p=90, negative=False):
    """A GramOperator with zero-weight rows, two unpenalised coordinates, optionally
    negative weights (an indefinite Hessian's), and its dense matrix."""
    rng = np.random.default_rng(seed)
    Z = sp.random(n, p, density=0.2, random_state=seed, format="csr") + sp.eye(n, p)
    w = rng.uniform(0.1, 2.0, n)
    w[:5] = 0.0
    if negative:
        w[5:8] = -0.05
    D = rng.uniform(0.5, 2.0, p)
    D[[3, p - 1]] = 0.0
    op = GramOperator(Z, w[:, None, None], diagonal=D)
    M = (Z.T @ sp.diags(w) @ Z).toarray() + np.diag(D)
    return op, M, Z.tocsr(), rng


@pytest.mark.parametrize("negative", [False, True])
def test_dual_solver_protocol(negative):
    op, M, Z, rng = _gram(1, negative=negative)
    dual, dense = DualSolver(op, batch_size=7), DenseSolver(M)
    b = rng.standard_normal((M.shape[0], 3))
    _close(dual.solve(b), np.linalg.solve(M, b))
    _close(dual.solve(b[:, 0]), np.linalg.solve(M, b[:, 0]))
    U = sp.random(12, M.shape[0], density=0.3, random_state=2, format="csr")
    A = np.linalg.inv(M)
    _close(dual.quadratic(U), (U @ A @ U.T))
    _close(dual.quadratic(U, diagonal=True), np.diag(U @ A @ U.T))
    _close(dual.quadratic(Z, diagonal=True), np.diag(Z @ A @ Z.T))   # the design's own rows
    _close(dual.solve_norms(U.T), np.linalg.norm(A @ U.T.toarray(), axis=0))
    _close(dual.inverse(), A)
    _close(dual.inverse_operator() @ b, A @ b)
    # removing rows 10..13 and a diagonal share, as K-fold does
    C = np.diag(op.weights[10:14, 0, 0])
    d = 0.1 * op.diagonal
    expected = np.linalg.solve(M - Z[10:14].T @ C @ Z[10:14] - np.diag(d), b)
    _close(dual.downdated_solve(b, Z[10:14], op.weights[10:14], d), expected)
    _close(dense.downdated_solve(b, Z[10:14].toarray(), C, d), expected)


def test_zero_weight_rows_and_damping():
    X, t, rng = _data(2)
    y = (t > 0).astype(int)
    sw = rng.uniform(0.5, 2.0, N)
    sw[:6] = 0.0
    est = LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000)
    for damping in (0.0, 0.3):
        dense = _fit(est, X, y, "dense", damping=damping)
        dual = _fit(est, X, y, "dual", damping=damping)
        _close(dual.approx_loocv(response_method="predict_proba"),
               dense.approx_loocv(response_method="predict_proba"))
    dense = FisherInfluence(est, solver="dense").fit(X, y, sample_weight=sw)
    dual = FisherInfluence(est, solver="dual").fit(X, y, sample_weight=sw)
    _close(dual.loo_decision(), dense.loo_decision())
    _close(dual.self_influence("ij"), dense.self_influence("ij"))


def test_hessian_with_negative_weights():
    """Gamma with a log link: the Hessian's weights may be negative (LU on the dual)."""
    X, t, rng = _data(3)
    est, y = _case("gamma", X, t, rng)
    dense = _fit(est, X, y, "dense", cls=HessianInfluence)
    dual = _fit(est, X, y, "dual", cls=HessianInfluence)
    _close(dual.loo_decision(), dense.loo_decision())
    _close(dual.parameter_change([0, 3]), dense.parameter_change([0, 3]))


@pytest.mark.parametrize("name", ["logistic", "ridge"])
def test_dual_against_exact_refits(name):
    X, t, rng = _data(4)
    est, y = _case(name, X, t, rng)
    rows = rng.choice(N, 20, replace=False)
    response = "predict_proba" if name == "logistic" else "predict"
    errors = {}
    for solver in ("dense", "dual"):
        inf = _fit(est, sp.csr_matrix(X), y, solver, polish=True)
        exact = exact_loo_predictions(inf.estimator_, X, y, rows, response)
        errors[solver] = np.abs(inf.approx_loocv(response_method=response)[rows] - exact).max()
        change = np.abs(inf.estimator_.predict(X[rows]) - exact if name == "ridge"
                        else inf.estimator_.predict_proba(X[rows]) - exact).max()
    assert errors["dual"] == pytest.approx(errors["dense"], abs=1e-8)
    # Ridge: the Newton step is exact; logistic: well below the leave-one-out change itself
    assert errors["dual"] < (1e-8 if name == "ridge" else 0.05 * change)


def test_cg_for_linear_models_equals_dense():
    X, t, rng = _data(5)
    est, y = _case("logistic", X, t, rng)
    dense, cg = _fit(est, sp.csr_matrix(X), y, "dense"), _fit(est, sp.csr_matrix(X), y, "cg")
    assert cg.solver_ == "cg" and cg.solver_reason_ == "requested"
    _close(cg.loo_decision(), dense.loo_decision(), 1e-6)
    _close(cg.attribute(X[:5], y[:5]), dense.attribute(X[:5], y[:5]), 1e-6)
    _close(cg.unlearn([3, 8]).coef_, dense.unlearn([3, 8]).coef_, 1e-6)


def test_auto_chooses_by_shape():
    X, t, rng = _data(6)
    y = (t > 0).astype(int)
    est = LogisticRegression(tol=1e-10, max_iter=10_000)
    wide = _fit(est, X, y, "auto")                       # p = 201 ≤ 2,000: dense is cheap
    assert wide.solver_ == "dense" and "DENSE_MAX_PARAMS" in wide.solver_reason_
    Xw = sp.random(N, 3000, density=0.02, random_state=0, format="csr")
    inf = _fit(est, Xw, y, "auto")
    assert inf.solver_ == "dual" and "p=3001 > n=60" in inf.solver_reason_
    tall = _fit(est, np.vstack([X[:, :20]] * 3), np.tile(y, 3), "auto")
    assert tall.solver_ == "dense" and "p <= n=180" in tall.solver_reason_
    multi = _fit(est, Xw, np.arange(N) % 3, "auto")      # p = 3 · 3001 > n·K = 180
    assert multi.solver_ == "dual" and "n·K=180" in multi.solver_reason_
    damped = _fit(LinearRegression(), Xw, t, "auto", damping=1.0)   # no penalty, but damping
    assert damped.solver_ == "dual"


def test_choose_solver_branches():
    assert choose_solver("cg", 500, True)[0] == "cg"
    assert choose_solver("cg", 500, False)[0] == "dense"          # no curvature products
    name, why = choose_solver("auto", 50_000, True, n_samples=100, dual_ok=True, smooth=False)
    assert name == "dense" and "ℓ1" in why
    name, why = choose_solver("auto", 50_000, True, n_samples=100, dual_ok=False)  # multinomial
    assert name == "cg" and "conjugate gradients" in why
    name, why = choose_solver("auto", 50_000, True, n_samples=20_000, dual_ok=True)
    assert name == "cg"                                           # n too large for n × n
    name, why = choose_solver("auto", 11_000, True, n_samples=10_500, dual_ok=True)
    assert name == "dense" and "too many rows" in why
    assert choose_solver("auto", 5_000, True, n_samples=100, dual_ok=False)[0] == "dense"


def test_pandas_and_csc_input():
    X, t, rng = _data(7)
    y = (t > 0).astype(int)
    est = LogisticRegression(tol=1e-12, max_iter=10_000)
    ref = _fit(est, X, y, "dense").loo_decision()
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(P)], index=np.arange(N) + 100)
    for Xin in (frame, sp.csc_matrix(X)):
        inf = _fit(est, Xin, y, "dual")
        _close(inf.loo_decision(), ref)
    series = _fit(est, frame, y, "dual").self_influence(as_frame=True)
    assert list(series.index[:2]) == [100, 101]


def test_clear_errors():
    X, t, rng = _data(8)
    y = (t > 0).astype(int)
    Xw = sp.csr_matrix(X)
    with pytest.raises(ValueError, match="ℓ1 penalty"):
        enet = LogisticRegression(l1_ratio=0.5, C=1.0, solver="saga", tol=1e-8, max_iter=5000)
        _fit(enet, Xw, y, "dual")
    with pytest.raises(ValueError, match="unpenalised"):
        _fit(LinearRegression(), Xw, t, "dual")
    dual = _fit(Ridge(), Xw, t, "dual")
    assert dual.curvature_solver_.inverse().shape == (P + 1, P + 1)


def test_memory_error_names_the_solver(monkeypatch):
    X, t, _ = _data(9)
    monkeypatch.setattr(utils, "MAX_DENSE_BYTES", 1000)
    with pytest.raises(MemoryError, match="solver='dual'"):
        FisherInfluence(Ridge(), solver="dense").fit(X, t)


def test_sparse_design_stays_sparse():
    """n = 80, p = 200,000: a dense n × p array (128 MB) would show in the peak; the
    vectors of length p (θ, gradients, penalty) take about 25 MB."""
    rng = np.random.default_rng(10)
    n, p = 80, 200_000
    k = n * p // 1000                                  # density 1e-3 (sp.random is slow here)
    X = sp.csr_matrix((rng.random(k), (rng.integers(n, size=k), rng.integers(p, size=k))), (n, p))
    signal = np.asarray(X[:, :2000].sum(axis=1)).ravel()
    y = (signal + 0.1 * rng.standard_normal(n) > 0.1).astype(int)
    est = LogisticRegression(C=10.0).fit(X, y)         # (scikit-learn's own fit peaks higher)
    tracemalloc.start()
    try:
        inf = _fit(est, X, y, "auto", prefit=True)
        inf.approx_loocv()
        inf.cv_decision(np.array_split(np.arange(n), 4))
        inf.unlearn([0, 1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert inf.solver_ == "dual"
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_multinomial_dual_equals_dense(fmt):
    """K = 3: the dual has n·K rows z_i ⊗ √λ v (W_i's eigenvectors) and the null space's row."""
    X, t, rng = _data(13)
    y = np.digitize(t, [-0.5, 0.5])
    Xf = sp.csr_matrix(X) if fmt == "csr" else X
    est = LogisticRegression(tol=1e-12, max_iter=10_000)
    dense, dual = _fit(est, Xf, y, "dense"), _fit(est, Xf, y, "dual")
    assert dual.curvature_solver_.info_["n_samples"] == 3 * N + 1
    for method in ("ns", "ij"):
        _close(dual.loo_decision(method), dense.loo_decision(method))
    _close(dual.self_influence(), dense.self_influence())
    folds = np.array_split(rng.permutation(N), 4)
    _close(dual.cv_decision(folds), dense.cv_decision(folds))
    _close(dual.parameter_change([1, 4, 9]), dense.parameter_change([1, 4, 9]))
    _close(dual.attribute(Xf[:5], y[:5]), dense.attribute(Xf[:5], y[:5]))


def test_cg_for_multinomial_equals_dense():
    """The K-output Gram products (Σ z_i z_iᵀ ⊗ W_i) with the intercepts' null space."""
    X, t, rng = _data(11, p=30)
    y = np.digitize(t, [-0.5, 0.5])
    est = LogisticRegression(tol=1e-12, max_iter=10_000)
    dense, cg = _fit(est, sp.csr_matrix(X), y, "dense"), _fit(est, sp.csr_matrix(X), y, "cg")
    v = rng.standard_normal(cg.adapter_.n_params)
    _close(cg.curvature_ @ v, dense.curvature_ @ v, 1e-12)
    _close(cg.loo_decision(), dense.loo_decision(), 1e-6)
    _close(cg.attribute(X[:4], y[:4]), dense.attribute(X[:4], y[:4]), 1e-6)


def test_curvature_sampler_with_the_dual():
    """A curvature from 30 sampled rows: the quadratics of all 60 rows are cross-kernels."""
    from skinfluence.sampling import RandomSampler

    X, t, rng = _data(12)
    y = (t > 0).astype(int)
    est = LogisticRegression(tol=1e-12, max_iter=10_000)
    sampler = RandomSampler(n_samples=30, random_state=0)
    dense = _fit(est, sp.csr_matrix(X), y, "dense", curvature_sampler=sampler)
    dual = _fit(est, sp.csr_matrix(X), y, "dual", curvature_sampler=sampler)
    assert dual.curvature_solver_.info_["n_samples"] == 30
    _close(dual.loo_decision(), dense.loo_decision())
    folds = np.array_split(np.arange(N), 3)
    _close(dual.cv_decision(folds), dense.cv_decision(folds))
