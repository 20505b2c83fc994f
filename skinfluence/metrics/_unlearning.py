"""Metrics of unlearning and relabelling (the GIF paper's protocol).

Class removal: the *exclusive* accuracy and loss on test rows of the retained classes
(EA: the model should keep working), the *self* accuracy and loss on the removed rows
(SA: the model should forget them), and ``F1 = 2(1 − SA)·EA / ((1 − SA) + EA)``, the
harmonic mean of forgetting and keeping. Backdoor removal: accuracy on clean test
rows, on triggered rows scored against their true labels (relabel accuracy), and the
attack success (triggered rows classified as the attacker's target).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, log_loss

__all__ = ["unlearning_f1", "unlearning_scores", "backdoor_scores"]


def unlearning_f1(exclusive_accuracy: float, self_accuracy: float) -> float:
    """``2(1 − SA)·EA / ((1 − SA) + EA)``; 0 when both terms are 0.

    Parameters
    ----------
    exclusive_accuracy : float in [0, 1]
        Accuracy on the retained data (EA).
    self_accuracy : float in [0, 1]
        Accuracy on the removed data (SA).

    Returns
    -------
    float

    Examples
    --------
    >>> round(unlearning_f1(0.9, 0.0), 4)
    0.9474
    """
    for name, v in (("exclusive_accuracy", exclusive_accuracy), ("self_accuracy", self_accuracy)):
        if not 0 <= v <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {v!r}")
    forget = 1.0 - self_accuracy
    total = forget + exclusive_accuracy
    return 0.0 if total == 0 else 2 * forget * exclusive_accuracy / total


def _proba(estimator, X):
    return np.asarray(estimator.predict_proba(X))


def _scores(estimator, X, y, labels):
    if len(y) == 0:
        return np.nan, np.nan
    P = _proba(estimator, X)
    pred = np.asarray(labels)[P.argmax(axis=1)]
    return accuracy_score(y, pred), log_loss(y, np.clip(P, 1e-15, 1), labels=labels)


def unlearning_scores(estimator, X_retained, y_retained, X_removed, y_removed, labels=None) -> dict:
    """EA, exclusive loss, SA, self loss and F1 of a classifier after unlearning.

    Parameters
    ----------
    estimator : classifier with ``predict_proba`` (a skorch net, a scikit-learn model)
    X_retained, y_retained : test rows of the retained classes (exclusive metrics)
    X_removed, y_removed : the removed rows (self metrics)
    labels : array-like, optional
        Class labels in the order of ``predict_proba``'s columns (default: the
        estimator's ``classes_``, else ``0, ..., K − 1``).

    Returns
    -------
    dict with ``exclusive_accuracy``, ``exclusive_loss``, ``self_accuracy``,
    ``self_loss`` and ``f1``.
    """
    if labels is None:
        labels = getattr(estimator, "classes_", None)
        if labels is None:
            labels = np.arange(_proba(estimator, np.asarray(X_removed)[:1]).shape[1])
    ea, el = _scores(estimator, X_retained, np.asarray(y_retained), labels)
    sa, sl = _scores(estimator, X_removed, np.asarray(y_removed), labels)
    return {"exclusive_accuracy": ea, "exclusive_loss": el, "self_accuracy": sa, "self_loss": sl,
            "f1": unlearning_f1(ea, sa)}


def backdoor_scores(estimator, X_clean, y_clean, X_triggered, y_true, target) -> dict:
    """Clean accuracy, relabel accuracy and attack success of a (cleaned) classifier.

    Parameters
    ----------
    estimator : fitted classifier
        The model to score (``predict`` is used).
    X_clean, y_clean : array-like
        Clean test rows and their labels.
    X_triggered : array-like
        Test rows carrying the trigger.
    y_true : array-like
        Their true labels.
    target : label
        The attacker's label.

    Returns
    -------
    dict with ``clean_accuracy``, ``relabel_accuracy`` (triggered rows classified as
    their true label) and ``attack_success`` (triggered rows whose true label is not
    the target, classified as the target).
    """
    y_true = np.asarray(y_true)
    pred = np.asarray(estimator.predict(X_triggered))
    other = y_true != target
    return {"clean_accuracy": accuracy_score(y_clean, estimator.predict(X_clean)),
            "relabel_accuracy": float(np.mean(pred == y_true)),
            "attack_success": float(np.mean(pred[other] == target)) if other.any() else np.nan}
