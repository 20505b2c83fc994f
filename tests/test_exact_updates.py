"""Updates that must equal exact refits: converged unlearning and relabelling, ℓ1 and
mean-scaled leave-one-out, and the L-BFGS finisher of networks."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import ElasticNet, Lasso, LogisticRegression, PoissonRegressor
from sklearn.preprocessing import StandardScaler

from skinfluence import FisherInfluence, HessianInfluence, InfluenceWarning
from skinfluence.models.torch import TorchModel

from conftest import coef_vector, refit_without

NEWTON = dict(solver="newton-cholesky", tol=1e-14, max_iter=1000)


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_relabel_to_convergence_equals_the_refit_where_one_step_fails(cancer):
    X, y = cancer
    est = LogisticRegression(**NEWTON)
    inf = FisherInfluence(est, polish=True).fit(X, y)
    idx = np.random.default_rng(0).choice(len(y), 20, replace=False)
    y2 = y.copy()
    y2[idx] = 1 - y[idx]
    exact = clone(est).fit(X, y2)
    with pytest.warns(InfluenceWarning, match="steps='converge'"):
        one = inf.relabel(idx, 1 - y[idx])
    assert inf.update_info_["decrement_ratio"] > 1
    conv = inf.relabel(idx, 1 - y[idx], steps="converge")
    info = inf.update_info_
    assert info["converged"] and info["steps"] > 2 and info["one_step_error"] > 0.5
    np.testing.assert_allclose(coef_vector(conv), coef_vector(exact), atol=1e-6)
    assert conv.score(X, y) == exact.score(X, y) and abs(one.score(X, y) - exact.score(X, y)) > 0.3
    np.testing.assert_array_equal(inf.estimator_.coef_, inf.adapter_.with_params(inf.adapter_.theta).coef_)


def test_a_fixed_number_of_steps_lies_between(cancer):
    X, y = cancer
    inf = FisherInfluence(LogisticRegression(**NEWTON)).fit(X, y)
    idx = np.arange(0, 60, 3)
    exact = refit_without(LogisticRegression(**NEWTON), X, y, idx)
    errors = [np.abs(coef_vector(inf.unlearn(idx, steps=k)) - coef_vector(exact)).max() for k in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2] and inf.update_info_["steps"] == 3


@pytest.mark.parametrize("est, y_of", [
    (PoissonRegressor(alpha=1e-3, **NEWTON), lambda y: y),
    (Lasso(alpha=0.5, tol=1e-14, max_iter=1_000_000), lambda y: y),
])
def test_unlearn_to_convergence_equals_the_refit(est, y_of):
    X, y = load_diabetes(return_X_y=True)
    y = y_of(y)
    inf = HessianInfluence(est, polish=True).fit(X, y)
    idx = np.random.default_rng(1).choice(len(y), len(y) // 10, replace=False)
    exact = refit_without(est, X, y, idx)
    conv = inf.unlearn(idx, steps="converge")
    assert inf.update_info_["converged"]
    scale = np.abs(coef_vector(exact) - coef_vector(inf.estimator_)).max()
    assert np.abs(coef_vector(conv) - coef_vector(exact)).max() < 1e-6 * max(scale, 1.0)


def test_elastic_net_loo_equals_unlearn_and_refits_when_the_support_changes():
    X, y = load_diabetes(return_X_y=True)
    est = ElasticNet(alpha=0.01, l1_ratio=0.5, tol=1e-14, max_iter=1_000_000)
    inf = FisherInfluence(est, polish=True).fit(X, y)
    loo = inf.approx_loocv()
    rows = np.arange(0, len(y), 3)
    one = np.array([inf.unlearn([i]).predict(X[i:i + 1])[0] for i in rows])
    np.testing.assert_allclose(loo[rows], one, rtol=1e-9, atol=1e-9)
    support = inf.estimator_.coef_ != 0
    changed = 0
    for i in range(0, len(y), 9):
        ref = refit_without(est, X, y, [i])
        changed += np.any((ref.coef_ != 0) != support)
        assert loo[i] == pytest.approx(ref.predict(X[i:i + 1])[0], abs=1e-6)
    assert changed > 0  # the check above covers rows whose support changes


def test_mean_scaled_loo_keeps_the_penalty_share():
    """PoissonRegressor averages its deviance: removing a row also removes 1/n of the
    penalty's relative weight; the closed form equals the one-row down-date exactly."""
    X, y = load_diabetes(return_X_y=True)
    inf = HessianInfluence(PoissonRegressor(alpha=0.1, **NEWTON)).fit(X[:100], y[:100])
    loo = inf.loo_decision()[:, 0]
    ad = inf.adapter_
    one = [ad.eta(ad.design(X[i:i + 1]), ad.theta + inf.parameter_change([i]))[0, 0] for i in range(100)]
    np.testing.assert_allclose(loo, one, rtol=1e-10)


def _adam_trained_net():
    """A small tanh net after a short minibatch Adam run: ``(X, y, net)``, far from its optimum."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] ** 2 > 0.5).astype(int)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).double()
    opt = torch.optim.Adam(net.parameters(), lr=0.05, weight_decay=1e-3)
    for _ in range(60):                                  # a short minibatch-style training
        idx = torch.as_tensor(rng.choice(200, 32))
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.as_tensor(X)[idx]), torch.as_tensor(y)[idx])
        loss.backward()
        opt.step()
    return X, y, net


def test_lbfgs_finishes_an_adam_trained_net():
    X, y, net = _adam_trained_net()
    model = TorchModel(net, loss="cross_entropy", weight_decay=1e-3)
    with pytest.warns(InfluenceWarning, match="polish='lbfgs'"):
        raw = FisherInfluence(model, prefit=True).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InfluenceWarning)
        done = FisherInfluence(model, prefit=True, polish="lbfgs").fit(X, y)
    assert raw.convergence_ratio_ > 1 and done.convergence_ratio_ < 0.05
    assert done.polish_info_["converged"] and done.n_polish_steps_ == 0
    # the cap is honoured, and a finish stopped by it says so, with its figures
    with pytest.warns(InfluenceWarning, match=r"finished by L-BFGS \(3 of at most 3 iterations") as said:
        capped = FisherInfluence(model, prefit=True, polish="lbfgs",
                                 polish_options={"max_iter": 3, "tol": 1e-6}).fit(X, y)
    # the advice follows how it stopped: the cap, not the tolerance
    said = " ".join(str(w.message) for w in said)
    assert "Raise polish_options['max_iter']" in said and "tol']" not in said
    with pytest.warns(InfluenceWarning, match=r"gradient reached tol .* lower polish_options\['tol'\]"):
        loose = FisherInfluence(model, prefit=True, polish="lbfgs", polish_options={"tol": 0.5}).fit(X, y)
    assert loose.polish_info_["converged"] and loose.convergence_ratio_ > 0.05
    assert capped.polish_info_["iterations"] == 3 and not capped.polish_info_["converged"]
    assert capped.polish_info_["evaluations"] < 3 * 5
    with pytest.raises(ValueError, match=r"polish_options \['maxiter'\] are not options"):
        FisherInfluence(model, prefit=True, polish="lbfgs", polish_options={"maxiter": 3}).fit(X, y)
    first = next(net.parameters()).detach().clone()
    assert torch.equal(next(model.module.parameters()), first)   # the user's net is untouched


@pytest.mark.parametrize("cls", [FisherInfluence, HessianInfluence])
def test_lbfgs_finish_builds_the_curvature_once(cls, monkeypatch):
    """The finisher needs no curvature: the fit builds it once, where L-BFGS stops."""
    from skinfluence.estimators._model import InfluenceEngine

    X, y, net = _adam_trained_net()
    built, original = [], InfluenceEngine.curvature_operator

    def spy(engine, dense):
        built.append(engine.adapter.theta.copy())
        return original(engine, dense)

    monkeypatch.setattr(InfluenceEngine, "curvature_operator", spy)
    inf = cls(TorchModel(net, weight_decay=1e-3), prefit=True, polish="lbfgs").fit(X, y)
    assert inf.convergence_ratio_ < 0.05 and inf.n_polish_steps_ == 0
    assert len(built) == 1
    np.testing.assert_array_equal(built[0], inf.adapter_.theta)   # at the finished parameters


def test_lbfgs_finish_ends_with_exact_newton_steps(monkeypatch):
    """L-BFGS stopped by its cap within a typical change of the optimum: one exact Newton
    step with the kept Hessian squares the distance (one more curvature); a Fisher fit,
    whose Gauss–Newton steps need not converge there, is only checked (one curvature)."""
    from skinfluence.estimators._model import InfluenceEngine

    X, y, net = _adam_trained_net()
    built, original = [], InfluenceEngine.curvature_operator
    monkeypatch.setattr(InfluenceEngine, "curvature_operator",
                        lambda engine, dense: built.append(1) or original(engine, dense))
    options = {"max_iter": 70, "tol": 1e-3}
    fisher = FisherInfluence(TorchModel(net, weight_decay=1e-3), prefit=True, polish="lbfgs",
                             polish_options=options)
    with pytest.warns(InfluenceWarning, match=r"70 of at most 70 iterations"):
        fisher.fit(X, y)
    assert 0.05 < fisher.convergence_ratio_ <= 1 and fisher.n_polish_steps_ == 0 and len(built) == 1
    built.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", InfluenceWarning)
        hess = HessianInfluence(TorchModel(net, weight_decay=1e-3), prefit=True, polish="lbfgs",
                                polish_options=options).fit(X, y)
    assert hess.polish_info_["iterations"] == 70 and not hess.polish_info_["converged"]
    assert hess.n_polish_steps_ == 1 and len(built) == 2
    assert hess.convergence_ratio_ < 0.02


def test_lbfgs_finish_says_early_when_the_cap_is_out_of_reach():
    """A tolerance the cap cannot reach at L-BFGS's rate so far: it stops from a quarter of
    the cap (and 50 iterations) on, and the warning says how many iterations it would need,
    from what rate."""
    X, y, net = _adam_trained_net()
    with pytest.warns(InfluenceWarning, match=r"stopped early: its gradient fell from [0-9.]+ to [0-9.]+ "
                                              r"of a row's in 50 iterations, at which rate it would need about"):
        inf = FisherInfluence(TorchModel(net, weight_decay=1e-3), prefit=True, polish="lbfgs",
                              polish_options={"max_iter": 200, "tol": 1e-30}).fit(X, y)
    info = inf.polish_info_
    assert info["iterations"] == 50 and not info["converged"]
    assert info["projected_iterations"] > 1.5 * 200 and info["start_ratio"] > info["best_ratio"]


def _converged_net(seed=1, n=240, hidden=6, wd=3e-2):
    """A tiny tanh net trained by full-batch L-BFGS to a gradient of ~1e-12 on mean
    cross-entropy + wd/2 ‖θ‖²: ``(X, y, net, objective, train)``; ``objective(θ, rows)`` is the
    mean over ``rows`` + the penalty, of a flat θ; ``train(θ, rows)`` minimises it from θ."""
    from torch.func import functional_call

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    y = (X[:, 0] - X[:, 1] ** 2 + 0.3 * rng.standard_normal(n) > -0.5).astype(int)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 2)).double()
    names = [k for k, _ in net.named_parameters()]
    shapes = [q.shape for q in net.parameters()]
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)

    def objective(theta, rows):
        params, start = {}, 0
        for k, s in zip(names, shapes):
            params[k] = theta[start:start + s.numel()].view(s)
            start += s.numel()
        out = functional_call(net, params, (Xt[rows],))
        return torch.nn.functional.cross_entropy(out, yt[rows]) + wd / 2 * (theta ** 2).sum()

    def train(theta, rows):
        theta = theta.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([theta], max_iter=5000, history_size=50, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-13, tolerance_change=1e-16)

        def closure():
            opt.zero_grad()
            f = objective(theta, rows)
            f.backward()
            return f
        opt.step(closure)
        return theta.detach()

    theta = train(torch.cat([q.detach().ravel() for q in net.parameters()]), np.arange(n))
    torch.nn.utils.vector_to_parameters(theta, net.parameters())
    return X, y, net, objective, train


@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_net_removal_with_the_exact_hessian_downdate(solver, monkeypatch):
    """With ``EXACT_HESSIAN_DOWNDATE``, HessianInfluence's "ns" removal on a network: M_{-U}
    is the exact Hessian of the retained rows' objective (the rows' second-derivative term
    down-dated too, by products for CG), so the step is one dense Newton step on that
    objective (torch.func.hessian); here it lands within its second-order error of
    retraining without the rows. Off (the default), the step is the Gauss–Newton down-date's."""
    from torch.func import grad, hessian

    from skinfluence.estimators import _updates

    monkeypatch.setattr(_updates, "EXACT_HESSIAN_DOWNDATE", True)

    X, y, net, objective, train = _converged_net()
    n, wd = len(y), 3e-2
    idx = np.random.default_rng(1).choice(n, 12, replace=False)
    keep, everything = np.setdiff1d(np.arange(n), idx), np.arange(n)
    theta = torch.cat([q.detach().ravel() for q in net.parameters()])
    assert grad(objective)(theta, everything).norm() < 1e-7
    # the library's objective is Σ_i ℓ_i / n + wd/2 ‖θ‖²; without U it is (n − m)/n ·
    # objective(θ, keep): M_{-U} is that one's Hessian, v_U the removed part's gradient
    share = (n - len(idx)) / n
    M_U = share * hessian(objective)(theta, keep)
    v_U = grad(objective)(theta, everything) - share * grad(objective)(theta, keep)
    exact = torch.linalg.solve(M_U, v_U).numpy()
    inf = HessianInfluence(TorchModel(net, weight_decay=wd), prefit=True, solver=solver, solver_options=(
        {"tol": 1e-13} if solver == "cg" else None)).fit(X, y)
    step = inf.parameter_change(idx)
    np.testing.assert_allclose(step, exact, rtol=1e-7, atol=1e-8 * np.abs(exact).max())
    # the step with the Gauss–Newton down-date alone, M − Σ_U c_i J_iᵀ W_i J_i − s_U wd I
    # (the one taken before), is another step: the term matters here
    ad = inf.adapter_
    J = ad.jacobians(ad.design(X[idx]))
    M = hessian(objective)(theta, everything).numpy()
    GN_U = np.einsum("mkp,mkl,mlq->pq", J, inf.engine_.W[idx] / n, J) + len(idx) / n * wd * np.eye(len(theta))
    gauss_newton = np.linalg.solve(M - GN_U, v_U.numpy())
    assert np.linalg.norm(gauss_newton - exact) > 1e-3 * np.linalg.norm(exact)
    monkeypatch.setattr(_updates, "EXACT_HESSIAN_DOWNDATE", False)
    np.testing.assert_allclose(inf.parameter_change(idx), gauss_newton, rtol=1e-7,
                               atol=1e-8 * np.abs(gauss_newton).max())
    monkeypatch.setattr(_updates, "EXACT_HESSIAN_DOWNDATE", True)
    # retraining without the rows: one Newton step errs at second order (here 4% of the change)
    refit = (train(theta, keep) - theta).numpy()
    assert grad(objective)(torch.as_tensor(theta.numpy() + refit), keep).norm() < 1e-7
    assert np.linalg.norm(step - refit) < 0.06 * np.linalg.norm(refit)


@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_removal_from_a_sampled_curvature_downdates_what_the_sample_holds(solver):
    """With a curvature from a few sampled rows, the removal step takes out what the sample
    holds of the removed rows (their importance-weighted terms, none for rows not sampled):
    the sampled Fisher of the retained rows, positive definite, where subtracting the rows'
    exact terms would leave an indefinite matrix (CG met negative curvature)."""
    from skinfluence.sampling import RandomSampler

    X, y, net, _, _ = _converged_net()
    n, wd = len(y), 3e-2
    model = TorchModel(net, weight_decay=wd)
    inf = FisherInfluence(model, prefit=True, solver=solver, curvature_sampler=RandomSampler(12, random_state=0),
                          solver_options={"tol": 1e-13} if solver == "cg" else None).fit(X, y)
    ad, eng = inf.adapter_, inf.engine_
    J = ad.jacobians(ad.design(X))
    terms = np.einsum("ikp,ikl,ilq->ipq", J, eng.W / n, J)                # c_i J_iᵀ W_i J_i
    w = np.zeros(n)
    w[inf.curvature_rows_] = inf.curvature_weights_
    idx = np.flatnonzero(y == 1)[:60]
    p = len(ad.theta)
    M = np.einsum("i,ipq->pq", w, terms) + wd * np.eye(p)
    if solver == "dense":
        np.testing.assert_allclose(inf.curvature_, M, rtol=1e-10, atol=1e-14)
    down = M - len(idx) / n * wd * np.eye(p)
    assert np.linalg.eigvalsh(down - terms[idx].sum(0))[0] < 0            # the exact terms: indefinite
    held = down - np.einsum("i,ipq->pq", w[idx], terms[idx])                # what the sample holds
    assert np.linalg.eigvalsh(held)[0] > 0
    v = np.einsum("ikp,ik->p", J[idx], eng.g[idx] / n) + len(idx) / n * wd * ad.theta
    np.testing.assert_allclose(inf.parameter_change(idx), np.linalg.solve(held, v), rtol=1e-7,
                               atol=1e-9 * np.abs(np.linalg.solve(held, v)).max())
    # leave-one-out takes the same down-date, row by row (its outputs to first order in Δθ;
    # CG's leave-one-out keeps the penalty's share, a documented error of order 1/n)
    if solver != "dense":
        return
    loo = inf.loo_decision()
    for i in (int(inf.curvature_rows_[0]), int(np.flatnonzero(w == 0)[0])):
        linear = eng.eta[i] + ad.jvp(ad.design(X[[i]]), inf.parameter_change([i]))[0]
        np.testing.assert_allclose(loo[i], linear, rtol=1e-7, atol=1e-10)


def test_loss_and_gradient_is_the_objective_and_its_gradient_in_one_pass(cancer):
    """The finisher's evaluation (one forward pass per chunk of rows) equals the data term
    Σ c_i ℓ_i and its gradient by autograd, across chunks, at a θ other than the fitted one;
    the base adapter's (a GLM's) equals it computed from η."""
    from torch.func import grad

    from skinfluence.models import make_adapter

    X, y, net, objective, _ = _converged_net(n=50)
    ad = make_adapter(TorchModel(net, weight_decay=3e-2), batch_size=7)      # 8 chunks
    Z = ad.design(X)
    theta = ad.theta + 0.1 * np.random.default_rng(0).standard_normal(ad.n_params)
    c = np.full(len(y), 1 / len(y))
    value, g = ad.loss_and_gradient(Z, y, c, theta)
    t = torch.as_tensor(theta)
    pen = 3e-2 / 2 * (t ** 2).sum()
    assert value == pytest.approx(float(objective(t, np.arange(len(y))) - pen), rel=1e-12)
    np.testing.assert_allclose(g, (grad(objective)(t, np.arange(len(y))) - 3e-2 * t).numpy(), rtol=1e-10, atol=1e-14)
    Xc, yc = cancer
    glm = make_adapter(LogisticRegression(**NEWTON).fit(Xc, yc))
    Zc, cc = glm.design(Xc), np.ones(len(yc))
    eta = glm.eta(Zc)
    value, g = glm.loss_and_gradient(Zc, yc, cc)
    assert value == pytest.approx(float(glm.loss.loss(yc, eta).sum()), rel=1e-12)
    np.testing.assert_allclose(g, glm.gradients(Zc, glm.loss.gradient(yc, eta)).sum(0), rtol=1e-10)
