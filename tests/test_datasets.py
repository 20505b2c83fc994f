"""Tests for the bundled UCI Adult loader and design-matrix builder."""


import numpy as np
import pandas as pd
import pytest
from sklearn.utils import Bunch

from skinfluence.datasets import adult_design, load_adult
from skinfluence.datasets import _adult

CATEGORICAL = [
    "workclass", "education", "marital-status", "occupation",
    "relationship", "race", "sex", "native-country",
]
NUMERIC = [
    "age", "fnlwgt", "education-num", "capital-gain", "capital-loss",
    "hours-per-week",
]
DESIGN_NUMERIC = [
    "age", "education-num", "capital-gain", "capital-loss", "hours-per-week",
]


def test_public_api():
    import skinfluence.datasets as ds

    assert set(ds.__all__) == {"load_adult", "adult_design"}


@pytest.mark.parametrize(
    "subset, n_rows, n_pos",
    [("train", 32561, 7841), ("test", 16281, 3846), ("all", 48842, 11687)],
)
def test_shapes_and_target(subset, n_rows, n_pos):
    bunch = load_adult(subset=subset)
    assert isinstance(bunch, Bunch)
    assert set(bunch) >= {
        "frame", "data", "target", "feature_names", "target_names", "DESCR",
    }
    assert bunch.frame.shape == (n_rows, 15)
    assert bunch.data.shape == (n_rows, 14)
    assert bunch.target.shape == (n_rows,)
    assert list(bunch.data.columns) == bunch.feature_names
    assert list(bunch.frame.columns) == bunch.feature_names + ["income"]
    assert bunch.target.name == "income"
    assert bunch.target_names == ["<=50K", ">50K"]
    assert set(np.unique(bunch.target)) == {0, 1}
    assert int(bunch.target.sum()) == n_pos
    assert bunch.frame.index.equals(pd.RangeIndex(n_rows))


def test_target_balance():
    y = load_adult(subset="train").target
    assert y.mean() == pytest.approx(0.2408, abs=0.001)
    y_test = load_adult(subset="test").target
    assert 0.22 < y_test.mean() < 0.26


def test_dtypes():
    frame = load_adult(subset="all").frame
    for col in NUMERIC + ["income"]:
        assert frame[col].dtype == np.int64, col
        assert not frame[col].isna().any()
    for col in CATEGORICAL:
        assert isinstance(frame[col].dtype, pd.CategoricalDtype), col
    # Categorical dtypes agree across subsets.
    train, test = load_adult().frame, load_adult(subset="test").frame
    for col in CATEGORICAL:
        assert train[col].dtype == test[col].dtype


def test_cleaning():
    train = load_adult().frame
    test = load_adult(subset="test").frame
    # "?" became NaN, in exactly the original counts and columns.
    assert train.isna().sum()[lambda s: s > 0].to_dict() == {
        "workclass": 1836, "occupation": 1843, "native-country": 583,
    }
    assert test.isna().sum()[lambda s: s > 0].to_dict() == {
        "workclass": 963, "occupation": 966, "native-country": 274,
    }
    for frame in (train, test):
        for col in CATEGORICAL:
            values = frame[col].dropna().astype(str)
            assert (values == values.str.strip()).all()
            assert "?" not in frame[col].cat.categories
    # First rows of both original files.
    assert train.iloc[0].tolist() == [
        39, "State-gov", 77516, "Bachelors", 13, "Never-married",
        "Adm-clerical", "Not-in-family", "White", "Male", 2174, 0, 40,
        "United-States", 0,
    ]
    assert test.iloc[0].tolist() == [
        25, "Private", 226802, "11th", 7, "Never-married",
        "Machine-op-inspct", "Own-child", "Black", "Male", 0, 0, 40,
        "United-States", 0,
    ]


def test_all_is_train_then_test():
    train, test = load_adult().frame, load_adult(subset="test").frame
    both = load_adult(subset="all").frame
    pd.testing.assert_frame_equal(both.iloc[: len(train)], train)
    pd.testing.assert_frame_equal(
        both.iloc[len(train):].reset_index(drop=True), test
    )


def test_descr_has_licence_and_citation():
    descr = load_adult().DESCR
    assert "CC BY 4.0" in descr
    assert "10.24432/C5XW20" in descr
    assert "Becker" in descr and "Kohavi" in descr
    assert "10.24432/C5XW20" in load_adult.__doc__
    assert "CC BY 4.0" in load_adult.__doc__


def test_return_X_y():
    X, y = load_adult(subset="test", return_X_y=True)
    bunch = load_adult(subset="test")
    pd.testing.assert_frame_equal(X, bunch.data)
    pd.testing.assert_series_equal(y, bunch.target)


def test_as_frame_false():
    bunch = load_adult(as_frame=False)
    assert bunch.frame is None
    assert isinstance(bunch.data, np.ndarray)
    assert bunch.data.dtype == object
    assert bunch.data.shape == (32561, 14)
    assert isinstance(bunch.target, np.ndarray)
    assert bunch.target.dtype == np.int64
    assert bunch.data[0, 0] == 39 and bunch.data[0, 1] == "State-gov"
    # Missing values are NaN.
    wc = bunch.feature_names.index("workclass")
    n_missing = sum(
        isinstance(v, float) and np.isnan(v) for v in bunch.data[:, wc]
    )
    assert n_missing == 1836

    X, y = load_adult(as_frame=False, return_X_y=True)
    assert isinstance(X, np.ndarray) and isinstance(y, np.ndarray)
    assert X.shape == (32561, 14) and y.shape == (32561,)


@pytest.mark.parametrize("subset", ["validation", "Train", None, 1])
def test_bad_subset(subset):
    with pytest.raises(ValueError, match="subset"):
        load_adult(subset=subset)
    with pytest.raises(ValueError, match="subset"):
        adult_design(subset=subset)


def test_mutation_does_not_corrupt_cache():
    first = load_adult()
    first.frame.loc[0, "age"] = -1
    first.frame["sex"] = "Female"
    first.data.iloc[:, 0] = 0
    first.target.iloc[:] = 1
    first.feature_names.append("bogus")
    first.target_names.append("bogus")
    arr = load_adult(as_frame=False)
    arr.data[:, 0] = 0
    arr.target[:] = 1

    second = load_adult()
    assert second.frame.loc[0, "age"] == 39
    assert second.data.iloc[0, 0] == 39
    assert (second.frame["sex"] == "Male").sum() > 20000
    assert second.target.mean() == pytest.approx(0.2408, abs=0.001)
    assert len(second.feature_names) == 14
    assert second.target_names == ["<=50K", ">50K"]
    all_frame = load_adult(subset="all").frame
    assert all_frame.loc[0, "age"] == 39


def test_parsing_is_cached():
    load_adult()
    hits = _adult._read_split.cache_info().hits
    load_adult()
    assert _adult._read_split.cache_info().hits > hits or (
        _adult._load_frame.cache_info().hits > 0
    )


# --------------------------------------------------------------------------
# adult_design


@pytest.fixture(scope="module")
def designs():
    return {
        "train": adult_design(subset="train"),
        "test": adult_design(subset="test"),
    }


def test_design_shapes_and_types(designs):
    train, test = designs["train"], designs["test"]
    assert train.X.shape == (30162, 87)
    assert test.X.shape == (15060, 87)
    for d in (train, test):
        assert d.X.dtype == np.float64
        assert d.y.dtype == np.int64 and set(np.unique(d.y)) == {0, 1}
        assert d.sensitive.dtype == np.int64
        assert set(np.unique(d.sensitive)) == {0, 1}
        assert len(d.y) == len(d.sensitive) == len(d.index) == d.X.shape[0]
        assert isinstance(d.feature_names, list)
        assert all(isinstance(n, str) for n in d.feature_names)
        assert len(d.feature_names) == d.X.shape[1]
        assert len(set(d.feature_names)) == d.X.shape[1]
        assert not np.isnan(d.X).any()


def test_design_columns(designs):
    names = designs["train"].feature_names
    assert names[:5] == DESIGN_NUMERIC
    assert "fnlwgt" not in names
    assert not any(n.startswith("education_") for n in names)
    assert "education-num" in names
    assert {"sex_Male", "sex_Female", "race_White"} <= set(names)
    # One-hot groups: each retained row has exactly one level per column.
    X = designs["train"].X
    for col in ["workclass", "marital-status", "occupation", "relationship",
                "race", "sex", "native-country"]:
        idx = [i for i, n in enumerate(names) if n.startswith(col + "_")]
        assert idx
        np.testing.assert_array_equal(X[:, idx].sum(axis=1), 1.0)
    # No all-zero column in the train design.
    assert (np.abs(X).sum(axis=0) > 0).all()


def test_design_train_test_columns_identical(designs):
    assert designs["train"].feature_names == designs["test"].feature_names
    full = adult_design(subset="all")
    assert full.feature_names == designs["train"].feature_names
    assert full.X.shape == (45222, 87)


def test_design_standardised_on_train(designs):
    Xn = designs["train"].X[:, :5]
    np.testing.assert_allclose(Xn.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(Xn.std(axis=0), 1.0, atol=1e-10)
    # The test split uses the train statistics: close but not exact.
    Xt = designs["test"].X[:, :5]
    assert np.all(np.abs(Xt.mean(axis=0)) < 0.05)
    assert not np.allclose(Xt.mean(axis=0), 0.0, atol=1e-10)


def test_design_not_standardised():
    d = adult_design(standardize=False)
    frame = load_adult().frame.dropna()
    np.testing.assert_array_equal(
        d.X[:, :5], frame[DESIGN_NUMERIC].to_numpy(dtype=float)
    )


def test_design_matches_frame(designs):
    frame = load_adult().frame
    d = designs["train"]
    kept = frame.loc[d.index]
    assert not kept.isna().any().any()
    np.testing.assert_array_equal(d.y, kept["income"].to_numpy())
    np.testing.assert_array_equal(
        d.sensitive, (kept["sex"] == "Male").to_numpy().astype(int)
    )
    names = d.feature_names
    np.testing.assert_array_equal(d.X[:, names.index("sex_Male")], d.sensitive)
    occ = kept["occupation"].astype(str).to_numpy()
    np.testing.assert_array_equal(
        d.X[:, names.index("occupation_Sales")], (occ == "Sales").astype(float)
    )


def test_design_keep_missing():
    d = adult_design(drop_missing=False)
    assert d.X.shape == (32561, 88)
    assert not np.isnan(d.X).any()
    np.testing.assert_allclose(d.X[:, :5].mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(d.X[:, :5].std(axis=0), 1.0, atol=1e-10)
    test = adult_design(subset="test", drop_missing=False)
    assert test.X.shape == (16281, 88)
    assert test.feature_names == d.feature_names
    # A row with missing workclass has an all-zero workclass group.
    frame = load_adult().frame
    row = int(np.flatnonzero(frame["workclass"].isna().to_numpy())[0])
    idx = [i for i, n in enumerate(d.feature_names)
           if n.startswith("workclass_")]
    assert d.X[row, idx].sum() == 0


def test_design_sensitive_race():
    d = adult_design(subset="test", sensitive="race")
    kept = load_adult(subset="test").frame.loc[d.index]
    np.testing.assert_array_equal(
        d.sensitive, (kept["race"] == "White").to_numpy().astype(int)
    )
    assert 0.8 < d.sensitive.mean() < 0.9
    assert adult_design(sensitive=None).sensitive is None
    with pytest.raises(ValueError, match="sensitive"):
        adult_design(sensitive="age")


def test_design_from_frame():
    frame = load_adult(subset="test").frame
    part = frame.iloc[100:600]
    d = adult_design(part)
    ref = adult_design(subset="test")
    mask = np.isin(ref.index, d.index)
    np.testing.assert_array_equal(d.X, ref.X[mask])
    np.testing.assert_array_equal(d.y, ref.y[mask])
    # Works on plain strings too, and without the target column.
    plain = part.drop(columns="income").astype(
        {c: object for c in CATEGORICAL}
    )
    d2 = adult_design(plain)
    np.testing.assert_array_equal(d2.X, d.X)
    assert d2.y is None
    with pytest.raises(ValueError, match="lacks"):
        adult_design(part.drop(columns="sex"))


def test_design_dtype():
    d = adult_design(subset="test", dtype=np.float32)
    assert d.X.dtype == np.float32


def test_design_does_not_mutate_cache():
    d = adult_design()
    d.X[:] = 0
    d.y[:] = 7
    d.sensitive[:] = 7
    d.index[:] = 7
    d.feature_names.append("bogus")
    again = adult_design()
    assert again.X.any()
    assert set(np.unique(again.y)) == {0, 1}
    assert set(np.unique(again.sensitive)) == {0, 1}
    assert load_adult().frame["income"].max() == 1
    assert len(again.feature_names) == 87
    assert load_adult().frame.loc[0, "age"] == 39


def test_design_unknown_level_is_all_zero():
    part = load_adult(subset="test").frame.iloc[:3].astype(
        {"native-country": object}
    )
    part.loc[part.index[0], "native-country"] = "Atlantis"
    d = adult_design(part)
    idx = [i for i, n in enumerate(d.feature_names)
           if n.startswith("native-country_")]
    np.testing.assert_array_equal(d.X[:, idx].sum(axis=1), [0.0, 1.0, 1.0])
