"""Polishing for the job at hand: the convergence target scales with the change estimated."""

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, LeaveOneOut, ShuffleSplit

from skinfluence import HessianInfluence, InfluenceWarning
from skinfluence.estimators import RESIDUAL_TARGET
from skinfluence.estimators import NewtonPolisher
from skinfluence.model_selection._validation import removal_size

from conftest import coef_vector


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(800, 10, n_informative=6, random_state=0)
    X[:, 0] *= 30  # badly scaled: lbfgs stops far from the optimum
    return X, y


def test_typical_change_is_the_size_of_a_random_removal(data):
    """√(m(1 − m/n))·RMS(LOO step) predicts the norm of removing m random rows."""
    X, y = data
    inf = HessianInfluence(LogisticRegression(tol=1e-10, max_iter=10**4), polish=True).fit(X, y)
    model, n, m = inf.engine_, len(y), 160
    polisher = NewtonPolisher(polish=False, removal_size=m)
    polisher.model = model
    steps = np.linalg.norm(model.solver.solve(inf.training_gradients().T), axis=0)
    rms = np.sqrt(np.mean(steps ** 2))
    assert polisher.typical_change() == pytest.approx(np.sqrt(m * (1 - m / n)) * rms, rel=0.3)
    rng = np.random.default_rng(1)
    sizes = [np.linalg.norm(inf.parameter_change(rng.choice(n, m, replace=False)))
             for _ in range(20)]
    assert 0.5 < np.median(sizes) / polisher.typical_change() < 2
    # one row: the leave-one-out yardstick as before
    one = NewtonPolisher(polish=False)
    one.model = model
    assert one.typical_change() == model.typical_loo_step()


def test_kfold_polishing_is_cheaper_and_as_accurate(data):
    """Polished for 5-fold (residual steps, to RESIDUAL_TARGET of a fold's change), the fit
    takes no more Newton steps than for leave-one-out, and its fold models are as close to
    exact refits (to a share of the fold's change)."""
    X, y = data
    est = LogisticRegression(tol=1e-2, max_iter=1000).fit(X, y)
    folds = list(KFold(5, shuffle=True, random_state=0).split(X))
    m = min(len(test) for _, test in folds)
    loo = HessianInfluence(est, prefit=True, polish=True).fit(X, y)
    kf = HessianInfluence(est, prefit=True, polish=True, removal_size=m).fit(X, y)
    assert kf.n_polish_steps_ <= loo.n_polish_steps_
    assert kf.convergence_ratio_ <= RESIDUAL_TARGET and kf.engine_.residual
    for train, test in folds:
        exact = coef_vector(LogisticRegression(tol=1e-12, max_iter=10**4).fit(X[train], y[train]))
        change = np.linalg.norm(exact - coef_vector(loo.estimator_))
        errors = [np.linalg.norm(inf.adapter_.theta + inf.parameter_change(test) - exact)
                  for inf in (loo, kf)]
        # residual steps from a fit e = convergence_ratio_ fold changes away err by at most
        # (1 + e)² times the step from the optimum (RESIDUAL_TARGET's bound)
        assert errors[1] <= (1 + kf.convergence_ratio_) ** 2 * errors[0] + 0.02 * change
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


@pytest.mark.filterwarnings("ignore::skinfluence.InfluenceWarning")
def test_residual_steps_make_the_optimisation_error_second_order(data):
    """A fold's Newton step on the changed objective's own gradient (the fit's residual
    gradient kept) from a fit e away from the optimum errs by at most (1 + e/Δ)² times the
    step from the optimum (Δ: the fold's change); the step that assumes ∇L(θ̂) = 0 is off
    by about e, and the residual step's excess shrinks with e."""
    X, y = data
    tight = LogisticRegression(tol=1e-12, max_iter=10**4).fit(X, y)
    loose = LogisticRegression(tol=1e-2, max_iter=1000).fit(X, y)
    near = HessianInfluence(tight, prefit=True).fit(X, y)
    train, test = next(KFold(5, shuffle=True, random_state=0).split(X))
    exact = coef_vector(LogisticRegression(tol=1e-12, max_iter=10**4).fit(X[train], y[train]))
    change = np.linalg.norm(exact - coef_vector(tight))
    from_optimum = np.linalg.norm(coef_vector(tight) + near.parameter_change(test) - exact)
    excess = []
    for t in (1.0, 0.5, 0.25):  # fits at t times the loose fit's distance from the optimum
        theta = coef_vector(tight) + t * (coef_vector(loose) - coef_vector(tight))
        model = HessianInfluence(near.adapter_.with_params(theta), prefit=True).fit(X, y).engine_
        e = np.linalg.norm(theta - coef_vector(tight)) / change
        residual = np.linalg.norm(theta + model.removal_step(test, "ns", residual=True) - exact)
        plain = np.linalg.norm(theta + model.removal_step(test, "ns", residual=False) - exact)
        assert plain > 0.5 * e * change                     # first order in the fit's error
        assert residual < (1 + e) ** 2 * from_optimum       # the documented bound
        excess.append(residual - from_optimum)
    assert excess[0] > 0 and np.all(np.diff(excess) < 0) and excess[2] < excess[0] / 3


def test_kfold_residual_steps_from_a_loose_fit_are_as_accurate(data):
    """approx_cross_val_score of a loosely fitted model (tol=1e-2) is as close to exact
    refits as that of a converged one, without polishing (its distance to the optimum is
    within one fold change in the curvature's norm); a fit farther away is polished to it."""
    import warnings

    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from skinfluence.model_selection import approx_cross_val_score
    from skinfluence.model_selection._validation import fitted_influence

    X, y = data
    cv = StratifiedKFold(5)
    splits = list(cv.split(X, y))
    loose = LogisticRegression(tol=1e-2, max_iter=1000)
    inf = fitted_influence(loose, X, y, None, splits)
    assert inf.n_polish_steps_ == 0 and inf.convergence_ratio_ <= 1
    tight = LogisticRegression(tol=1e-12, max_iter=10**4)
    exact = cross_val_score(tight, X, y, cv=cv, scoring="neg_log_loss")
    approx = [approx_cross_val_score(est, X, y, cv=cv, scoring="neg_log_loss")
              for est in (loose, tight)]
    err_loose, err_tight = (np.abs(a - exact).max() for a in approx)
    assert err_loose < 1.5 * err_tight < 0.02 * np.abs(exact).mean()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs's ConvergenceWarning
        far = fitted_influence(LogisticRegression(max_iter=3), X, y, None, splits)
    assert far.n_polish_steps_ >= 1 and far.convergence_ratio_ <= 1
    with pytest.warns(InfluenceWarning, match="not converged enough"):
        fitted_influence(LogisticRegression(max_iter=3), X, y, None, splits, polish=False)
