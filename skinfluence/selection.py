"""Which parameters generalized influence moves: the GIF selection rules.

For a network, every ``nn.Linear`` and ``nn.Conv2d`` layer (batch norm and other layers
are never selected) contributes ``int(ratio · its parameter count)`` parameters, at least
one (a linear model's coefficients form one layer: ``ratio=0.05`` of 11 selects one). Its
output units (Linear rows, Conv2d channels) are ranked by a score computed on the
*examined* data (the rows to unlearn, as in the authors' code):

* ``"highest_outputs"`` / ``"lowest_outputs"``: ``|mean unit output|`` over the rows (and
  the spatial positions of a channel), from forward hooks;
* ``"highest_gradients"`` / ``"lowest_gradients"``: ``|mean ∂ℓ/∂(unit output)|`` of the
  examined rows' loss, from the output tensors' gradients;
* ``"random"``: a uniformly random order.

Whole rows of the top units are taken (the unit's fan-in weights and its bias); the
budget left over after the last whole row is filled from the next unit's fan-in: by the
rules that rank, with its largest weights (``|θ|``), so that a ranking rule selects the
same ``J`` at every fit whatever ``random_state``; by ``"random"``, at random (the authors
fill it at random for every rule). For a linear model the same rules rank single coefficients:
``|coefficient|`` for the "outputs" rules, ``|gradient of the examined loss|`` for the
"gradients" rules.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

__all__ = ["RULES", "select_parameters"]

RULES = ("highest_outputs", "lowest_outputs", "highest_gradients", "lowest_gradients", "random")


def select_parameters(adapter, X, y=None, *, rule="highest_outputs", ratio=0.05, random_state=None):
    """Boolean mask over the adapter's flat parameter vector, and a per-layer table.

    Parameters
    ----------
    adapter : ModelAdapter
        From :func:`skinfluence.models.make_adapter` (a torch adapter or a linear model's).
    X : array-like
        The examined rows (e.g. the rows to unlearn).
    y : array-like, optional
        Their targets; needed by the "gradients" rules.
    rule : str or callable, default="highest_outputs"
        One of :data:`RULES`, or ``rule(adapter, X, y) -> mask`` (bool, shape (p,)).
    ratio : float in (0, 1], default=0.05
        Share of each layer's parameters to select.
    random_state : int, RandomState or None
        For the "random" rule (the other rules are deterministic).

    Returns
    -------
    mask : ndarray of bool, shape (n_params,)
    table : pandas.DataFrame
        One row per layer: ``layer``, ``type``, ``n_params``, ``n_selected``, ``units``
        (whole units taken, best first) and ``partial_unit`` (-1 if none).

    Examples
    --------
    >>> mask, table = select_parameters(adapter, X_removed, y_removed, ratio=0.1)  # doctest: +SKIP
    """
    if not isinstance(ratio, numbers.Real) or not 0 < ratio <= 1:
        raise ValueError(f"ratio must be a number in (0, 1], got {ratio!r}")
    rng = check_random_state(random_state)
    if callable(rule):
        mask = np.asarray(rule(adapter, X, y))
        if mask.dtype != bool or mask.shape != (adapter.n_params,):
            raise ValueError(f"a selection callable must return a boolean mask of shape "
                             f"({adapter.n_params},), got {mask.dtype} {mask.shape}")
        if not mask.any():
            raise ValueError("the selection callable returned an empty mask: it must select at "
                             "least one parameter (True somewhere)")
        row = {"layer": "custom", "type": "callable", "n_params": mask.size,
               "n_selected": int(mask.sum()), "units": [], "partial_unit": -1}
        return mask.copy(), pd.DataFrame([row])
    if rule not in RULES:
        raise ValueError(f"selection must be one of {RULES} or a callable, got {rule!r}")
    if rule.endswith("gradients") and y is None:
        raise ValueError(f"selection={rule!r} needs the targets y of the examined rows")
    layers = _torch_layers(adapter) if adapter.is_network else None
    if layers is None:
        coefs = np.arange(adapter.n_params)[:, None]                # one "unit" per coefficient
        layers = [_Layer("coefficients", "linear model", coefs, None)]
        scores = _glm_scores(adapter, X, y, rule) if rule != "random" else [None]
    else:
        if not layers:
            raise ValueError("the network has no trainable nn.Linear or nn.Conv2d layer to select")
        scores = ([None] * len(layers) if rule == "random"
                  else _torch_scores(adapter, X, y, rule, layers))
    mask = np.zeros(adapter.n_params, bool)
    rows = []
    for layer, score in zip(layers, scores):
        n_units = len(layer.weights)
        if score is None:
            order = rng.permutation(n_units)
        else:
            order = np.argsort(-score if rule.startswith("highest") else score, kind="stable")
        rows.append(layer.take(order, ratio, mask, rng if score is None else adapter.theta))
    return mask, pd.DataFrame(rows)


class _Layer:
    """A selectable layer: per unit, the flat indices of its fan-in weights and bias."""

    def __init__(self, name, kind, weights, bias):
        self.name, self.kind = name, kind
        self.weights = weights            # (units, fan_in) flat indices into θ
        self.bias = bias                  # (units,) flat indices, or None

    @property
    def n_params(self):
        return self.weights.size + (0 if self.bias is None else self.bias.size)

    def take(self, order, ratio, mask, fill):
        """Select the top units of ``order`` up to ``ratio``; the partial unit's weights at
        random (``fill`` a generator) or by largest ``|θ|`` (``fill`` the parameters)."""
        budget = max(1, int(self.n_params * ratio))   # a small layer keeps at least one
        row = self.weights.shape[1] + (self.bias is not None)
        whole, left = divmod(budget, row)
        units = order[:whole]
        mask[self.weights[units].ravel()] = True
        if self.bias is not None:
            mask[self.bias[units]] = True
        partial = -1
        if left and whole < len(order):
            partial = int(order[whole])
            fan_in = self.weights[partial]
            if isinstance(fill, np.ndarray):
                fan_in = fan_in[np.argsort(-np.abs(fill[fan_in]), kind="stable")[:left]]
            else:
                fan_in = fill.choice(fan_in, left, replace=False)
            mask[fan_in] = True
        return {"layer": self.name, "type": self.kind, "n_params": self.n_params,
                "n_selected": budget, "units": units.tolist(), "partial_unit": partial}


def _torch_layers(adapter):
    """The adapter's Linear/Conv2d layers with trainable weights, as :class:`_Layer`."""
    out = []
    for name, (n_units, parts) in adapter.layers().items():
        weights = np.arange(parts[0].start, parts[0].stop).reshape(n_units, -1)
        bias = np.arange(parts[1].start, parts[1].stop) if len(parts) > 1 else None
        kind = type(dict(adapter.module.named_modules())[name]).__name__
        out.append(_Layer(name, kind, weights, bias))
    return out


def _torch_scores(adapter, X, y, rule, layers):
    """|mean unit output| or |mean unit-output gradient of the rows' loss| per layer."""
    Z = adapter.design(X)
    G = None
    if rule.endswith("gradients"):
        y_enc = adapter.encode_target(np.asarray(y))
        if len(y_enc) != len(Z):
            raise ValueError(f"X and y have inconsistent lengths {len(Z)} and {len(y_enc)}")
        G = adapter.loss.gradient(y_enc, adapter.eta(Z))          # ∂ℓ/∂η of each row
    stats = adapter.layer_statistics(Z, G)
    key = "gradients" if G is not None else "outputs"
    return [np.abs(stats[layer.name][key]) for layer in layers]


def _glm_scores(adapter, X, y, rule):
    if rule.endswith("outputs"):
        return [np.abs(adapter.theta)]
    Z = adapter.design(X)
    y_enc = adapter.encode_target(np.asarray(y))
    G = adapter.loss.gradient(y_enc, adapter.eta(Z))
    return [np.abs(adapter.total_gradient(Z, G)) / max(len(y_enc), 1)]
