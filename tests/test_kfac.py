"""K-FAC, EK-FAC and EK-FAC-preconditioned CG against the dense curvature."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression, LogisticRegression

from skinfluence import FisherInfluence, HessianInfluence
from skinfluence.exceptions import CurvatureError
from skinfluence.models.torch import TorchModel

WD = 1e-2
pytestmark = pytest.mark.filterwarnings("ignore::skinfluence.exceptions.InfluenceWarning")


def _data(n=40, image=True, K=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 1, 5, 5) if image else (n, 6))
    return X, rng.integers(0, K, n)


def _cnn(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1, stride=2), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(18, 4), torch.nn.Tanh(),
                               torch.nn.Linear(4, 3)).double()


def _fit(model, X, y, solver, **kw):
    return FisherInfluence(model, prefit=True, solver=solver, **kw).fit(X, y)


def _projected_diagonal(M, solver):
    """Per layer, the diagonal of the dense curvature block in the solver's eigenbasis."""
    out = {}
    for name, (index, QA, QG, lam, extra) in solver.layers.items():
        Q = np.kron(QG, QA)                        # row-major vec of an n_out × n_in matrix
        B = M[np.ix_(index.ravel(), index.ravel())]
        out[name] = (np.diag(Q.T @ B @ Q).reshape(index.shape), lam + extra)
    return out


@pytest.mark.parametrize("fisher", ["exact", "empirical", "mc"])
def test_ekfac_correction_is_the_dense_projection(fisher):
    X, y = _data()
    model = TorchModel(_cnn(), loss="cross_entropy", weight_decay=WD)
    dense = _fit(model, X, y, "dense", fisher=fisher, random_state=3)
    ek = _fit(model, X, y, "ekfac", fisher=fisher, random_state=3).curvature_solver_
    assert ek.info_["factored_params"] == dense.adapter_.n_params and ek.info_["passes"] == 2
    for name, (proj, lam) in _projected_diagonal(dense.curvature_, ek).items():
        np.testing.assert_allclose(lam, proj, atol=1e-12 * np.abs(proj).max(), err_msg=name)


def test_kfac_exact_for_one_linear_layer_with_one_output():
    """A linear layer with a squared loss: Σ_r g g^T is the same for every sample."""
    X, _ = _data(image=False)
    y = X @ np.arange(6.0) + np.random.default_rng(1).standard_normal(len(X))
    torch.manual_seed(0)
    model = TorchModel(torch.nn.Linear(6, 1).double(), loss="mse", weight_decay=WD)
    dense = _fit(model, X, y, "dense")
    b = np.random.default_rng(2).standard_normal((7, 3))
    for solver in ("kfac", "ekfac"):
        kf = _fit(model, X, y, solver, damping=0.3)
        np.testing.assert_allclose(kf.curvature_solver_.solve(b),
                                   np.linalg.solve(dense.curvature_ + 0.3 * np.eye(7), b), rtol=1e-10)
        np.testing.assert_allclose(kf.attribute(X[:5], y[:5]), dense.set_params(damping=0.3).fit(X, y)
                                   .attribute(X[:5], y[:5]), rtol=1e-9, atol=1e-14)


def test_kfac_exact_for_one_linear_layer_and_one_sample():
    X, y = _data(n=1, image=False)
    torch.manual_seed(0)
    model = TorchModel(torch.nn.Linear(6, 3).double(), loss="cross_entropy", weight_decay=WD)
    dense = _fit(model, X, y, "dense")
    kf = _fit(model, X, y, "kfac").curvature_solver_
    b = np.random.default_rng(2).standard_normal(21)
    np.testing.assert_allclose(kf.solve(b), np.linalg.solve(dense.curvature_, b), rtol=1e-9)


def test_kfac_exact_for_linear_regression():
    """The linear-model path: one layer, a squared loss, no penalty."""
    X, _ = _data(n=60, image=False)
    y = X @ np.arange(6.0) + np.random.default_rng(1).standard_normal(60)
    dense = FisherInfluence(LinearRegression()).fit(X, y)
    for solver in ("kfac", "ekfac"):
        kf = FisherInfluence(LinearRegression(), solver=solver).fit(X, y)
        np.testing.assert_allclose(kf.attribute(X[:4], y[:4]), dense.attribute(X[:4], y[:4]), rtol=1e-8)
        np.testing.assert_allclose(kf.approx_loocv(), dense.approx_loocv(), rtol=1e-8)


def test_ekfac_cg_converges_to_the_dense_solve():
    X, y = _data()
    model = TorchModel(_cnn(), loss="cross_entropy", weight_decay=WD)
    dense = _fit(model, X, y, "dense", damping=0.01)
    cg = _fit(model, X, y, "ekfac_cg", damping=0.01, solver_options={"max_iter": 300, "tol": 1e-12})
    B = np.random.default_rng(0).standard_normal((dense.adapter_.n_params, 2))
    exact = np.linalg.solve(dense.curvature_ + 0.01 * np.eye(len(B)), B)
    np.testing.assert_allclose(cg.curvature_solver_.solve(B), exact, rtol=1e-8, atol=1e-10 * np.abs(exact).max())
    # a few iterations already beat EK-FAC alone
    ek = _fit(model, X, y, "ekfac", damping=0.01).curvature_solver_.solve(B)
    few = _fit(model, X, y, "ekfac_cg", damping=0.01, solver_options={"max_iter": 5}).curvature_solver_.solve(B)
    assert np.linalg.norm(few - exact) < 0.5 * np.linalg.norm(ek - exact)


def test_damping_applied_at_solve_time_and_queries():
    X, y = _data()
    model = TorchModel(_cnn(), loss="cross_entropy", weight_decay=WD)
    kf = _fit(model, X, y, "ekfac", damping="auto")
    sol = kf.curvature_solver_
    M = _fit(model, X, y, "dense").curvature_            # EK-FAC keeps the trace: "auto" is exact
    np.testing.assert_allclose(kf.damping_, 0.1 * np.trace(M) / len(M), rtol=1e-12)
    x = sol.solve(np.ones(len(M)))
    np.testing.assert_allclose(sol.redamp(1.0).solve(np.ones(len(M))),
                               _fit(model, X, y, "ekfac", damping=1.0).curvature_solver_.solve(np.ones(len(M))))
    sol.redamp(kf.damping_)
    np.testing.assert_allclose(sol.solve(np.ones(len(M))), x)
    # the solver's M̃ as a matrix: the queries agree with it
    Minv = sol.inverse()
    G = kf.adapter_.gradients(X[:3], kf.engine_.g[:3])
    np.testing.assert_allclose(sol.solve(G.T), Minv @ G.T, rtol=1e-10, atol=1e-14)
    assert kf.attribute(X[:3], y[:3]).shape == (3, 40)
    assert np.all(np.isfinite(kf.self_influence()))
    # leave-one-out (Woodbury on the approximate inverse) against the explicit down-date
    Mt = np.linalg.inv(Minv)
    J = kf.adapter_.jacobians(X[:2])
    C = kf.engine_.c[:2, None, None] * kf.engine_.W[:2]
    b = np.random.default_rng(0).standard_normal(len(Mt))
    down = Mt - np.einsum("nkp,nkl,nlq->pq", J, C, J) - 0.003 * np.eye(len(Mt))
    np.testing.assert_allclose(sol.downdated_solve(b, J, C, 0.003 * np.ones(len(Mt))),
                               np.linalg.solve(down, b), rtol=1e-8)
    loo = kf.approx_loocv(response_method="predict_proba")
    assert loo.shape == (40, 3) and np.all(np.isfinite(loo))


def test_sample_weights_equal_duplicated_rows():
    X, y = _data()
    model = TorchModel(_cnn(), loss="cross_entropy", weight_decay=WD)
    w = np.ones(len(y))
    w[:5] = 2.0
    a = FisherInfluence(model, prefit=True, solver="ekfac", damping=0.1).fit(X, y, sample_weight=w)
    Xd, yd = np.concatenate([X, X[:5]]), np.concatenate([y, y[:5]])
    b = _fit(model, Xd, yd, "ekfac", damping=0.1)
    v = np.random.default_rng(0).standard_normal(a.adapter_.n_params)
    np.testing.assert_allclose(a.curvature_solver_.solve(v), b.curvature_solver_.solve(v), rtol=1e-10)


def test_curvature_sampler_rows():
    from skinfluence.sampling import LogitSampler
    X, y = _data(n=60)
    model = TorchModel(_cnn(), loss="cross_entropy", weight_decay=WD)
    sampled = FisherInfluence(model, prefit=True, solver="ekfac", damping=0.1,
                              curvature_sampler=LogitSampler(30, random_state=0)).fit(X, y)
    rows, w = sampled.curvature_rows_, sampled.curvature_weights_
    dense = FisherInfluence(model, prefit=True, damping=0.1,
                            curvature_sampler=LogitSampler(30, random_state=0)).fit(X, y)
    for name, (proj, lam) in _projected_diagonal(dense.curvature_, sampled.curvature_solver_).items():
        np.testing.assert_allclose(lam, proj, atol=1e-12 * np.abs(proj).max(), err_msg=name)
    assert len(rows) == len(w) and sampled.attribute(X[:2], y[:2]).shape == (2, 60)


def test_logistic_regression_and_hessian_estimator():
    X, y = _data(n=80, image=False)
    lr = LogisticRegression(C=1.0, tol=1e-10)
    dense = FisherInfluence(lr).fit(X, y)
    ek = FisherInfluence(lr, solver="ekfac").fit(X, y).curvature_solver_
    null = dense.adapter_.null_space()                 # the softmax's shift of the intercepts
    assert null is not None
    for _, (proj, lam) in _projected_diagonal(dense.curvature_ + null @ null.T, ek).items():
        np.testing.assert_allclose(lam, proj, atol=1e-12 * np.abs(proj).max())
    # the Hessian estimator factorises its Gauss–Newton part
    model = TorchModel(_cnn(), loss="cross_entropy", weight_decay=WD)
    Xi, yi = _data()
    h = HessianInfluence(model, prefit=True, solver="kfac", damping=0.1).fit(Xi, yi)
    f = _fit(model, Xi, yi, "kfac", damping=0.1)
    v = np.ones(h.adapter_.n_params)
    np.testing.assert_allclose(h.curvature_solver_.solve(v), f.curvature_solver_.solve(v), rtol=1e-10)


def test_other_layers_get_an_exact_block_or_are_refused():
    X, y = _data(image=False)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Tanh(),
                              torch.nn.Linear(5, 3)).double()
    model = TorchModel(net, loss="cross_entropy", weight_decay=WD)
    dense = _fit(model, X, y, "dense")
    kf = _fit(model, X, y, "ekfac").curvature_solver_
    assert kf.info_["exact_params"] == 10
    rest = kf._rest
    b = np.zeros(dense.adapter_.n_params)
    b[rest] = np.random.default_rng(0).standard_normal(len(rest))
    np.testing.assert_allclose(kf.solve(b)[rest],
                               np.linalg.solve(dense.curvature_[np.ix_(rest, rest)], b[rest]), rtol=1e-10)
    # ekfac_lr's K^(-1/2) takes the exact block's symmetric square root: applied twice it is K^(-1)
    B = np.random.default_rng(1).standard_normal((dense.adapter_.n_params, 2))
    for _ in range(2):    # the block's eigendecomposition is kept after the first product
        half = kf._precondition(kf._precondition(B, power=0.5), power=0.5)
        np.testing.assert_allclose(half, kf.solve(B), rtol=1e-8, atol=1e-10 * np.abs(kf.solve(B)).max())
    with pytest.raises(ValueError, match=r"10 parameters lie elsewhere \(1.weight, 1.bias\)"):
        _fit(model, X, y, "kfac", solver_options={"max_exact": 4})


def test_bad_input():
    X, y = _data()
    torch.manual_seed(0)
    lin = torch.nn.Linear(25, 3).double()
    shared = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(25, 25), torch.nn.Tanh())
    shared.append(shared[1])
    shared.append(lin)
    with pytest.raises(ValueError, match="more than once"):
        _fit(TorchModel(shared.double(), loss="cross_entropy", weight_decay=WD), X, y, "kfac")
    model = TorchModel(_cnn(), loss="cross_entropy")
    with pytest.raises(CurvatureError, match="damping > 0"):   # dead ReLU units / rank-deficient A
        _fit(model, X[:3], y[:3], "kfac")
    with pytest.raises(ValueError, match="max_iter"):
        _fit(model, X, y, "ekfac_cg", damping=0.1, solver_options={"max_iter": -1})
    with pytest.raises(ValueError, match="not options"):
        _fit(model, X, y, "kfac", damping=0.1, solver_options={"rank": 3})


def test_layer_damping_is_relative_to_each_layer():
    X, y = _data(n=30, image=False)
    torch.manual_seed(0)
    model = TorchModel(torch.nn.Linear(6, 3).double(), loss="cross_entropy", weight_decay=WD)
    rel = _fit(model, X, y, "ekfac", damping=0.1, solver_options={"layer_damping": True}).curvature_solver_
    lam = rel.layers[""][3]
    ab = _fit(model, X, y, "ekfac", damping=0.1 * lam.mean()).curvature_solver_
    v = np.random.default_rng(0).standard_normal(21)
    np.testing.assert_allclose(rel.solve(v), ab.solve(v), rtol=1e-12)


def test_ekfac_lr_is_exact_at_full_rank_and_improves_with_rank():
    X, y = _data()
    model = TorchModel(_cnn(), loss="cross_entropy", weight_decay=WD)
    dense = _fit(model, X, y, "dense", damping=0.01)
    p = dense.adapter_.n_params
    B = np.random.default_rng(0).standard_normal((p, 3))
    exact = np.linalg.solve(dense.curvature_ + 0.01 * np.eye(p), B)

    def error(solver, **options):
        inf = _fit(model, X, y, solver, damping=0.01, solver_options=options, random_state=0)
        return np.linalg.norm(inf.curvature_solver_.solve(B) - exact) / np.linalg.norm(exact), inf

    full, inf = error("ekfac_lr", rank=p, steps=4)
    assert full < 1e-10 and inf.curvature_solver_.info_["n_products"] == p
    ek, _ = error("ekfac")
    half, _ = error("ekfac_lr", rank=p // 2, steps=4)
    assert half < 0.5 * ek                                   # 0.15 -> 0.008 here
    # the correction follows the damping (refitted), the same random start
    sol = inf.curvature_solver_
    x = sol.redamp(0.5).solve(B)
    np.testing.assert_allclose(x, np.linalg.solve(dense.curvature_ + 0.5 * np.eye(p), B), rtol=1e-9, atol=1e-12)
    # leave-one-out on top: Woodbury on its (here exact) inverse against the explicit down-date
    sol.redamp(0.01)
    J = inf.adapter_.jacobians(X[:2])
    C = inf.engine_.c[:2, None, None] * inf.engine_.W[:2]
    down = dense.curvature_ + 0.01 * np.eye(p) - np.einsum("nkp,nkl,nlq->pq", J, C, J)
    np.testing.assert_allclose(sol.downdated_solve(B[:, 0], J, C), np.linalg.solve(down, B[:, 0]), rtol=1e-8)
    assert np.all(np.isfinite(inf.approx_loocv(response_method="predict_proba")))


def test_ekfac_lr_options_and_auto_damping():
    X, y = _data()
    model = TorchModel(_cnn(), loss="cross_entropy", weight_decay=WD)
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        _fit(model, X, y, "ekfac_lr", solver_options={"rank": 0})
    with pytest.raises(ValueError, match="steps"):
        _fit(model, X, y, "ekfac_lr", solver_options={"steps": 1.5})
    inf = _fit(model, X, y, "ekfac_lr", damping="auto", solver_options={"rank": 8}, random_state=0)
    ek = _fit(model, X, y, "ekfac", damping="auto")
    assert inf.damping_ == ek.damping_
    A = inf.attribute(X[:4], y[:4])
    assert A.shape == (4, 40) and np.all(np.isfinite(A))
    assert inf.curvature_solver_.info_["rank"] == 8


@pytest.mark.parametrize("solver", ["ekfac", "ekfac_lr"])
def test_damping_changed_after_fit_keeps_the_factors(solver):
    X, y = _data()
    model = TorchModel(_cnn(), loss="cross_entropy", weight_decay=WD)
    opts = {"rank": 16} if solver == "ekfac_lr" else {}
    inf = _fit(model, X, y, solver, damping=0.01, solver_options=opts, random_state=0)
    before = inf.curvature_solver_
    A = inf.set_params(damping=0.5).attribute(X[:3], y[:3])
    assert inf.curvature_solver_.layers is before.layers and before.damping == 0.01   # shared, not refitted
    np.testing.assert_allclose(A, _fit(model, X, y, solver, damping=0.5, solver_options=opts, random_state=0)
                               .attribute(X[:3], y[:3]), rtol=1e-9, atol=1e-12 * np.abs(A).max())


@pytest.mark.parametrize("fisher", ["exact", "mc", "empirical"])
def test_curvature_factor_products_are_the_model_products(fisher):
    """``Bᵀ(B V)`` from the kept square-root factor is the model's own curvature product (one
    vector and a block) and ``BᵀB`` the dense curvature, sample weights and MC labels included."""
    X, y = _data()
    w = np.random.default_rng(2).uniform(0.5, 2.0, len(y))
    model = TorchModel(_cnn(), loss="cross_entropy", weight_decay=WD)
    kw = dict(prefit=True, fisher=fisher, random_state=3)
    op = FisherInfluence(model, solver="ekfac", **kw).fit(X, y, sample_weight=w).curvature_solver_.operator
    fac = op.factored()
    p = op.n_params
    V = np.random.default_rng(0).standard_normal((p, 5))
    scale = np.abs(op.matvec(V)).max()
    for v in (V[:, 0], V):
        np.testing.assert_allclose(fac.matvec(v), op.matvec(v), rtol=0, atol=1e-12 * scale)
    dense = FisherInfluence(model, solver="dense", **kw).fit(X, y, sample_weight=w).curvature_
    np.testing.assert_allclose(fac.matvec(np.eye(p)), dense, rtol=0, atol=1e-12 * np.abs(dense).max())
    assert fac.n_matvecs == 6 + p and fac.factor is op.factor


def test_ekfac_lr_products_from_the_factor_equal_the_model_products():
    X, y = _data()
    model = TorchModel(_cnn(), loss="cross_entropy", weight_decay=WD)
    B = np.random.default_rng(0).standard_normal((3, 111))      # p = 111
    sols = {}
    for route in ("model", "factor"):
        inf = _fit(model, X, y, "ekfac_lr", damping=0.01, solver_options={"rank": 24, "products": route},
                   random_state=0)
        sols[route] = inf.curvature_solver_
    x = sols["model"].solve(B.T)
    np.testing.assert_allclose(sols["factor"].solve(B.T), x, rtol=1e-9, atol=1e-12 * np.abs(x).max())
    for route, sol in sols.items():     # the correction is fitted at the first solve
        assert sol.info_["products"] == route and sol.info_["n_products"] == 24
    # re-damped: the correction is refitted from the same kept factor (built once)
    fac = sols["factor"]._factored
    x = sols["model"].redamp(0.3).solve(B.T)
    np.testing.assert_allclose(sols["factor"].redamp(0.3).solve(B.T), x, rtol=1e-9, atol=1e-12 * np.abs(x).max())
    assert sols["factor"]._factored is fac and fac.n_matvecs == 48
    # "auto" picks one of the two; the Hessian has no factor
    auto = _fit(model, X, y, "ekfac_lr", damping=0.01, solver_options={"rank": 24}, random_state=0)
    x = sols["model"].redamp(0.01).solve(B.T)
    np.testing.assert_allclose(auto.curvature_solver_.solve(B.T), x, rtol=1e-9, atol=1e-12 * np.abs(x).max())
    assert auto.curvature_solver_.info_["products"] in ("model", "factor")
    with pytest.raises(ValueError, match="products must be"):
        _fit(model, X, y, "ekfac_lr", solver_options={"products": "gemm"})
    with pytest.raises(ValueError, match="needs a network's Fisher"):
        HessianInfluence(model, prefit=True, solver="ekfac_lr", damping=0.1,
                         solver_options={"products": "factor"}).fit(X, y)
    hess = HessianInfluence(model, prefit=True, solver="ekfac_lr", damping=10.0, solver_options={"rank": 8}).fit(X, y)
    hess.curvature_solver_.solve(B[0])
    assert hess.curvature_solver_.info_["products"] == "model"


@pytest.mark.parametrize("b, R, T, O, D", [(5, 3, 1, 4, 6), (5, 3, 2, 2, 20), (5, 1, 30, 4, 5), (4, 9, 50, 4, 3)])
def test_correction_pass_orders_agree(b, R, T, O, D):
    """The EK-FAC correction ``Σ_ir (Q_Gᵀ S_ir Q_A)²`` by either order of the products (rotating the
    positions first, or each S_ir; chosen by cost: these shapes take each) equals the sum over S."""
    gen = torch.Generator().manual_seed(0)
    a, g = torch.randn(b, T, D, generator=gen, dtype=torch.float64), torch.randn(b, R, T, O, generator=gen,
                                                                                  dtype=torch.float64)
    qa = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=torch.float64))[0]
    qg = torch.linalg.qr(torch.randn(O, O, generator=gen, dtype=torch.float64))[0]
    S = torch.einsum("brto,btd->brod", g, a)
    expected = ((qg.T @ S @ qa) ** 2).sum(dim=(0, 1))
    from skinfluence.models.torch import TorchAdapter

    torch.testing.assert_close(TorchAdapter._rotated_squares(a, g, qa, qg), expected, rtol=1e-12, atol=1e-12)
