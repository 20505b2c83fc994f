"""Approximate cross-validation vs scikit-learn's exact refits (small data)."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import FitFailedWarning, NotFittedError
from sklearn.metrics import check_scoring
from sklearn.linear_model import (ElasticNet, Lasso, LinearRegression, LogisticRegression,
                                  PoissonRegressor, Ridge, RidgeCV)
from sklearn.model_selection import (GridSearchCV, KFold, LeaveOneOut, ShuffleSplit, cross_val_predict,
                                     cross_val_score)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skinfluence import HessianInfluence
from skinfluence.model_selection import (ApproxGridSearchCV, approx_cross_val_predict,
                                         approx_cross_val_score)
from skinfluence.model_selection._scoring import (_FAST_METRICS, _fast_metric, score_outputs,
                                                  score_split)

CV5 = KFold(5, shuffle=True, random_state=0)


@pytest.fixture(scope="module")
def binary():
    return make_classification(300, 5, n_informative=3, random_state=0)


@pytest.fixture(scope="module")
def multiclass():
    return make_classification(300, 6, n_informative=4, n_classes=3, random_state=0)


@pytest.fixture(scope="module")
def regression():
    return make_regression(80, 10, n_informative=4, noise=5, random_state=1)


@pytest.fixture(scope="module")
def counts(binary):
    X, _ = binary
    return X, np.random.default_rng(0).poisson(np.exp(0.3 * X[:, 0]))


# ----------------------------------------------------------------- predictions
@pytest.mark.parametrize("response_method, tol", [("predict_proba", 0.01), ("decision_function", 0.05)])
def test_predict_logistic_binary(binary, response_method, tol):
    X, y = binary
    approx = approx_cross_val_predict(LogisticRegression(), X, y, cv=CV5, response_method=response_method)
    exact = cross_val_predict(LogisticRegression(tol=1e-10), X, y, cv=CV5, method=response_method)
    assert approx.shape == exact.shape
    assert np.abs(approx - exact).max() < tol
    labels = approx_cross_val_predict(LogisticRegression(), X, y, cv=CV5)
    assert np.mean(labels == cross_val_predict(LogisticRegression(), X, y, cv=CV5)) > 0.99


def test_predict_logistic_multiclass(multiclass):
    X, y = multiclass
    approx = approx_cross_val_predict(LogisticRegression(), X, y, cv=CV5, response_method="predict_proba")
    exact = cross_val_predict(LogisticRegression(tol=1e-10), X, y, cv=CV5, method="predict_proba")
    assert np.abs(approx - exact).max() < 0.03          # fold of 60/300: second-order error
    ij = approx_cross_val_predict(LogisticRegression(), X, y, cv=CV5, method="ij",
                                  response_method="predict_proba")
    assert np.abs(ij - exact).max() < 0.1               # IJ: first-order error
    X, y = X[:60], y[:60]
    loo = approx_cross_val_predict(LogisticRegression(), X, y, cv=LeaveOneOut(), response_method="predict_proba")
    exact = cross_val_predict(LogisticRegression(tol=1e-10), X, y, cv=LeaveOneOut(), method="predict_proba")
    assert np.abs(loo - exact).max() < 0.03             # one of 60 removed


def test_ridge_loo_equals_ridgecv(regression):
    X, y = regression
    approx = approx_cross_val_predict(Ridge(alpha=3.0), X, y, cv=LeaveOneOut())
    np.testing.assert_allclose(approx, cross_val_predict(Ridge(alpha=3.0), X, y, cv=LeaveOneOut()),
                               rtol=1e-8, atol=1e-8)
    score = approx_cross_val_score(Ridge(alpha=3.0), X, y, cv=LeaveOneOut(), scoring="neg_mean_squared_error")
    assert score.shape == (1,)
    np.testing.assert_allclose(score[0], RidgeCV(alphas=[3.0]).fit(X, y).best_score_, rtol=1e-10)


@pytest.mark.parametrize("est", [Lasso(alpha=2.0, tol=1e-12, max_iter=100_000),
                                 ElasticNet(alpha=1.0, l1_ratio=0.5, tol=1e-12, max_iter=100_000)])
def test_l1_kfold_exact(regression, est):
    # quadratic objective: the proximal Newton step is the exact refit
    X, y = regression
    approx = approx_cross_val_predict(est, X, y, cv=CV5)
    np.testing.assert_allclose(approx, cross_val_predict(est, X, y, cv=CV5), atol=1e-5 * np.abs(y).max())
    np.testing.assert_allclose(approx_cross_val_score(est, X, y, cv=CV5, scoring="r2"),
                               cross_val_score(est, X, y, cv=CV5, scoring="r2"), atol=1e-6)


def test_poisson(counts):
    X, y = counts
    approx = approx_cross_val_predict(PoissonRegressor(), X, y, cv=CV5)
    exact = cross_val_predict(PoissonRegressor(tol=1e-10), X, y, cv=CV5)
    assert np.abs(approx - exact).max() < 0.02 * exact.max()
    # default scoring is the estimator's own score (D², not R²)
    np.testing.assert_allclose(approx_cross_val_score(PoissonRegressor(), X, y, cv=CV5),
                               cross_val_score(PoissonRegressor(tol=1e-10), X, y, cv=CV5), atol=5e-3)


# ----------------------------------------------------------------------- scores
@pytest.mark.parametrize("scoring, tol", [(None, 0.0), ("accuracy", 0.0), ("neg_log_loss", 5e-3),
                                          ("roc_auc", 5e-3), ("balanced_accuracy", 0.02)])
def test_scores_logistic(binary, scoring, tol):
    X, y = binary
    approx = approx_cross_val_score(LogisticRegression(), X, y, cv=CV5, scoring=scoring)
    exact = cross_val_score(LogisticRegression(tol=1e-10), X, y, cv=CV5, scoring=scoring)
    assert approx.shape == (5,)
    assert np.abs(approx - exact).max() <= tol + 1e-12


def test_score_callable_int_cv_and_curvature(multiclass):
    X, y = multiclass

    def scorer(est, X, y):
        return np.mean(est.predict(X) == y)

    approx = approx_cross_val_score(LogisticRegression(), X, y, cv=5, scoring=scorer)
    fisher = approx_cross_val_score(LogisticRegression(), X, y, cv=5, scoring=scorer, curvature="fisher")
    exact = cross_val_score(LogisticRegression(), X, y, cv=5, scoring=scorer)   # StratifiedKFold for both
    np.testing.assert_allclose(approx, fisher, atol=1e-12)   # canonical link: Fisher == Hessian
    assert np.abs(approx - exact).max() <= 2 / 60 + 1e-12     # at most two flipped labels per fold


@pytest.mark.parametrize("case", ["binary", "multiclass", "regression", "counts"])
@pytest.mark.parametrize("weighted", [False, True])
def test_fast_metrics_equal_scorers(case, weighted, request):
    """The metrics computed from held-out outputs equal scikit-learn's scorers."""
    X, y = request.getfixturevalue(case)
    est = {"binary": LogisticRegression(), "multiclass": LogisticRegression(),
           "regression": Ridge(), "counts": PoissonRegressor()}[case]
    inf = HessianInfluence(est).fit(X, y)
    rng = np.random.default_rng(0)
    test = rng.choice(len(y), 40, replace=False)
    eta = inf.loo_decision()[test]
    params = {"sample_weight": rng.random(len(y)) + 0.5} if weighted else {}
    names = [None, *(n for n in _FAST_METRICS if _fast_metric(n, inf.adapter_) is not None)]
    assert len(names) == (3 if inf.adapter_.is_classifier else 5)
    for name in names:
        scorer = check_scoring(est, scoring=name)
        fast = score_split(inf, name, scorer, eta, X, y, test, params)
        kw = {k: v[test] for k, v in params.items()}
        assert fast == pytest.approx(score_outputs(scorer, inf.adapter_, eta, X[test], y[test], **kw),
                                     rel=1e-12, abs=1e-14), name
    # special cases are left to scikit-learn: a fold without one of the classes
    if inf.adapter_.is_classifier:
        one_class = np.flatnonzero(y == y[0])[:10]
        with pytest.raises(ValueError, match="label"):
            score_split(inf, "neg_log_loss", check_scoring(est, "neg_log_loss"),
                         inf.loo_decision()[one_class], X, y, one_class, {})


def test_column_target_and_undefined_loo(binary, regression):
    """y of shape (n, 1) scores as y of shape (n,); leverage-1 points raise as scikit-learn does."""
    X, y = regression
    for scoring in ("neg_mean_squared_error", "r2", None):
        np.testing.assert_array_equal(
            approx_cross_val_score(Ridge(), X, y[:, None], cv=CV5, scoring=scoring),
            approx_cross_val_score(Ridge(), X, y, cv=CV5, scoring=scoring))
    Xb, yb = binary
    np.testing.assert_array_equal(approx_cross_val_score(LogisticRegression(), Xb, yb[:, None], cv=CV5),
                                  approx_cross_val_score(LogisticRegression(), Xb, yb, cv=CV5))
    X1 = np.column_stack([X, np.eye(len(y))[0]])  # a feature only the first row has: leverage 1
    with pytest.warns(UserWarning, match="leverage 1"), pytest.raises(ValueError, match="NaN"):
        approx_cross_val_score(LinearRegression(), X1, y, cv=LeaveOneOut(), scoring="r2")


def test_loo_score_pooled(binary):
    X, y = binary[0][:50], binary[1][:50]
    approx = approx_cross_val_score(LogisticRegression(), X, y, cv=LeaveOneOut())
    assert approx.shape == (1,)
    assert abs(approx[0] - cross_val_score(LogisticRegression(), X, y, cv=LeaveOneOut()).mean()) <= 1 / 50


def test_non_partition_splitter_score(binary):
    X, y = binary
    cv = ShuffleSplit(3, train_size=0.6, test_size=0.2, random_state=0)
    approx = approx_cross_val_score(LogisticRegression(), X, y, cv=cv, scoring="neg_log_loss")
    exact = cross_val_score(LogisticRegression(tol=1e-10), X, y, cv=cv, scoring="neg_log_loss")
    assert np.abs(approx - exact).max() < 0.02


def test_pipeline_and_sample_weight(binary):
    X, y = binary
    sw = np.random.default_rng(0).uniform(0.5, 2, len(y))
    pipe = make_pipeline(StandardScaler(), LogisticRegression())
    approx = approx_cross_val_predict(pipe, X, y, cv=CV5, response_method="predict_proba",
                                      params={"sample_weight": sw})
    # the scaler is fitted once on all the data: compare with refits on pre-scaled X
    Xs = StandardScaler().fit_transform(X)
    exact = cross_val_predict(LogisticRegression(tol=1e-10), Xs, y, cv=CV5, method="predict_proba",
                              params={"sample_weight": sw})
    assert np.abs(approx - exact).max() < 0.01


def test_estimator_not_mutated(binary):
    X, y = binary
    est = LogisticRegression(C=0.5)
    approx_cross_val_score(est, X, y, cv=3)
    assert not hasattr(est, "coef_") and est.get_params()["C"] == 0.5


# -------------------------------------------------------------------- bad input
def test_bad_inputs(binary):
    X, y = binary
    lr = LogisticRegression()
    with pytest.raises(ValueError, match="method"):
        approx_cross_val_score(lr, X, y, method="exact")
    with pytest.raises(ValueError, match="curvature"):
        approx_cross_val_score(lr, X, y, curvature="gauss")
    with pytest.raises(ValueError, match="response_method"):
        approx_cross_val_predict(lr, X, y, response_method="transform")
    with pytest.raises(ValueError, match="y is required"):
        approx_cross_val_score(lr, X, None)
    with pytest.raises(ValueError, match="single scoring"):
        approx_cross_val_score(lr, X, y, scoring=["accuracy", "roc_auc"])
    with pytest.raises(ValueError, match="partition"):
        approx_cross_val_predict(lr, X, y, cv=ShuffleSplit(2, test_size=0.2, random_state=0))
    with pytest.raises(ValueError, match="sample_weight"):
        approx_cross_val_score(lr, X, y, params={"classes": [0, 1]})
    with pytest.raises(TypeError, match="not supported"):
        approx_cross_val_score(RandomForestClassifier(n_estimators=2), X, y)
    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        approx_cross_val_score(lr, X_nan, y)
    with pytest.raises(ValueError):
        approx_cross_val_score(lr, X, y[:-1])
    with pytest.raises(ValueError, match="response_method"):
        approx_cross_val_predict(Ridge(), X, y.astype(float), response_method="predict_proba")


# ------------------------------------------------------------------ grid search
GRID = {"C": [0.003, 0.03, 0.3, 3.0]}


def test_grid_search_matches_gridsearchcv(binary):
    X, y = binary
    approx = ApproxGridSearchCV(LogisticRegression(), GRID, cv=CV5, scoring="neg_log_loss").fit(X, y)
    exact = GridSearchCV(LogisticRegression(tol=1e-10), GRID, cv=CV5, scoring="neg_log_loss").fit(X, y)
    assert set(approx.cv_results_) == set(exact.cv_results_)
    assert approx.best_params_ == exact.best_params_ and approx.best_index_ == exact.best_index_
    np.testing.assert_allclose(approx.cv_results_["mean_test_score"], exact.cv_results_["mean_test_score"],
                               atol=3e-3)
    np.testing.assert_array_equal(approx.cv_results_["rank_test_score"], exact.cv_results_["rank_test_score"])
    np.testing.assert_array_equal(approx.cv_results_["param_C"], exact.cv_results_["param_C"])
    assert approx.cv_results_["params"] == exact.cv_results_["params"]
    assert approx.best_score_ == approx.cv_results_["mean_test_score"][approx.best_index_]
    assert approx.n_splits_ == 5 and approx.best_estimator_.C == approx.best_params_["C"]
    np.testing.assert_allclose(approx.predict_proba(X), approx.best_estimator_.predict_proba(X))
    np.testing.assert_array_equal(approx.predict(X), approx.best_estimator_.predict(X))
    np.testing.assert_array_equal(approx.classes_, [0, 1])
    assert approx.score(X, y) == pytest.approx(approx.scorer_(approx.best_estimator_, X, y))
    # warm starts along the path change the starting point only (fits to tol=1e-4, then polished)
    cold = ApproxGridSearchCV(LogisticRegression(), GRID, cv=CV5, scoring="neg_log_loss",
                              warm_start=False).fit(X, y)
    np.testing.assert_allclose(cold.cv_results_["mean_test_score"], approx.cv_results_["mean_test_score"],
                               atol=1e-4)


def test_grid_search_pipeline_multimetric(binary):
    X, y = binary
    pipe = make_pipeline(StandardScaler(), LogisticRegression())
    grid = {"logisticregression__C": [0.01, 0.1, 1.0]}
    scoring = ["accuracy", "neg_log_loss"]
    approx = ApproxGridSearchCV(pipe, grid, cv=CV5, scoring=scoring, refit="neg_log_loss").fit(X, y)
    exact = GridSearchCV(pipe, grid, cv=CV5, scoring=scoring, refit="neg_log_loss").fit(X, y)
    assert set(approx.cv_results_) == set(exact.cv_results_)
    assert approx.best_params_ == exact.best_params_
    # per-fold scaling in GridSearchCV vs once per candidate here: a small difference
    np.testing.assert_allclose(approx.cv_results_["mean_test_neg_log_loss"],
                               exact.cv_results_["mean_test_neg_log_loss"], atol=0.01)
    assert isinstance(approx.scorer_, dict) and approx.multimetric_
    np.testing.assert_allclose(approx.decision_function(X), approx.best_estimator_.decision_function(X))
    assert pipe.get_params()["logisticregression__C"] == 1.0 and not hasattr(pipe[-1], "coef_")


def test_grid_search_ridge_loo_and_refit_options(regression):
    X, y = regression
    alphas = [0.1, 1.0, 10.0, 100.0]
    approx = ApproxGridSearchCV(Ridge(), {"alpha": alphas}, cv=LeaveOneOut(),
                                scoring="neg_mean_squared_error").fit(X, y)
    ridgecv = RidgeCV(alphas=alphas).fit(X, y)
    assert approx.best_params_["alpha"] == ridgecv.alpha_
    assert approx.best_score_ == pytest.approx(ridgecv.best_score_, rel=1e-8)
    assert "split0_test_score" in approx.cv_results_ and "split1_test_score" not in approx.cv_results_

    # as GridSearchCV: refit=False still selects (single metric) but has no best_estimator_
    no_refit = ApproxGridSearchCV(Ridge(), {"alpha": alphas}, cv=3, refit=False).fit(X, y)
    exact = GridSearchCV(Ridge(), {"alpha": alphas}, cv=3, refit=False).fit(X, y)
    assert not hasattr(no_refit, "best_estimator_") and no_refit.best_params_ == exact.best_params_
    with pytest.raises(AttributeError):
        no_refit.predict(X)
    chooser = ApproxGridSearchCV(Ridge(), {"alpha": alphas}, cv=3, refit=lambda res: 0).fit(X, y)
    assert chooser.best_index_ == 0 and chooser.best_estimator_.alpha == 0.1


def test_grid_search_clone_and_errors(binary):
    X, y = binary
    search = ApproxGridSearchCV(LogisticRegression(), GRID, cv=3)
    assert clone(search).get_params()["param_grid"] == GRID
    with pytest.raises(NotFittedError):
        search.predict(X)
    with pytest.raises(ValueError, match="Invalid parameter"):
        ApproxGridSearchCV(LogisticRegression(), {"not_a_param": [1]}, error_score="raise").fit(X, y)
    with pytest.raises(ValueError, match="refit"):
        ApproxGridSearchCV(LogisticRegression(), GRID, scoring=["accuracy", "roc_auc"]).fit(X, y)
    with pytest.raises(ValueError, match="method"):
        ApproxGridSearchCV(LogisticRegression(), GRID, method="cg").fit(X, y)
    with pytest.raises(TypeError, match="not supported"):
        ApproxGridSearchCV(RandomForestClassifier(), {"n_estimators": [2]}, error_score="raise").fit(X, y)
    with pytest.warns(FitFailedWarning, match="failed"):
        failed = ApproxGridSearchCV(RandomForestClassifier(), {"n_estimators": [2, 3]}, refit=False).fit(X, y)
    assert np.isnan(failed.cv_results_["mean_test_score"]).all()


# ------------------------------------------------------- Ridge: one set of Grams for every alpha
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("cv", [LeaveOneOut(), KFold(4, shuffle=True, random_state=0),
                                ShuffleSplit(3, train_size=0.6, test_size=0.25, random_state=0)])
def test_ridge_path_equals_exact_cv(cv, weighted, fit_intercept):
    """The shared-Gram Ridge path gives the exact split scores, as refits do."""
    from skinfluence.model_selection._ridge_path import RidgePath
    X, y = make_regression(120, 6, noise=5.0, random_state=1)
    X[:, 0] += 40.0  # a far-from-centred column: the intercept must be handled exactly
    sw = np.random.default_rng(0).uniform(0.5, 2.0, len(y)) if weighted else None
    alphas = np.logspace(-2, 3, 7)
    est = Ridge(fit_intercept=fit_intercept)
    assert RidgePath.applies(est, X, y, {"alpha": 1.0}, "ns", 0.0)
    approx = ApproxGridSearchCV(est, {"alpha": alphas}, cv=cv, scoring="neg_mean_squared_error")
    approx.fit(X, y, sample_weight=sw)
    exact = []
    for a in alphas:
        errs, weights = [], []  # the scorer is weighted too, as in GridSearchCV
        splits = [(np.delete(np.arange(len(y)), i), [i]) for i in range(len(y))] \
            if isinstance(cv, LeaveOneOut) else list(cv.split(X))
        w = np.ones(len(y)) if sw is None else sw
        for train, test in splits:
            m = Ridge(alpha=a, fit_intercept=fit_intercept).fit(X[train], y[train],
                                                                sample_weight=w[train])
            errs.append((y[test] - m.predict(X[test])) ** 2)
            weights.append(w[test])
        exact.append(-np.average(np.concatenate(errs), weights=np.concatenate(weights))
                     if isinstance(cv, LeaveOneOut)
                     else -np.mean([np.average(e, weights=v) for e, v in zip(errs, weights)]))
    np.testing.assert_allclose(approx.cv_results_["mean_test_score"], exact, rtol=1e-9)
    assert approx.best_estimator_.alpha == alphas[int(np.argmax(exact))]


def test_ridge_path_only_where_exact():
    """Other models, other parameters, IJ steps, damping, sparse X and several targets take
    the general path."""
    from scipy import sparse
    from skinfluence.model_selection._ridge_path import RidgePath
    X, y = make_regression(50, 3, random_state=0)
    assert not RidgePath.applies(Ridge(), X, y, {"alpha": 1.0, "solver": "svd"}, "ns", 0.0)
    assert not RidgePath.applies(Ridge(), X, y, {"alpha": 1.0}, "ij", 0.0)
    assert not RidgePath.applies(Ridge(), X, y, {"alpha": 1.0}, "ns", 1e-3)
    assert not RidgePath.applies(Ridge(), sparse.csr_matrix(X), y, {"alpha": 1.0}, "ns", 0.0)
    assert not RidgePath.applies(Ridge(), X, np.c_[y, y], {"alpha": 1.0}, "ns", 0.0)
    assert not RidgePath.applies(Lasso(), X, y, {"alpha": 1.0}, "ns", 0.0)
    assert not RidgePath.applies(make_pipeline(StandardScaler(), Ridge()), X, y, {}, "ns", 0.0)
    # a grid that mixes both paths still runs (no warm start from the path's candidates)
    grid = [{"alpha": [0.1, 1.0]}, {"alpha": [1.0], "solver": ["svd", "cholesky"]}]
    search = ApproxGridSearchCV(Ridge(), grid, cv=3).fit(X, y)
    exact = GridSearchCV(Ridge(), grid, cv=3).fit(X, y)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"],
                               exact.cv_results_["mean_test_score"], rtol=1e-8)


# ----------------------------------------------------------------- n_jobs and progress
def test_cv_n_jobs_equals_sequential(binary):
    """Folds over joblib workers (loky processes) give the sequential answers."""
    X, y = binary
    lr = LogisticRegression(tol=1e-2)  # residual steps from a loose fit
    for cv in (CV5, ShuffleSplit(4, test_size=0.2, train_size=0.6, random_state=0)):
        one = approx_cross_val_score(lr, X, y, cv=cv, scoring="neg_log_loss")
        two = approx_cross_val_score(lr, X, y, cv=cv, scoring="neg_log_loss", n_jobs=2)
        np.testing.assert_allclose(two, one, rtol=0, atol=1e-12)
    pred = approx_cross_val_predict(lr, X, y, cv=CV5, response_method="predict_proba")
    np.testing.assert_allclose(approx_cross_val_predict(lr, X, y, cv=CV5, n_jobs=2,
                                                        response_method="predict_proba"),
                               pred, rtol=0, atol=1e-12)


def test_search_n_jobs_equals_sequential(binary, regression):
    """Without warm starts a parallel search scores exactly as the sequential one; with them
    each worker's run of consecutive candidates equals a sequential search over that run."""
    X, y = binary
    Cs = np.logspace(-2, 1, 6)
    scores = {}
    for n_jobs in (1, 2):
        search = ApproxGridSearchCV(LogisticRegression(), {"C": Cs}, cv=CV5, warm_start=False,
                                    scoring="neg_log_loss", n_jobs=n_jobs).fit(X, y)
        scores[n_jobs] = search.cv_results_["mean_test_score"]
    np.testing.assert_allclose(scores[2], scores[1], rtol=0, atol=1e-12)
    warm = ApproxGridSearchCV(LogisticRegression(), {"C": Cs}, cv=CV5, scoring="neg_log_loss",
                              n_jobs=2).fit(X, y).cv_results_["mean_test_score"]
    runs = np.concatenate([ApproxGridSearchCV(LogisticRegression(), {"C": half}, cv=CV5,
                                              scoring="neg_log_loss").fit(X, y)
                           .cv_results_["mean_test_score"] for half in (Cs[:3], Cs[3:])])
    np.testing.assert_allclose(warm, runs, rtol=0, atol=1e-12)
    # the Ridge path (shared Grams) per worker: exact either way
    Xr, yr = regression
    alphas = np.logspace(-2, 2, 5)
    ridge = [ApproxGridSearchCV(Ridge(), {"alpha": alphas}, cv=cv, n_jobs=n_jobs,
                                scoring="neg_mean_squared_error").fit(Xr, yr)
             .cv_results_["mean_test_score"] for cv in (CV5, LeaveOneOut()) for n_jobs in (1, 2)]
    np.testing.assert_allclose(ridge[1], ridge[0], rtol=1e-12)
    np.testing.assert_allclose(ridge[3], ridge[2], rtol=1e-12)


def test_progress_bars_when_verbose(binary, capsys):
    X, y = binary
    approx_cross_val_score(LogisticRegression(), X, y, cv=CV5, verbose=1)
    assert "splits" in capsys.readouterr().err
    ApproxGridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=CV5, verbose=1).fit(X, y)
    assert "candidates" in capsys.readouterr().err
    approx_cross_val_score(LogisticRegression(), X, y, cv=CV5)
    ApproxGridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=CV5).fit(X, y)
    assert capsys.readouterr().err == ""  # silent by default


def test_n_jobs_validated(binary):
    X, y = binary
    with pytest.raises(ValueError, match="n_jobs"):
        approx_cross_val_score(LogisticRegression(), X, y, n_jobs="two")
    with pytest.raises(ValueError, match="n_jobs"):
        ApproxGridSearchCV(LogisticRegression(), {"C": [1.0]}, n_jobs=1.5).fit(X, y)


@pytest.mark.parametrize("est, data", [
    (LogisticRegression(tol=1e-2), "binary"),           # stopped short: residual steps matter
    (LogisticRegression(C=0.5), "multiclass"),
    (Lasso(alpha=0.5), "regression"),
])
def test_cv_decision_is_approx_cross_val_predict(est, data, request):
    """The estimator's cv_decision and approximate CV take the one removal step: on the same
    folds, with the same removal size (so the same polishing policy), they agree to rounding,
    and both follow exact refits."""
    X, y = request.getfixturevalue(data)
    folds = list(CV5.split(X, y))
    tests = [test for _, test in folds]
    m = min(len(t) for t in tests)
    inf = HessianInfluence(est, polish=True, removal_size=m).fit(X, y)
    method = "decision_function" if data != "regression" else "predict"
    ours = inf.adapter_.response(inf.cv_decision(tests), method)
    approx = approx_cross_val_predict(est, X, y, cv=folds, response_method=method)
    np.testing.assert_allclose(ours, approx, rtol=1e-12, atol=1e-12)
    exact = cross_val_predict(clone(est).set_params(tol=1e-10), X, y, cv=folds, method=method)
    assert np.max(np.abs(ours - exact)) < 0.05 * np.ptp(exact)
