"""skorch nets against independent dense Hessians/GGNs and exact retraining.

The reference objective is rebuilt here from torch's own losses (not from the adapter):
``mean_i ℓ_i(θ) + λ/2 ‖θ‖²`` with ``λ`` the optimizer's weight decay. Nets are trained
briefly with skorch, then minimised on that objective (L-BFGS, then Newton) to machine
precision, so that "retraining without some points" is an exact warm-started solve.
"""

import copy
import warnings
from functools import partial

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.metrics import get_scorer, log_loss
from sklearn.model_selection import KFold
from skorch import NeuralNetBinaryClassifier, NeuralNetClassifier, NeuralNetRegressor
from torch import nn
from torch.func import functional_call

from skinfluence import FisherInfluence, HessianInfluence, InfluenceWarning
from skinfluence.model_selection import ApproxGridSearchCV, approx_cross_val_predict
from skinfluence.model_selection._validation import held_out_outputs, split_scores
from skinfluence.refit import fit_weighted

from conftest import TanhNet, lbfgs

LAM = 0.02
torch.set_num_threads(1)


MLP = partial(TanhNet, d=5, h=6, dtype=torch.float64)
MLP1 = partial(MLP, k=1, squeeze=True)   # one squeezed logit, what NeuralNetBinaryClassifier expects


def _flat(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def _objective(module, X, y, kind):
    """θ ↦ Σ_i w_i ℓ_i / Σ w + λ/2‖θ‖², written with torch's losses."""
    names = [n for n, _ in module.named_parameters()]
    shapes = [p.shape for p in module.parameters()]
    sizes = [p.numel() for p in module.parameters()]
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)

    def outputs(th):
        params = {n: c.view(s) for n, c, s in zip(names, torch.split(th, sizes), shapes)}
        return functional_call(module, params, (Xt,))

    def per_sample(out):
        if kind == "ce":
            return nn.functional.cross_entropy(out, yt.long(), reduction="none")
        if kind == "nll":  # skorch's NLLLoss path: log(p + eps)
            return nn.functional.nll_loss(torch.log(out + torch.finfo(out.dtype).eps), yt.long(),
                                          reduction="none")
        if kind == "bce":
            return nn.functional.binary_cross_entropy_with_logits(out, yt.double(), reduction="none")
        return (out.reshape(-1) - yt.double().reshape(-1)) ** 2

    def obj(th, w):
        return (w * per_sample(outputs(th))).sum() / w.sum() + LAM / 2 * (th * th).sum()

    return obj, outputs


def _newton(obj, theta, w, steps=25):
    for _ in range(steps):
        g = torch.autograd.functional.jacobian(lambda t: obj(t, w), theta)
        H = torch.autograd.functional.hessian(lambda t: obj(t, w), theta)
        theta = theta - torch.linalg.solve(H, g)
    return theta


def _minimise(obj, theta, w):
    """L-BFGS (a descent method: a minimum, not a saddle), then Newton to machine precision."""
    th = theta.clone().requires_grad_(True)
    lbfgs([th], lambda: obj(th, w), lr=1, max_iter=1000, tolerance_grad=1e-10, tolerance_change=0)
    theta = _newton(obj, th.detach(), w, steps=5)
    assert np.linalg.eigvalsh(torch.autograd.functional.hessian(lambda t: obj(t, w), theta).numpy())[0] > 0
    return theta


def _set_flat(module, theta):
    with torch.no_grad():
        for p, c in zip(module.parameters(), torch.split(theta, [p.numel() for p in module.parameters()])):
            p.copy_(c.view(p.shape))


def _train(kind, n=80, seed=0):
    torch.manual_seed(seed)
    common = dict(optimizer=torch.optim.Adam, optimizer__weight_decay=LAM, lr=0.05, max_epochs=30,
                  batch_size=-1, train_split=None, verbose=0)
    if kind in ("ce", "nll"):
        X, y = make_classification(n, 5, n_informative=3, n_redundant=0, flip_y=0.1, random_state=seed)
        crit = nn.CrossEntropyLoss if kind == "ce" else nn.NLLLoss
        net = NeuralNetClassifier(MLP, module__softmax=kind == "nll", criterion=crit, **common)
    elif kind == "bce":
        X, y = make_classification(n, 5, n_informative=3, n_redundant=0, flip_y=0.1, random_state=seed)
        y = y.astype(np.float64)
        net = NeuralNetBinaryClassifier(MLP1, **common)
    else:
        X, y = make_regression(n, 5, n_informative=4, noise=5.0, random_state=seed)
        y = (y / y.std()).reshape(-1, 1)
        net = NeuralNetRegressor(MLP, module__k=1, **common)
    X = X.astype(np.float64)
    net.fit(X, y)
    obj, outputs = _objective(net.module_, X, y, kind)
    theta = _minimise(obj, _flat(net.module_), torch.ones(n, dtype=torch.float64))
    _set_flat(net.module_, theta)
    return net, X, y, obj, outputs, theta


@pytest.fixture(scope="module", params=["ce", "nll", "bce", "mse"])
def trained(request):
    return request.param, *_train(request.param)


def test_hessian_matches_dense_autograd(trained):
    kind, net, X, y, obj, _, theta = trained
    inf = HessianInfluence(net, prefit=True).fit(X, y)
    w = torch.ones(len(X), dtype=torch.float64)
    H = torch.autograd.functional.hessian(lambda t: obj(t, w), theta).numpy()
    assert inf.solver_ == "dense"
    np.testing.assert_allclose(inf.curvature_, H, atol=1e-9 * np.abs(H).max())
    np.testing.assert_allclose(inf.adapter_.theta, theta.numpy())
    assert inf.convergence_ratio_ < 1e-6


def test_fisher_matches_independent_ggn(trained):
    kind, net, X, y, _, outputs, theta = trained
    inf = FisherInfluence(net, prefit=True).fit(X, y)
    J = torch.autograd.functional.jacobian(outputs, theta).numpy().reshape(len(X), -1, len(theta))
    out = outputs(theta).detach().numpy().reshape(len(X), -1)
    if kind in ("ce", "nll"):
        p = out if kind == "nll" else np.exp(out - out.max(1, keepdims=True))
        p = p / p.sum(1, keepdims=True)
        if kind == "nll":  # η = log p: its Jacobian is J_p / p
            J = J / out[:, :, None]
        Lam = np.einsum("nk,kl->nkl", p, np.eye(p.shape[1])) - p[:, :, None] * p[:, None, :]
    elif kind == "bce":
        s = 1 / (1 + np.exp(-out))
        Lam = (s * (1 - s))[:, :, None]
    else:
        Lam = np.full((len(X), 1, 1), 2.0)                   # (y − f)² has second derivative 2
    G = np.einsum("nkp,nkl,nlq->pq", J, Lam, J) / len(X) + LAM * np.eye(len(theta))
    np.testing.assert_allclose(inf.curvature_, G, atol=1e-6 * np.abs(G).max())


def test_empirical_and_mc_fisher():
    net, X, y, obj, outputs, theta = _train("ce", n=60)
    inf = FisherInfluence(net, prefit=True, fisher="empirical").fit(X, y)
    yt = torch.as_tensor(y)
    grads = torch.stack([
        torch.autograd.functional.jacobian(
            lambda t, i=i: nn.functional.cross_entropy(outputs(t)[i:i + 1], yt[i:i + 1]), theta)
        for i in range(len(X))]).numpy()
    E = grads.T @ grads / len(X) + LAM * np.eye(len(theta))
    np.testing.assert_allclose(inf.curvature_, E, atol=1e-9 * np.abs(E).max())
    mc = [FisherInfluence(net, prefit=True, fisher="mc", random_state=0).fit(X, y).curvature_
          for _ in range(2)]
    np.testing.assert_array_equal(mc[0], mc[1])
    exact = FisherInfluence(net, prefit=True).fit(X, y).curvature_
    assert not np.allclose(mc[0], exact)
    # sampled labels: unbiased, so the average over seeds approaches the exact Fisher
    avg = np.mean([FisherInfluence(net, prefit=True, fisher="mc", random_state=s).fit(X, y).curvature_
                   for s in range(40)], axis=0)
    err1, err40 = (np.linalg.norm(m - exact) / np.linalg.norm(exact) for m in (mc[0], avg))
    assert err40 < 0.3 * err1 and err40 < 0.15


@pytest.mark.parametrize("kind, seed", [("ce", 1), ("mse", 0)])
def test_unlearn_matches_retraining(kind, seed):
    net, X, y, obj, outputs, theta = _train(kind, n=100, seed=seed)
    before = copy.deepcopy(net.module_.state_dict())
    inf = HessianInfluence(net, prefit=True).fit(X, y)
    rng = np.random.default_rng(0)
    for idx in ([3], rng.choice(len(X), 4, replace=False)):
        w = torch.ones(len(X), dtype=torch.float64)
        w[idx] = 0
        exact = _minimise(obj, theta, w)              # retraining, warm-started
        d_true = (exact - theta).numpy()
        d_est = inf.parameter_change(idx)
        # IJ is exactly −H⁻¹ ∇(objective without idx, scaled back to n) at θ̂ ...
        H = torch.autograd.functional.hessian(lambda t: obj(t, torch.ones_like(w)), theta)
        g = torch.autograd.functional.jacobian(lambda t: obj(t, w), theta) * w.sum() / len(w)
        d_ij = -torch.linalg.solve(H, g).numpy()
        np.testing.assert_allclose(inf.parameter_change(idx, "ij"), d_ij, atol=1e-9 * np.abs(d_ij).max())
        # ... and NS (GGN down-date of the removed points, with the exact share of the mean-scaled
        # weight decay) is close to retraining: correlation 0.947-1.000 on these nets
        assert np.corrcoef(d_true, d_est)[0, 1] > 0.94
        assert abs(np.linalg.norm(d_est) / np.linalg.norm(d_true) - 1) < 0.4
        new = inf.unlearn(idx)
        assert type(new) is type(net) and new is not net
        np.testing.assert_allclose(_flat(new.module_).numpy(), theta.numpy() + d_est)
        # the training objective moves as retraining moves it
        full = torch.ones(len(X), dtype=torch.float64)
        dl_true = (obj(exact, full) - obj(theta, full)).item()
        dl_est = (obj(_flat(new.module_), full) - obj(theta, full)).item()
        assert dl_est == pytest.approx(dl_true, rel=0.4)
    for k, v in net.module_.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_approx_loocv_close_to_exact_loo():
    net, X, y, obj, outputs, theta = _train("ce", n=80, seed=2)
    inf = HessianInfluence(net, prefit=True).fit(X, y)
    loo = inf.loo_decision()
    eta = inf.adapter_.eta(X)
    errs_full, errs_ns = [], []
    for i in range(0, 80, 8):
        w = torch.ones(len(X), dtype=torch.float64)
        w[i] = 0
        exact = outputs(_minimise(obj, theta, w)).detach().numpy()[i]
        errs_full.append(np.abs(eta[i] - exact).max())
        errs_ns.append(np.abs(loo[i] - exact).max())
    assert np.median(errs_ns) < 0.2 * np.median(errs_full)
    pred = inf.approx_loocv()
    assert pred.shape == (80,) and set(pred) <= {0, 1}
    proba = inf.approx_loocv(response_method="predict_proba")
    np.testing.assert_allclose(proba.sum(1), 1)


def test_unfitted_net_is_fitted_by_clone():
    X, y = make_classification(60, 5, random_state=0)
    net = NeuralNetClassifier(MLP, criterion=nn.CrossEntropyLoss, optimizer__weight_decay=LAM,
                              max_epochs=5, batch_size=-1, train_split=None, verbose=0)
    with pytest.warns(InfluenceWarning, match="not converged"):       # 5 epochs of SGD
        inf = FisherInfluence(net, damping=1e-3).fit(X.astype(np.float64), y)
    assert not hasattr(net, "module_") and inf.estimator_ is not net
    assert inf.attribute(X[:3], y[:3]).shape == (3, 60)
    # polish=True: Newton steps with the factorised curvature reach the optimum
    net.set_params(optimizer=torch.optim.Adam, lr=0.05, max_epochs=500)
    polished = HessianInfluence(net, polish=True).fit(X.astype(np.float64), y)
    assert polished.convergence_ratio_ < 0.05 and polished.n_polish_steps_ > 0


def test_bad_models_are_refused():
    X, y = make_classification(40, 5, random_state=0)
    X = X.astype(np.float64)
    net = NeuralNetClassifier(MLP, criterion=nn.MultiMarginLoss, max_epochs=1, batch_size=-1,
                              train_split=None, verbose=0).fit(X, y)
    with pytest.raises(ValueError, match="MultiMarginLoss is not supported"):
        HessianInfluence(net, prefit=True).fit(X, y)
    net = NeuralNetClassifier(MLP, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.AdamW,
                              max_epochs=1, batch_size=-1, train_split=None, verbose=0).fit(X, y)
    with pytest.raises(ValueError, match="decoupled weight decay"):
        HessianInfluence(net, prefit=True).fit(X, y)
    with pytest.raises(TypeError, match="TorchModel"):
        HessianInfluence(MLP(), prefit=True).fit(X, y)
    net = NeuralNetClassifier(MLP, criterion=nn.CrossEntropyLoss, max_epochs=1, batch_size=-1,
                              train_split=None, verbose=0).fit(X, y)
    with pytest.raises(ValueError, match="sample shape|cannot be evaluated"):
        HessianInfluence(net, prefit=True).fit(X[:, :3], y)
    with pytest.raises(ValueError):
        HessianInfluence(net, prefit=True, dtype="int8").fit(X, y)


@pytest.mark.parametrize("kind", ["ce", "nll", "bce", "mse"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_weighted_fit_equals_duplicated_rows(kind, reduction):
    """Integer weights train the same net as repeated rows (full batch, same seed)."""
    net, X, y, *_ = _train(kind, n=50, seed=3)
    net = clone(net).set_params(criterion__reduction=reduction, max_epochs=15, lr=0.01)
    w = np.random.default_rng(0).integers(0, 3, len(X)).astype(float)
    rows = np.repeat(np.arange(len(X)), w.astype(int))
    torch.manual_seed(5)
    weighted = fit_weighted(clone(net), X, y, w)
    torch.manual_seed(5)
    repeated = clone(net).fit(X[rows], y[rows])
    assert type(weighted) is type(net)
    np.testing.assert_allclose(weighted.predict_proba(X) if kind != "mse" else weighted.predict(X),
                               repeated.predict_proba(X) if kind != "mse" else repeated.predict(X),
                               atol=1e-8)
    # warm start continues from the fitted parameters instead of re-initialising
    before = _flat(weighted.module_)
    fit_weighted(weighted, X, y, w, warm_start=True)
    after = _flat(weighted.module_)
    assert 0 < (after - before).norm() < 0.5 * before.norm()


def test_sample_weighted_influence_matches_weighted_objective():
    net, X, y, obj, outputs, theta = _train("ce", n=60, seed=4)
    w = np.random.default_rng(1).uniform(0.2, 2.0, len(X))
    wt = torch.as_tensor(w)
    fitted = fit_weighted(clone(net), X, y, w)
    _set_flat(fitted.module_, _minimise(obj, _flat(fitted.module_), wt))
    inf = HessianInfluence(fitted, prefit=True).fit(X, y, sample_weight=w)
    H = torch.autograd.functional.hessian(lambda t: obj(t, wt), _flat(fitted.module_)).numpy()
    np.testing.assert_allclose(inf.curvature_, H, atol=1e-9 * np.abs(H).max())
    assert inf.convergence_ratio_ < 1e-6        # the weighted gradient vanishes where obj is minimal
    # an unfitted net is fitted on the weighted loss by the influence estimator itself
    unfitted = FisherInfluence(clone(net).set_params(max_epochs=300), polish=True).fit(X, y, sample_weight=w)
    assert unfitted.convergence_ratio_ < 0.05


def test_polishing_never_moves_away_from_the_optimum():
    """Gauss–Newton steps on an under-trained net: line search, best iterate kept, warning."""
    X, y = make_classification(120, 5, n_informative=3, n_redundant=0, flip_y=0.2, random_state=0)
    net = NeuralNetClassifier(MLP, criterion=nn.CrossEntropyLoss, optimizer__weight_decay=1e-4,
                              lr=0.5, max_epochs=20, batch_size=-1, train_split=None, verbose=0)
    torch.manual_seed(0)
    net.fit(X.astype(np.float64), y)
    with pytest.warns(InfluenceWarning, match="not converged"):
        raw = FisherInfluence(net, prefit=True).fit(X, y)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        pol = FisherInfluence(net, prefit=True, polish=True).fit(X, y)
    assert pol.n_polish_steps_ > 0
    assert pol.convergence_ratio_ <= raw.convergence_ratio_
    assert pol.engine_.objective(pol.adapter_.theta, pol.engine_.eta) < raw.engine_.objective(raw.adapter_.theta, raw.engine_.eta)
    if pol.convergence_ratio_ > 0.05:
        with pytest.warns(InfluenceWarning, match="polishing stopped"):
            FisherInfluence(net, prefit=True, polish=True).fit(X, y)


def test_approx_kfold_of_a_skorch_net_matches_exact_fold_refits():
    """K-fold outputs and scores of a net by Newton steps, against warm-started exact refits.

    A net has many minima, so the comparison starts from the fitted net's own minimum
    (prefit); the public functions, which fit a clone, run the same code."""
    net, X, y, obj, outputs, theta = _train("ce", n=100, seed=1)
    cv = KFold(10, shuffle=True, random_state=0)
    splits = list(cv.split(X))
    exact = np.empty((len(X), 2))
    for train, test in splits:
        w = torch.zeros(len(X), dtype=torch.float64)
        w[train] = 1
        exact[test] = torch.softmax(outputs(_minimise(obj, theta, w)).detach(), -1).numpy()[test]
    inf = HessianInfluence(net, prefit=True).fit(X, y)
    approx = np.empty_like(exact)
    for (_, test), eta in zip(splits, held_out_outputs(inf, X, splits)):
        approx[test] = inf.adapter_.response(eta, "predict_proba")
    err_full = np.abs(net.predict_proba(X) - exact).max(1)
    err_approx = np.abs(approx - exact).max(1)
    assert np.median(err_approx) < 0.25 * np.median(err_full)      # 0.16 here
    scores = split_scores(inf, X, y, splits, {"s": get_scorer("neg_log_loss")})["s"]
    exact_scores, naive = ([-log_loss(y[test], P[test], labels=[0, 1]) for _, test in splits]
                           for P in (exact, net.predict_proba(X)))
    # the in-sample (full-fit) scores are optimistic; the approximation removes most of it
    assert np.mean(np.abs(scores - exact_scores)) < 0.4 * np.mean(np.abs(np.subtract(naive, exact_scores)))
    # the public function on a clone: trained from scratch, polished, same shapes
    torch.manual_seed(0)
    proba = approx_cross_val_predict(clone(net).set_params(max_epochs=300), X, y, cv=cv,
                                     response_method="predict_proba")
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(1), 1)


def test_grid_search_over_a_skorch_nets_weight_decay():
    X, y = make_classification(120, 5, n_informative=3, n_redundant=0, flip_y=0.1, random_state=0)
    net = NeuralNetClassifier(MLP, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=0.05,
                              max_epochs=200, batch_size=-1, train_split=None, verbose=0)
    grid = {"optimizer__weight_decay": [1e-3, 1e-2, 1e-1]}
    torch.manual_seed(0)
    search = ApproxGridSearchCV(net, grid, cv=4, scoring="neg_log_loss", curvature="fisher",
                                error_score="raise").fit(X, y)
    assert not hasattr(net, "module_")
    assert search.cv_results_["mean_test_score"].shape == (3,)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert type(search.best_estimator_) is NeuralNetClassifier
    assert search.best_estimator_.optimizer_.param_groups[0]["weight_decay"] == search.best_params_[
        "optimizer__weight_decay"]
    assert search.score(X, y) == pytest.approx(-log_loss(y, search.best_estimator_.predict_proba(X)))
