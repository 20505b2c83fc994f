"""Group fairness metrics of hard predictions.

Both metrics are the difference between the largest and the smallest group-level
rate, over all groups of the sensitive feature(s) (fairlearn's ``"between_groups"``
method): 0 means every group has the same rate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_consistent_length

__all__ = ["demographic_parity_difference", "equal_opportunity_difference", "encode_groups"]


def encode_groups(sensitive_features, n_samples=None):
    """Integer group codes of sensitive features.

    Parameters
    ----------
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_features)
        Group labels; several columns define intersectional groups (one group per
        distinct row).
    n_samples : int, default=None
        Expected number of rows.

    Returns
    -------
    codes : ndarray of int of shape (n_samples,)
    groups : ndarray
        The group labels (a row of labels per group for several columns), in code order.
    """
    if isinstance(sensitive_features, (pd.Series, pd.DataFrame)):
        missing = np.asarray(sensitive_features.isna()).any()
        values = sensitive_features.to_numpy()
    else:
        values = np.asarray(sensitive_features)
        # a plain list mixing labels and NaN becomes strings ("nan"): look at its items as given
        items = values if isinstance(sensitive_features, np.ndarray) else np.asarray(
            sensitive_features, dtype=object)
        missing = items.dtype.kind in "fcO" and np.asarray(pd.isna(items)).any()
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim not in (1, 2) or values.shape[0] == 0:
        raise ValueError(
            f"sensitive_features must be a non-empty 1-d or 2-d array, got shape {values.shape}"
        )
    if n_samples is not None and values.shape[0] != n_samples:
        raise ValueError(
            f"sensitive_features has {values.shape[0]} rows, but X / y have {n_samples}"
        )
    if missing:
        raise ValueError("sensitive_features contains missing values")
    if values.ndim == 2:  # intersectional groups: one label per distinct row
        values = np.array(["|".join(map(str, row)) for row in values], dtype=object)
    groups, codes = np.unique(values, return_inverse=True)
    return codes.ravel(), groups


def _rate_difference(hit, mask, codes, n_groups, sample_weight, what):
    sw = np.ones(len(hit)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    num = np.bincount(codes[mask], weights=(sw * hit)[mask], minlength=n_groups)
    den = np.bincount(codes[mask], weights=sw[mask], minlength=n_groups)
    if (den <= 0).any():
        raise ValueError(f"a group of the sensitive feature has no {what}; its rate is undefined")
    rate = num / den
    return float(rate.max() - rate.min())


def _prepare(y_true, y_pred, sensitive_features, sample_weight):
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    check_consistent_length(y_true, y_pred, sample_weight)
    codes, groups = encode_groups(sensitive_features, len(y_true))
    return y_true, y_pred, codes, len(groups)


def demographic_parity_difference(y_true, y_pred, *, sensitive_features, pos_label=1,
                                  sample_weight=None) -> float:
    """Largest minus smallest selection rate ``P[ŷ = pos_label | A = a]`` over groups.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Unused (kept for the signature shared by fairness metrics).
    y_pred : array-like of shape (n_samples,)
        Predicted labels.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_features)
    pos_label : scalar, default=1
        The favourable outcome.
    sample_weight : array-like of shape (n_samples,), default=None

    Returns
    -------
    float
        0 when every group is selected at the same rate.

    Examples
    --------
    >>> from skinfluence.fairness import demographic_parity_difference
    >>> demographic_parity_difference([0, 1, 0, 1], [1, 1, 0, 1], sensitive_features=["a", "a", "b", "b"])
    0.5
    """
    y_true, y_pred, codes, k = _prepare(y_true, y_pred, sensitive_features, sample_weight)
    return _rate_difference(y_pred == pos_label, np.ones(len(y_pred), bool), codes, k,
                            sample_weight, "samples")


def equal_opportunity_difference(y_true, y_pred, *, sensitive_features, pos_label=1,
                                 sample_weight=None) -> float:
    """Largest minus smallest true positive rate ``P[ŷ = 1 | Y = 1, A = a]`` over groups.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    y_pred : array-like of shape (n_samples,)
        Predicted labels.
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_features)
    pos_label : scalar, default=1
        The favourable outcome.
    sample_weight : array-like of shape (n_samples,), default=None

    Returns
    -------
    float
        0 when every group's positive samples are predicted positive at the same rate.

    Examples
    --------
    >>> from skinfluence.fairness import equal_opportunity_difference
    >>> equal_opportunity_difference([1, 1, 1, 1], [1, 0, 1, 1], sensitive_features=["a", "a", "b", "b"])
    0.5
    """
    y_true, y_pred, codes, k = _prepare(y_true, y_pred, sensitive_features, sample_weight)
    return _rate_difference(y_pred == pos_label, y_true == pos_label, codes, k, sample_weight,
                            "positive samples")
