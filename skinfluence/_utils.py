"""Small idioms every layer needs, written once: model-kind predicates, the last step of a
Pipeline, row blocks, and the checks of sample weights, targets and memory."""

from __future__ import annotations

import sys

import numpy as np
from sklearn.pipeline import Pipeline

__all__ = ["final_step", "is_skorch", "is_torch_module", "is_torch_model", "row_blocks",
           "check_sample_weight", "check_target", "check_memory", "check_method", "MAX_DENSE_BYTES"]

MAX_DENSE_BYTES = 4 * 2**30  # largest dense array the influence computations allocate


def final_step(estimator):
    """The model of a Pipeline (its last step), or the estimator itself."""
    return estimator[-1] if isinstance(estimator, Pipeline) else estimator


def is_skorch(estimator) -> bool:
    """A skorch net or a subclass of one (checked by module along the class hierarchy, so
    that skorch is never imported here)."""
    return any(cls.__module__.startswith("skorch") for cls in type(estimator).__mro__)


def is_torch_module(obj) -> bool:
    """A ``torch.nn.Module``; a torch object means torch is imported, so it is never imported here."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def is_torch_model(estimator) -> bool:
    """A model the torch adapter handles: a skorch net or a torch module."""
    return is_skorch(estimator) or is_torch_module(estimator)


def row_blocks(n: int, size: int):
    """Consecutive slices of at most ``size`` rows covering ``range(n)``."""
    size = max(int(size), 1)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def check_sample_weight(sample_weight, n: int) -> np.ndarray:
    """Sample weights as a float array of shape (n,) (ones when None), finite and non-negative."""
    if sample_weight is None:
        return np.ones(n)
    sw = np.asarray(sample_weight, dtype=float)
    if sw.shape != (n,):
        raise ValueError(f"sample_weight has shape {sw.shape}, expected ({n},)")
    if not np.all(np.isfinite(sw)) or (sw < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    return sw


def check_target(y, owner: str) -> np.ndarray:
    """A one-dimensional target (a column vector is raveled); None is refused."""
    if y is None:
        raise ValueError(f"{owner} requires y to be passed, but the target y is None: "
                         "influence is defined through the training loss")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y must be one-dimensional, got shape {y.shape}")
    return y


def check_memory(shape, what: str) -> None:
    """Refuse an allocation of ``shape`` float64 that would not fit in memory."""
    nbytes = 8 * int(np.prod(shape, dtype=float))
    if nbytes > MAX_DENSE_BYTES:
        raise MemoryError(
            f"{what} would need a dense {' x '.join(map(str, shape))} array "
            f"({nbytes / 2**30:.1f} GiB > {MAX_DENSE_BYTES / 2**30:.0f} GiB); "
            "use fewer parameters (selection, smaller model), fewer points, or batches"
        )


def check_method(method: str) -> str:
    """The approximation: ``"ns"`` (Newton step) or ``"ij"`` (infinitesimal jackknife)."""
    if method not in ("ns", "ij"):
        hint = (f"; scikit-learn's method={method!r} is response_method= here"
                if method in ("predict", "predict_proba", "predict_log_proba", "decision_function") else "")
        raise ValueError(f"method must be 'ns' (Newton step) or 'ij' (infinitesimal jackknife), "
                         f"got {method!r}{hint}")
    return method
