"""Unlearning by stepping along an influence direction (the GIF paper's protocol).

An influence step ``Δθ`` (from any estimator's :meth:`parameter_change`) is a direction
rather than a finished answer for a network: the authors normalise it to a step of norm
``γ`` and add it repeatedly, evaluating the model after each step and keeping the best
checkpoint by a chosen metric (a line search along ``Δθ``), and stop once the removed
data's accuracy has fallen to a threshold. :func:`unlearning_path` runs that loop for
any adapter (torch/skorch nets, linear models).

Selecting the checkpoint by a metric computed on held-out data of the removed and
retained classes is a line search that uses those data: report the chosen model's
scores on *other* test data.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

__all__ = ["UnlearningPath", "unlearning_path"]


@dataclass
class UnlearningPath:
    """Result of :func:`unlearning_path` (its fields are also its attributes).

    Parameters
    ----------
    best_step : int
        Steps taken to reach the best checkpoint (0: the starting model).
    best_scores : dict
        The evaluation at the best checkpoint.
    theta : ndarray of shape (p,)
        Parameters of the best checkpoint.
    history : list of dict
        Every evaluation, in order (``history[k]`` after ``k`` steps), with ``step``.
    stopped : str
        ``"threshold"`` (self-accuracy reached the threshold), ``"max_steps"``.
    estimator : object
        ``build(theta)`` of the best checkpoint (by default a fitted estimator of the
        user's type).
    """

    best_step: int
    best_scores: dict
    theta: np.ndarray
    history: list = field(repr=False)
    stopped: str
    estimator: object = field(repr=False, default=None)


def unlearning_path(adapter, direction, evaluate, *, step_size=0.1, max_steps=200, metric="f1",
                    greater_is_better=True, stop_self_accuracy=None, build=None,
                    theta0=None) -> UnlearningPath:
    """Step from ``θ̂`` along the normalised ``direction``; keep the best checkpoint.

    Parameters
    ----------
    adapter : ModelAdapter
        The fitted model's adapter (``influence.adapter_``): gives ``θ̂`` and, by default,
        ``with_params`` to build each checkpoint.
    direction : ndarray of shape (p,)
        The influence step (e.g. ``influence.parameter_change(indices)``).
    evaluate : callable
        ``evaluate(model) -> dict`` of scores for a checkpoint built by ``build``.
    step_size : float, default=0.1
        ``γ``: the parameter distance of one step.
    max_steps : int, default=200
    metric : str, default="f1"
        Key of ``evaluate``'s dict that selects the best checkpoint.
    greater_is_better : bool, default=True
    stop_self_accuracy : float, optional
        Stop once ``scores["self_accuracy"] <= stop_self_accuracy``.
    build : callable, optional
        ``build(theta) -> model`` handed to ``evaluate``; default ``adapter.with_params``.
        A benchmark may pass a cheaper one (e.g. the parameters themselves).
    theta0 : ndarray of shape (p,), optional
        Starting point (default ``adapter.theta``).

    Returns
    -------
    UnlearningPath

    Examples
    --------
    >>> d = inf.parameter_change(removed)                                  # doctest: +SKIP
    >>> path = unlearning_path(inf.adapter_, d, lambda est: unlearning_scores(
    ...     est, X_keep, y_keep, X_gone, y_gone), step_size=0.05)           # doctest: +SKIP
    """
    if not isinstance(step_size, numbers.Real) or not step_size > 0:
        raise ValueError(f"step_size must be a positive number, got {step_size!r}")
    if not isinstance(max_steps, numbers.Integral) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
    theta0 = np.array(adapter.theta if theta0 is None else theta0, dtype=float)
    d = np.asarray(direction, dtype=float)
    if d.shape != theta0.shape:
        raise ValueError(f"direction has shape {d.shape}, the parameters {theta0.shape}")
    norm = np.linalg.norm(d)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("direction must be finite and non-zero")
    build = adapter.with_params if build is None else build
    step = step_size * d / norm
    sign = 1.0 if greater_is_better else -1.0
    history, best, best_k = [], -np.inf, 0
    stopped = "max_steps"
    for k in range(max_steps + 1):
        scores = dict(evaluate(build(theta0 + k * step)))
        if metric not in scores:
            raise KeyError(f"evaluate returned no {metric!r} (keys: {sorted(scores)})")
        history.append({"step": k, **scores})
        if sign * scores[metric] > best:
            best, best_k = sign * scores[metric], k
        sa = scores.get("self_accuracy", np.inf)
        if stop_self_accuracy is not None and k > 0 and sa <= stop_self_accuracy:
            stopped = "threshold"
            break
    theta = theta0 + best_k * step
    best_scores = {key: v for key, v in history[best_k].items() if key != "step"}
    return UnlearningPath(best_k, best_scores, theta, history, stopped, build(theta))
