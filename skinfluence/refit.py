"""Exact refits: the ground truth the influence approximations are measured against.

Refits start from the fitted solution (``warm_start``) with a tight tolerance, so that
optimiser noise stays far below the leave-one-out effects being compared.
"""

from __future__ import annotations

import copy

import numpy as np

__all__ = ["refit_without", "exact_loo_predictions"]


def _tight_copy(fitted, tol):
    est = copy.deepcopy(fitted)
    params = est.get_params()
    tight = {k: v for k, v in {"warm_start": True, "tol": tol, "max_iter": 100_000}.items() if k in params}
    return est.set_params(**tight)


def _rows(X, idx):
    return X.iloc[idx] if hasattr(X, "iloc") else X[idx]


def refit_without(fitted, X, y, indices, sample_weight=None, tol=1e-10):
    """Refit ``fitted`` (warm-started, tight tolerance) without the rows ``indices``.

    Parameters
    ----------
    fitted : fitted estimator
        Not modified; a deep copy is refitted.
    X, y : training data the estimator was fitted on
    indices : array-like of int
        Rows to drop.
    sample_weight : array-like, optional
    tol : float, default=1e-10

    Returns
    -------
    estimator
    """
    keep = np.setdiff1d(np.arange(len(y)), np.asarray(indices))
    est = _tight_copy(fitted, tol)
    y = np.asarray(y)
    kw = {} if sample_weight is None else {"sample_weight": np.asarray(sample_weight)[keep]}
    return est.fit(_rows(X, keep), y[keep], **kw)


def exact_loo_predictions(fitted, X, y, indices, response_method="predict", sample_weight=None, tol=1e-10):
    """Leave-one-out predictions of ``fitted`` for the rows ``indices``, by exact refits."""
    out = []
    for i in np.asarray(indices):
        est = refit_without(fitted, X, y, [i], sample_weight, tol)
        out.append(getattr(est, response_method)(_rows(X, [i]))[0])
    return np.asarray(out)
