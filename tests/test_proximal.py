"""The proximal Newton step is the exact minimiser of its ℓ1-penalised quadratic model."""

import numpy as np
import pytest
from sklearn.linear_model import Lasso

import skinfluence.curvature.proximal as proximal
from skinfluence.curvature.proximal import prox_newton_step
from skinfluence.models.penalties import ElasticNetPenalty


def _lasso_model(n, p, alpha, seed, duplicate=False):
    """``q`` of a Lasso objective (1/2n)‖y − Xb‖² + α‖b‖₁ expanded at a random θ."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    if duplicate:
        X[:, 1] = X[:, 0]  # singular curvature: the minimiser is not unique, its value is
    y = X[:, :5] @ rng.standard_normal(5) + 0.5 * rng.standard_normal(n)
    M = X.T @ X / n
    theta = rng.standard_normal(p) * (rng.random(p) < 0.5)  # wrong signs, wrong support
    g = X.T @ (X @ theta - y) / n
    pen = ElasticNetPenalty(alpha, 0.0, np.ones(p))
    ref = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(X, y).coef_
    objective = lambda b: 0.5 * np.mean((y - X @ b) ** 2) + alpha * np.abs(b).sum()  # noqa: E731
    return M, g, theta, pen, ref, objective


@pytest.mark.parametrize("alpha", [0.003, 0.03, 0.3])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_lasso(alpha, seed):
    M, g, theta, pen, ref, _ = _lasso_model(200, 20, alpha, seed)
    b = prox_newton_step(M, g, theta, pen)
    np.testing.assert_allclose(b, ref, atol=1e-9)
    np.testing.assert_array_equal(b == 0, ref == 0)


def test_active_set_finishes_without_fista(monkeypatch):
    calls = []
    monkeypatch.setattr(proximal, "_fista", lambda *a: calls.append(1))
    M, g, theta, pen, ref, _ = _lasso_model(300, 30, 0.01, 3)
    np.testing.assert_allclose(prox_newton_step(M, g, theta, pen), ref, atol=1e-9)
    assert not calls


def test_factor_scales_the_threshold():
    M, g, theta, pen, _, _ = _lasso_model(200, 20, 0.06, 4)
    half = ElasticNetPenalty(0.03, 0.0, np.ones(20))
    np.testing.assert_allclose(prox_newton_step(M, g, theta, pen, factor=0.5),
                               prox_newton_step(M, g, theta, half), atol=1e-12)


def test_singular_curvature_falls_back_to_fista(monkeypatch):
    """A free coordinate without curvature (the model ignores it) makes Cholesky fail."""
    calls, fista = [], proximal._fista
    monkeypatch.setattr(proximal, "_fista", lambda *a: calls.append(1) or fista(*a))
    M, g, theta, pen, ref, objective = _lasso_model(200, 20, 0.01, 5)
    M = np.pad(M, ((0, 1), (0, 1)))  # an unpenalised coordinate with no curvature or gradient
    g, theta = np.append(g, 0.0), np.append(theta, 0.7)
    pen = ElasticNetPenalty(0.01, 0.0, np.append(np.ones(20), 0.0))
    b = prox_newton_step(M, g, theta, pen)
    assert calls
    assert b[-1] == 0.7
    assert objective(b[:-1]) == pytest.approx(objective(ref), rel=1e-8)
