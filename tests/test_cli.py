"""The command line: each verb's output equals the library call's; bad input is one line, exit 2."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, PoissonRegressor, Ridge

import skinfluence
from skinfluence import FisherInfluence, HessianInfluence
from skinfluence.cli import main


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """A training and a test table: three numeric features, a binary and a count target."""
    rng = np.random.default_rng(0)
    n = 80
    X = rng.normal(size=(n + 10, 3))
    df = pd.DataFrame(X, columns=["age", "hours", "score"])
    df["label"] = (X @ [1.0, -1.0, 0.5] + rng.normal(size=n + 10) > 0).astype(int)
    df["visits"] = rng.poisson(np.exp(0.3 * X[:, 0] + 0.2))
    df["city"] = rng.choice(["Oslo", "Lima"], size=n + 10)
    path = tmp_path_factory.mktemp("cli")
    train, test = df.iloc[:n], df.iloc[n:].reset_index(drop=True)
    train.to_csv(path / "train.csv", index=False)
    test.to_csv(path / "test.csv", index=False)
    return path, train, test


def _features(df):
    return df[["age", "hours", "score"]]


def run_cli(argv, tmp_path):
    out = tmp_path / "out.csv"
    assert main([*argv, "--drop", "city", "--out", str(out)]) == 0
    return pd.read_csv(out, index_col=0)


def test_loocv_equals_library(tables, tmp_path):
    path, train, _ = tables
    got = run_cli(["loocv", str(path / "train.csv"), "--target", "label", "--drop", "visits"], tmp_path)
    inf = FisherInfluence(LogisticRegression(max_iter=1000), polish=True).fit(_features(train), train["label"])
    want = inf.approx_loocv(response_method="predict_proba")
    assert list(got.columns) == ["label", "P(0)", "P(1)"]
    np.testing.assert_array_equal(got["label"], train["label"])
    np.testing.assert_allclose(got[["P(0)", "P(1)"]].to_numpy(), want, rtol=1e-12, atol=1e-15)


def test_loocv_regressor_with_param_and_hessian(tables, tmp_path):
    path, train, _ = tables
    got = run_cli(["loocv", str(path / "train.csv"), "--target", "visits", "--drop", "label",
                   "--model", "ridge", "--param", "alpha=3.0", "--curvature", "hessian", "--method", "ij"],
                  tmp_path)
    inf = HessianInfluence(Ridge(alpha=3.0), polish=True).fit(_features(train), train["visits"])
    np.testing.assert_allclose(got["loo_prediction"], inf.approx_loocv(method="ij"), rtol=1e-12)


def test_attribute_equals_library(tables, tmp_path):
    path, train, test = tables
    got = run_cli(["attribute", str(path / "train.csv"), str(path / "test.csv"),
                   "--target", "label", "--drop", "visits"], tmp_path)
    inf = FisherInfluence(LogisticRegression(max_iter=1000), polish=True).fit(_features(train), train["label"])
    want = inf.attribute(_features(test), test["label"])
    assert got.shape == (len(test), len(train))
    np.testing.assert_allclose(got.to_numpy(), want, rtol=1e-10, atol=1e-15)


def test_self_influence_equals_library_and_top(tables, tmp_path, capsys):
    path, train, _ = tables
    got = run_cli(["self-influence", str(path / "train.csv"), "--target", "label", "--drop", "visits"], tmp_path)
    inf = FisherInfluence(LogisticRegression(max_iter=1000), polish=True).fit(_features(train), train["label"])
    want = inf.self_influence()
    np.testing.assert_allclose(got["self_influence"], want, rtol=1e-12, atol=1e-15)
    top = run_cli(["self-influence", str(path / "train.csv"), "--target", "label", "--drop", "visits",
                   "--top", "5"], tmp_path)
    np.testing.assert_array_equal(top.index, np.argsort(-want)[:5])


def test_unlearn_equals_library(tables, tmp_path):
    path, train, _ = tables
    got = run_cli(["unlearn", str(path / "train.csv"), "--target", "visits", "--drop", "label",
                   "--model", "poisson", "--remove", "3,17,42"], tmp_path)
    inf = FisherInfluence(PoissonRegressor(), polish=True).fit(_features(train), train["visits"])
    new = inf.unlearn([3, 17, 42], steps="converge")      # the CLI's default: the refit's answer
    one = run_cli(["unlearn", str(path / "train.csv"), "--target", "visits", "--drop", "label",
                   "--model", "poisson", "--remove", "3,17,42", "--steps", "1"], tmp_path)
    first = inf.unlearn([3, 17, 42])
    np.testing.assert_allclose(one.loc["unlearned"], np.r_[first.intercept_, first.coef_], rtol=1e-12)
    assert list(got.index) == ["fitted", "unlearned"]
    assert list(got.columns) == ["intercept", "age", "hours", "score"]
    np.testing.assert_allclose(got.loc["unlearned"], np.r_[new.intercept_, new.coef_], rtol=1e-12)
    np.testing.assert_allclose(got.loc["fitted"], np.r_[inf.estimator_.intercept_, inf.estimator_.coef_],
                               rtol=1e-12)


def test_parquet_and_printed_table(tables, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    path, train, _ = tables
    train.to_parquet(tmp_path / "train.parquet")
    assert main(["self-influence", str(tmp_path / "train.parquet"), "--target", "label",
                 "--drop", "visits", "--drop", "city", "--top", "3"]) == 0
    printed = capsys.readouterr().out
    assert "self_influence" in printed and "candidates for mislabelling" in printed


@pytest.mark.parametrize("argv, message", [
    (["self-influence", "{train}", "--target", "income"], "column 'income' is not in"),
    (["self-influence", "{train}", "--target", "label"], "feature column 'city'"),
    (["loocv", "{train}", "--target", "label", "--model", "svm"], "unsupported model 'svm'"),
    (["loocv", "{train}", "--target", "label", "--drop", "city", "--param", "gamma=2"], "no parameter 'gamma'"),
    (["unlearn", "{train}", "--target", "label", "--drop", "city", "--remove", "999"], "between 0 and 79"),
    (["loocv", "missing.csv", "--target", "label"], "no such file"),
    (["demo", "--n-exact", "0"], "--n-exact must be at least 1"),
])
def test_bad_input_is_one_line(tables, capsys, argv, message):
    path = tables[0]
    argv = [a.format(train=path / "train.csv") for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err
    assert lines[0].startswith(f"skinfluence {argv[0]}: error: ")


def test_entry_point_version_and_no_traceback(tables):
    path = tables[0]
    out = subprocess.run([sys.executable, "-m", "skinfluence", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"skinfluence {skinfluence.__version__}"
    bad = subprocess.run([sys.executable, "-m", "skinfluence", "loocv", str(path / "train.csv"),
                          "--target", "label", "--drop", "visits"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1 and "'city'" in bad.stderr


@pytest.mark.parametrize("verb", ["loocv", "attribute", "self-influence", "unlearn", "demo"])
def test_each_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([verb, "--help"])
    assert exit_.value.code == 0
    assert "--out" in capsys.readouterr().out or verb == "demo"
