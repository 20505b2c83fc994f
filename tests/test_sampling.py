"""Curvature samplers: unbiased weighted curvature, quotas and strata, determinism, bad input."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from skinfluence._sklearn_compat import InvalidParameterError

from skinfluence import FisherInfluence
from skinfluence.models import make_adapter
from skinfluence.models.torch import TorchModel
from skinfluence.sampling import (FeatureSampler, LeverageSampler, LogitSampler, RandomSampler, allocate,
                                  logit_margin, penultimate_features)

from conftest import lbfgs, penalised_cross_entropy, tanh_mlp

SAMPLERS = [RandomSampler, FeatureSampler, LogitSampler, LeverageSampler]


def _classification(n=90, K=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    y = np.argmax(X[:, :K] + 0.8 * rng.standard_normal((n, K)), axis=1)
    return X, y


@pytest.fixture(scope="module")
def glm():
    X, y = _classification()
    return X, y, LogisticRegression(C=1.0).fit(X, y)


@pytest.fixture(scope="module")
def net():
    """A small tanh MLP (4 → 6 → 3, 51 parameters) trained by L-BFGS."""
    X, y = _classification(seed=1)
    module = tanh_mlp(4, 6, 3)
    lbfgs(module.parameters(), penalised_cross_entropy(module, X, y, 1e-2), max_iter=200)
    return X, y, TorchModel(module, weight_decay=1e-2)


def _row_curvatures(model, X, y):
    """Per-row Fisher pieces ``c_i J_iᵀ W_i J_i`` (n, p, p), and the adapter's dense total."""
    ad = make_adapter(model)
    Z, y_enc = ad.design(X), ad.encode_target(y)
    c = ad.data_weights(y_enc, np.ones(len(y)))
    J = ad.jacobians(Z)
    W = ad.loss.curvature(y_enc, ad.eta(Z), "fisher") * c[:, None, None]
    return np.einsum("nkp,nkl,nlq->npq", J, W, J), ad.curvature(Z, y_enc, c, "fisher")


def _sampler(cls, m, seed, **kw):
    if cls is LeverageSampler:
        kw.setdefault("sketch_size", 8)   # p > 8: the sketched path
    return cls(n_samples=m, random_state=seed, **kw)


# ------------------------------------------------------------------ allocation
def test_allocate_proportional_capped_and_balanced():
    q = allocate(100, [600, 300, 95, 5])
    assert q.sum() == 100 and np.all(np.abs(q - 100 * np.array([600, 300, 95, 5]) / 1000) < 1)
    assert allocate(10, [4, 4, 4]).sum() == 10 and allocate(50, [4, 4, 4]).tolist() == [4, 4, 4]
    # balanced: a class with fewer rows than its equal share is taken whole, the rest shared
    assert allocate(60, [500, 400, 5], [1, 1, 1]).tolist() == [28, 27, 5] or \
        allocate(60, [500, 400, 5], [1, 1, 1]).tolist() == [27, 28, 5]
    assert allocate(7, [0, 10, 10]).tolist()[0] == 0


# ----------------------------------------------------------------- unbiasedness
@pytest.mark.parametrize("model_name", ["glm", "net"])
@pytest.mark.parametrize("cls", [RandomSampler, LeverageSampler, LogitSampler])
def test_weighted_subset_curvature_is_unbiased(request, model_name, cls):
    X, y, model = request.getfixturevalue(model_name)
    A, full = _row_curvatures(model, X, y)
    np.testing.assert_allclose(A.sum(axis=0), full, atol=1e-10 * np.abs(full).max())
    logits = make_adapter(model).eta(make_adapter(model).design(X))   # as the estimators pass them
    draws = 1000 if model_name == "glm" else 400
    est = np.empty((draws,) + full.shape)
    for r in range(draws):
        s = _sampler(cls, 30, r).fit(X, y, estimator=model, logits=logits)
        est[r] = np.einsum("i,ipq->pq", s.sample_weight_, A[s.sample_indices_])
    mean, se = est.mean(axis=0), est.std(axis=0) / np.sqrt(draws)
    # within 4.5 Monte-Carlo standard errors entrywise; in Frobenius norm within 2.5 times
    # the error an unbiased mean of `draws` draws has (E‖mean − M‖² = E‖draw − M‖² / draws)
    assert np.all(np.abs(mean - full) <= 4.5 * se + 1e-12 * np.abs(full).max())
    single = np.sqrt(np.mean(np.sum((est - full) ** 2, axis=(1, 2))))
    assert np.linalg.norm(mean - full) < 2.5 * single / np.sqrt(draws)
    # one draw is 30-45% off: the test fails for a sampler that gets its weights wrong
    assert single > 0.1 * np.linalg.norm(full) and np.linalg.norm(mean - full) < 0.03 * np.linalg.norm(full)


def test_leverage_inclusion_probabilities_are_honoured(glm):
    X, y, model = glm
    counts = np.zeros(len(y))
    draws = 3000
    s = LeverageSampler(n_samples=20, random_state=0, uniform_mix=0.0).fit(X, y, estimator=model)
    pi = s.inclusion_probability_
    assert np.isclose(pi.sum(), 20) and pi.max() <= 1
    assert np.corrcoef(pi, s.leverage_)[0, 1] > 0.99
    rng = np.random.RandomState(1)
    from skinfluence.sampling._leverage import systematic_sample
    for _ in range(draws):
        idx = systematic_sample(pi, rng)
        assert len(idx) == 20
        counts[idx] += 1
    se = np.sqrt(pi * (1 - pi) / draws)
    assert np.all(np.abs(counts / draws - pi) <= 4.5 * se + 1e-12)


def test_leverage_is_exact_without_sketch(glm):
    """p ≤ sketch_size: τ_i = tr(c_i W_i J_i M⁺ J_iᵀ) with M the Fisher plus the penalty
    (a pseudo-inverse: the multinomial's common intercept shift is a null direction)."""
    X, y, model = glm
    ad = make_adapter(model)
    A, full = _row_curvatures(model, X, y)
    M = full + np.diag(ad.penalty.hessian_diagonal())
    tau = np.einsum("ipq,qp->i", A, np.linalg.pinv(M, hermitian=True))
    s = LeverageSampler(n_samples=10, sketch_size=ad.n_params).fit(X, y, estimator=model)
    np.testing.assert_allclose(s.leverage_, tau, rtol=1e-8)
    # the sketch approximates them
    sk = LeverageSampler(n_samples=10, sketch_size=12, random_state=0).fit(X, y, estimator=model)
    assert np.corrcoef(sk.leverage_, tau)[0, 1] > 0.8


# ----------------------------------------------------------- quotas and strata
def _planted_classes(seed=0):
    rng = np.random.default_rng(seed)
    sizes = [600, 300, 100]
    y = np.repeat([0, 1, 2], sizes)
    X = rng.standard_normal((1000, 3)) + 3 * y[:, None]
    logits = rng.standard_normal((1000, 3))
    return X, y, logits


@pytest.mark.parametrize("cls", [FeatureSampler, LogitSampler])
def test_class_quotas_are_proportional(cls):
    X, y, logits = _planted_classes()
    s = cls(n_samples=100, random_state=0).fit(X, y, logits=logits)
    taken = np.bincount(y[s.sample_indices_], minlength=3)
    assert taken.tolist() == [60, 30, 10]
    weight_per_class = np.bincount(y[s.sample_indices_], weights=s.sample_weight_, minlength=3)
    np.testing.assert_allclose(weight_per_class, [600, 300, 100])   # each class stands for itself


@pytest.mark.parametrize("cls", [FeatureSampler, LogitSampler])
def test_class_smaller_than_its_quota_is_taken_whole(cls):
    X, y, logits = _planted_classes()
    keep = np.r_[0:500, 600:900, 900:905]                     # class sizes 500, 300, 5
    s = cls(n_samples=60, class_quotas="balanced", random_state=0).fit(X[keep], y[keep], logits=logits[keep])
    taken = np.bincount(y[keep][s.sample_indices_], minlength=3)
    assert taken[2] == 5 and sorted(taken[:2].tolist()) == [27, 28]
    np.testing.assert_allclose(s.sample_weight_[y[keep][s.sample_indices_] == 2], 1.0)


def test_logit_strata_match_the_margin_distribution():
    X, y, logits = _planted_classes(1)
    s = LogitSampler(n_samples=200, n_strata=10, random_state=0).fit(X, y, logits=logits)
    margin = logit_margin(logits, y)
    np.testing.assert_allclose(s.margin_, margin)
    for k, quota in zip(range(3), [120, 60, 20]):
        rows = np.flatnonzero(y == k)
        edges = np.quantile(margin[rows], np.linspace(0, 1, 11)[1:-1])
        picked = s.sample_indices_[y[s.sample_indices_] == k]
        per_decile = np.bincount(np.searchsorted(edges, margin[picked]), minlength=10)
        assert per_decile.tolist() == [quota // 10] * 10
        assert len(np.unique(s.strata_[rows])) == 10
    # every stratum's weights add up to its size
    sel = s.strata_[s.sample_indices_]
    np.testing.assert_allclose(np.bincount(sel, weights=s.sample_weight_), np.bincount(s.strata_))


def test_logit_margin_binary_and_multiclass():
    eta = np.array([[2.0], [-1.0], [0.5]])
    np.testing.assert_allclose(logit_margin(eta, np.array([1, 1, 0])), [2.0, -1.0, -0.5])
    L = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    np.testing.assert_allclose(logit_margin(L, np.array([0, 1])), [2.0, -3.0])


def test_logit_sampler_computes_logits_from_the_estimator(glm):
    X, y, model = glm
    s = LogitSampler(n_samples=30, random_state=0).fit(X, y, estimator=model)
    np.testing.assert_allclose(s.margin_, logit_margin(model.decision_function(X), y), atol=1e-10)
    binary = LogisticRegression().fit(X, y == 0)
    s = LogitSampler(n_samples=30, random_state=0).fit(X, y == 0, estimator=binary)
    eta = binary.decision_function(X)
    np.testing.assert_allclose(s.margin_, np.where(y == 0, eta, -eta), atol=1e-10)


def test_feature_sampler_takes_rows_nearest_the_centroids():
    """Planted blobs of one class: one row per blob (weighted by its size), or quotas by blob size."""
    rng = np.random.default_rng(0)
    centres = 20 * np.eye(3)
    sizes = np.array([300, 200, 100])
    blob = np.repeat(np.arange(3), sizes)
    X = centres[blob] + rng.standard_normal((600, 3))
    y = np.zeros(600, int)
    s = FeatureSampler(n_samples=3, random_state=0).fit(X, y)
    assert s.features_used_ == "inputs"
    assert sorted(blob[s.sample_indices_].tolist()) == [0, 1, 2]
    np.testing.assert_allclose(np.sort(s.sample_weight_), [100, 200, 300])
    means = np.array([X[blob == b].mean(axis=0) for b in range(3)])
    for i in s.sample_indices_:                                 # the row nearest its blob's mean
        d = np.linalg.norm(X[blob == blob[i]] - means[blob[i]], axis=1)
        assert np.isclose(np.linalg.norm(X[i] - means[blob[i]]), d.min())
    s = FeatureSampler(n_samples=60, n_clusters=3, random_state=0).fit(X, y)
    assert np.bincount(blob[s.sample_indices_]).tolist() == [30, 20, 10]
    np.testing.assert_allclose(s.sample_weight_, 10.0)


def test_feature_sampler_uses_penultimate_features_of_a_network(net):
    X, y, model = net
    F = penultimate_features(model, X)
    with torch.no_grad():
        expected = torch.tanh(model.module[0](torch.as_tensor(X))).numpy()
    np.testing.assert_allclose(F, expected, rtol=1e-12)
    s = FeatureSampler(n_samples=15, random_state=0).fit(X, y, estimator=model)
    assert s.features_used_ == "penultimate" and len(s.sample_indices_) == 15
    inputs = FeatureSampler(n_samples=15, features="inputs").fit(X, y, estimator=model)
    assert inputs.features_used_ == "inputs"


def test_feature_sampler_on_a_linear_model_uses_its_inputs(glm):
    X, y, model = glm
    auto = FeatureSampler(n_samples=20, random_state=0).fit(X, y, estimator=model)
    plain = FeatureSampler(n_samples=20, random_state=0).fit(X, y)
    assert auto.features_used_ == "inputs"
    np.testing.assert_array_equal(auto.sample_indices_, plain.sample_indices_)
    with pytest.raises(ValueError, match="features='penultimate' needs a network.*linear model"):
        FeatureSampler(n_samples=20, features="penultimate").fit(X, y, estimator=model)


# ------------------------------------------------------ full subset, determinism
@pytest.mark.parametrize("model_name", ["glm", "net"])
@pytest.mark.parametrize("cls", SAMPLERS)
def test_all_rows_give_the_full_curvature_exactly(request, model_name, cls):
    X, y, model = request.getfixturevalue(model_name)
    A, full = _row_curvatures(model, X, y)
    for m in (len(y), 1.0):
        s = _sampler(cls, m, 0).fit(X, y, estimator=model)
        np.testing.assert_array_equal(s.sample_indices_, np.arange(len(y)))
        np.testing.assert_array_equal(s.sample_weight_, 1.0)
        np.testing.assert_array_equal(np.einsum("i,ipq->pq", s.sample_weight_, A[s.sample_indices_]),
                                      A.sum(axis=0))


@pytest.mark.parametrize("cls", SAMPLERS)
def test_deterministic_under_random_state(glm, cls):
    X, y, model = glm
    a = _sampler(cls, 25, 3).fit(X, y, estimator=model)
    b = _sampler(cls, 25, 3).fit(X, y, estimator=model)
    np.testing.assert_array_equal(a.sample_indices_, b.sample_indices_)
    np.testing.assert_array_equal(a.sample_weight_, b.sample_weight_)
    others = [_sampler(cls, 25, seed).fit(X, y, estimator=model).sample_indices_ for seed in range(4, 8)]
    assert any(not np.array_equal(a.sample_indices_, o) for o in others)


@pytest.mark.parametrize("cls", SAMPLERS)
def test_fraction_fit_resample_and_no_mutation(glm, cls):
    X, y, model = glm
    Xdf = pd.DataFrame(X, columns=list("abcd"))
    X0, y0, coef0 = X.copy(), y.copy(), model.coef_.copy()
    s = _sampler(cls, 0.2, 0)
    Xs, ys = s.fit_resample(Xdf, y, estimator=model)
    assert isinstance(Xs, pd.DataFrame) and len(Xs) == len(ys) == 18 == len(s.sample_weight_)
    np.testing.assert_array_equal(ys, y[s.sample_indices_])
    assert np.all(s.sample_weight_ > 0) and s.n_rows_ == len(y)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(model.coef_, coef0)
    assert clone(s).get_params() == s.get_params()


# -------------------------------------------------------------------- bad input
@pytest.mark.parametrize("cls", SAMPLERS)
def test_bad_n_samples(glm, cls):
    X, y, model = glm
    with pytest.raises(ValueError, match="exceeds the number of rows"):
        cls(n_samples=len(y) + 1).fit(X, y, estimator=model)
    for bad in (0, -3, 0.0, 1.5, "half"):
        with pytest.raises(InvalidParameterError, match="n_samples"):
            cls(n_samples=bad).fit(X, y, estimator=model)


def test_samplers_that_need_the_model(glm):
    X, y, model = glm
    with pytest.raises(ValueError, match="pass logits= or the fitted estimator="):
        LogitSampler().fit(X, y)
    with pytest.raises(ValueError, match="LeverageSampler needs the fitted model"):
        LeverageSampler().fit(X, y)
    with pytest.raises(ValueError, match="logits has 2 columns but y has 3 classes"):
        LogitSampler().fit(X, y, logits=np.zeros((len(y), 2)))
    with pytest.raises(ValueError, match="unknown to the model"):
        LogitSampler().fit(X, np.where(y == 2, 7, y), estimator=model)
    with pytest.raises(ValueError, match="y must be one-dimensional"):
        RandomSampler().fit(X, np.c_[y, y])
    with pytest.raises(ValueError, match="sample_weight"):
        LeverageSampler().fit(X, y, estimator=model, sample_weight=-np.ones(len(y)))


# ------------------------------------------------------- through the estimators
def _queries(inf, X, y):
    return [inf.attribute(X[:7], y[:7]), inf.self_influence(),
            inf.approx_loocv(response_method="predict_proba"), inf.parameter_change([1, 4])]


@pytest.mark.parametrize("model_name", ["glm", "net"])
@pytest.mark.parametrize("cls", SAMPLERS)
def test_estimator_with_every_row_sampled_matches_the_full_curvature(request, model_name, cls):
    X, y, model = request.getfixturevalue(model_name)
    ref = FisherInfluence(model, prefit=True).fit(X, y)
    inf = FisherInfluence(model, prefit=True, curvature_sampler=_sampler(cls, len(y), 0)).fit(X, y)
    np.testing.assert_array_equal(inf.curvature_rows_, np.arange(len(y)))
    np.testing.assert_allclose(inf.curvature_, ref.curvature_, rtol=1e-12, atol=1e-14)
    for a, b in zip(_queries(inf, X, y), _queries(ref, X, y)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cls", SAMPLERS)
def test_estimator_curvature_is_the_weighted_subset(net, cls):
    """The estimator's curvature is Σ_S w_i c_i J_iᵀW_iJ_i + the penalty, and gradients
    still cover every row; CG and LiSSA solve with the same sampled curvature."""
    X, y, model = net
    A, _ = _row_curvatures(model, X, y)
    inf = FisherInfluence(model, prefit=True, curvature_sampler=_sampler(cls, 30, 0)).fit(X, y)
    s = _sampler(cls, 30, 0).fit(X, y, estimator=model, logits=make_adapter(model).eta(X))
    np.testing.assert_array_equal(inf.curvature_rows_, s.sample_indices_)
    np.testing.assert_allclose(inf.curvature_weights_, s.sample_weight_)
    pen = make_adapter(model).penalty.hessian_diagonal()
    expected = np.einsum("i,ipq->pq", s.sample_weight_, A[s.sample_indices_]) + np.diag(pen)
    np.testing.assert_allclose(inf.curvature_, expected, rtol=1e-10, atol=1e-13)
    assert inf.attribute(X[:5], y[:5]).shape == (5, len(y))
    # the iterative solvers multiply by the same sampled curvature (damped: LiSSA's
    # iterations grow with the condition number)
    dense = FisherInfluence(model, prefit=True, damping=0.2, curvature_sampler=_sampler(cls, 30, 0))
    attr = dense.fit(X, y).attribute(X[:5], y[:5])
    for solver in ("cg", "lissa") if cls is RandomSampler else ("cg",):
        it = FisherInfluence(model, prefit=True, damping=0.2, solver=solver,
                             curvature_sampler=_sampler(cls, 30, 0)).fit(X, y)
        np.testing.assert_allclose(it.attribute(X[:5], y[:5]), attr, rtol=1e-5,
                                   atol=1e-7 * np.abs(attr).max())
