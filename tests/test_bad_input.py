"""Bad input across the public API: each case asserts the error type, a keyword of its
message, and that the user's estimator and arrays are unchanged."""

import copy

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import (GammaRegressor, Lasso, LinearRegression, LogisticRegression,
                                  PoissonRegressor, Ridge, SGDClassifier)
from sklearn.model_selection import KFold
from sklearn.svm import SVC

from skinfluence import CurvatureError, FisherInfluence
from skinfluence.fairness import InfluenceReweighing
from skinfluence.model_selection import (ApproxGridSearchCV, approx_cross_val_predict,
                                         approx_cross_val_score)
from skinfluence.models.torch import TorchModel

TIGHT = dict(tol=1e-10, max_iter=10_000)
rng = np.random.default_rng(0)
XC, YC = make_classification(80, 4, n_informative=3, n_redundant=0, random_state=0)
XM, YM = make_classification(90, 4, n_informative=3, n_redundant=0, n_classes=3, random_state=1)
XR, YR = make_regression(80, 4, noise=5.0, random_state=0)
YP = rng.poisson(np.exp(0.3 * XR[:, 0] + 1.0)).astype(float)
YG = np.exp(0.2 * XR[:, 0] + 1.0) * rng.gamma(4.0, 0.25, size=80)
DF = pd.DataFrame(XC, columns=["a", "b", "c", "d"])

ESTIMATORS = {
    "lr": LogisticRegression(**TIGHT),
    "lr_fitted": LogisticRegression(**TIGHT).fit(XC, YC),
    "ridge": Ridge(alpha=1.0),
    "poisson": PoissonRegressor(alpha=1e-3, **TIGHT).fit(XR, YP),
    "gamma": GammaRegressor(alpha=1e-3, **TIGHT).fit(XR, YG),
    "linreg_copy": LinearRegression(copy_X=False),
}
ARRAYS = {"XC": XC, "YC": YC, "XM": XM, "YM": YM, "XR": XR, "YR": YR, "YP": YP, "YG": YG}


def _fitted(name):
    """Fitted influence objects, built once (their own state may change; the user's may not)."""
    if name not in _FITTED:
        _FITTED[name] = {
            "clf": lambda: FisherInfluence(ESTIMATORS["lr"]).fit(XC, YC),
            "multi": lambda: FisherInfluence(ESTIMATORS["lr"]).fit(XM, YM),
            "ridge": lambda: FisherInfluence(ESTIMATORS["ridge"]).fit(XR, YR),
            "poisson": lambda: FisherInfluence(ESTIMATORS["poisson"], prefit=True).fit(XR, YP),
            "df": lambda: FisherInfluence(LogisticRegression(**TIGHT)).fit(DF, YC),
            "net": lambda: FisherInfluence(_net_model(), prefit=True).fit(XC, YC),
        }[name]()
    return _FITTED[name]


_FITTED: dict = {}


def _net_model(nan=False):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
    if nan:
        with torch.no_grad():
            net[0].weight[0, 0] = float("nan")
    return TorchModel(net, loss="cross_entropy", weight_decay=0.1)


def _with(a, i, value):
    a = np.array(a, dtype=float)
    a[i] = value
    return a


def _nan_coef():
    est = copy.deepcopy(ESTIMATORS["lr_fitted"])
    est.coef_ = _with(est.coef_, (0, 0), np.nan)
    return est


X_DUP = np.hstack([XR, XR[:, :1]])
CASES = [
    # ---- fit: data
    ("X NaN", lambda: FisherInfluence(ESTIMATORS["lr"]).fit(_with(XC, (0, 0), np.nan), YC), ValueError, "NaN"),
    ("X inf", lambda: FisherInfluence(ESTIMATORS["lr"]).fit(_with(XC, (0, 0), np.inf), YC), ValueError, "infinity"),
    ("y NaN regression", lambda: FisherInfluence(ESTIMATORS["ridge"]).fit(XR, _with(YR, 0, np.nan)), ValueError, "NaN"),
    ("y inf regression", lambda: FisherInfluence(Ridge().fit(XR, YR), prefit=True).fit(XR, _with(YR, 0, np.inf)),
     ValueError, "infinity"),
    ("y None", lambda: FisherInfluence(ESTIMATORS["lr"]).fit(XC, None), ValueError, "requires y"),
    ("y two columns", lambda: FisherInfluence(ESTIMATORS["lr"]).fit(XC, np.c_[YC, YC]), ValueError, "one-dimensional"),
    ("X y lengths", lambda: FisherInfluence(ESTIMATORS["lr"]).fit(XC, YC[:-1]), ValueError, "inconsistent"),
    ("sample_weight shape", lambda: FisherInfluence(ESTIMATORS["lr"]).fit(XC, YC, sample_weight=np.ones(3)), ValueError, "sample_weight"),
    ("sample_weight negative", lambda: FisherInfluence(ESTIMATORS["lr_fitted"], prefit=True).fit(
        XC, YC, sample_weight=_with(np.ones(80), 0, -1)), ValueError, "non-negative"),
    ("sample_weight NaN", lambda: FisherInfluence(ESTIMATORS["lr_fitted"], prefit=True).fit(
        XC, YC, sample_weight=_with(np.ones(80), 0, np.nan)), ValueError, "finite"),
    ("Poisson negative y", lambda: FisherInfluence(ESTIMATORS["poisson"], prefit=True).fit(XR, _with(YP, 0, -1)), ValueError, "non-negative"),
    ("Gamma zero y", lambda: FisherInfluence(ESTIMATORS["gamma"], prefit=True).fit(XR, _with(YG, 0, 0.0)), ValueError, "positive"),
    ("unknown label", lambda: FisherInfluence(ESTIMATORS["lr_fitted"], prefit=True).fit(XC, YC + 5), ValueError, "unknown to the model"),
    # ---- fit: estimators
    ("unsupported SVC", lambda: FisherInfluence(SVC()).fit(XC, YC), TypeError, "not supported"),
    ("Lasso positive", lambda: FisherInfluence(Lasso(positive=True)).fit(XR, YR), ValueError, "positive=True"),
    ("SGD hinge", lambda: FisherInfluence(SGDClassifier(loss="hinge")).fit(XC, YC), ValueError, "use loss='log_loss'"),
    ("prefit unfitted", lambda: FisherInfluence(LogisticRegression(), prefit=True).fit(XC, YC), NotFittedError, "not fitted"),
    ("NaN coefficients", lambda: FisherInfluence(_nan_coef(), prefit=True).fit(XC, YC), ValueError, "NaN or infinite coefficients"),
    ("torch module not prefit", lambda: FisherInfluence(_net_model()).fit(XC, YC), ValueError, "cannot be fitted"),
    ("plain nn.Module", lambda: FisherInfluence(_net_model().module, prefit=True).fit(XC, YC), TypeError, "TorchModel"),
    ("NaN net parameters", lambda: FisherInfluence(_net_model(nan=True), prefit=True).fit(XC, YC), ValueError, "NaN or infinite parameters"),
    ("TorchModel loss", lambda: FisherInfluence(TorchModel(_net_model().module, loss="hinge"), prefit=True).fit(XC, YC), ValueError, "loss must be one of"),
    ("net sample shape", lambda: FisherInfluence(_net_model(), prefit=True).fit(XC[:, :3], YC), ValueError, "cannot be evaluated"),
    ("singular curvature", lambda: FisherInfluence(LinearRegression()).fit(X_DUP, YR), CurvatureError, "singular"),
    # ---- fit: parameters
    ("damping inf", lambda: FisherInfluence(ESTIMATORS["lr"], damping=np.inf).fit(XC, YC), ValueError, "damping"),
    ("damping negative", lambda: FisherInfluence(ESTIMATORS["lr"], damping=-1.0).fit(XC, YC), ValueError, "damping"),
    ("fisher bogus", lambda: FisherInfluence(ESTIMATORS["lr"], fisher="bogus").fit(XC, YC), ValueError, "fisher"),
    ("device tpu", lambda: FisherInfluence(ESTIMATORS["lr"], device="tpu").fit(XC, YC), ValueError, "device"),
    ("dtype int8", lambda: FisherInfluence(ESTIMATORS["lr"], dtype="int8").fit(XC, YC), ValueError, "dtype"),
    ("verbose loud", lambda: FisherInfluence(ESTIMATORS["lr"], verbose="loud").fit(XC, YC), ValueError, "verbose"),
    ("batch_size 0", lambda: FisherInfluence(ESTIMATORS["lr"], batch_size=0).fit(XC, YC), ValueError, "batch_size"),
    ("batch_size str", lambda: FisherInfluence(ESTIMATORS["lr"], batch_size="x").fit(XC, YC), ValueError, "batch_size"),
    ("polish yes", lambda: FisherInfluence(ESTIMATORS["lr"], polish="yes").fit(XC, YC), ValueError, "polish"),
    ("solver qr", lambda: FisherInfluence(ESTIMATORS["lr"], solver="qr").fit(XC, YC), ValueError, "solver"),
    ("lbfgs with l1", lambda: FisherInfluence(Lasso(alpha=0.1), polish="lbfgs").fit(XR, YR), ValueError, "smooth objective"),
    # ---- queries
    ("attribute unfitted", lambda: FisherInfluence(ESTIMATORS["lr"]).attribute(XC, YC), NotFittedError, "not fitted"),
    ("attribute n_features", lambda: _fitted("clf").attribute(XC[:, :3], YC), ValueError, "features"),
    ("attribute y NaN", lambda: _fitted("ridge").attribute(XR[:3], _with(YR[:3], 0, np.nan)), ValueError, "NaN"),
    ("attribute Poisson negative", lambda: _fitted("poisson").attribute(XR[:3], np.array([1.0, -2.0, 3.0])), ValueError, "non-negative"),
    ("attribute lengths", lambda: _fitted("clf").attribute(XC[:5], YC[:4]), ValueError, "inconsistent"),
    ("attribute unknown label", lambda: _fitted("clf").attribute(XC[:2], np.array([0, 7])), ValueError, "unknown"),
    ("attribute y 2-D", lambda: _fitted("clf").attribute(XC[:2], np.c_[YC[:2], YC[:2]]), ValueError, "one-dimensional"),
    ("DataFrame reordered", lambda: _fitted("df").attribute(DF[["b", "a", "c", "d"]][:3], YC[:3]), ValueError, "feature names"),
    ("DataFrame renamed", lambda: _fitted("df").attribute(DF.rename(columns={"a": "z"})[:3], YC[:3]), ValueError, "feature names"),
    ("transform n_features", lambda: _fitted("clf").transform(XC[:, :2]), ValueError, "features"),
    ("net sample shape query", lambda: _fitted("net").attribute(XC[:3, :2], YC[:3]), ValueError, "sample shape"),
    ("relabel lengths", lambda: _fitted("clf").relabel([0, 1, 2], [1, 0]), ValueError, "labels for"),
    ("relabel NaN", lambda: _fitted("ridge").relabel([0], [np.nan]), ValueError, "NaN"),
    ("relabel Poisson negative", lambda: _fitted("poisson").relabel([0], [-1.0]), ValueError, "non-negative"),
    ("relabel unknown label", lambda: _fitted("clf").relabel([0], [3]), ValueError, "unknown"),
    ("unlearn empty", lambda: _fitted("clf").unlearn([]), ValueError, "empty"),
    ("unlearn duplicates", lambda: _fitted("clf").unlearn([1, 1]), ValueError, "duplicates"),
    ("unlearn out of range", lambda: _fitted("clf").unlearn([500]), IndexError, "out of range"),
    ("unlearn floats", lambda: _fitted("clf").unlearn([0.5]), ValueError, "integer"),
    ("unlearn mask shape", lambda: _fitted("clf").unlearn(np.ones(3, bool)), ValueError, "mask"),
    ("unlearn a whole class", lambda: _fitted("clf").unlearn(np.flatnonzero(YC == 1)), ValueError, "every sample of class"),
    ("unlearn everything", lambda: _fitted("clf").unlearn(np.arange(80)), ValueError, "every training sample"),
    ("unlearn steps 0", lambda: _fitted("clf").unlearn([0], steps=0), ValueError, "steps"),
    ("unlearn steps word", lambda: _fitted("clf").unlearn([0], steps="forever"), ValueError, "steps"),
    ("loocv sklearn method spelling", lambda: _fitted("clf").approx_loocv(method="predict_proba"), ValueError, "response_method"),
    ("loocv response_method", lambda: _fitted("clf").approx_loocv(response_method="transform"), ValueError, "response_method"),
    ("loocv proba of a regressor", lambda: _fitted("ridge").approx_loocv(response_method="predict_proba"), ValueError, "regressor"),
    ("self_influence method", lambda: _fitted("clf").self_influence(method="exact"), ValueError, "method"),
    ("factors rows", lambda: _fitted("clf").influences_from_factors(np.zeros((1, 5)), [0, 0]), ValueError, "duplicates"),
    # ---- model selection
    ("scorer needs proba", lambda: approx_cross_val_score(Ridge(), XR, YR, scoring="neg_log_loss"), ValueError, "predict_proba"),
    ("cv function method spelling", lambda: approx_cross_val_predict(LogisticRegression(), XC, YC, method="predict_proba"), ValueError, "method"),
    ("cv not a partition", lambda: approx_cross_val_predict(LogisticRegression(), XC, YC, cv=[(np.arange(40), np.arange(40, 60))]), ValueError, "partition"),
    ("cv fit params", lambda: approx_cross_val_score(LogisticRegression(), XC, YC, params={"classes": [0, 1]}), ValueError, "sample_weight"),
    ("cv several scorings", lambda: approx_cross_val_score(LogisticRegression(), XC, YC, scoring=["accuracy", "r2"]), ValueError, "single scoring"),
    ("empty grid", lambda: ApproxGridSearchCV(LogisticRegression(), []).fit(XC, YC), ValueError, "no candidates"),
    ("empty grid values", lambda: ApproxGridSearchCV(LogisticRegression(), {"C": []}).fit(XC, YC), ValueError, "non-empty"),
    ("grid unknown parameter", lambda: ApproxGridSearchCV(LogisticRegression(), {"nope": [1]}, error_score="raise").fit(XC, YC), ValueError, "Invalid parameter"),
    ("grid method", lambda: ApproxGridSearchCV(LogisticRegression(), {"C": [1.0]}, method="cg").fit(XC, YC), ValueError, "method"),
    # ---- fairness
    ("reweighing multiclass", lambda: InfluenceReweighing(LogisticRegression()).fit(XM, YM, sensitive_features=YM % 2), ValueError, "binary"),
    ("reweighing one group", lambda: InfluenceReweighing(LogisticRegression()).fit(XC, YC, sensitive_features=np.zeros(80)), ValueError, "one group"),
    ("reweighing missing column", lambda: InfluenceReweighing(LogisticRegression()).fit(DF, YC, sensitive_features="sex"), ValueError, "not in X"),
    ("reweighing regressor", lambda: InfluenceReweighing(Ridge()).fit(XC, YC, sensitive_features=YC), TypeError, "classifier"),
    ("reweighing constraint", lambda: InfluenceReweighing(LogisticRegression(), constraint="parity").fit(XC, YC, sensitive_features=YC), ValueError, "constraint"),
]


def _snapshot():
    return joblib.hash((ESTIMATORS, ARRAYS, DF))


@pytest.mark.parametrize("call, error, word", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(call, error, word):
    before = _snapshot()
    with pytest.raises(error, match=word):
        call()
    assert _snapshot() == before, "a user's estimator or array changed"


def test_the_suite_is_large_enough():
    assert len(CASES) >= 60


# ------------------------------------------------------------ behaviour instead of errors
def test_copy_X_false_leaves_the_users_data_and_results_alone():
    X = XR.copy()
    inf = FisherInfluence(LinearRegression(copy_X=False)).fit(X, YR)
    np.testing.assert_array_equal(X, XR)                 # not centred in place
    loo = inf.approx_loocv()
    X[:] = 0.0                                           # later edits of the user's array
    np.testing.assert_array_equal(inf.approx_loocv(), loo)


def test_split_training_on_every_row_is_the_fitted_model():
    cv = [(np.arange(80), np.arange(20))]               # train contains the test rows
    score = approx_cross_val_score(LogisticRegression(**TIGHT), XC, YC, cv=cv, scoring="accuracy")
    full = LogisticRegression(**TIGHT).fit(XC, YC)
    assert score[0] == pytest.approx(full.score(XC[:20], YC[:20]))


def test_loo_of_a_class_with_one_row_is_undefined_like_unlearn():
    X, y = XM.copy(), YM.copy()
    y[0] = 3                                             # a fourth class with a single row
    inf = FisherInfluence(LogisticRegression(**TIGHT)).fit(X, y)
    with pytest.warns(UserWarning, match="single training row"):
        loo = inf.loo_decision()
    assert np.isnan(loo[0]).all() and np.isfinite(loo[1:]).all()
    with pytest.raises(ValueError, match="every sample of class"):
        inf.unlearn([0])


def test_train_folds_kfold_unaffected():
    scores = approx_cross_val_score(LogisticRegression(**TIGHT), XC, YC, cv=KFold(4))
    assert np.isfinite(scores).all()
