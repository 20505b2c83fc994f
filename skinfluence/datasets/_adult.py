"""Offline loader for the UCI Adult ("Census Income") data set.

The data are bundled with the package (``skinfluence/datasets/data``) as
cleaned, gzip-compressed CSV files, so no network access is needed.

Licence: CC BY 4.0. Citation: Becker, B. & Kohavi, R. (1996). Adult
[Dataset]. UCI Machine Learning Repository. https://doi.org/10.24432/C5XW20.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

__all__ = ["load_adult", "adult_design"]

_DATA_DIR = Path(__file__).resolve().parent / "data"
_FILES = {"train": "adult_train.csv.gz", "test": "adult_test.csv.gz"}
_SUBSETS = ("train", "test", "all")
_N_ROWS = {"train": 32561, "test": 16281}

TARGET_NAME = "income"
TARGET_NAMES = ["<=50K", ">50K"]

# Category levels as listed in ``adult.names`` (sorted), shared by all splits
# so that train, test and "all" frames have identical categorical dtypes.
_CATEGORIES: dict[str, list[str]] = {
    "workclass": [
        "Federal-gov", "Local-gov", "Never-worked", "Private", "Self-emp-inc",
        "Self-emp-not-inc", "State-gov", "Without-pay",
    ],
    "education": [
        "10th", "11th", "12th", "1st-4th", "5th-6th", "7th-8th", "9th",
        "Assoc-acdm", "Assoc-voc", "Bachelors", "Doctorate", "HS-grad",
        "Masters", "Preschool", "Prof-school", "Some-college",
    ],
    "marital-status": [
        "Divorced", "Married-AF-spouse", "Married-civ-spouse",
        "Married-spouse-absent", "Never-married", "Separated", "Widowed",
    ],
    "occupation": [
        "Adm-clerical", "Armed-Forces", "Craft-repair", "Exec-managerial",
        "Farming-fishing", "Handlers-cleaners", "Machine-op-inspct",
        "Other-service", "Priv-house-serv", "Prof-specialty",
        "Protective-serv", "Sales", "Tech-support", "Transport-moving",
    ],
    "relationship": [
        "Husband", "Not-in-family", "Other-relative", "Own-child",
        "Unmarried", "Wife",
    ],
    "race": [
        "Amer-Indian-Eskimo", "Asian-Pac-Islander", "Black", "Other", "White",
    ],
    "sex": ["Female", "Male"],
    "native-country": [
        "Cambodia", "Canada", "China", "Columbia", "Cuba",
        "Dominican-Republic", "Ecuador", "El-Salvador", "England", "France",
        "Germany", "Greece", "Guatemala", "Haiti", "Holand-Netherlands",
        "Honduras", "Hong", "Hungary", "India", "Iran", "Ireland", "Italy",
        "Jamaica", "Japan", "Laos", "Mexico", "Nicaragua",
        "Outlying-US(Guam-USVI-etc)", "Peru", "Philippines", "Poland",
        "Portugal", "Puerto-Rico", "Scotland", "South", "Taiwan", "Thailand",
        "Trinadad&Tobago", "United-States", "Vietnam", "Yugoslavia",
    ],
}

FEATURE_NAMES = [
    "age", "workclass", "fnlwgt", "education", "education-num",
    "marital-status", "occupation", "relationship", "race", "sex",
    "capital-gain", "capital-loss", "hours-per-week", "native-country",
]
_NUMERIC = [c for c in FEATURE_NAMES if c not in _CATEGORIES]

# Columns of the modelling matrix built by ``adult_design``.
_DESIGN_NUMERIC = ["age", "education-num", "capital-gain", "capital-loss",
                   "hours-per-week"]
_DESIGN_CATEGORICAL = ["workclass", "marital-status", "occupation",
                       "relationship", "race", "sex", "native-country"]
_SENSITIVE = {"sex": "Male", "race": "White"}

_CITATION = (
    "Becker, B. & Kohavi, R. (1996). Adult [Dataset]. UCI Machine Learning "
    "Repository. https://doi.org/10.24432/C5XW20."
)

DESCR = f"""\
.. _adult_dataset:

UCI Adult ("Census Income") dataset
-----------------------------------

Extraction of the 1994 US Census database by Barry Becker. The task is to
predict whether a person's yearly income exceeds $50K.

**Data Set Characteristics:**

:Number of Instances: 48842 (train: 32561, test: 16281)
:Number of Attributes: 14 (6 integer, 8 categorical) plus the target
:Target: ``income``, 0 for "<=50K" and 1 for ">50K"
    (about 24% positive in both splits)
:Missing Attribute Values: "?" in the original files, given as NaN here;
    only in ``workclass``, ``occupation`` and ``native-country``
    (2399 train rows and 1221 test rows have at least one)
:Attributes:
    - age: integer
    - workclass: categorical (8 levels)
    - fnlwgt: integer, census sampling weight
    - education: categorical (16 levels)
    - education-num: integer, education coded as a number
    - marital-status: categorical (7 levels)
    - occupation: categorical (14 levels)
    - relationship: categorical (6 levels)
    - race: categorical (5 levels)
    - sex: categorical (2 levels)
    - capital-gain: integer
    - capital-loss: integer
    - hours-per-week: integer
    - native-country: categorical (41 levels)

The bundled copy is a cleaned version of the original ``adult.data`` and
``adult.test`` files: values are stripped of whitespace, the first line of
``adult.test`` and the trailing period of its labels are removed, and the
label is coded 0/1. Rows (duplicates included) are kept in the original order.

:Source: UCI Machine Learning Repository,
    https://archive.ics.uci.edu/dataset/2/adult
:Licence: Creative Commons Attribution 4.0 International (CC BY 4.0),
    https://creativecommons.org/licenses/by/4.0/

.. topic:: Citation

    {_CITATION}

.. topic:: References

    - Kohavi, R. (1996). Scaling up the accuracy of naive-Bayes classifiers:
      a decision-tree hybrid. In Proceedings of the Second International
      Conference on Knowledge Discovery and Data Mining (KDD-96), 202-207.
"""


def _check_subset(subset: str) -> str:
    if not isinstance(subset, str) or subset not in _SUBSETS:
        raise ValueError(
            f"subset must be one of {', '.join(repr(s) for s in _SUBSETS)}; "
            f"got {subset!r}."
        )
    return subset


@functools.lru_cache(maxsize=None)
def _read_split(split: str) -> pd.DataFrame:
    """Parse one bundled split. Cached: callers must not mutate the result."""
    dtypes: dict[str, object] = {c: "int64" for c in _NUMERIC}
    dtypes.update(
        {c: pd.CategoricalDtype(cats) for c, cats in _CATEGORIES.items()}
    )
    dtypes[TARGET_NAME] = "int64"
    path = _DATA_DIR / _FILES[split]
    frame = pd.read_csv(
        path,
        dtype=dtypes,
        keep_default_na=False,
        na_values=[""],
        compression="gzip",
    )
    expected = FEATURE_NAMES + [TARGET_NAME]
    if list(frame.columns) != expected or len(frame) != _N_ROWS[split]:
        raise RuntimeError(f"Bundled Adult file {path} is corrupt.")
    return frame


@functools.lru_cache(maxsize=None)
def _load_frame(subset: str) -> pd.DataFrame:
    """Cached frame of a subset. Callers must not mutate the result."""
    if subset == "all":
        return pd.concat(
            [_read_split("train"), _read_split("test")], ignore_index=True
        )
    return _read_split(subset)


def load_adult(
    *,
    subset: Literal["train", "test", "all"] = "train",
    return_X_y: bool = False,
    as_frame: bool = True,
) -> Bunch | tuple[pd.DataFrame | np.ndarray, pd.Series | np.ndarray]:
    """Load the UCI Adult ("Census Income") dataset (classification).

    The data are bundled with the package; no download is needed. Values are
    stripped of whitespace, the "?" marker becomes a missing value (NaN),
    integer attributes have an ``int64`` dtype and categorical attributes a
    pandas ``category`` dtype whose levels are the same for every subset.

    =================   ============================
    Classes                                        2
    Samples (train)                            32561
    Samples (test)                             16281
    Features                    14 (6 int, 8 categ.)
    Positive rate              about 0.24 (">50K")
    =================   ============================

    Licence: Creative Commons Attribution 4.0 International (CC BY 4.0).
    Please cite: Becker, B. & Kohavi, R. (1996). Adult [Dataset]. UCI
    Machine Learning Repository. https://doi.org/10.24432/C5XW20.

    Parameters
    ----------
    subset : {"train", "test", "all"}, default="train"
        Which split to load: the original ``adult.data`` file ("train"), the
        original ``adult.test`` file ("test") or both, train rows first
        ("all", with a fresh ``RangeIndex``).
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.
    as_frame : bool, default=True
        If True, ``data`` is a pandas DataFrame, ``target`` a Series and
        ``frame`` a DataFrame with the features and the ``income`` column.
        If False, ``data`` is a numpy object array (missing values as
        ``np.nan``), ``target`` an integer array and ``frame`` is None.

    Returns
    -------
    data : sklearn.utils.Bunch
        Dictionary-like object with the attributes

        frame : pandas.DataFrame or None
            Features and target (column ``income``), or None when
            ``as_frame=False``.
        data : pandas.DataFrame of shape (n_samples, 14) or ndarray
            The features.
        target : pandas.Series of shape (n_samples,) or ndarray
            ``income``: 1 for ">50K", 0 for "<=50K" (``int64``).
        feature_names : list of str
            Names of the 14 feature columns.
        target_names : list of str
            ``["<=50K", ">50K"]``, indexed by the target value.
        DESCR : str
            Description of the dataset, with licence and citation.

    (data, target) : tuple if ``return_X_y`` is True
        ``data`` and ``target`` as described above.

    Raises
    ------
    ValueError
        If ``subset`` is not one of "train", "test" or "all".

    Notes
    -----
    Parsing is cached per process; every call returns fresh copies, so
    modifying a returned object does not affect later calls.

    Examples
    --------
    >>> from skinfluence.datasets import load_adult
    >>> adult = load_adult(subset="train")
    >>> adult.frame.shape
    (32561, 15)
    >>> X, y = load_adult(subset="test", return_X_y=True)
    >>> X.shape, int(y.sum())
    ((16281, 14), 3846)
    """
    _check_subset(subset)
    frame = _load_frame(subset).copy(deep=True)
    feature_names = list(FEATURE_NAMES)
    data = frame[feature_names].copy()
    target = frame[TARGET_NAME].copy()
    if not as_frame:
        data = data.to_numpy(dtype=object, na_value=np.nan, copy=True)
        target = target.to_numpy(dtype=np.int64, copy=True)
        frame = None
    if return_X_y:
        return data, target
    return Bunch(
        frame=frame,
        data=data,
        target=target,
        feature_names=feature_names,
        target_names=list(TARGET_NAMES),
        DESCR=DESCR,
    )


def _level_codes(values: pd.Series, levels: list[str]) -> np.ndarray:
    """Position of each value in ``levels``; -1 for missing/unknown values."""
    index = pd.Index(levels, dtype=object)
    if isinstance(values.dtype, pd.CategoricalDtype):
        mapping = index.get_indexer(values.cat.categories.astype(object))
        codes = values.cat.codes.to_numpy()
        return np.where(codes >= 0, mapping[codes], -1)
    return index.get_indexer(values.astype(object))


@functools.lru_cache(maxsize=None)
def _design_reference(drop_missing: bool):
    """Train-split scaling statistics and one-hot levels (cached)."""
    train = _read_split("train")
    if drop_missing:
        used = _DESIGN_NUMERIC + _DESIGN_CATEGORICAL
        train = train[train[used].notna().all(axis=1).to_numpy()]
    num = train[_DESIGN_NUMERIC].to_numpy(dtype=np.float64)
    mean = num.mean(axis=0)
    std = num.std(axis=0)
    std[std == 0] = 1.0
    # Levels observed in the (retained) train rows, in sorted order, so the
    # design never contains an all-zero column for the train split.
    levels = {}
    for col in _DESIGN_CATEGORICAL:
        observed = set(train[col].dropna().unique())
        levels[col] = [c for c in _CATEGORIES[col] if c in observed]
    mean.setflags(write=False)
    std.setflags(write=False)
    return mean, std, levels


def adult_design(
    frame: pd.DataFrame | None = None,
    *,
    subset: Literal["train", "test", "all"] = "train",
    drop_missing: bool = True,
    standardize: bool = True,
    sensitive: Literal["sex", "race"] | None = "sex",
    dtype: type | np.dtype = float,
) -> Bunch:
    """Build the usual numeric modelling matrix for the Adult dataset.

    The integer columns ``age``, ``education-num``, ``capital-gain``,
    ``capital-loss`` and ``hours-per-week`` are kept (standardised if
    ``standardize``); the categorical columns ``workclass``,
    ``marital-status``, ``occupation``, ``relationship``, ``race``, ``sex``
    and ``native-country`` are one-hot encoded with one column per level
    (no level is dropped). ``fnlwgt`` (a sampling weight) and ``education``
    (duplicated by ``education-num``) are left out.

    Scaling statistics and one-hot levels always come from the *train* split
    (after dropping rows with missing values when ``drop_missing``), so
    designs of different subsets share exactly the same columns and scaling:
    87 columns with ``drop_missing=True`` and 88 with ``drop_missing=False``
    (the extra one is ``workclass_Never-worked``, whose rows all lack
    ``occupation``).

    Licence of the data: CC BY 4.0. Please cite: Becker, B. & Kohavi, R.
    (1996). Adult [Dataset]. UCI Machine Learning Repository.
    https://doi.org/10.24432/C5XW20.

    Parameters
    ----------
    frame : pandas.DataFrame or None, default=None
        Frame with the Adult columns (as returned by
        ``load_adult().frame``, possibly a row subset). If None, the
        ``subset`` split is loaded. A ``income`` column (0/1) is optional.
    subset : {"train", "test", "all"}, default="train"
        Split to use when ``frame`` is None; ignored otherwise.
    drop_missing : bool, default=True
        Drop rows with a missing value in any used column. If False,
        missing categorical values are encoded as all-zero one-hot groups
        (and missing numeric values, absent from the real data, stay NaN).
    standardize : bool, default=True
        Centre and scale the numeric columns with the train-split mean and
        (population) standard deviation.
    sensitive : {"sex", "race"} or None, default="sex"
        Sensitive attribute to return: "sex" gives 1 for Male and 0 for
        Female, "race" gives 1 for White and 0 otherwise. None returns None.
        The attribute is also kept in ``X`` as its one-hot columns.
    dtype : numpy dtype, default=float
        Floating dtype of ``X``.

    Returns
    -------
    design : sklearn.utils.Bunch
        Dictionary-like object with the attributes

        X : ndarray of shape (n_samples, n_features)
            The design matrix.
        y : ndarray of shape (n_samples,) or None
            ``income`` as 0/1 ``int64`` (None if ``frame`` has no
            ``income`` column).
        sensitive : ndarray of shape (n_samples,) or None
            The 0/1 ``int64`` sensitive attribute.
        feature_names : list of str
            Column names of ``X``; one-hot columns are named
            ``"<column>_<level>"``, e.g. ``"sex_Male"``.
        index : ndarray of shape (n_samples,)
            Index labels of the retained rows of the input frame.

    Raises
    ------
    ValueError
        If ``subset`` or ``sensitive`` is invalid or ``frame`` lacks a
        required column.

    Examples
    --------
    >>> from skinfluence.datasets import adult_design
    >>> train = adult_design(subset="train")
    >>> test = adult_design(subset="test")
    >>> train.X.shape, test.X.shape
    ((30162, 87), (15060, 87))
    >>> train.feature_names == test.feature_names
    True
    """
    if sensitive is not None and sensitive not in _SENSITIVE:
        raise ValueError(
            f"sensitive must be 'sex', 'race' or None; got {sensitive!r}."
        )
    if frame is None:
        frame = _load_frame(_check_subset(subset))  # read only below
    elif not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"frame must be a pandas DataFrame or None; got {type(frame)!r}."
        )
    used = _DESIGN_NUMERIC + _DESIGN_CATEGORICAL
    missing_cols = [c for c in used if c not in frame.columns]
    if missing_cols:
        raise ValueError(f"frame lacks the Adult column(s) {missing_cols}.")
    has_target = TARGET_NAME in frame.columns

    if drop_missing:
        check = used + ([TARGET_NAME] if has_target else [])
        keep = frame[check].notna().all(axis=1).to_numpy()
        if not keep.all():
            frame = frame[keep]

    mean, std, levels = _design_reference(bool(drop_missing))
    n = len(frame)
    n_num = len(_DESIGN_NUMERIC)
    n_cols = n_num + sum(len(v) for v in levels.values())
    X = np.zeros((n, n_cols), dtype=dtype)

    num = frame[_DESIGN_NUMERIC].to_numpy(dtype=np.float64, na_value=np.nan)
    if standardize:
        num = (num - mean) / std
    X[:, :n_num] = num
    feature_names = list(_DESIGN_NUMERIC)

    rows = np.arange(n)
    offset = n_num
    for col in _DESIGN_CATEGORICAL:
        cats = levels[col]
        codes = _level_codes(frame[col], cats)
        hit = codes >= 0  # -1: missing or a level unseen in train
        X[rows[hit], offset + codes[hit]] = 1
        feature_names.extend(f"{col}_{c}" for c in cats)
        offset += len(cats)

    y = None
    if has_target:
        y = frame[TARGET_NAME].to_numpy(dtype=np.int64, copy=True)

    s = None
    if sensitive is not None:
        s = (frame[sensitive] == _SENSITIVE[sensitive]).to_numpy(
            dtype=np.int64, na_value=0
        )

    return Bunch(
        X=X,
        y=y,
        sensitive=s,
        feature_names=feature_names,
        index=frame.index.to_numpy(copy=True),
    )
