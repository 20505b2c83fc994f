"""Bad or unusual input, round three: rows named by labels, balanced class weights, threads,
parameters changed after fit, badly scaled designs, truncating ``out=``, NaN in sampler and
fairness inputs, and the command line. Each case asserts an error's type and a keyword of its
message, or the right answer against exact refits, and that the user's objects are unchanged."""

import copy
import threading
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.model_selection import LeaveOneOut, cross_val_predict, train_test_split

from skinfluence import FisherInfluence, GeneralizedInfluence, InfluenceWarning
from skinfluence.cli import main
from skinfluence.fairness import InfluenceReweighing
from skinfluence.model_selection import approx_cross_val_score
from skinfluence.models.torch import TorchModel
from skinfluence.refit import refit_without
from skinfluence.sampling import LogitSampler, RandomSampler
from skinfluence.selection import select_parameters
from skinfluence.models import make_adapter

TIGHT = dict(tol=1e-12, max_iter=100_000)
XC, YC = make_classification(120, 4, n_informative=3, n_redundant=0, random_state=0)
XR, YR = make_regression(60, 3, noise=5.0, random_state=0)


def _coef(est):
    return np.r_[np.atleast_1d(est.intercept_).ravel(), np.ravel(est.coef_)]


def _net(seed=0, d=4):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(d, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).double()
    return TorchModel(net, loss="cross_entropy", weight_decay=0.1)


def _theta(est):
    return np.concatenate([p.detach().numpy().ravel() for p in est.module.parameters()])


# ------------------------------------------------------------------ errors with a keyword
def _sampler_logits_nan():
    logits = XC[:, 0].copy()
    logits[3] = np.nan
    return LogitSampler(10).fit(XC, YC, logits=logits)


CASES = [
    ("sampler on 0 rows", lambda: RandomSampler(5).fit(XC[:0], YC[:0]), ValueError, "0 sample"),
    ("sampler 1-d X", lambda: RandomSampler(5).fit(XC[:, 0], YC), ValueError, "2D array"),
    ("sampler NaN X", lambda: RandomSampler(5).fit(np.where(XC > 1.5, np.nan, XC), YC), ValueError, "NaN"),
    ("logits NaN", _sampler_logits_nan, ValueError, "NaN"),
    ("logits wrong length", lambda: LogitSampler(10).fit(XC, YC, logits=XC[:50, 0]), ValueError,
     "one row per row of X"),
    ("sensitive list with NaN", lambda: InfluenceReweighing(LogisticRegression()).fit(
        XC, YC, sensitive_features=[0.0, np.nan] + [1.0, 0.0] * 59), ValueError, "missing values"),
    ("sensitive str list with NaN", lambda: InfluenceReweighing(LogisticRegression()).fit(
        XC, YC, sensitive_features=["a", np.nan] + ["a", "b"] * 59), ValueError, "missing values"),
    ("out int", lambda: _fitted("clf").attribute(XC[:3], YC[:3], out=np.zeros((3, 120), int)), TypeError,
     "floating dtype"),
    ("out bool", lambda: _fitted("clf").attribute(XC[:3], YC[:3], out=np.zeros((3, 120), bool)), TypeError,
     "floating dtype"),
    ("labels not in index", lambda: _fitted("df").unlearn(pd.Index([10_000])), KeyError, "not in the training"),
    ("a Series of scores as rows", lambda: _fitted("df").unlearn(_fitted("df").self_influence(as_frame=True)
                                                                  .nlargest(3)), TypeError, ".index"),
    ("a DataFrame as rows", lambda: _fitted("df").unlearn(pd.DataFrame({"a": [1]})), TypeError, "DataFrame"),
    ("selection callable empty", lambda: select_parameters(
        make_adapter(LogisticRegression().fit(XC, YC)), XC, YC, rule=lambda a, X, y: np.zeros(a.n_params, bool)),
     ValueError, "empty mask"),
]

_FITTED: dict = {}


def _fitted(name):
    if name not in _FITTED:
        _FITTED[name] = {
            "clf": lambda: FisherInfluence(LogisticRegression(**TIGHT)).fit(XC, YC),
            "df": lambda: FisherInfluence(LogisticRegression(**TIGHT)).fit(
                pd.DataFrame(XC, index=np.arange(120) * 7 + 3), YC),
        }[name]()
    return _FITTED[name]


def _snapshot():
    return joblib.hash((XC, YC, XR, YR))


@pytest.mark.parametrize("call, error, word", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(call, error, word):
    before = _snapshot()
    with pytest.raises(error, match=word):
        call()
    assert _snapshot() == before, "a user's array changed"


# ------------------------------------------------------------------ positions or labels
def test_labels_shown_by_frames_are_the_rows_unlearned():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 4)), columns=list("abcd"))
    y = (X["a"] + rng.normal(size=200) > 0).astype(int)
    Xtr, _, ytr, _ = train_test_split(X, y, random_state=0)
    Xtr_before = Xtr.copy()
    inf = FisherInfluence(LogisticRegression(**TIGHT)).fit(Xtr, ytr)
    shown = inf.self_influence(as_frame=True).nlargest(5).index
    keep = ~Xtr.index.isin(shown)
    exact = LogisticRegression(**TIGHT).fit(Xtr[keep], ytr[keep])
    by_label = inf.unlearn(shown, steps="converge")
    np.testing.assert_allclose(_coef(by_label), _coef(exact), atol=1e-7)
    # positions (a numpy array) still mean positions; a boolean Series is aligned on the index
    positions = np.flatnonzero(~keep)
    np.testing.assert_allclose(_coef(inf.unlearn(positions, steps="converge")), _coef(exact), atol=1e-7)
    mask = pd.Series(~keep, index=Xtr.index).sample(frac=1.0, random_state=1)    # shuffled order
    np.testing.assert_allclose(inf.parameter_change(mask), inf.parameter_change(positions))
    np.testing.assert_allclose(inf.influences_from_factors(np.ones((1, 5)), shown),
                               inf.influences_from_factors(np.ones((1, 5)), Xtr.index.get_indexer(shown)))
    pd.testing.assert_frame_equal(Xtr, Xtr_before)


# ------------------------------------------------------------------ balanced class weights
def _imbalanced():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] + rng.normal(size=200) > 1.3).astype(int)
    return X, y, rng.uniform(0.5, 2.0, 200)


def test_balanced_class_weights_follow_sklearn_and_are_re_derived():
    X, y, sw = _imbalanced()
    est = LogisticRegression(class_weight="balanced", **TIGHT)
    inf = FisherInfluence(est, polish=True).fit(X, y, sample_weight=sw)
    full = LogisticRegression(class_weight="balanced", **TIGHT).fit(X, y, sample_weight=sw)
    # the objective is scikit-learn's (class weights computed with sample_weight): polishing
    # does not move its optimum
    np.testing.assert_allclose(_coef(inf.estimator_), _coef(full), atol=1e-7)
    rows = np.flatnonzero(y == 1)[:8]
    keep = np.setdiff1d(np.arange(200), rows)
    exact = LogisticRegression(class_weight="balanced", **TIGHT).fit(X[keep], y[keep], sample_weight=sw[keep])
    change = np.abs(_coef(exact) - _coef(full)).max()
    converged = inf.unlearn(rows, steps="converge")
    assert inf.update_info_["converged"]
    np.testing.assert_allclose(_coef(converged), _coef(exact), atol=1e-7)
    one = inf.unlearn(rows)       # the changed objective's Newton step: close, not frozen
    assert np.abs(_coef(one) - _coef(exact)).max() < 0.15 * change
    y_new = y.copy()
    y_new[rows] = 0
    relabelled = LogisticRegression(class_weight="balanced", **TIGHT).fit(X, y_new, sample_weight=sw)
    np.testing.assert_allclose(_coef(inf.relabel(rows, 0, steps="converge")), _coef(relabelled), atol=1e-7)
    with pytest.warns(InfluenceWarning, match="class_weight"):
        inf.approx_loocv()
    assert est.get_params()["class_weight"] == "balanced" and not hasattr(est, "coef_")


# ------------------------------------------------------------------ threads
def test_threads_and_threading_backend_equal_sequential():
    X, y = make_classification(150, 4, random_state=0)
    inf = FisherInfluence(_net(), prefit=True, batch_size=16, memory_budget="64KiB")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InfluenceWarning)
        inf.fit(X, y)
    A, s = inf.attribute(X[:20], y[:20]), inf.self_influence("ij")
    results, errors = [], []

    def work():
        try:
            for _ in range(2):
                results.append((inf.attribute(X[:20], y[:20]), inf.self_influence("ij")))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for a, b in results:
        np.testing.assert_array_equal(a, A)
        np.testing.assert_array_equal(b, s)
    inf.set_params(n_jobs=2)
    with joblib.parallel_config(backend="threading"):   # blocks shared out: equal up to rounding
        np.testing.assert_allclose(inf.attribute(X[:20], y[:20]), A, rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(inf.self_influence("ij"), s, rtol=1e-10, atol=1e-15)
    inf.set_params(n_jobs=None)
    np.testing.assert_array_equal(inf.attribute(X[:20], y[:20]), A)   # not broken afterwards
    copy.deepcopy(inf)


# ------------------------------------------------------------------ state fitted by fit
def test_set_params_after_fit_does_not_change_multi_step_queries():
    X, y = make_classification(100, 4, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InfluenceWarning)
        inf = FisherInfluence(_net(), prefit=True, polish="lbfgs").fit(X, y)
        before = _theta(inf.unlearn([0, 1, 2], steps=3))
        inf.set_params(fisher="empirical")
        after = _theta(inf.unlearn([0, 1, 2], steps=3))
        np.testing.assert_array_equal(after, before)
        assert inf.fisher == "empirical"           # the user's setting is kept for the next fit
        gif = GeneralizedInfluence(_net(), prefit=True, ratio=0.3, polish="lbfgs").fit(X, y)
        mask, d0 = gif.parameter_mask_.copy(), gif.parameter_change([0, 1], steps=2)
        gif.set_params(ratio=0.6, selection="random")
        d1 = gif.parameter_change([0, 1], steps=2)
    np.testing.assert_array_equal(gif.parameter_mask_, mask)
    np.testing.assert_array_equal(d1, d0)
    assert gif.ratio == 0.6


# ------------------------------------------------------------------ badly scaled designs
@pytest.mark.parametrize("how", ["x1e12", "x1e-8", "column x1e6"])
def test_badly_scaled_designs_get_the_exact_answer(how):
    X = XR.copy()
    if how == "x1e12":
        X *= 1e12
    elif how == "x1e-8":
        X *= 1e-8
    else:
        X[:, 0] *= 1e6
    before = X.copy()
    # without a penalty leave-one-out does not depend on the columns' scale: the unscaled
    # design's exact refits are the truth
    exact = cross_val_predict(LinearRegression(), XR, YR, cv=LeaveOneOut())
    inf = FisherInfluence(LinearRegression(), polish=True).fit(X, YR)
    np.testing.assert_allclose(inf.approx_loocv(), exact, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(approx_cross_val_score(LinearRegression(), X, YR, cv=5),
                               approx_cross_val_score(LinearRegression(), XR, YR, cv=5), rtol=1e-9)
    np.testing.assert_array_equal(X, before)


# ------------------------------------------------------------------ one-step warning
def test_no_false_one_step_warning():
    sw = np.ones(120)
    sw[:5] = 0.0
    inf = FisherInfluence(LogisticRegression(**TIGHT)).fit(XC, YC, sample_weight=sw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InfluenceWarning)
        new = inf.unlearn([0, 1, 2])               # weight-0 rows: nothing changes, exactly
        np.testing.assert_allclose(_coef(new), _coef(inf.estimator_), atol=1e-12)
        inf.relabel([0, 1], 1 - YC[:2])
        ridge = FisherInfluence(Ridge(solver="sag", tol=1e-3, random_state=0))
        warnings.simplefilter("ignore", InfluenceWarning)   # the fit's own convergence warning
        ridge.fit(XR, YR)
        warnings.simplefilter("error", InfluenceWarning)
        ridge.unlearn([0, 1, 2])                   # quadratic: one step is exact
    assert inf.update_info_["decrement_ratio"] == 0.0 and ridge.update_info_["decrement_ratio"] < 1e-6
    with pytest.warns(InfluenceWarning, match="steps='converge'"):   # a real one still warns
        inf.relabel(np.arange(10, 30), 1 - YC[10:30])


# ------------------------------------------------------------------ GIF on small models
def test_gif_default_ratio_on_a_small_linear_model():
    gif = GeneralizedInfluence(LogisticRegression(**TIGHT)).fit(XC, YC)   # 5 coefficients, ratio 0.05
    assert gif.parameter_mask_.sum() == 1
    assert np.isfinite(gif.self_influence()).all()


# ------------------------------------------------------------------ the exact reference
def test_refit_without_is_at_the_optimum():
    X, y = make_classification(300, 6, random_state=0)
    fitted = LogisticRegression().fit(X, y)
    ref = refit_without(fitted, X, y, [0, 1, 2])
    assert ref.solver == "newton-cholesky" and fitted.solver == "lbfgs"
    Z = np.c_[X[3:], np.ones(297)]
    p = ref.predict_proba(X[3:])[:, 1]
    grad = Z.T @ (p - y[3:]) + np.r_[ref.coef_.ravel() / ref.C, 0.0]
    H = Z.T @ (p * (1 - p) * Z.T).T + np.diag(np.r_[np.ones(6) / ref.C, 0.0])
    assert np.abs(np.linalg.solve(H, grad)).max() < 1e-8     # the Newton step left: none


# ------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def table(tmp_path_factory):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(60, 3)), columns=list("abc"))
    df["y"] = (df["a"] + rng.normal(size=60) > 0).astype(int)
    path = tmp_path_factory.mktemp("cli3")
    df.to_csv(path / "train.csv", index=False)
    test = df.copy()
    test.loc[0, "y"] = 5
    test.to_csv(path / "unseen.csv", index=False)
    df.iloc[:0].to_csv(path / "header.csv", index=False)
    return path


@pytest.mark.parametrize("argv, message", [
    (["self-influence", "{p}/train.csv", "--target", "y", "--top", "-5"], "positive integer"),
    (["attribute", "{p}/train.csv", "{p}/unseen.csv", "--target", "y"], "unknown to the model"),
    (["loocv", "{p}/train.csv", "--target", "y", "--out", "{p}/missing/out.csv"], "does not exist"),
    (["loocv", "{p}/header.csv", "--target", "y"], "no rows"),
    (["loocv", "{p}/train.csv", "--target", "y", "--param", "C=abc"], "'C' parameter"),
    (["unlearn", "{p}/train.csv", "--target", "y", "--remove", "1", "--steps", "0"], "positive integer"),
    (["loocv", "{p}/train.csv"], "--target"),
])
def test_cli_failures_are_one_line_exit_2(table, capsys, argv, message):
    argv = [a.format(p=table) for a in argv]
    try:
        status = main(argv)
    except SystemExit as exit_:          # a usage error, from argparse (as the command exits)
        status = exit_.code
    assert status == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not (table / "missing").exists()


def test_cli_unlearn_steps(table, tmp_path, capsys):
    out = tmp_path / "u.csv"
    assert main(["unlearn", str(table / "train.csv"), "--target", "y", "--remove", "1,2,3",
                 "--out", str(out)]) == 0
    assert "converged" in capsys.readouterr().out
    got = pd.read_csv(out, index_col=0)
    df = pd.read_csv(table / "train.csv")
    keep = np.setdiff1d(np.arange(60), [1, 2, 3])
    exact = LogisticRegression(**TIGHT).fit(df[list("abc")].iloc[keep], df["y"].iloc[keep])
    np.testing.assert_allclose(got.loc["unlearned"], _coef(exact), atol=1e-6)


def test_cli_warnings_are_one_line(table, tmp_path, capsys):
    assert main(["loocv", str(table / "train.csv"), "--target", "y", "--param", "max_iter=2",
                 "--no-polish", "--out", str(tmp_path / "o.csv")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("skinfluence loocv: warning: ") and "converged" in err[0]


def test_balanced_class_weights_k_fold_uses_each_folds_weights():
    from sklearn.model_selection import StratifiedKFold
    from skinfluence.model_selection import approx_cross_val_predict

    X, y, _ = _imbalanced()
    est = LogisticRegression(class_weight="balanced", **TIGHT)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    exact = cross_val_predict(est, X, y, cv=cv, method="predict_proba")[:, 1]
    full = LogisticRegression(class_weight="balanced", **TIGHT).fit(X, y).predict_proba(X)[:, 1]
    approx = approx_cross_val_predict(est, X, y, cv=cv, response_method="predict_proba")[:, 1]
    # frozen full-data weights: 0.116 of the change; the folds' own weights: 0.074 (unweighted
    # classes: 0.034, the Newton step's own second-order error on 20% of the rows)
    assert np.abs(approx - exact).max() < 0.09 * np.abs(full - exact).max()
    inf = FisherInfluence(est, polish=True).fit(X, y)
    folds = [test for _, test in cv.split(X, y)]
    eta = inf.cv_decision(folds)
    for fold in folds[:2]:
        d = inf.parameter_change(fold)
        np.testing.assert_allclose(eta[fold], inf.adapter_.eta(inf.adapter_.design(X[fold]),
                                                                inf.adapter_.theta + d), rtol=1e-10)
