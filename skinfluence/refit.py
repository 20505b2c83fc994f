"""Refits: weighted fits of any supported estimator, and the exact refits that are the
ground truth the influence approximations are measured against.

Exact refits start from the fitted solution (``warm_start``) with a tight tolerance, so
that optimiser noise stays far below the leave-one-out effects being compared.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import has_fit_parameter

from ._utils import final_step, is_skorch

__all__ = ["fit_weighted", "supports_sample_weight", "refit_without", "exact_loo_predictions"]

# keys of the dict a skorch net is fed when it trains with sample weights
_DATA, _WEIGHT = "_skinfluence_X", "_skinfluence_sample_weight"


def supports_sample_weight(estimator) -> bool:
    """Whether :func:`fit_weighted` can fit ``estimator`` (or a Pipeline's last step) with weights.

    Parameters
    ----------
    estimator : estimator

    Returns
    -------
    bool
    """
    last = final_step(estimator)
    return is_skorch(last) or has_fit_parameter(last, "sample_weight")


class _WeightedLoss:
    """Mixin for a skorch net fed ``{_DATA: X, _WEIGHT: w}``: trains on ``Σ w_i ℓ_i``.

    The criterion runs with ``reduction="none"`` and the per-sample losses are weighted,
    then reduced as the criterion would (a mean over the batch, or a sum).
    """

    def infer(self, x, **fit_params):
        if isinstance(x, Mapping) and _WEIGHT in x:
            x = {k: v for k, v in x.items() if k != _WEIGHT}
            x = x[_DATA] if list(x) == [_DATA] else x
        return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        if not (isinstance(X, Mapping) and _WEIGHT in X):
            return super().get_loss(y_pred, y_true, X=X, training=training)
        crit = self.criterion_
        reduction, crit.reduction = crit.reduction, "none"
        try:
            loss = super().get_loss(y_pred, y_true, X=X, training=training)
        finally:
            crit.reduction = reduction
        loss = loss.reshape(len(loss), -1)
        import torch

        w = torch.as_tensor(X[_WEIGHT], device=loss.device, dtype=loss.dtype)
        return (w * loss.mean(1)).mean() if reduction == "mean" else (w * loss.sum(1)).sum()


def _fit_skorch(net, X, y, sample_weight, warm_start):
    if type(net).__name__ == "NeuralNetRegressor":  # skorch wants a column target
        y = np.asarray(y).reshape(len(y), -1)
    warm_start = warm_start or net.warm_start
    if sample_weight is None:
        return net.partial_fit(X, y) if warm_start else net.fit(X, y)
    if not warm_start or not getattr(net, "initialized_", False):
        net.initialize()
    w = np.asarray(sample_weight, dtype=np.float64)
    if net.criterion_.reduction == "mean":  # Σ w ℓ / Σ w on a full batch, unbiased on minibatches
        w = w / w.mean()
    if isinstance(X, Mapping):
        data = {**X, _WEIGHT: w}
    else:
        data = {_DATA: X, _WEIGHT: w}
    cls = type(net)
    net.__class__ = type(f"Weighted{cls.__name__}", (_WeightedLoss, cls), {})
    try:
        net.partial_fit(data, y)
    finally:
        net.__class__ = cls  # hand back a plain net of the user's class
    return net


def fit_weighted(estimator, X, y, sample_weight=None, *, warm_start=False):
    """Fit ``estimator`` in place on ``(X, y)`` with per-sample weights.

    scikit-learn estimators get ``sample_weight`` in ``fit`` (a Pipeline passes it to its
    last step). skorch nets, whose ``fit`` has no ``sample_weight``, are trained on the
    weighted loss ``Σ w_i ℓ_i`` (divided by ``Σ w_i`` when the criterion averages), the
    objective the influence estimators differentiate.

    Parameters
    ----------
    estimator : estimator
        Modified in place (pass a clone or copy).
    X, y : training data
    sample_weight : array-like of shape (n_samples,), default=None
    warm_start : bool, default=False
        skorch nets only: continue training from the current parameters
        (``partial_fit``) instead of re-initialising (also done when the net's own
        ``warm_start`` is set). Influence functions describe a
        local change of the fitted parameters, so this is the refit they predict.

    Returns
    -------
    estimator
    """
    last = final_step(estimator)
    if is_skorch(last):
        if isinstance(estimator, Pipeline):
            Xt = estimator[:-1].transform(X) if warm_start else estimator[:-1].fit_transform(X, y)
            _fit_skorch(last, Xt, y, sample_weight, warm_start)
            return estimator
        return _fit_skorch(estimator, X, y, sample_weight, warm_start)
    if sample_weight is None:
        return estimator.fit(X, y)
    if isinstance(estimator, Pipeline):
        return estimator.fit(X, y, **{f"{estimator.steps[-1][0]}__sample_weight": sample_weight})
    return estimator.fit(X, y, sample_weight=sample_weight)


#: estimators whose smooth objectives scikit-learn's Newton solver minimises to machine precision
_NEWTON = ("LogisticRegression", "PoissonRegressor", "GammaRegressor", "TweedieRegressor")


def _tight_copy(fitted, tol):
    """A warm-started copy with a tight tolerance, and Newton's method (``"newton-cholesky"``)
    where the objective is smooth: lbfgs stops short of the optimum (9e-5 in the coefficients
    of the 50-row removal of examples/plot_adult_attribution_unlearning.py), which would make
    the reference itself the error."""
    est = copy.deepcopy(fitted)
    last = final_step(est)
    params = last.get_params()
    tight = {k: v for k, v in {"warm_start": True, "tol": tol, "max_iter": 100_000}.items() if k in params}
    smooth = params.get("penalty", "l2") in ("l2", None, "deprecated") and not params.get("l1_ratio")
    if type(last).__name__ in _NEWTON and smooth and params.get("solver") in ("lbfgs", "newton-cg"):
        tight["solver"] = "newton-cholesky"
    last.set_params(**tight)
    return est


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
    """Leave-one-out predictions of ``fitted`` for the rows ``indices``, by exact refits.

    Parameters
    ----------
    fitted : fitted estimator
        The model fitted on all rows; each refit starts from it (``warm_start``).
    X : {array-like, sparse matrix} of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    indices : array-like of int
        The rows to leave out, one at a time.
    response_method : str, default="predict"
        The method whose output is returned.
    sample_weight : array-like of shape (n_samples,), default=None
    tol : float, default=1e-10
        Tolerance of the refits, far below the leave-one-out effects.

    Returns
    -------
    ndarray of shape (len(indices),) or (len(indices), n_classes)
        The refit's output on the row it left out.
    """
    out = []
    for i in np.asarray(indices):
        est = refit_without(fitted, X, y, [i], sample_weight, tol)
        out.append(getattr(est, response_method)(_rows(X, [i]))[0])
    return np.asarray(out)
