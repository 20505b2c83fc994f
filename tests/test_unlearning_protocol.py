"""Unlearning metrics and the stepping protocol."""

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from skinfluence.metrics import backdoor_scores, unlearning_f1, unlearning_scores
from skinfluence.models import make_adapter
from skinfluence.unlearning import unlearning_path


def test_f1_formula_and_limits():
    assert unlearning_f1(0.9, 0.0) == pytest.approx(2 * 0.9 / 1.9)
    assert unlearning_f1(0.8, 0.25) == pytest.approx(2 * 0.75 * 0.8 / 1.55)
    assert unlearning_f1(0.0, 1.0) == 0.0
    with pytest.raises(ValueError, match="self_accuracy"):
        unlearning_f1(0.5, 1.5)


def _iris():
    X, y = load_iris(return_X_y=True)
    return X, y, LogisticRegression(C=1.0, max_iter=2000).fit(X, y)


def test_unlearning_scores_match_direct_computation():
    X, y, est = _iris()
    keep, gone = y != 2, y == 2
    s = unlearning_scores(est, X[keep], y[keep], X[gone], y[gone])
    ea = np.mean(est.predict(X[keep]) == y[keep])
    sa = np.mean(est.predict(X[gone]) == y[gone])
    P = est.predict_proba(X[gone])
    assert s["exclusive_accuracy"] == ea and s["self_accuracy"] == sa
    assert s["self_loss"] == pytest.approx(-np.mean(np.log(P[:, 2])))
    assert s["f1"] == pytest.approx(unlearning_f1(ea, sa))


def test_backdoor_scores():
    X, y, est = _iris()
    pred = est.predict(X)
    s = backdoor_scores(est, X, y, X, y, target=0)
    assert s["clean_accuracy"] == s["relabel_accuracy"] == np.mean(pred == y)
    assert s["attack_success"] == np.mean(pred[y != 0] == 0)


def test_path_keeps_the_best_checkpoint_and_stops_at_threshold():
    """Along the exact retraining direction, the best step by distance is the retrained model."""
    X, y, est = _iris()
    before = est.coef_.copy()
    drop = np.arange(0, 150, 3)
    keep = np.setdiff1d(np.arange(150), drop)
    ad = make_adapter(est)
    target = make_adapter(LogisticRegression(C=1.0, max_iter=2000).fit(X[keep], y[keep])).theta
    d = target - ad.theta
    gamma = np.linalg.norm(d) / 7.3                               # the optimum between steps 7 and 8
    path = unlearning_path(ad, d, lambda th: {"dist": -np.linalg.norm(th - target), "self_accuracy": 1.0},
                           step_size=gamma, max_steps=20, metric="dist", build=lambda th: th)
    assert path.best_step == 7 and path.stopped == "max_steps" and len(path.history) == 21
    assert np.allclose(path.theta, ad.theta + 7 * gamma * d / np.linalg.norm(d))
    # default build: a fitted LogisticRegression; stop once the removed rows' accuracy ≤ 0.5
    gone = y == 2
    dd = np.zeros_like(ad.theta)
    dd[2::3] = -1.0                    # θ is (features + intercept) × classes: class 2 goes down
    path = unlearning_path(ad, dd, lambda m: unlearning_scores(m, X[~gone], y[~gone], X[gone], y[gone]),
                           step_size=1.0, max_steps=50, stop_self_accuracy=0.5)
    assert path.stopped == "threshold" and path.history[-1]["self_accuracy"] <= 0.5
    assert isinstance(path.estimator, LogisticRegression)
    assert path.best_scores["f1"] == max(h["f1"] for h in path.history)
    assert np.array_equal(est.coef_, before)                       # the user's model is untouched


def test_path_rejects_bad_input():
    X, y, est = _iris()
    ad = make_adapter(est)
    with pytest.raises(ValueError, match="non-zero"):
        unlearning_path(ad, np.zeros(ad.n_params), lambda m: {"f1": 0})
    with pytest.raises(ValueError, match="shape"):
        unlearning_path(ad, np.ones(3), lambda m: {"f1": 0})
    with pytest.raises(ValueError, match="step_size"):
        unlearning_path(ad, np.ones(ad.n_params), lambda m: {"f1": 0}, step_size=0)
    with pytest.raises(KeyError, match="f1"):
        unlearning_path(ad, np.ones(ad.n_params), lambda m: {"acc": 0})
