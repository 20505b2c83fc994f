"""Generalized influence solvers against dense references on a small trained network."""

import warnings

import numpy as np
import pytest
import torch

from skinfluence.curvature.gif import STRATEGIES, GIFSolver, gif_flow, gif_lissa
from skinfluence.curvature.operators import CurvatureOperator, model_curvature
from skinfluence.exceptions import SolverDivergenceError
from skinfluence.models import make_adapter
from skinfluence.models.torch import TorchModel

from conftest import lbfgs, penalised_cross_entropy, rel_err, tanh_mlp

WD = 1e-2
DAMP = 0.05          # keeps H_JᵀH_J's condition small enough for LiSSA to converge in a test


@pytest.fixture(scope="module")
def net_problem():
    """A 4-5-3 tanh network trained to its optimum; its dense Hessian and a removal gradient."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 4))
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int) + (X[:, 2] > 0.8)
    net = tanh_mlp(4, 5, 3)
    lbfgs(net.parameters(), penalised_cross_entropy(net, X, y, WD), rounds=3, max_iter=2000,
          tolerance_grad=1e-12, tolerance_change=1e-15)
    ad = make_adapter(TorchModel(net, weight_decay=WD))
    Z, ye = ad.design(X), ad.encode_target(y)
    c = np.full(len(y), 1 / len(y))
    op = model_curvature(ad, Z, ye, c, "hessian").add_diagonal(ad.penalty.hessian_diagonal())
    H = op.dense()
    idx = np.arange(10)
    g = ad.gradients(Z[idx], c[idx, None] * ad.loss.gradient(ye[idx], ad.eta(Z[idx]))).sum(0)
    mask = np.zeros(ad.n_params, bool)
    mask[np.random.default_rng(1).choice(ad.n_params, 15, replace=False)] = True
    return dict(X=X, y=y, net=net, adapter=ad, Z=Z, y_enc=ye, c=c, op=op, H=H, g=g, mask=mask, idx=idx)


def _reference(H, g, J, strategy):
    """The strategies' closed forms from the dense Hessian."""
    x = np.zeros_like(g)
    if strategy == "gif":
        x[J] = np.linalg.solve(H[:, J].T @ H[:, J], H[:, J].T @ g)
    elif strategy in ("freezing", "second_order"):
        x[J] = np.linalg.solve(H[np.ix_(J, J)], g[J])
    elif strategy == "projecting":
        x[J] = np.linalg.solve(H, g)[J]
    else:
        x = np.linalg.solve(H, g)
    return x


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_exact_matches_closed_form(net_problem, strategy):
    P = net_problem
    H = P["H"] + DAMP * np.eye(len(P["g"]))
    x = GIFSolver(P["op"], subset=P["mask"], strategy=strategy, method="exact", damping=DAMP).solve(P["g"])
    assert rel_err(x, _reference(H, P["g"], P["mask"], strategy)) < 1e-10
    if strategy != "full":
        assert not x[~P["mask"]].any()


@pytest.mark.parametrize("strategy", ["gif", "freezing", "projecting", "full"])
def test_lissa_to_convergence_equals_exact_least_squares(net_problem, strategy):
    P = net_problem
    dense = CurvatureOperator.from_matrix(P["H"])          # the same matrix, cheap products
    exact = GIFSolver(dense, subset=P["mask"], strategy=strategy, method="exact", damping=DAMP).solve(P["g"])
    solver = GIFSolver(dense, subset=P["mask"], strategy=strategy, method="lissa", damping=DAMP,
                       max_iter=200_000, tol=1e-13)
    x = solver.solve(P["g"])
    assert solver.info_["converged"]
    assert rel_err(x, exact) <= 1e-4


def test_lissa_on_model_products_follows_the_dense_iteration(net_problem):
    """The Hessian-vector products of the network give the same iterates as its dense matrix;
    with many right-hand sides LiSSA takes its products from the dense curvature instead."""
    P = net_problem
    p = P["adapter"].n_params
    kw = dict(subset=P["mask"], damping=DAMP, max_iter=p // 2, normalizer=2.0)   # 2·max_iter ≤ p products
    solver = GIFSolver(P["op"], **kw)
    a = solver.solve(P["g"])
    b = GIFSolver(CurvatureOperator.from_matrix(P["H"]), **kw).solve(P["g"])
    assert rel_err(a, b) < 1e-9
    assert solver.operator.n_matvecs > 0                          # matrix-free
    B = P["g"][:, None] * np.array([1.0, -2.0, 0.5])
    solver = GIFSolver(P["op"], **kw)
    A = solver.solve(B)
    np.testing.assert_allclose(A, GIFSolver(CurvatureOperator.from_matrix(P["H"]), **kw).solve(B),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(A[:, 1], -2 * a, rtol=1e-9, atol=1e-12)
    assert solver.operator.n_matvecs == 0                         # the dense curvature's products


def test_all_parameters_recover_the_ordinary_influence_step(net_problem):
    """J = all: GIF's least squares is H⁻¹g, the engine's infinitesimal-jackknife step."""
    from skinfluence import HessianInfluence

    P = net_problem
    inf = HessianInfluence(TorchModel(P["net"], weight_decay=WD), prefit=True, solver="dense",
                           damping=DAMP).fit(P["X"], P["y"])
    ordinary = inf.parameter_change(P["idx"], method="ij")
    op = CurvatureOperator.from_matrix(inf.curvature_)
    v = inf.training_gradients(P["idx"]).sum(0)
    for method in ("exact", "lissa"):
        solver = GIFSolver(op, strategy="gif", method=method, damping=DAMP, max_iter=100_000, tol=1e-13)
        assert rel_err(solver.solve(v), ordinary) < 1e-6


def test_downdated_solve_uses_the_retained_curvature(net_problem):
    P = net_problem
    ad, idx = P["adapter"], P["idx"]
    U = ad.jacobians(P["Z"][idx])
    C = P["c"][idx, None, None] * ad.loss.curvature(P["y_enc"][idx], ad.eta(P["Z"][idx]), "hessian")
    D = np.einsum("mkp,mkl,mlq->pq", U, C, U)
    H = P["H"] + DAMP * np.eye(len(P["g"]))
    J, g = P["mask"], P["g"]
    x = GIFSolver(P["op"], subset=J, method="exact", damping=DAMP).downdated_solve(g, U, C)
    assert rel_err(x, _reference(H - D, g, J, "gif")) < 1e-10
    # second order (Basu et al.): x1 + H_JJ⁻¹ (D x1)_J, with x1 the first-order step
    x2 = GIFSolver(P["op"], subset=J, strategy="second_order", method="exact", damping=DAMP).downdated_solve(g, U, C)
    x1 = _reference(H, g, J, "freezing")
    assert rel_err(x2, x1 + _reference(H, D @ x1, J, "freezing")) < 1e-10


def test_diverging_run_restarts_and_converges():
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.standard_normal((20, 20)))[0]
    H = Q @ np.diag(np.linspace(0.5, 10.0, 20)) @ Q.T        # σ_max = 10: c = 1 diverges
    g = rng.standard_normal(20)
    mask = np.arange(20) < 12
    x, info = gif_lissa(H.__matmul__, g, mask, normalizer=1.0, normalizer_step=3.0,
                        max_iter=50_000, tol=1e-14)
    assert info["n_restarts"] >= 2 and info["converged"]
    sigma = np.linalg.norm(H[:, mask], 2)                     # converges iff c > σ_max(H_J)/√2
    assert info["normalizer"] == 1.0 + 3.0 * info["n_restarts"]
    assert info["normalizer"] > sigma / np.sqrt(2) >= info["normalizer"] - 3.0
    ref = np.linalg.lstsq(H[:, mask], g, rcond=None)[0]
    assert rel_err(x[mask], ref) < 1e-8 and not x[~mask].any()


def test_divergence_beyond_max_restarts_raises_and_truncation_does_not():
    H = np.diag([30.0, 1.0, 0.5])
    g = np.ones(3)
    with pytest.raises(SolverDivergenceError, match="restarts"):
        gif_lissa(H.__matmul__, g, np.ones(3, bool), normalizer_step=1.0, max_restarts=3)
    x, info = gif_lissa(H.__matmul__, g, np.ones(3, bool), normalizer=40.0, max_iter=3)
    assert info["n_iter"] == 3 and not info["converged"] and np.all(np.isfinite(x))


def _flow_reference(H, g, J, rows, horizon):
    """The gradient flow's filter (1 − e^{−Tσ²})/σ² on A = H[rows, J], from its SVD."""
    A = H[np.ix_(rows, J)]
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    x = np.zeros_like(g)
    x[J] = Vt.T @ (-np.expm1(-horizon * s**2) / s * (U.T @ g[rows]))
    return x


def _spread_spectrum(p=60, seed=0):
    """A symmetric matrix with σ_max 7 (LiSSA at c = 1 diverges) and eigenvalues down to 1e-4."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((p, p)))[0]
    ev = np.concatenate([[7.0, 3.0, 1.5], np.geomspace(0.5, 1e-4, p - 3)])
    return Q @ np.diag(ev) @ Q.T, rng.standard_normal(p), rng.random(p) < 0.4


@pytest.mark.parametrize("square", [False, True])
def test_flow_is_the_dense_filter_and_the_limit_of_lissa_counted_in_units_of_c(square):
    """gif_flow's x is (1 − e^{−Tσ²})/σ² on A's singular directions, T = max_iter/normalizer²;
    LiSSA, which must restart to c = 6 here, reaches it when its steps are counted in units
    of c (36 × 100 steps), and misses it with the same 100 steps."""
    H, g, J = _spread_spectrum()
    rows = J if square else np.ones(len(g), bool)
    ref = _flow_reference(H, g, J, rows, 100.0)
    x, info = gif_flow(H.__matmul__, g, J, rows=None if not square else J, max_iter=100)
    assert rel_err(x, ref) < 1e-9 and info["converged"] and info["n_restarts"] == 0
    assert info["n_iter"] < 100 and not x[~J].any()
    x4, _ = gif_flow(H.__matmul__, g, J, rows=None if not square else J, max_iter=400, normalizer=2.0)
    assert rel_err(x4, ref) < 1e-9                                   # T = 400 / 2² is the same
    X, _ = gif_flow(H.__matmul__, np.column_stack([g, -3 * g]), J, rows=None if not square else J, max_iter=100)
    assert rel_err(X[:, 1], -3 * ref) < 1e-9
    if not square:
        scaled, info = gif_lissa(H.__matmul__, g, J, normalizer=6.0, max_iter=3600)
        fixed, info1 = gif_lissa(H.__matmul__, g, J, max_iter=100)
        assert info["normalizer"] == info1["normalizer"] == 6.0            # the restart 1 → 6
        assert rel_err(scaled, ref) < 1e-3 < 0.1 < rel_err(fixed, ref)


def test_estimator_lanczos_removal_is_the_dense_flow(net_problem):
    """The default method: a class removal's step is the flow's filter on the retained
    curvature (down-dated by products), whatever normaliser LiSSA would have needed."""
    P = net_problem
    J = P["mask"]
    idx = np.flatnonzero(P["y"] == 2)
    _, ref, gif = _estimators(P, selection=lambda ad, X, y: J.copy(), max_iter=50)
    gif.fit(P["X"], P["y"], selection_rows=idx)
    assert gif.method == "lanczos"
    v = ref.training_gradients(idx).sum(0)
    M = _retained_curvature(ref, idx)
    assert rel_err(gif.parameter_change(idx), _flow_reference(M, v, J, np.ones(len(v), bool), 50.0)) < 1e-8
    assert gif.n_restarts_ == 0 and gif.normalizer_ == 1.0 and 0 < gif.n_iter_ <= J.sum()


def test_truncated_solution_is_shrunk_towards_zero(net_problem):
    """Truncation regularises: few steps give a shorter step than the exact least squares."""
    P = net_problem
    op = CurvatureOperator.from_matrix(P["H"])
    exact = GIFSolver(op, subset=P["mask"], method="exact").solve(P["g"])
    short = GIFSolver(op, subset=P["mask"], max_iter=10, normalizer=2.0)
    x = short.solve(P["g"])
    assert not short.info_["converged"]
    assert np.linalg.norm(x) < np.linalg.norm(exact)


def test_bad_options_are_refused(net_problem):
    op = net_problem["op"]
    with pytest.raises(ValueError, match="strategy"):
        GIFSolver(op, strategy="newton")
    with pytest.raises(ValueError, match="method"):
        GIFSolver(op, method="cg")
    with pytest.raises(ValueError, match="mask"):
        GIFSolver(op, subset=np.ones(3, bool))
    with pytest.raises(ValueError, match="max_iter"):
        GIFSolver(op, max_iter=0)


# ------------------------------------------------------------------ the estimator
def _estimators(P, **kw):
    from skinfluence import GeneralizedInfluence, HessianInfluence

    est = TorchModel(P["net"], weight_decay=WD)
    ref = HessianInfluence(est, prefit=True, solver="dense", damping=DAMP).fit(P["X"], P["y"])
    gif = GeneralizedInfluence(est, prefit=True, damping=DAMP, **kw)
    return est, ref, gif


def _retained_curvature(ref, idx):
    """Dense M − Σ_U c_i J_iᵀ W_i J_i − share·∇²π (damping included): the Newton step's matrix."""
    m, ad = ref.engine_, ref.adapter_
    J = ad.jacobians(m.Z[idx])
    D = np.einsum("mkp,mkl,mlq->pq", J, m.c[idx, None, None] * m.W[idx], J)
    return ref.curvature_ + DAMP * np.eye(ad.n_params) - D - np.diag(m.share[idx].sum() * ad.penalty.hessian_diagonal())


def test_estimator_with_all_parameters_is_the_ordinary_influence(net_problem):
    P = net_problem
    _, ref, gif = _estimators(P, ratio=1.0, method="exact")
    gif.fit(P["X"], P["y"])
    assert gif.parameter_mask_.all() and gif.solver_ == "gif_exact"
    assert rel_err(gif.parameter_change(P["idx"], method="ij"), ref.parameter_change(P["idx"], method="ij")) < 1e-10
    # the Newton step: the exact retained curvature (the dense solver's Woodbury path drops
    # the penalty share's diagonal, hence the comparison with the closed form)
    v = ref.training_gradients(P["idx"]).sum(0)
    ns = np.linalg.solve(_retained_curvature(ref, P["idx"]), v)
    assert rel_err(gif.parameter_change(P["idx"]), ns) < 1e-10


@pytest.mark.parametrize("strategy", ["gif", "freezing", "projecting"])
def test_estimator_strategies_on_a_given_subset(net_problem, strategy):
    """Every query is restricted: parameter_change is the strategy's closed form on J."""
    P = net_problem
    J = P["mask"]
    _, ref, gif = _estimators(P, selection=lambda ad, X, y: J.copy(), method="exact", strategy=strategy)
    gif.fit(P["X"], P["y"])
    v = ref.training_gradients(P["idx"]).sum(0)
    H = ref.curvature_ + DAMP * np.eye(len(v))
    assert rel_err(gif.parameter_change(P["idx"], method="ij"), _reference(H, v, J, strategy)) < 1e-10
    # the Newton step down-dates the removed rows by Jacobian products (no per-sample Jacobians)
    ns = _reference(_retained_curvature(ref, P["idx"]), v, J, strategy)
    assert rel_err(gif.parameter_change(P["idx"]), ns) < 1e-10
    A = gif.attribute(P["X"][:3], P["y"][:3])                  # attribution through the same solver
    G = ref.adapter_.gradients(P["Z"][:3], ref.adapter_.loss.gradient(P["y_enc"][:3], ref.adapter_.eta(P["Z"][:3])))
    V = ref.training_gradients(np.arange(len(P["y"])))
    X_J = np.column_stack([_reference(H, g, J, strategy) for g in G])
    assert np.allclose(A, X_J.T @ V.T, rtol=1e-8, atol=1e-12)


def test_lissa_removal_of_a_whole_class_equals_the_dense_iteration(net_problem):
    """Class removal on a net (allowed: its outputs stay), LiSSA on the down-dated curvature
    by products: the same iterates as the dense retained matrix."""
    P = net_problem
    J = P["mask"]
    idx = np.flatnonzero(P["y"] == 2)
    _, ref, gif = _estimators(P, selection=lambda ad, X, y: J.copy(), method="lissa", max_iter=50)
    gif.fit(P["X"], P["y"], selection_rows=idx)
    v = ref.training_gradients(idx).sum(0)
    M = _retained_curvature(ref, idx)
    x, _ = gif_lissa(lambda V: M @ V, v, J, max_iter=50)
    assert rel_err(gif.parameter_change(idx), x) < 1e-8


def test_freezing_equals_the_dense_solver_with_active_subset(net_problem):
    from skinfluence.curvature.solvers import make_solver

    P = net_problem
    J = P["mask"]
    _, ref, gif = _estimators(P, selection=lambda ad, X, y: J.copy(), method="exact", strategy="freezing")
    gif.fit(P["X"], P["y"])
    dense = make_solver("dense", ref.curvature_, damping=DAMP, active=J)
    v = ref.training_gradients(P["idx"]).sum(0)
    assert rel_err(gif.parameter_change(P["idx"], method="ij"), dense.solve(v)) < 1e-10


def test_estimator_lissa_reports_and_never_modifies_the_users_net(net_problem):
    P = net_problem
    before = [p.detach().clone() for p in P["net"].parameters()]
    est, _, gif = _estimators(P, ratio=0.3, method="lissa", max_iter=30, normalizer=2.0, random_state=0)
    gif.fit(P["X"], P["y"], selection_rows=P["idx"])
    new = gif.unlearn(P["idx"], method="ij")
    assert gif.n_iter_ == 30 and gif.n_restarts_ == 0 and gif.normalizer_ == 2.0 and gif.residual_ > 0
    assert set(gif.selection_table_["layer"]) == {"0", "2"}
    moved = gif.model_adapter(new).theta != gif.adapter_.theta
    assert moved.any() and not moved[~gif.parameter_mask_].any()
    assert all(torch.equal(a, b) for a, b in zip(before, P["net"].parameters()))
    assert new is not est and new.module is not P["net"]


def test_estimator_on_a_linear_model_and_validation():
    from sklearn.base import clone
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from skinfluence import GeneralizedInfluence, HessianInfluence

    X, y = load_iris(return_X_y=True)
    lr = LogisticRegression(C=1.0, max_iter=5000, tol=1e-12)
    ref = HessianInfluence(lr).fit(X, y)
    gif = GeneralizedInfluence(lr, ratio=1.0, method="exact").fit(X, y)
    idx = np.arange(0, 150, 10)
    assert rel_err(gif.parameter_change(idx, method="ij"), ref.parameter_change(idx, method="ij")) < 1e-8
    half = GeneralizedInfluence(lr, ratio=0.5, selection="highest_outputs", method="exact").fit(X, y)
    theta = half.adapter_.theta
    assert np.abs(theta[half.parameter_mask_]).min() >= np.abs(theta[~half.parameter_mask_]).max()
    assert clone(half).get_params()["ratio"] == 0.5
    with pytest.raises(ValueError, match="ratio"):
        GeneralizedInfluence(lr, ratio=1.5).fit(X, y)
    with pytest.raises(ValueError, match="solver"):
        GeneralizedInfluence(lr, solver="cg").fit(X, y)
    # GIF's method had the name solver before: still accepted, with a FutureWarning
    with pytest.warns(FutureWarning, match="method='exact'"):
        old = GeneralizedInfluence(lr, ratio=0.5, solver="exact").fit(X, y)
    assert old.solver_ == "gif_exact"
    np.testing.assert_array_equal(old.parameter_change(idx), half.parameter_change(idx))
    # solver_options and removal_size as for the other estimators; GIF's own parameters
    # are set as parameters
    capped = GeneralizedInfluence(lr, ratio=0.5, max_iter=5, normalizer="auto",
                                  solver_options={"max_restarts": 0}, removal_size=10).fit(X, y)
    assert capped.curvature_solver_.lissa_options["max_restarts"] == 0
    with pytest.raises(ValueError, match="parameters of GeneralizedInfluence"):
        GeneralizedInfluence(lr, solver_options={"max_iter": 5}).fit(X, y)
    with pytest.raises(ValueError, match="not options of solver='gif'"):
        GeneralizedInfluence(lr, solver_options={"rank": 5}).fit(X, y)


def test_the_subset_is_selected_once_per_fit():
    """Polishing and Newton iterations rebuild the solver at new θ with the J of the fit."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from skinfluence import GeneralizedInfluence

    X, y = load_iris(return_X_y=True)
    calls = []

    def rule(adapter, X_sel, y_sel):
        calls.append(adapter.theta.copy())
        return np.arange(adapter.n_params) % 2 == 0

    gif = GeneralizedInfluence(LogisticRegression(max_iter=3), selection=rule, method="exact",
                               polish=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # lbfgs's ConvergenceWarning
        gif.fit(X, y)
        gif.unlearn([0, 1], steps=3)      # two more engines at new θ, each with its solver
    assert gif.update_info_["steps"] >= 2 and len(calls) == 1
    np.testing.assert_array_equal(gif.curvature_solver_.active, gif.parameter_mask_)


def test_auto_normalizer_converges_without_restarts_on_a_badly_scaled_curvature():
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.standard_normal((15, 15)))[0]
    H = Q @ np.diag(np.geomspace(10.0, 300.0, 15)) @ Q.T         # additive restarts from 1 would need ~40
    g = rng.standard_normal(15)
    solver = GIFSolver(CurvatureOperator.from_matrix(H), normalizer="auto", max_iter=100_000, tol=1e-14,
                       random_state=0)
    x = solver.solve(g)
    assert solver.info_["n_restarts"] == 0 and solver.info_["converged"]
    assert rel_err(x, np.linalg.solve(H, g)) < 1e-8


def test_fisher_curvature_with_all_parameters_is_fisher_influence(net_problem):
    from skinfluence import FisherInfluence, GeneralizedInfluence

    P = net_problem
    est = TorchModel(P["net"], weight_decay=WD)
    ref = FisherInfluence(est, prefit=True, solver="dense").fit(P["X"], P["y"])
    gif = GeneralizedInfluence(est, prefit=True, curvature="fisher", ratio=1.0, method="exact").fit(P["X"], P["y"])
    assert rel_err(gif.parameter_change(P["idx"], method="ij"), ref.parameter_change(P["idx"], method="ij")) < 1e-10
