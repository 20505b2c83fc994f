"""Polishing for the job at hand: the convergence target scales with the change estimated."""

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, LeaveOneOut, ShuffleSplit

from skinfluence import HessianInfluence, InfluenceWarning
from skinfluence.curvature.newton import NewtonPolisher
from skinfluence.model_selection._validation import removal_size


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(800, 10, n_informative=6, random_state=0)
    X[:, 0] *= 30  # badly scaled: lbfgs stops far from the optimum
    return X, y


def _theta(est):
    return np.r_[est.coef_.ravel(), est.intercept_]


def test_typical_change_is_the_size_of_a_random_removal(data):
    """√(m(1 − m/n))·RMS(LOO step) predicts the norm of removing m random rows."""
    X, y = data
    inf = HessianInfluence(LogisticRegression(tol=1e-10, max_iter=10**4), polish=True).fit(X, y)
    model, n, m = inf._model, len(y), 160
    polisher = NewtonPolisher(inf._rebuild, polish=False, removal_size=m)
    polisher.model = model
    steps = np.linalg.norm(model.solver.solve(model.removal_gradients(np.arange(n)).T), axis=0)
    rms = np.sqrt(np.mean(steps ** 2))
    assert polisher.typical_change() == pytest.approx(np.sqrt(m * (1 - m / n)) * rms, rel=0.3)
    rng = np.random.default_rng(1)
    sizes = [np.linalg.norm(inf.parameter_change(rng.choice(n, m, replace=False)))
             for _ in range(20)]
    assert 0.5 < np.median(sizes) / polisher.typical_change() < 2
    # one row: the leave-one-out yardstick as before
    one = NewtonPolisher(inf._rebuild, polish=False)
    one.model = model
    assert one.typical_change() == model.typical_loo_step()


def test_kfold_polishing_is_cheaper_and_as_accurate(data):
    """Polished for 5-fold, the fit takes no more Newton steps than for leave-one-out, and
    its fold models are as close to exact refits (to a share of the fold's change)."""
    X, y = data
    est = LogisticRegression(tol=1e-2, max_iter=1000).fit(X, y)
    folds = list(KFold(5, shuffle=True, random_state=0).split(X))
    m = min(len(test) for _, test in folds)
    loo = HessianInfluence(est, prefit=True, polish=True).fit(X, y)
    kf = HessianInfluence(est, prefit=True, polish=True, removal_size=m).fit(X, y)
    assert 0 < kf.n_polish_steps_ <= loo.n_polish_steps_
    assert kf.convergence_ratio_ <= 0.05
    for train, test in folds:
        exact = _theta(LogisticRegression(tol=1e-12, max_iter=10**4).fit(X[train], y[train]))
        change = np.linalg.norm(exact - _theta(loo.estimator_))
        errors = [np.linalg.norm(inf.adapter_.theta + inf.parameter_change(test) - exact)
                  for inf in (loo, kf)]
        assert errors[1] <= errors[0] + 0.1 * change
        # the held-out outputs agree with the refit's
        eta_exact = X[test] @ exact[:-1] + exact[-1]
        assert np.max(np.abs(kf.cv_decision([test])[test][:, 0] - eta_exact)) < 0.1 * np.ptp(eta_exact)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_unconverged_warning_names_the_job(data):
    X, y = data
    with pytest.warns(InfluenceWarning, match="change of 100 removed rows"):
        HessianInfluence(LogisticRegression(max_iter=2), removal_size=100).fit(X, y)


def test_removal_size_validated(data):
    X, y = data
    with pytest.raises(ValueError, match="removal_size"):
        HessianInfluence(LogisticRegression(), removal_size=0).fit(X, y)


def test_removal_size_of_splits():
    X = np.zeros((100, 2))
    assert removal_size([], 100) == 1  # leave-one-out: the closed form
    assert removal_size(list(KFold(5).split(X)), 100) == 20
    assert removal_size(list(LeaveOneOut().split(X)), 100) == 1
    # rows outside both train and test are removed too
    assert removal_size(list(ShuffleSplit(3, train_size=0.5, test_size=0.2,
                                          random_state=0).split(X)), 100) == 50
