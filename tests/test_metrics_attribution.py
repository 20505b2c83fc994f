"""Attribution metrics (LDS, LOO correlation) and the subset-retraining helper."""

import copy

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import log_loss

from skinfluence import FisherInfluence
from skinfluence.metrics import linear_datamodeling_score, loo_correlation, retrain_on_subsets

from conftest import refit_without

# ---------------------------------------------------------------- hand-computed values
# Three training rows, two test points, four subsets (True = kept).
A = np.array([[1.0, 2.0, 4.0],
              [1.0, 2.0, 4.0]])
SUBSETS = np.array([[True, True, True],     # removed: none      -> predicted shift 0
                    [False, True, True],    # removed: 0         -> 1
                    [True, False, True],    # removed: 1         -> 2
                    [True, True, False]])   # removed: 2         -> 4
# Test point 0: actual order of the last two swapped: ranks (1, 2, 4, 3) against (1, 2, 3, 4):
# Spearman 1 − 6·Σd²/(n(n²−1)) = 1 − 6·2/60 = 0.8.  Test point 1: reversed order: −1.
ACTUAL = np.array([[0.0, 3.0],
                   [0.5, 2.0],
                   [1.5, 1.0],
                   [1.0, 0.0]])


def test_lds_hand_computed():
    score, per_point = linear_datamodeling_score(A, ACTUAL, SUBSETS, return_per_point=True)
    np.testing.assert_allclose(per_point, [0.8, -1.0])
    assert score == pytest.approx(-0.1)


def test_lds_full_losses_and_index_lists_give_the_same_score():
    kept = [np.flatnonzero(m) for m in SUBSETS]
    ref = linear_datamodeling_score(A, ACTUAL, SUBSETS)
    assert linear_datamodeling_score(A, ACTUAL, kept) == pytest.approx(ref)
    assert linear_datamodeling_score(A, ACTUAL, SUBSETS, np.array([5.0, -3.0])) == pytest.approx(ref)


def test_lds_ties_use_average_ranks():
    # predicted (0, 1, 1, 4) -> ranks (1, 2.5, 2.5, 4); actual ranks (1, 2, 3, 4):
    # Pearson of the ranks = 4.5 / sqrt(4.5 · 5) = 0.9486833
    A_tie = np.array([[1.0, 1.0, 4.0]])
    lds = linear_datamodeling_score(A_tie, np.array([[0.0], [1.0], [2.0], [3.0]]), SUBSETS)
    assert lds == pytest.approx(4.5 / np.sqrt(4.5 * 5.0))


def test_lds_sign_convention_removal_raises_loss():
    """A positive A[j, i] (removing i raises j's loss) predicts higher loss for subsets without i."""
    actual = ACTUAL[:, :1].copy()
    actual[:, 0] = [0.0, 1.0, 2.0, 4.0]
    assert linear_datamodeling_score(A[:1], actual, SUBSETS) == pytest.approx(1.0)
    assert linear_datamodeling_score(-A[:1], actual, SUBSETS) == pytest.approx(-1.0)


def test_lds_undefined_points_are_nan_and_left_out_of_the_mean():
    A0 = np.vstack([A[0], np.zeros(3)])              # second test point: constant prediction
    score, per_point = linear_datamodeling_score(A0, ACTUAL, SUBSETS, return_per_point=True)
    assert np.isnan(per_point[1]) and score == pytest.approx(0.8)
    with pytest.raises(ValueError, match="undefined for every test point"):
        linear_datamodeling_score(np.zeros_like(A), ACTUAL, SUBSETS)


def test_loo_correlation_hand_computed():
    # predicted (1, 2, 3), actual changes (1, 3, 2): centred (−1, 0, 1)·(−1, 1, 0) = 1 over
    # sqrt(2)·sqrt(2) -> 0.5 (Pearson and Spearman alike). Second point: perfectly linear.
    A_loo = np.array([[1.0, 2.0, 3.0, 9.0],
                      [1.0, 2.0, 3.0, 9.0]])
    full = np.array([10.0, 0.0])
    loo = np.array([[11.0, 2.0], [13.0, 4.0], [12.0, 6.0]])  # rows 0, 1, 2 removed
    for method in ("pearson", "spearman"):
        score, per_point = loo_correlation(A_loo, loo, [0, 1, 2], full, method=method, return_per_point=True)
        np.testing.assert_allclose(per_point, [0.5, 1.0])
        assert score == pytest.approx(0.75)
    # Pearson sees the curvature that Spearman ignores: actual changes (1, 2, 10)
    loo2 = np.array([[11.0, 0.0], [12.0, 0.0], [20.0, 1.0]])
    r = np.corrcoef([1, 2, 3], [1, 2, 10])[0, 1]
    assert loo_correlation(A_loo[:1], loo2[:, :1], [0, 1, 2], full[:1]) == pytest.approx(r)
    assert loo_correlation(A_loo[:1], loo2[:, :1], [0, 1, 2], full[:1], method="spearman") == pytest.approx(1.0)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("call, match", [
    (lambda: linear_datamodeling_score(A, ACTUAL[:, :1], SUBSETS), "subset_losses must have shape"),
    (lambda: linear_datamodeling_score(A, ACTUAL, SUBSETS[:, :2]), "subsets must have shape"),
    (lambda: linear_datamodeling_score(A, ACTUAL[:2], SUBSETS[:2]), "at least 3 retrained subsets"),
    (lambda: linear_datamodeling_score(A, ACTUAL, SUBSETS, np.ones(3)), "full_losses must have shape"),
    (lambda: linear_datamodeling_score(A[0], ACTUAL, SUBSETS), "attributions must be a 2-d array"),
    (lambda: linear_datamodeling_score(np.where(A > 3, np.nan, A), ACTUAL, SUBSETS), "NaN"),
    (lambda: linear_datamodeling_score(A, np.where(ACTUAL > 2, np.inf, ACTUAL), SUBSETS), "NaN or infinite"),
    (lambda: linear_datamodeling_score(A, ACTUAL, [[0, 1], [0, 5], [1], [2]]), "outside"),
    (lambda: loo_correlation(A, ACTUAL[:3], [0, 1, 2], np.zeros(3)), "full_losses must have shape"),
    (lambda: loo_correlation(A, ACTUAL[:2], [0, 1], np.zeros(2)), "at least 3 removed rows"),
    (lambda: loo_correlation(A, ACTUAL[:3], [0, 1, 3], np.zeros(2)), "outside"),
    (lambda: loo_correlation(A, ACTUAL[:3], [0, 1, 2], np.zeros(2), method="kendall"), "method must be"),
    (lambda: loo_correlation(A, ACTUAL[:3], [0, 1, 2], np.array([0.0, np.nan])), "NaN"),
])
def test_bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_float_indices_are_refused():
    with pytest.raises(TypeError, match="integer"):
        loo_correlation(A, ACTUAL[:3], [0.0, 1.0, 2.0], np.zeros(2))
    with pytest.raises(TypeError, match="integer index arrays"):
        linear_datamodeling_score(A, ACTUAL, [[0.0], [1.0], [2.0], [1.0]])


# ---------------------------------------------------------------- the retraining helper
@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=90, n_features=5, n_informative=4, n_redundant=0,
                               n_classes=3, random_state=0)
    return X[:60], y[:60], X[60:], y[60:]


def test_retrain_on_subsets_matches_a_direct_loop(data, tmp_path):
    X, y, Xt, yt = data
    est = LogisticRegression(C=0.5, max_iter=2000)
    res = retrain_on_subsets(est, X, y, Xt, yt, subsets=4, random_state=0, cache_dir=tmp_path)
    assert res.subsets.shape == (4, 60) and res.subset_losses.shape == (4, 30)
    assert (res.subsets.sum(axis=1) == 30).all()
    for kept, losses in zip(res.subsets, res.subset_losses):
        model = clone(est).fit(X[kept], y[kept])
        ref = [log_loss([t], p[None], labels=model.classes_) for t, p in zip(yt, model.predict_proba(Xt))]
        np.testing.assert_allclose(losses, ref, rtol=1e-10)
    full = clone(est).fit(X, y)
    np.testing.assert_allclose(res.full_losses, -np.log(full.predict_proba(Xt)[np.arange(30), yt]), rtol=1e-10)
    # second call: from the cache, and in parallel: the same numbers
    again = retrain_on_subsets(est, X, y, Xt, yt, subsets=4, random_state=0, cache_dir=tmp_path, n_jobs=2)
    np.testing.assert_array_equal(again.subset_losses, res.subset_losses)
    assert len(list(tmp_path.glob("losses_*.npy"))) == 5
    # trained in parallel workers, without the cache: the same numbers
    par = retrain_on_subsets(est, X, y, Xt, yt, subsets=4, random_state=0, n_jobs=2)
    np.testing.assert_allclose(par.subset_losses, res.subset_losses, rtol=1e-12)


def test_retrain_on_subsets_regression_and_callable_loss(data):
    X, _, Xt, _ = data
    y, yt = X @ np.arange(5.0), Xt @ np.arange(5.0) + 1.0
    masks = ~np.eye(60, dtype=bool)[[3, 7, 11]]
    res = retrain_on_subsets(Ridge(alpha=1.0), X, y, Xt, yt, subsets=masks)
    np.testing.assert_array_equal(res.subsets, masks)
    model = refit_without(Ridge(alpha=1.0), X, y, [7])
    np.testing.assert_allclose(res.subset_losses[1], 0.5 * (yt - model.predict(Xt)) ** 2, rtol=1e-10)
    res_abs = retrain_on_subsets(Ridge(alpha=1.0), X, y, Xt, yt, subsets=masks,
                                 loss=lambda est, X_, y_: np.abs(y_ - est.predict(X_)))
    np.testing.assert_allclose(res_abs.subset_losses[1], np.abs(yt - model.predict(Xt)), rtol=1e-10)


def test_retrain_on_subsets_bad_input(data):
    X, y, Xt, yt = data
    est = LogisticRegression()
    with pytest.raises(ValueError, match="subsets"):
        retrain_on_subsets(est, X, y, Xt, yt, subsets=2)
    with pytest.raises(ValueError, match="boolean array of shape"):
        retrain_on_subsets(est, X, y, Xt, yt, subsets=np.ones((3, 59), dtype=bool))
    with pytest.raises(ValueError, match="at least one training row"):
        retrain_on_subsets(est, X, y, Xt, yt, subsets=np.zeros((3, 60), dtype=bool))
    with pytest.raises(ValueError, match="subset_fraction"):
        retrain_on_subsets(est, X, y, Xt, yt, subset_fraction=1.5)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        retrain_on_subsets(est, X, y[:-1], Xt, yt)
    with pytest.raises(ValueError, match="one value per test sample"):
        retrain_on_subsets(est, X, y, Xt, yt, subsets=3, loss=lambda e, X_, y_: np.zeros(2))


def test_influence_predicts_leave_one_out_with_the_documented_sign(data):
    """End to end: Fisher influence of a logistic regression against exact LOO refits."""
    X, y, Xt, yt = data
    est = LogisticRegression(C=0.3, tol=1e-12, max_iter=5000)
    removed = np.arange(0, 60, 3)
    truth = retrain_on_subsets(est, X, y, Xt, yt, subsets=~np.eye(60, dtype=bool)[removed])
    A = FisherInfluence(est).fit(X, y).attribute(Xt, yt)
    assert loo_correlation(A, truth.subset_losses, removed, truth.full_losses) > 0.95
    assert loo_correlation(-A, truth.subset_losses, removed, truth.full_losses) < -0.95
    half = retrain_on_subsets(est, X, y, Xt, yt, subsets=30, random_state=0)
    lds = linear_datamodeling_score(A, half.subset_losses, half.subsets, half.full_losses)
    assert 0.5 < lds <= 1.0


# ---------------------------------------------------------------- ensembles of influence estimators
def test_influence_ensemble_averages_its_members(data):
    from skinfluence.ensemble import InfluenceEnsemble

    X, y, Xt, yt = data
    fitted = LogisticRegression(C=0.5, tol=1e-12, max_iter=5000).fit(X, y)
    members = [FisherInfluence(LogisticRegression(C=1.0, tol=1e-12, max_iter=5000)),
               FisherInfluence(fitted, prefit=True, damping=1e-3)]
    ens = InfluenceEnsemble(members).fit(X, y)
    expected = [m.fit(X, y).attribute(Xt, yt) for m in (clone(members[0]), copy.deepcopy(members[1]))]
    np.testing.assert_allclose(ens.attribute(Xt, yt), np.mean(expected, axis=0), rtol=1e-10)
    np.testing.assert_allclose(ens.attribute(Xt, yt, reduce="sum"), np.mean(expected, axis=0).sum(axis=0),
                               rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ens.self_influence(), np.mean([m.self_influence() for m in ens.influences_], axis=0))
    # top_k and out= over blocks of test rows (a budget of a few rows per block)
    budget = 8 * 4 * 3 * len(y)
    small = InfluenceEnsemble([clone(members[0]).set_params(memory_budget=budget),
                               copy.deepcopy(members[1]).set_params(memory_budget=budget)]).fit(X, y)
    mean = np.mean(expected, axis=0)
    top = small.attribute(Xt, yt, top_k=5)
    np.testing.assert_array_equal(top.helpful_indices, np.argsort(-mean, axis=1, kind="stable")[:, :5])
    np.testing.assert_array_equal(top.harmful_indices, np.argsort(mean, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(top.helpful_scores, np.take_along_axis(mean, top.helpful_indices, 1), rtol=1e-10)
    out = np.zeros_like(mean)
    assert small.attribute(Xt, yt, out=out) is out
    np.testing.assert_allclose(out, mean, rtol=1e-10)
    with pytest.raises(ValueError, match="at most one"):
        small.attribute(Xt, yt, top_k=3, reduce="sum")
    with pytest.raises(ValueError, match="top_k"):
        small.attribute(Xt, yt, top_k=0)
    assert not any(hasattr(m, "adapter_") for m in members)      # the given members are not fitted
    with pytest.raises(TypeError, match="influence estimator"):
        InfluenceEnsemble([fitted]).fit(X, y)
    with pytest.raises(ValueError, match="non-empty list"):
        InfluenceEnsemble([]).fit(X, y)
