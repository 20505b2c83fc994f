"""Small idioms every layer needs, written once: model-kind predicates, the last step of a
Pipeline, row blocks sized from a memory budget, and the checks of sample weights, targets
and memory."""

from __future__ import annotations

import re
import sys

import numpy as np
from sklearn.pipeline import Pipeline

__all__ = ["check_out", "final_step", "is_skorch", "is_torch_module", "is_torch_model", "row_blocks",
           "check_sample_weight", "check_target", "check_memory", "check_method", "MAX_DENSE_BYTES",
           "MEMORY_ADVICE",
           "parse_bytes", "BlockPlan", "plan_blocks"]

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


MEMORY_ADVICE = ("ask for less than the full matrix: attribute(..., top_k=k) for each test "
                 "point's most helpful and harmful training rows, attribute(..., reduce='sum') "
                 "for a group of test points, or attribute(..., out=array) to write the matrix "
                 "blockwise into a numpy memmap or zarr array; memory_budget= sizes the blocks")


def check_memory(shape, what: str, advice: str | None = None) -> None:
    """Refuse an allocation of ``shape`` float64 that would not fit in memory, with
    ``advice`` (by default: fewer parameters) on what to do instead."""
    nbytes = 8 * int(np.prod(shape, dtype=float))
    if nbytes > MAX_DENSE_BYTES:
        raise MemoryError(
            f"{what} would need a dense {' x '.join(map(str, shape))} array "
            f"({nbytes / 2**30:.1f} GiB > {MAX_DENSE_BYTES / 2**30:.0f} GiB); "
            f"{advice or 'use fewer parameters (selection, smaller model)'}"
        )


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def check_out(out, shape) -> None:
    """Refuse an ``out=`` array that cannot hold the scores: another shape, or an integer or
    boolean dtype (which would keep them truncated)."""
    if tuple(getattr(out, "shape", ())) != tuple(shape):
        raise ValueError(f"out must have shape {tuple(shape)} (test rows, training rows), got "
                         f"{getattr(out, 'shape', type(out).__name__)}")
    dtype = np.dtype(getattr(out, "dtype", float))
    if dtype.kind not in "fc":
        raise TypeError(f"out must have a floating dtype (float64 or float32), got {dtype}: the "
                        "scores would be truncated")


def parse_bytes(budget) -> int:
    """A memory budget in bytes: an int, or a string such as ``"512MiB"``, ``"1GB"``."""
    if isinstance(budget, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", budget)
        unit = match and match.group(2).lower()
        if not match or unit not in _UNITS:
            raise ValueError(f"memory_budget must be a number of bytes or a string such as "
                             f"'512MiB' or '2GB', got {budget!r}")
        return int(float(match.group(1)) * _UNITS[unit])
    return int(budget)


class BlockPlan:
    """Rows per block of a streamed ``test × train`` computation (see :func:`plan_blocks`).

    Attributes
    ----------
    test_rows, train_rows : int
        Rows of test points per block (one solve each block) and of training rows per
        block of scores.
    """

    def __init__(self, test_rows, train_rows):
        self.test_rows, self.train_rows = int(test_rows), int(train_rows)

    def test_blocks(self, n):
        return row_blocks(n, self.test_rows)

    def train_blocks(self, n):
        return row_blocks(n, self.train_rows)

    def __repr__(self):
        return f"BlockPlan(test_rows={self.test_rows}, train_rows={self.train_rows})"


def plan_blocks(budget, n_params: int, n_train: int, n_test: int, *, keep: int = 0,
                workers: int = 1, batch_size: int | None = None) -> BlockPlan:
    """Block sizes of a streamed attribution that keep its working memory within ``budget``.

    The one place where block sizes are chosen. A block of ``s`` training rows holds its
    gradients (``s × p``); a block of ``t`` test rows holds its gradients and factors
    (``2 t × p``), its scores against one training block and the temporaries of merging
    them (``4 t × s``), and what it keeps per test row across training blocks (``keep``
    floats: ``n_train`` for rows of the full matrix, ``4k`` for ``top_k``). ``workers``
    blocks of test rows may be in flight at once (joblib), each with its own training
    block, so each gets ``budget / workers``: a quarter for the training block, three
    quarters for the test block. ``batch_size`` (rows per Jacobian block) caps the
    training block.
    """
    per_worker = parse_bytes(budget) / (8 * max(int(workers), 1))   # floats per worker
    p = max(int(n_params), 1)
    s = max(1, min(n_train, int(per_worker / 4 / p), batch_size or n_train))
    t = max(1, min(n_test, int(0.75 * per_worker / (2 * p + 4 * s + keep))))
    return BlockPlan(t, s)


def check_method(method: str) -> str:
    """The approximation: ``"ns"`` (Newton step) or ``"ij"`` (infinitesimal jackknife)."""
    if method not in ("ns", "ij"):
        hint = (f"; scikit-learn's method={method!r} is response_method= here"
                if method in ("predict", "predict_proba", "predict_log_proba", "decision_function") else "")
        raise ValueError(f"method must be 'ns' (Newton step) or 'ij' (infinitesimal jackknife), "
                         f"got {method!r}{hint}")
    return method
