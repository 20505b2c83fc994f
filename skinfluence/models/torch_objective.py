"""What a trained network minimised: its loss, reduction, weight decay and classes.

A skorch net says it through its criterion and optimizer; a plain module through the
:class:`TorchModel` wrapper. :func:`objective_spec` reads either into one description
that the adapter (:mod:`.torch`) maps onto ``Σ c_i ℓ_i(η_i) + π``.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

__all__ = ["TorchModel", "objective_spec", "resolve_device", "resolve_dtype"]

_LOSSES = ("cross_entropy", "nll", "bce", "mse")


class TorchModel(torch.nn.Module):
    """A trained torch module together with the objective it was trained on.

    Parameters
    ----------
    module : torch.nn.Module
        The trained network; ``module(X)`` returns the outputs for a batch ``X``.
    loss : {"cross_entropy", "nll", "bce", "mse"}, default="cross_entropy"
        ``"cross_entropy"``: the module outputs logits (``nn.CrossEntropyLoss``);
        ``"nll"``: it outputs log-probabilities (``nn.NLLLoss``); ``"bce"``: one logit per
        sample (``nn.BCEWithLogitsLoss``); ``"mse"``: one output per sample
        (``nn.MSELoss``).
    weight_decay : float, default=0.0
        The L2 penalty ``weight_decay/2 ‖θ‖²`` on every trainable parameter (torch
        optimizers' coupled ``weight_decay``).
    reduction : {"mean", "sum"}, default="mean"
        How the training loss combined the per-sample losses.
    classes : array-like, optional
        Class labels in the order of the outputs (default ``0, ..., K − 1``).

    Attributes
    ----------
    module : torch.nn.Module
        The wrapped network (not copied: the influence estimator deep-copies the
        whole model when it is fitted with ``prefit=True``).
    loss, weight_decay, reduction, classes
        As given.

    Examples
    --------
    A logistic regression written as a torch module, trained to its optimum:

    >>> import numpy as np, torch
    >>> from skinfluence import FisherInfluence
    >>> from skinfluence.models.torch import TorchModel
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 3))
    >>> y = (X[:, 0] + rng.normal(size=100) > 0).astype(np.int64)
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Linear(3, 2).double()
    >>> opt = torch.optim.LBFGS(net.parameters(), max_iter=200, line_search_fn="strong_wolfe")
    >>> def objective():
    ...     opt.zero_grad()
    ...     loss = torch.nn.functional.cross_entropy(net(torch.as_tensor(X)), torch.as_tensor(y))
    ...     loss = loss + 1e-2 / 2 * sum((p ** 2).sum() for p in net.parameters())
    ...     loss.backward()
    ...     return loss
    >>> _ = opt.step(objective)
    >>> model = TorchModel(net, loss="cross_entropy", weight_decay=1e-2)
    >>> inf = FisherInfluence(model, prefit=True).fit(X, y)
    >>> inf.self_influence().shape
    (100,)
    """

    def __init__(self, module, loss="cross_entropy", weight_decay=0.0, reduction="mean",
                 classes=None):
        super().__init__()
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.loss = loss
        self.weight_decay = weight_decay
        self.reduction = reduction
        self.classes = classes

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


# ----------------------------------------------------------------------------- specs
class _Spec:
    """How a model's training objective maps onto ``Σ c_i ℓ_i(η_i) + π``."""

    def __init__(self, module, family, output, factor, reduction, decay, classes):
        self.module, self.family, self.output = module, family, output
        self.factor, self.reduction, self.decay, self.classes = factor, reduction, decay, classes


def _check_reduction(reduction, where):
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{where}: reduction={reduction!r} is not supported; use 'mean' or 'sum'")


def _criterion_spec(crit, kind):
    """(loss name, reduction) for a skorch net's criterion instance."""
    name = type(crit).__name__
    _check_reduction(getattr(crit, "reduction", None), f"criterion {name}")
    if getattr(crit, "weight", None) is not None:
        raise ValueError(f"criterion {name} with class weights is not supported")
    if getattr(crit, "pos_weight", None) is not None:
        raise ValueError(f"criterion {name} with pos_weight is not supported")
    if getattr(crit, "label_smoothing", 0.0):
        raise ValueError(f"criterion {name} with label_smoothing is not supported")
    table = {
        "classifier": {torch.nn.NLLLoss: "nll_prob", torch.nn.CrossEntropyLoss: "cross_entropy"},
        "binary": {torch.nn.BCEWithLogitsLoss: "bce"},
        "regressor": {torch.nn.MSELoss: "mse"},
    }[kind]
    for cls, loss in table.items():
        if type(crit) is cls:
            return loss, crit.reduction
    raise ValueError(
        f"criterion {name} is not supported for this skorch net; supported: "
        + ", ".join(c.__name__ for c in table)
    )


def _optimizer_decay(net, module):
    """Per-parameter coupled weight decay of a skorch net's optimizer."""
    opt = getattr(net, "optimizer_", None)
    decay = {}
    if opt is None:
        return decay
    for group in opt.param_groups:
        wd = float(group.get("weight_decay", 0.0) or 0.0)
        decoupled = isinstance(opt, torch.optim.AdamW) or group.get("decoupled_weight_decay", False)
        if wd and decoupled:
            raise ValueError(
                f"{type(opt).__name__} uses decoupled weight decay, which minimises no objective; "
                "influence needs a coupled L2 penalty (e.g. Adam or SGD with weight_decay)"
            )
        for p in group["params"]:
            decay[id(p)] = wd
    return decay


def objective_spec(estimator) -> _Spec:
    if isinstance(estimator, TorchModel):
        loss = estimator.loss
        if loss not in _LOSSES:
            raise ValueError(f"TorchModel loss must be one of {_LOSSES}, got {loss!r}")
        _check_reduction(estimator.reduction, "TorchModel")
        wd = estimator.weight_decay
        if not isinstance(wd, numbers.Real) or wd < 0:
            raise ValueError(f"weight_decay must be a non-negative number, got {wd!r}")
        decay = {id(p): float(wd) for p in estimator.module.parameters()}
        return _Spec(estimator.module, loss, "identity", 2.0 if loss == "mse" else 1.0,
                     estimator.reduction, decay, estimator.classes)
    if isinstance(estimator, torch.nn.Module):
        raise TypeError(
            f"a plain {type(estimator).__name__} does not say which loss it was trained on: wrap it "
            "as skinfluence.models.torch.TorchModel(module, loss='cross_entropy'|'nll'|'bce'|'mse', "
            "weight_decay=...)"
        )
    from skorch import NeuralNetBinaryClassifier, NeuralNetClassifier, NeuralNetRegressor

    if isinstance(estimator, NeuralNetBinaryClassifier):
        kind = "binary"
    elif isinstance(estimator, NeuralNetClassifier):
        kind = "classifier"
    elif isinstance(estimator, NeuralNetRegressor):
        kind = "regressor"
    else:
        raise TypeError(
            f"{type(estimator).__name__} is not supported: use a skorch NeuralNetClassifier, "
            "NeuralNetBinaryClassifier or NeuralNetRegressor, or a TorchModel"
        )
    if not getattr(estimator, "initialized_", False):
        raise ValueError(f"the {type(estimator).__name__} is not initialized/fitted")
    loss, reduction = _criterion_spec(estimator.criterion_, kind)
    module = estimator.module_
    output = "log" if loss == "nll_prob" else "identity"
    loss = "nll" if loss == "nll_prob" else loss
    classes = [0, 1] if kind == "binary" else None
    return _Spec(module, loss, output, 2.0 if loss == "mse" else 1.0, reduction,
                 _optimizer_decay(estimator, module), classes)


def resolve_device(device):
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA device is available")
    return dev


def resolve_dtype(dtype, module=None):
    """The torch dtype of the influence computations; ``"auto"``: the module's own (its first
    floating-point parameter's: float64 for a ``.double()`` net, float32 for float32 and
    lower precisions)."""
    if isinstance(dtype, str) and dtype == "auto":
        own = next((p.dtype for p in (module.parameters() if module is not None else [])
                    if p.is_floating_point()), torch.float32)
        return torch.float64 if own == torch.float64 else torch.float32
    table = {"float64": torch.float64, "float32": torch.float32, "double": torch.float64,
             "float": torch.float32, torch.float64: torch.float64, torch.float32: torch.float32,
             np.float64: torch.float64, np.float32: torch.float32}
    try:
        return table[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"dtype must be 'auto', 'float64' or 'float32', got {dtype!r}") from None
