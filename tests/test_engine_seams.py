"""Each engine seam on its own: parameter subsets, curvature rows, the solver registry,
factors apart from scores, layer hooks, and declared validation."""

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression, Ridge
from torch.func import functional_call, jacrev

from skinfluence import FisherInfluence, HessianInfluence
from skinfluence.curvature import SOLVERS, make_solver
from skinfluence.curvature.iterative import lissa
from skinfluence.curvature.operators import CurvatureOperator
from skinfluence.fairness import InfluenceReweighing
from skinfluence.model_selection import ApproxGridSearchCV, ApproxRandomizedSearchCV
from skinfluence.models import make_adapter
from skinfluence.models.torch import TorchModel

from conftest import tanh_mlp

TIGHT = dict(tol=1e-12, max_iter=10_000)


def _clf(n=150, d=5, classes=2, seed=0):
    return make_classification(n, d, n_informative=4, n_redundant=0, n_classes=classes,
                               random_state=seed)


# ------------------------------------------------------------------ parameter slices
def test_unit_mask_of_a_net_against_autograd():
    X = np.random.default_rng(1).standard_normal((20, 4))
    y = (X[:, 0] > 0).astype(int)
    model = TorchModel(tanh_mlp(4, 3, 2), loss="cross_entropy", weight_decay=0.01)
    ad = make_adapter(model)
    slices = ad.param_slices
    assert list(slices) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert slices["2.bias"] == slice(ad.n_params - 2, ad.n_params)
    # J = unit 1 of the hidden layer (its fan-in row and bias) and the output bias
    mask = ad.unit_mask({"0": [1]})
    mask[slices["2.bias"]] = True
    assert mask.sum() == 4 + 1 + 2
    Z = ad.design(X)
    net = model.module
    names = [n for n, _ in net.named_parameters()]

    def eta(theta):
        chunks = torch.split(theta, [p.numel() for p in net.parameters()])
        params = {n: c.view(p.shape) for n, c, p in zip(names, chunks, net.parameters())}
        return functional_call(net, params, (torch.as_tensor(Z),))

    J = jacrev(eta)(torch.as_tensor(ad.theta)).numpy()       # (n, K, p)
    np.testing.assert_allclose(ad.jacobians(Z)[..., mask], J[..., mask], atol=1e-12)
    assert np.abs(J[..., mask]).sum(axis=(0, 1)).all()   # every selected parameter moves η
    G = np.random.default_rng(2).standard_normal((20, 2))
    np.testing.assert_allclose(ad.gradients(Z, G), np.einsum("nkp,nk->np", J, G), atol=1e-12)


def test_layer_statistics_read_planted_units():
    net = tanh_mlp(4, 3, 2)
    with torch.no_grad():  # hidden unit 2 has a large constant output, unit 0 a zero one
        net[0].weight[2] = 0.0
        net[0].bias[2] = 3.0
        net[0].weight[0] = 0.0
        net[0].bias[0] = 0.0
    X = np.random.default_rng(4).standard_normal((30, 4))
    ad = make_adapter(TorchModel(net))
    stats = ad.layer_statistics(ad.design(X), G=np.ones((30, 2)))
    assert set(stats) == {"0", "2"}
    np.testing.assert_allclose(stats["0"]["outputs"][2], 3.0)
    np.testing.assert_allclose(stats["0"]["outputs"][0], 0.0)
    # d(η_0 + η_1)/d(output of unit 2 of layer 0) = 0 (tanh'(3) (W2[0,2]+W2[1,2]) after the Tanh);
    # the output layer's own output gradient is G
    np.testing.assert_allclose(stats["2"]["gradients"], 1.0)
    outs = net(torch.as_tensor(X))[:, :].detach().numpy().mean(0)
    np.testing.assert_allclose(stats["2"]["outputs"], outs, atol=1e-12)
    with pytest.raises(ValueError, match="not a Linear"):
        ad.unit_mask({"1": [0]})


# ---------------------------------------------------------------------- curvature rows
class _FixedRows(BaseEstimator):
    """A sampler that returns given rows and weights."""

    def __init__(self, rows=None, weights=None):
        self.rows = rows
        self.weights = weights

    def fit(self, X, y, *, estimator=None, logits=None, sample_weight=None):
        self.sample_indices_ = np.asarray(self.rows)
        self.sample_weight_ = np.asarray(self.weights, dtype=float)
        self.logits_shape_ = logits.shape
        self.weights_seen_ = sample_weight
        return self


def test_curvature_from_weighted_rows_equals_the_dense_reference():
    X, y = _clf()
    rows = np.arange(0, 150, 3)
    w = np.linspace(0.5, 4.0, len(rows))
    inf = FisherInfluence(LogisticRegression(**TIGHT), curvature_sampler=_FixedRows(rows, w)).fit(X, y)
    p = inf.estimator_.predict_proba(X)[:, 1]
    Z = np.hstack([X, np.ones((150, 1))])
    ref = (Z[rows] * (w * p[rows] * (1 - p[rows]))[:, None]).T @ Z[rows]
    ref[np.diag_indices(5)] += 1.0           # C = 1: ½‖w‖², intercept unpenalised
    np.testing.assert_allclose(inf.curvature_, ref, rtol=1e-10)
    np.testing.assert_array_equal(inf.curvature_rows_, rows)
    # gradients, LOO and attribution still cover every row
    assert inf.attribute(X[:4], y[:4]).shape == (4, 150)
    assert inf.approx_loocv().shape == (150,)


def test_all_rows_with_unit_weights_reproduce_the_full_curvature():
    X, y = _clf()
    full = FisherInfluence(LogisticRegression(**TIGHT)).fit(X, y)
    sampled = FisherInfluence(LogisticRegression(**TIGHT),
                              curvature_sampler=_FixedRows(np.arange(150), np.ones(150))).fit(X, y)
    np.testing.assert_allclose(sampled.curvature_, full.curvature_, rtol=1e-12)
    np.testing.assert_allclose(sampled.approx_loocv("ns", "predict_proba"),
                               full.approx_loocv("ns", "predict_proba"), rtol=1e-10)


# ------------------------------------------------------------------- solver registry
def _spd(p=12, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((p, p))
    return A @ A.T + p * np.eye(p), rng.standard_normal((p, 3))


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_registered_solver_solves_the_same_system(name):
    M, B = _spd()
    op = CurvatureOperator.from_matrix(M)
    solver = make_solver(name, op, damping=0.5)
    ref = np.linalg.solve(M + 0.5 * np.eye(len(M)), B)
    np.testing.assert_allclose(solver.solve(B), ref, rtol=1e-6, atol=1e-8)
    # held coordinates: the system on the active ones, zeros elsewhere (freezing)
    active = np.arange(len(M)) % 3 != 0
    held = make_solver(name, op, damping=0.5, active=active).solve(B)
    Ma = (M + 0.5 * np.eye(len(M)))[np.ix_(active, active)]
    np.testing.assert_allclose(held[active], np.linalg.solve(Ma, B[active]), rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(held[~active], 0.0)
    # the down-dated system
    U = np.random.default_rng(1).standard_normal((2, 1, len(M)))
    C = np.full((2, 1, 1), 0.5)
    down = M + 0.5 * np.eye(len(M)) - 0.5 * U[:, 0].T @ U[:, 0]
    np.testing.assert_allclose(solver.downdated_solve(B[:, 0], U, C), np.linalg.solve(down, B[:, 0]),
                               rtol=1e-6, atol=1e-8)


def test_unknown_solver_and_truncated_lissa():
    M, B = _spd()
    with pytest.raises(ValueError, match="solver must be one of"):
        make_solver("qr", CurvatureOperator.from_matrix(M))
    x, info = lissa(lambda V: M @ V, B, scale=1.1 * np.linalg.eigvalsh(M)[-1], maxiter=3, truncate=True)
    assert info["truncated"] and info["iterations"] == 3 and np.all(np.isfinite(x))
    # three Neumann terms: s⁻¹ Σ_{k<4} (I − M/s)^k b
    s = info["scale"]
    T = np.eye(len(M)) - M / s
    ref = sum(np.linalg.matrix_power(T, k) for k in range(4)) @ B / s
    np.testing.assert_allclose(x, ref, rtol=1e-10)
    solver = make_solver("lissa", CurvatureOperator.from_matrix(M), max_iter=3, truncate=True)
    solver.solve(B)
    assert solver.info_["truncated"]


# -------------------------------------------------------------- factors apart from scores
def test_factors_and_scores_give_attribute():
    X, y = _clf(classes=3)
    inf = HessianInfluence(LogisticRegression(**TIGHT), batch_size=7).fit(X, y)
    F = inf.influence_factors(X[:5], y[:5])
    assert F.shape == (5, inf.adapter_.n_params)
    A = inf.attribute(X[:5], y[:5])
    np.testing.assert_allclose(inf.influences_from_factors(F), A, rtol=1e-12)
    rows = np.array([3, 40, 99])
    np.testing.assert_allclose(inf.influences_from_factors(F, rows), A[:, rows], rtol=1e-12)
    np.testing.assert_allclose(F, np.linalg.solve(inf.curvature_ + inf.adapter_.null_space()
                                                  @ inf.adapter_.null_space().T,
                                                  inf.parameter_gradients(
                                                      X[:5], inf.adapter_.loss.gradient(
                                                          y[:5], inf.adapter_.eta(inf.adapter_.design(X[:5])))).T).T,
                               rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------- declared validation
BAD = [
    (FisherInfluence, dict(fisher="bogus"), "fisher"),
    (FisherInfluence, dict(batch_size=0), "batch_size"),
    (FisherInfluence, dict(batch_size="x"), "batch_size"),
    (FisherInfluence, dict(polish="yes"), "polish"),
    (FisherInfluence, dict(device="tpu"), "device"),
    (HessianInfluence, dict(dtype="int8"), "dtype"),
    (HessianInfluence, dict(verbose="loud"), "verbose"),
    (HessianInfluence, dict(damping=-1.0), "damping"),
    (HessianInfluence, dict(solver="qr"), "solver"),
    (HessianInfluence, dict(curvature_sampler="random"), "curvature_sampler"),
    (HessianInfluence, dict(prefit="no"), "prefit"),
]


@pytest.mark.parametrize("cls, params, word", BAD, ids=[f"{c.__name__}-{w}" for c, _, w in BAD])
def test_invalid_estimator_parameters_raise(cls, params, word):
    X, y = _clf(60)
    with pytest.raises(ValueError, match=word):
        cls(LogisticRegression(), **params).fit(X, y)


BAD_SEARCH = [
    (dict(method="exact"), "method"), (dict(curvature="gauss"), "curvature"),
    (dict(polish="yes"), "polish"), (dict(damping=-1), "damping"), (dict(cv="x"), "cv"),
    (dict(warm_start=3), "warm_start"), (dict(error_score="ignore"), "error_score"),
]


@pytest.mark.parametrize("params, word", BAD_SEARCH, ids=[w for _, w in BAD_SEARCH])
def test_invalid_search_parameters_raise(params, word):
    X, y = _clf(60)
    with pytest.raises(ValueError, match=word):
        ApproxGridSearchCV(LogisticRegression(), {"C": [1.0]}, **params).fit(X, y)
    with pytest.raises(ValueError, match=word):
        ApproxRandomizedSearchCV(LogisticRegression(), {"C": [1.0, 2.0]}, n_iter=2,
                                 **params).fit(X, y)


def test_invalid_reweighing_and_function_parameters_raise():
    from skinfluence.model_selection import approx_cross_val_predict, approx_cross_val_score

    X, y = _clf(60)
    s = np.arange(60) % 2
    with pytest.raises(ValueError, match="constraint"):
        InfluenceReweighing(LogisticRegression(), constraint="parity").fit(X, y, sensitive_features=s)
    with pytest.raises(ValueError, match="damping"):
        approx_cross_val_score(Ridge(), X, y, damping=-1)
    with pytest.raises(ValueError, match="polish"):
        approx_cross_val_predict(Ridge(), X, y, polish="yes")
    with pytest.raises(ValueError, match="n_iter"):
        ApproxRandomizedSearchCV(LogisticRegression(), {"C": [1.0]}, n_iter=0).fit(X, y)


def test_randomized_search_draws_candidates_and_matches_grid_on_them():
    X, y = _clf(120)
    rs = ApproxRandomizedSearchCV(LogisticRegression(), {"C": [0.01, 0.1, 1.0, 10.0]}, n_iter=3,
                                  cv=4, random_state=0).fit(X, y)
    grid = ApproxGridSearchCV(LogisticRegression(), {"C": [p["C"] for p in rs.cv_results_["params"]]},
                              cv=4).fit(X, y)
    assert len(rs.cv_results_["params"]) == 3
    np.testing.assert_allclose(np.sort(rs.cv_results_["mean_test_score"]),
                               np.sort(grid.cv_results_["mean_test_score"]), rtol=1e-6)


def test_auto_damping_is_a_fraction_of_the_mean_eigenvalue(monkeypatch):
    import skinfluence.curvature.solvers as solvers

    X = np.random.default_rng(5).standard_normal((60, 4))
    y = (X[:, 0] > 0).astype(int)
    model = TorchModel(tanh_mlp(4, 3, 2), loss="cross_entropy", weight_decay=0.01)
    dense = FisherInfluence(model, prefit=True, damping="auto").fit(X, y)
    p = dense.adapter_.n_params
    assert dense.damping_ == pytest.approx(0.1 * np.trace(dense.curvature_) / p, rel=1e-12)
    plain = FisherInfluence(model, prefit=True, damping=dense.damping_).fit(X, y)
    np.testing.assert_allclose(dense.attribute(X[:3], y[:3]), plain.attribute(X[:3], y[:3]), rtol=1e-10)
    monkeypatch.setattr(solvers, "DENSE_MAX_PARAMS", 5)        # the CG path: Hutchinson's estimate
    it = FisherInfluence(model, prefit=True, damping="auto", random_state=0).fit(X, y)
    assert it.solver_ == "cg" and it.damping_ == pytest.approx(dense.damping_, rel=0.3)
    glm = FisherInfluence(LogisticRegression(), damping="auto").fit(*_clf())
    assert glm.damping_ == 0.0


@pytest.mark.parametrize("solver", ["dense", "cg", "lissa", "dual"])
def test_fitted_estimators_pickle_with_every_solver(solver):
    import pickle

    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import scale

    X, y = load_breast_cancer(return_X_y=True)
    X = scale(X)[:150]
    y = y[:150]
    inf = FisherInfluence(LogisticRegression(max_iter=2000), solver=solver,
                              damping=0.05 if solver == "lissa" else 0.0).fit(X, y)
    again = pickle.loads(pickle.dumps(inf))
    np.testing.assert_array_equal(again.attribute(X[:4], y[:4]), inf.attribute(X[:4], y[:4]))


# ---------------------------------------------------------------- the engine boundary
def test_training_gradients_are_the_removal_gradients():
    """v_i = c_i ∇ℓ_i + s_i ∇π: for a weighted logistic regression c_i = w_i·C and
    ∇ℓ_i = (p_i − y_i) [x_i, 1]; Lasso (mean-scaled) adds its share of the ridge part."""
    X, y = _clf()
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    inf = HessianInfluence(LogisticRegression(C=0.7, **TIGHT)).fit(X, y, sample_weight=w)
    p = inf.estimator_.predict_proba(X)[:, 1]
    want = (0.7 * w * (p - y))[:, None] * np.c_[X, np.ones(len(y))]
    np.testing.assert_allclose(inf.training_gradients(), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(inf.training_gradients([3, 1]), want[[3, 1]], rtol=1e-10, atol=1e-12)
    with pytest.raises(MemoryError, match="fewer rows"):
        from skinfluence import _utils
        old, _utils.MAX_DENSE_BYTES = _utils.MAX_DENSE_BYTES, 8
        try:
            inf.training_gradients()
        finally:
            _utils.MAX_DENSE_BYTES = old


def test_declared_capabilities_and_forwarding():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from skinfluence.curvature.factor import DenseSolver
    from skinfluence.curvature.iterative import CGSolver
    from skinfluence.models import FORWARDED, PipelineAdapter

    X, y = _clf()
    ad = make_adapter(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y))
    assert isinstance(ad, PipelineAdapter) and ad.has_gram and not ad.is_network
    assert ad.supports_sparse_rows and "curvature_weights" in FORWARDED
    with pytest.raises(AttributeError):      # only the declared names are forwarded
        ad.fit_intercept
    net = make_adapter(TorchModel(tanh_mlp(4, 3, 2), loss="cross_entropy"))
    assert net.is_network and not net.has_gram and not net.supports_sparse_rows
    with pytest.raises(NotImplementedError):
        net.jacobian_rows(np.zeros((2, 4)))
    assert DenseSolver.can_shift and DenseSolver.has_prox_step and not CGSolver.can_shift
    assert set(CGSolver.options) == {"tol", "max_iter", "truncate"}
    for cls in SOLVERS.values():   # every registered solver declares its options
        assert isinstance(cls.options, dict)


def test_the_dense_inverse_is_kept_on_the_solver():
    X, y = _clf()
    inf = HessianInfluence(LogisticRegression(**TIGHT)).fit(X, y)
    first = inf.curvature_solver_.inverse_operator()
    inf.approx_loocv()
    assert inf.curvature_solver_.inverse_operator() is first
    np.testing.assert_allclose(first @ inf.curvature_, np.eye(len(first)), atol=1e-8)


def test_reweighing_accepts_auto_damping():
    X, y = _clf(n=300)
    sensitive = (X[:, 1] > 0).astype(int)
    rw = InfluenceReweighing(LogisticRegression(), damping="auto", random_state=0)
    rw.fit(X, y, sensitive_features=sensitive)
    assert rw.influence_.damping_ == 0.0     # "auto" is 0 for a linear model
