"""Re-damping without refitting: ``set_params(damping=...)`` after ``fit`` re-solves from what
the fit kept (the dense curvature and its eigendecomposition, low-rank or Kronecker factors),
equals a fresh fit at that damping, builds no curvature and keeps the singularity checks."""

import numpy as np
import pytest
import torch
from scipy import linalg
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.preprocessing import StandardScaler

from conftest import tanh_mlp
from skinfluence import FisherInfluence, HessianInfluence
from skinfluence.curvature import factor
from skinfluence.estimators._model import InfluenceEngine
from skinfluence.exceptions import CurvatureError
from skinfluence.models.torch import TorchModel

pytestmark = pytest.mark.filterwarnings("ignore::skinfluence.exceptions.InfluenceWarning")
DAMPINGS = (0.3, 2.0, 1e-3, 0.05)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    return X, y, LogisticRegression(C=0.5, max_iter=10_000, tol=1e-12).fit(X, y)


@pytest.fixture(scope="module")
def net():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4))
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(int) + (X[:, 2] > 0.5)
    module = tanh_mlp(4, 6, 3)
    opt = torch.optim.LBFGS(module.parameters(), max_iter=500, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-14)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(Xt), yt) + 5e-3 * sum(
            (p ** 2).sum() for p in module.parameters())
        loss.backward()
        return loss
    opt.step(closure)
    return X, y, TorchModel(module, weight_decay=1e-2)


def _answers(inf, X, y):
    """Queries that read the inverse three ways: solves, the dense inverse (leave-one-out),
    down-dates."""
    return (inf.attribute(X[:4], y[:4]), inf.self_influence("ij"), inf.loo_decision("ns"),
            inf.parameter_change([0, 3, 7], "ns"))


def _assert_same(got, want, rtol=1e-10):
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max())


@pytest.mark.parametrize("redamp", ["cholesky", "eigen", "auto"])
@pytest.mark.parametrize("case", ["glm", "net"])
def test_dense_redamping_equals_a_fresh_fit(iris, net, case, redamp):
    """The multinomial model has a null space (common intercept shift), the net a Fisher."""
    X, y, est = iris if case == "glm" else net
    opts = {"redamp": redamp}
    make = lambda d: FisherInfluence(est, prefit=True, solver="dense", damping=d,  # noqa: E731
                                     solver_options=opts)
    inf = make(0.01).fit(X, y)
    inf.loo_decision("ns")   # caches the dense inverse at the fitted damping
    for d in DAMPINGS:
        inf.set_params(damping=d)
        got = _answers(inf, X, y)
        assert inf.damping_ == d and inf.curvature_solver_.damping == d
        _assert_same(got, _answers(make(d).fit(X, y), X, y))
    kind = inf.curvature_solver_.info_["factorisation"]
    # auto: the GLM's leave-one-out formed the dense inverse after a re-damping (every row's
    # quadratic follows), so the eigendecomposition serves the later dampings; the net's
    # leave-one-out refactorises M − s·D (its weight decay's share), never that inverse
    assert kind == {"cholesky": "cholesky", "eigen": "eigen",
                    "auto": "eigen" if case == "glm" else "cholesky"}[redamp]
    if redamp == "eigen" and case == "net":   # the training rows' projections U Q serve every
        # damping (the GLM's exact leave-one-out refactorises M − s·D, its penalty share, instead)
        kept = inf.curvature_solver_._kept["projected"]
        assert kept and all(P.shape[1] == inf.curvature_.shape[0] for P in kept.values())
        count = len(kept)
        inf.set_params(damping=0.7)
        _assert_same([inf.loo_decision("ns")],
                     [make(0.7).fit(X, y).loo_decision("ns")])
        assert len(kept) == count


@pytest.mark.parametrize("redamp, choleskys, eighs", [("cholesky", 5, 0), ("eigen", 0, 1),
                                                       ("auto", 2, 1)])
def test_a_sweep_builds_the_curvature_once(net, monkeypatch, redamp, choleskys, eighs):
    """Counted: the sweep builds no curvature; Cholesky re-damps factorise once each, the
    eigendecomposition is computed once and then serves every damping; "auto" switches to it
    once the Choleskys would have cost as much (EIGEN_COST, set to 3 here)."""
    X, y, model = net
    monkeypatch.setattr(factor, "EIGEN_COST", 3)
    inf = FisherInfluence(model, prefit=True, solver="dense", damping=0.01,
                          solver_options={"redamp": redamp}).fit(X, y)
    counts = {"build": 0, "cholesky": 0, "eigh": 0}

    def spy(name, func):
        def run(*args, **kwargs):
            counts[name] += 1
            return func(*args, **kwargs)
        return run
    monkeypatch.setattr(InfluenceEngine, "curvature_operator",
                        spy("build", InfluenceEngine.curvature_operator))
    monkeypatch.setattr(inf.adapter_, "curvature", spy("build", inf.adapter_.curvature))
    monkeypatch.setattr(linalg, "cho_factor", spy("cholesky", linalg.cho_factor))
    monkeypatch.setattr(linalg, "eigh", spy("eigh", linalg.eigh))
    for d in (0.3, 2.0, 1e-3, 0.05, 0.1):
        inf.set_params(damping=d)
        inf.attribute(X[:2], y[:2])
    assert counts == {"build": 0, "cholesky": choleskys, "eigh": eighs}


@pytest.mark.parametrize("redamp", ["cholesky", "eigen"])
def test_singular_curvature_at_every_damping(redamp):
    """A duplicated column makes the unpenalised least-squares curvature singular: damping 0
    raises at fit and after a re-damping alike, and a damping that makes it solvable works
    (equal to a fresh fit); a refused damping leaves the fitted one in force."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    X = np.column_stack([X, X[:, 0]])
    y = X @ [1.0, -2.0, 0.5, 1.0] + 0.1 * rng.standard_normal(40)
    est = LinearRegression().fit(X, y)
    opts = {"redamp": redamp}
    with pytest.raises(CurvatureError, match="singular"):
        HessianInfluence(est, prefit=True, solver="dense", solver_options=opts).fit(X, y)
    inf = HessianInfluence(est, prefit=True, solver="dense", damping=1e-3, solver_options=opts).fit(X, y)
    first = inf.self_influence()
    for d in (0.5, 1e-6):
        inf.set_params(damping=d)
        fresh = HessianInfluence(est, prefit=True, solver="dense", damping=d).fit(X, y)
        np.testing.assert_allclose(inf.self_influence(), fresh.self_influence(), rtol=1e-8)
    inf.set_params(damping=0.0)
    with pytest.raises(CurvatureError, match="singular"):
        inf.self_influence()
    assert inf.damping_ == 1e-6 and inf.engine_.spec.damping_ == 1e-6
    inf.set_params(damping=1e-3)
    np.testing.assert_allclose(inf.self_influence(), first, rtol=1e-10)


@pytest.mark.parametrize("solver, options", [("nystrom", {"rank": 12}), ("arnoldi", {"rank": 12}),
                                             ("cg", None), ("kfac", None), ("ekfac", None)])
def test_kept_factors_redamp_like_a_fresh_fit(net, monkeypatch, solver, options):
    """Low-rank factors (the same sketch for a given random_state), Kronecker factors and the
    CG operator are kept; a sweep equals fresh fits and makes no pass over the data."""
    X, y, model = net
    make = lambda d: FisherInfluence(model, prefit=True, solver=solver, damping=d,  # noqa: E731
                                     solver_options=options, random_state=0)
    inf = make(0.1).fit(X, y)
    inf.loo_decision("ns")   # a cached inverse must not survive the re-damping
    built, operator = [], InfluenceEngine.curvature_operator
    monkeypatch.setattr(InfluenceEngine, "curvature_operator",
                        lambda *a, **k: built.append(1) or operator(*a, **k))
    cls = type(inf.curvature_solver_)   # a new solver would sketch or pass over the data again
    init = cls.__init__
    monkeypatch.setattr(cls, "__init__", lambda *a, **k: built.append(2) or init(*a, **k))
    for d in (0.5, 0.02):
        inf.set_params(damping=d)
        got = _answers(inf, X, y)
        assert built == []
        want = _answers(make(d).fit(X, y), X, y)
        built.clear()
        _assert_same(got, want, rtol=1e-8 if solver == "cg" else 1e-10)
