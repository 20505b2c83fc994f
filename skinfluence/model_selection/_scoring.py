"""Scoring a split's approximate held-out outputs.

scikit-learn scorers call ``predict``/``predict_proba``/... on an estimator; here they
get a frozen one whose methods return the held-out outputs. The most used metrics are
also computed from those outputs directly (:func:`score_split`), to the same value.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import d2_tweedie_score

from .._sklearn_compat import _num_samples, _safe_indexing
from .._utils import final_step
from ..models.glm import tweedie_power

__all__ = ["frozen_predictions", "score_outputs", "score_split"]


class _FrozenPredictions(BaseEstimator):
    """Precomputed (approximate) outputs for the rows a scorer is called with.

    Exposes ``predict``/``predict_proba``/``predict_log_proba``/``decision_function``
    and ``score`` for scikit-learn scorers; ``X`` is only checked for its length.
    """

    def __init__(self, adapter=None, eta=None):
        self.adapter = adapter
        self.eta = eta

    def _response(self, X, method):
        if _num_samples(X) != len(self.eta):
            raise ValueError(f"these predictions are for {len(self.eta)} rows, got {_num_samples(X)}")
        return self.adapter.response(self.eta, method)

    def predict(self, X):
        return self._response(X, "predict")


class _FrozenClassifier(ClassifierMixin, _FrozenPredictions):
    @property
    def classes_(self):
        return self.adapter.classes_

    def predict_proba(self, X):
        return self._response(X, "predict_proba")

    def predict_log_proba(self, X):
        return self._response(X, "predict_log_proba")

    def decision_function(self, X):
        return self._response(X, "decision_function")


def _tweedie_power(adapter):
    """The power of a Poisson/Gamma/Tweedie regressor (whose ``score`` is D²), else None."""
    return tweedie_power(final_step(adapter.estimator))


class _FrozenRegressor(RegressorMixin, _FrozenPredictions):
    def score(self, X, y, sample_weight=None):
        """What the estimator's own ``score`` gives: D² for Poisson/Gamma/Tweedie, else R²."""
        power = _tweedie_power(self.adapter)
        if power is None:
            return super().score(X, y, sample_weight=sample_weight)
        return d2_tweedie_score(y, self.predict(X), sample_weight=sample_weight, power=power)


def frozen_predictions(adapter, eta):
    """A scorer-ready object returning the responses of natural-scale outputs ``eta``."""
    cls = _FrozenClassifier if adapter.is_classifier else _FrozenRegressor
    return cls(adapter, eta)


def score_outputs(scorer, adapter, eta, X, y, **score_params):
    """Score approximate outputs ``eta`` of rows ``X``, ``y`` with a scikit-learn scorer."""
    frozen = frozen_predictions(adapter, eta)
    try:
        return scorer(frozen, X, y, **score_params)
    except AttributeError:  # e.g. a probability scorer on a regressor
        kind = "classifier" if adapter.is_classifier else "regressor"
        needs = getattr(scorer, "_response_method", "a method")
        raise ValueError(f"the scoring {scorer} needs {needs}, which a {kind} does not have; "
                         f"choose a scoring for a {kind}") from None


# ---------------------------------------------------------------------- fast metrics
# The most used scorers, computed from a split's held-out outputs and encoded targets.
# Each equals scikit-learn's scorer to rounding (the tests compare them) without its
# per-call input checks, which on folds of a few thousand rows cost more than the
# Newton steps. A metric returns None where scikit-learn has a special case (a fold
# missing a class for the log-loss, a constant target for R²), and outputs that are
# not finite (leverage-1 points) go to scikit-learn too: the scorer then decides.
def _accuracy(ad, eta, y, w):
    return np.average(ad.response(eta) == ad.classes_[y.astype(int)], weights=w)


def _neg_log_loss(ad, eta, y, w):
    codes = y.astype(int)
    if np.bincount(codes, minlength=len(ad.classes_)).min() == 0:
        return None
    eps = np.finfo(float).eps
    p = ad.response(eta, "predict_proba")[np.arange(len(codes)), codes]
    return np.average(np.log(np.clip(p, eps, 1 - eps)), weights=w)


def _neg_mean_squared_error(ad, eta, y, w):
    return -np.average((y - ad.response(eta)) ** 2, weights=w)


def _neg_root_mean_squared_error(ad, eta, y, w):
    return -np.sqrt(-_neg_mean_squared_error(ad, eta, y, w))


def _neg_mean_absolute_error(ad, eta, y, w):
    return -np.average(np.abs(y - ad.response(eta)), weights=w)


def _r2(ad, eta, y, w):
    weight = 1.0 if w is None else w  # the two sums as r2_score forms them
    total = np.sum(weight * (y - np.average(y, weights=w)) ** 2)
    return None if total == 0 else 1.0 - np.sum(weight * (y - ad.response(eta)) ** 2) / total


_FAST_METRICS = {f.__name__[1:]: f for f in (
    _accuracy, _neg_log_loss, _neg_mean_squared_error, _neg_root_mean_squared_error,
    _neg_mean_absolute_error, _r2)}


def _fast_metric(scoring, adapter):
    """The fast metric for a scoring name (None: the estimator's ``score``), if there is one."""
    if scoring is None:
        if adapter.is_classifier:
            return _accuracy
        return _r2 if _tweedie_power(adapter) is None else None
    metric = _FAST_METRICS.get(scoring) if isinstance(scoring, str) else None
    classification = metric in (_accuracy, _neg_log_loss)
    return metric if classification == adapter.is_classifier else None


def score_split(influence, scoring, scorer, eta, X, y, test, params):
    """One split's score: by the fast metric where there is one, else by the scorer."""
    ad = influence.adapter_
    fast = set(params) <= {"sample_weight"} and np.isfinite(eta).all()
    metric = _fast_metric(scoring, ad) if fast else None
    if metric is not None:
        w = params.get("sample_weight")
        w = None if w is None else np.asarray(_safe_indexing(w, test), dtype=float)
        value = metric(ad, eta, influence.y_encoded_[test], w)  # the fitted rows' encoded targets
        if value is not None:
            return float(value)
    kw = {k: _safe_indexing(v, test) for k, v in params.items()}
    return score_outputs(scorer, ad, eta, _safe_indexing(X, test), _safe_indexing(y, test), **kw)
