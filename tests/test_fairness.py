"""Tests of skinfluence.fairness: metrics against fairlearn, InfluenceReweighing on
synthetic data with injected label bias, the linear programme's constraints, bad input."""

import copy
import warnings

import joblib
from functools import partial

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import skorch
import torch
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier
from sklearn.neighbors import KNeighborsClassifier

from skinfluence import InfluenceWarning
from skinfluence.refit import fit_weighted

from skinfluence.fairness import (
    FairnessWarning,
    InfluenceReweighing,
    demographic_parity_difference,
    equal_opportunity_difference,
    solve_reweighing_lp,
)
from skinfluence.fairness._reweighing import AUTO_BETAS

from conftest import TanhNet


def biased_data(n=1200, flip=0.5, seed=0):
    """Labels from one logistic model for both groups, then a share ``flip`` of the
    positives of group 0 relabelled negative (historical label bias)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 3)) + 0.5 * a[:, None]
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ [1.5, -1.0, 0.5])))).astype(int)
    flipped = (a == 0) & (y == 1) & (rng.random(n) < flip)
    y[flipped] = 0
    return np.column_stack([X, a]), y, a, flipped


TwoLayer = partial(TanhNet, h=8)   # 4 → 8 → 2


def lr():
    return LogisticRegression(C=1.0, tol=1e-10, max_iter=1000)


# ------------------------------------------------------------------ metrics
@pytest.mark.parametrize("n_groups", [2, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_metrics_match_fairlearn(n_groups, weighted):
    fm = pytest.importorskip("fairlearn.metrics")
    rng = np.random.default_rng(1)
    n = 400
    y, p = rng.integers(0, 2, n), rng.integers(0, 2, n)
    s = np.array(["a", "b", "c"])[rng.integers(0, n_groups, n)]
    sw = rng.random(n) if weighted else None
    assert demographic_parity_difference(y, p, sensitive_features=s, sample_weight=sw) == \
        pytest.approx(fm.demographic_parity_difference(y, p, sensitive_features=s,
                                                       sample_weight=sw), abs=1e-12)
    # equal opportunity = the true-positive-rate part of fairlearn's equalized odds
    tpr = fm.MetricFrame(metrics=fm.true_positive_rate, y_true=y, y_pred=p,
                         sensitive_features=s,
                         sample_params=None if sw is None else {"sample_weight": sw})
    assert equal_opportunity_difference(y, p, sensitive_features=s, sample_weight=sw) == \
        pytest.approx(tpr.difference(), abs=1e-12)


def test_metrics_pos_label_and_intersectional():
    y = np.array(["no", "yes", "yes", "no", "yes", "yes"])
    p = np.array(["yes", "yes", "no", "no", "yes", "yes"])
    s = pd.DataFrame({"sex": ["f", "f", "f", "m", "m", "m"], "race": list("xxxxxx")})
    assert demographic_parity_difference(y, p, sensitive_features=s, pos_label="yes") == \
        pytest.approx(2 / 3 - 2 / 3)
    assert equal_opportunity_difference(y, p, sensitive_features=s["sex"], pos_label="yes") == \
        pytest.approx(1.0 - 0.5)


def test_metrics_bad_input():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="rows"):
        demographic_parity_difference(y, y, sensitive_features=[0, 1, 0])
    with pytest.raises(ValueError, match="missing"):
        demographic_parity_difference(y, y, sensitive_features=[0, 1, np.nan, 1])
    with pytest.raises(ValueError, match="no positive samples"):
        equal_opportunity_difference(y, y, sensitive_features=[1, 0, 1, 0])


# ------------------------------------------------------------------ the programme
def test_lp_constraints_and_fallback():
    rng = np.random.default_rng(0)
    u, f = rng.normal(size=200), rng.normal(size=200) * 1e-3
    x, fb = solve_reweighing_lp(u, f, 0.01, alpha=0.1, beta=1.0, gamma=0.0)
    assert not fb and x.min() >= 0 and x.max() <= 1
    assert f @ x <= -0.01 + 1e-9 and u @ x <= 1e-9
    # a gap no reweighing can close to first order: fallback, its constraints hold
    x, fb = solve_reweighing_lp(u, f, 10.0, alpha=0.1, beta=1.0, gamma=0.0)
    assert fb and u @ x <= 1e-9 and x.sum() <= 0.1 * 200 + 1e-9
    assert f @ x < 0  # the gap still falls, within the budget


# ------------------------------------------------------------------ the estimator
@pytest.mark.parametrize("constraint", ["demographic_parity", "equal_opportunity"])
def test_reweighing_reduces_gap_and_lp_holds(constraint):
    X, y, a, _ = biased_data(flip=0.15)
    est = lr()
    params = est.get_params()
    m = InfluenceReweighing(est, constraint=constraint, beta=1.0, validation_fraction=0.3,
                            random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FairnessWarning)  # the target is reachable here
        m.fit(X, y, sensitive_features=a)
    assert est.get_params() == params and not hasattr(est, "coef_")  # user's estimator intact
    r = m.report_
    assert r["gap_after"] < 0.5 * r["gap_before"]
    assert r["smooth_gap_after"] < 0.5 * r["smooth_gap_before"]
    # the programme's constraints on the stored influences and solution
    x, u, f = m.removal_, m.utility_influence_, m.fairness_influence_
    assert x.shape == u.shape == f.shape == ((~m.validation_mask_).sum(),)
    assert x.min() >= 0 and x.max() <= 1
    if m.fallback_:
        assert u @ x <= 1e-8 and x.sum() <= m.alpha * len(x) + 1e-8
    else:
        assert f @ x <= -m.beta_ * r["smooth_gap_before"] + 1e-8
        assert u @ x <= m.gamma * u[u < 0].sum() + 1e-8
    # weights: 1 − x on training rows, 0 on validation rows; refit reproduces estimator_
    w = m.sample_weight_
    np.testing.assert_allclose(w[~m.validation_mask_], 1 - x)
    assert np.all(w[m.validation_mask_] == 0)
    ref = clone(est).fit(X[w > 0], y[w > 0], sample_weight=w[w > 0])
    np.testing.assert_allclose(m.estimator_.coef_, ref.coef_, rtol=1e-5, atol=1e-7)
    # predict / predict_proba / score delegate to the refitted model
    np.testing.assert_array_equal(m.predict(X), m.estimator_.predict(X))
    np.testing.assert_allclose(m.predict_proba(X), m.estimator_.predict_proba(X))
    assert 0.5 < m.score(X, y) <= 1


@pytest.mark.parametrize("constraint", ["demographic_parity", "equal_opportunity"])
def test_removal_targets_the_biased_labels(constraint):
    # the injected bias is known: positives of group 0 relabelled negative. Removing
    # them is the right reweighting, and the programme puts its weight there (about
    # 5x their share of the data); the rest goes to other negatives of group 0 and to
    # positives of group 1, never to points whose removal would widen the gap.
    X, y, a, flipped = biased_data(flip=0.3)
    m = InfluenceReweighing(lr(), constraint=constraint, validation_fraction=0.3,
                            random_state=0).fit(X, y, sensitive_features=a)
    tr = ~m.validation_mask_
    x, fl = m.removal_, flipped[tr]
    assert x[fl].sum() / x.sum() > 3 * fl.mean()
    widen = ((a[tr] == 0) & (y[tr] == 1)) | ((a[tr] == 1) & (y[tr] == 0))
    assert x[widen].sum() < 0.01 * x.sum()
    assert m.report_["gap_after"] < 0.5 * m.report_["gap_before"]
    # beta="auto": the candidate grid, and the one whose refit has the smallest gap
    search = m.beta_search_
    np.testing.assert_array_equal(search["beta"], AUTO_BETAS)
    assert m.beta_ == search["beta"][np.argmin(search["gap"])]
    assert m.report_["gap_after"] == search["gap"].min()


def _measured_gap(model, X, y, a, rows, constraint):
    metric = {"demographic_parity": demographic_parity_difference,
              "equal_opportunity": equal_opportunity_difference}[constraint]
    return metric(y[rows], model.predict(X[rows]), sensitive_features=a[rows])


@pytest.mark.parametrize("gap_on", ["all", "validation"])
@pytest.mark.parametrize("constraint", ["demographic_parity", "equal_opportunity"])
def test_beta_search_equals_a_manual_search(constraint, gap_on):
    # candidates: one fit per beta by hand, the gap of each refit measured on the gap rows;
    # the search keeps the smallest (ties: the smaller beta) and is then that fit exactly
    X, y, a, _ = biased_data(n=800, flip=0.3, seed=1)
    betas = [1.5, 0.25, 0.5, 1.0, 0.5]  # any order, a repeat
    kw = dict(constraint=constraint, validation_fraction=0.3, gap_on=gap_on, random_state=0)
    est = lr()
    before = joblib.hash(est), joblib.hash((X, y, a))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairnessWarning)  # the largest beta may fall back
        m = InfluenceReweighing(est, beta=betas, **kw).fit(X, y, sensitive_features=a)
    assert (joblib.hash(est), joblib.hash((X, y, a))) == before  # the user's objects intact
    assert not hasattr(est, "coef_")
    manual = {}
    for b in sorted(set(betas)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FairnessWarning)
            mb = InfluenceReweighing(lr(), beta=b, **kw).fit(X, y, sensitive_features=a)
        rows = np.arange(len(y)) if gap_on == "all" else np.flatnonzero(mb.validation_mask_)
        manual[b] = (_measured_gap(mb.estimator_, X, y, a, rows, constraint), mb)
    np.testing.assert_array_equal(m.beta_search_["beta"], sorted(manual))
    np.testing.assert_allclose(m.beta_search_["gap"], [g for g, _ in manual.values()], atol=1e-12)
    gaps = [g for g, _ in manual.values()]
    assert len(set(np.round(gaps, 6))) > 1  # the candidates differ: the choice is not trivial
    chosen = sorted(manual)[int(np.argmin(gaps))]
    assert m.beta_ == chosen
    ref = manual[chosen][1]
    np.testing.assert_allclose(m.estimator_.coef_, ref.estimator_.coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.removal_, ref.removal_, atol=1e-12)
    assert m.report_["gap_after"] == pytest.approx(min(gaps), abs=1e-12)
    assert m.report_["gap_evaluated_on"] == gap_on


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_beta_search_over_workers_equals_the_serial_search(backend):
    # the candidates' refits over two workers: the same candidates, choice and model
    X, y, a, _ = biased_data(n=800, flip=0.3, seed=2)
    kw = dict(constraint="equal_opportunity", beta=[0.25, 0.5, 1.0, 40.0], alpha=0.05,
              random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FairnessWarning)
        serial = InfluenceReweighing(lr(), **kw).fit(X, y, sensitive_features=a)
        with joblib.parallel_config(backend=backend):
            par = InfluenceReweighing(lr(), n_jobs=2, **kw).fit(X, y, sensitive_features=a)
    assert serial.beta_search_["fallback"][-1]  # the shared fallback is exercised too
    for key, value in serial.beta_search_.items():
        np.testing.assert_allclose(par.beta_search_[key], value, atol=1e-12)
    assert par.beta_ == serial.beta_
    np.testing.assert_allclose(par.estimator_.coef_, serial.estimator_.coef_, atol=1e-12)
    np.testing.assert_allclose(par.sample_weight_, serial.sample_weight_, atol=0)


def test_gap_on_all_measures_every_row_and_validation_only_the_held_out_part():
    X, y, a, _ = biased_data(n=800, flip=0.3, seed=3)
    kw = dict(constraint="equal_opportunity", beta=0.5, validation_fraction=0.3, random_state=0)
    ma = InfluenceReweighing(lr(), gap_on="all", **kw).fit(X, y, sensitive_features=a)
    mv = InfluenceReweighing(lr(), gap_on="validation", **kw).fit(X, y, sensitive_features=a)
    plain = ma.influence_.estimator_
    va = np.flatnonzero(mv.validation_mask_)
    for m, rows in ((ma, np.arange(len(y))), (mv, va)):
        assert m.report_["gap_before"] == pytest.approx(
            _measured_gap(plain, X, y, a, rows, "equal_opportunity"), abs=1e-12)
        # the utility (accuracy, loss) stays on the validation part
        assert m.report_["accuracy_before"] == pytest.approx(np.mean(plain.predict(X[va]) == y[va]))
    # the loss influences are the same; the gap's differ (other rows)
    np.testing.assert_allclose(ma.utility_influence_, mv.utility_influence_, rtol=1e-10)
    assert not np.allclose(ma.fairness_influence_, mv.fairness_influence_)


@pytest.mark.parametrize("beta, match", [
    ([], "non-empty 1-d"), ([[0.5, 1.0]], "non-empty 1-d"), ([0.5, -1.0], ">= 0"),
    ([0.5, np.nan], "finite"), (np.array([0.5, np.inf]), "finite"), (["a", "b"], "numbers"),
])
def test_beta_candidates_bad_input(beta, match):
    X, y, a, _ = biased_data(n=200)
    est = lr()
    with pytest.raises(ValueError, match=match):
        InfluenceReweighing(est, beta=beta).fit(X, y, sensitive_features=a)
    assert not hasattr(est, "coef_")


def test_gap_on_bad_input():
    X, y, a, _ = biased_data(n=200)
    with pytest.raises(ValueError, match="gap_on"):
        InfluenceReweighing(lr(), gap_on="train").fit(X, y, sensitive_features=a)


def test_first_order_prediction_matches_refit_for_small_removal():
    X, y, a, _ = biased_data(flip=0.3, seed=2)
    m = InfluenceReweighing(lr(), beta=0.05, gamma=0.0, validation_fraction=None,
                            random_state=0)
    m.fit(X, y, sensitive_features=a)
    r = m.report_
    change, predicted = (r["smooth_gap_after"] - r["smooth_gap_before"],
                         r["smooth_gap_predicted"] - r["smooth_gap_before"])
    assert predicted == pytest.approx(-0.05 * r["smooth_gap_before"], rel=1e-6)
    assert change == pytest.approx(predicted, rel=0.15)
    assert r["gap_evaluated_on"] == r["evaluated_on"] == "training"  # every row, in-sample


def test_beta_zero_changes_nothing_and_hessian_equals_fisher():
    X, y, a, _ = biased_data(n=600, flip=0.15)
    m0 = InfluenceReweighing(lr(), beta=0.0, gamma=0.0, random_state=0).fit(
        X, y, sensitive_features=a)
    assert m0.removal_.sum() == pytest.approx(0.0, abs=1e-9)
    mf = InfluenceReweighing(lr(), beta=0.85, random_state=0).fit(X, y, sensitive_features=a)
    mh = InfluenceReweighing(lr(), beta=0.85, curvature="hessian", random_state=0).fit(
        X, y, sensitive_features=a)
    np.testing.assert_allclose(mf.fairness_influence_, mh.fairness_influence_, rtol=1e-6,
                               atol=1e-12)


def test_infeasible_target_falls_back_with_warning():
    X, y, a, _ = biased_data(n=600)
    m = InfluenceReweighing(lr(), beta=50.0, alpha=0.05, random_state=0)
    with pytest.warns(FairnessWarning, match="out of reach"):
        m.fit(X, y, sensitive_features=a)
    assert m.fallback_ and m.report_["fallback"]
    assert m.removal_.sum() <= 0.05 * len(m.removal_) + 1e-8
    # out of reach at 50, so at 60: one fallback solution and refit, shared
    m2 = clone(m).set_params(beta=[60.0, 50.0])
    with pytest.warns(FairnessWarning, match="beta=50.0"):
        m2.fit(X, y, sensitive_features=a)
    search = m2.beta_search_
    assert search["fallback"].all() and m2.beta_ == 50.0
    for key in ("gap", "smooth_gap", "accuracy", "removed"):
        assert search[key][0] == search[key][1]
    np.testing.assert_allclose(m2.removal_, m.removal_, atol=1e-12)


def test_dataframe_column_name_and_string_labels():
    X, y, a, _ = biased_data(n=600, flip=0.15)
    df = pd.DataFrame(X, columns=["x0", "x1", "x2", "sex"])
    yl = np.where(y == 1, ">50K", "<=50K")
    m = InfluenceReweighing(lr(), beta=0.85, random_state=0).fit(df, yl, sensitive_features="sex")
    labels = list(np.where(a == 1, "M", "F"))  # a list of per-row labels, not column names
    m2 = InfluenceReweighing(lr(), beta=0.85, random_state=0).fit(df, yl, sensitive_features=labels)
    assert list(m.classes_) == ["<=50K", ">50K"]
    np.testing.assert_allclose(m.sample_weight_, m2.sample_weight_)
    assert m.predict(df).dtype.kind == "U"
    # a Series, sparse X, and a clone give the same weights
    ms = InfluenceReweighing(lr(), beta=0.85, random_state=0).fit(sp.csr_matrix(X), yl,
                                                                  sensitive_features=df["sex"])
    np.testing.assert_allclose(ms.sample_weight_, m.sample_weight_, atol=1e-6)
    mc = clone(m).fit(df, yl, sensitive_features="sex")
    assert not hasattr(clone(m), "estimator_")
    np.testing.assert_allclose(mc.sample_weight_, m.sample_weight_)
    with pytest.raises(ValueError, match="not in X"):
        m.fit(df, yl, sensitive_features="race")
    with pytest.raises(ValueError, match="not a DataFrame"):
        m.fit(X, yl, sensitive_features="sex")


# ------------------------------------------------------------------ bad input
def test_not_fitted():
    with pytest.raises(NotFittedError):
        InfluenceReweighing(lr()).predict(np.zeros((2, 4)))


def test_one_group():
    X, y, a, _ = biased_data(n=200)
    with pytest.raises(ValueError, match="only one group"):
        InfluenceReweighing(lr()).fit(X, y, sensitive_features=np.ones(200))


def test_wrong_length_sensitive_feature():
    X, y, a, _ = biased_data(n=200)
    with pytest.raises(ValueError, match="199 rows"):
        InfluenceReweighing(lr()).fit(X, y, sensitive_features=a[:-1])


def test_missing_sensitive_feature():
    X, y, a, _ = biased_data(n=200)
    s = a.astype(float)
    s[3] = np.nan
    with pytest.raises(ValueError, match="missing"):
        InfluenceReweighing(lr()).fit(X, y, sensitive_features=s)


def test_non_binary_target():
    X, y, a, _ = biased_data(n=300)
    y3 = y + (X[:, 0] > 1)
    with pytest.raises(ValueError, match="binary classification only"):
        InfluenceReweighing(lr()).fit(X, y3, sensitive_features=a)
    with pytest.raises(ValueError, match="binary classification only"):
        InfluenceReweighing(lr()).fit(X, X[:, 0], sensitive_features=a)


@pytest.mark.parametrize("est", [RandomForestClassifier(n_estimators=3),
                                 SGDClassifier(loss="hinge"), LinearRegression()])
def test_unsupported_estimator(est):
    X, y, a, _ = biased_data(n=200)
    with pytest.raises((TypeError, ValueError), match="not supported|must be a classifier"):
        InfluenceReweighing(est).fit(X, y, sensitive_features=a)


def test_estimator_without_sample_weight():
    X, y, a, _ = biased_data(n=200)
    with pytest.raises(TypeError, match="does not accept sample_weight"):
        InfluenceReweighing(KNeighborsClassifier()).fit(X, y, sensitive_features=a)


@pytest.mark.parametrize("curvature", ["fisher", "hessian"])
def test_skorch_mlp_is_fine_tuned_on_the_fairness_weights(curvature):
    X, y, a, flipped = biased_data(flip=0.3)
    X = X.astype(np.float32)
    net = skorch.NeuralNetClassifier(TwoLayer, criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.Adam,
                                     lr=0.02, optimizer__weight_decay=1e-3, max_epochs=300,
                                     batch_size=-1, train_split=None, verbose=0)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InfluenceWarning)  # Adam stops short of the optimum
        m = InfluenceReweighing(net, constraint="equal_opportunity", curvature=curvature,
                                damping=0.02 if curvature == "hessian" else 0.0, beta=0.85,
                                validation_fraction=0.3, random_state=0).fit(X, y, sensitive_features=a)
    assert not hasattr(net, "module_")                    # the user's net is untouched
    assert type(m.estimator_) is type(net) and m.estimator_ is not m.influence_.estimator_
    r = m.report_
    assert r["gap_after"] < 0.5 * r["gap_before"] and r["accuracy_after"] > r["accuracy_before"] - 0.03
    tr = ~m.validation_mask_
    assert m.removal_[flipped[tr]].sum() / m.removal_.sum() > 3 * flipped[tr].mean()
    # control: the same fine-tuning with unit weights leaves the gap where it was
    ctrl = fit_weighted(copy.deepcopy(m.influence_.estimator_), X[tr], y[tr], np.ones(tr.sum()),
                        warm_start=True)
    va = m.validation_mask_
    gap = equal_opportunity_difference(y[va], ctrl.predict(X[va]), sensitive_features=a[va])
    assert gap > 0.75 * r["gap_before"]


def test_bad_params():
    X, y, a, _ = biased_data(n=200)
    with pytest.raises(ValueError, match="constraint"):
        InfluenceReweighing(lr(), constraint="equalized_odds").fit(X, y, sensitive_features=a)
    with pytest.raises(ValueError, match="beta"):
        InfluenceReweighing(lr(), beta=-1).fit(X, y, sensitive_features=a)
    with pytest.raises(ValueError, match="beta"):
        InfluenceReweighing(lr(), beta="strong").fit(X, y, sensitive_features=a)
    with pytest.raises(ValueError, match="validation_fraction"):
        InfluenceReweighing(lr(), validation_fraction=1.0).fit(X, y, sensitive_features=a)


def test_group_without_positives_in_validation():
    X, y, a, _ = biased_data(n=300)
    y = y.copy()
    y[a == 0] = 0
    y[np.flatnonzero(a == 0)[:1]] = 1  # one positive: cannot be in both parts
    with pytest.raises(ValueError, match="positive samples"):
        InfluenceReweighing(lr(), constraint="equal_opportunity").fit(
            X, y, sensitive_features=a)
