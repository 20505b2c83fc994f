"""Progress bars and joblib workers without oversubscription, written once for the package.

``progress`` wraps a loop in a tqdm bar when ``verbose >= 1`` (silent by default).
``parallel_map`` runs ``func`` over items with joblib (any backend: loky, threading, or
Dask's through ``joblib.parallel_config(backend="dask")``) and limits the BLAS threads
inside each worker to ``cpu_count // n_jobs``, so that ``n_jobs`` workers never start
``n_jobs × cores`` BLAS threads between them. Results come back in the order of ``items``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from joblib import Parallel, delayed, effective_n_jobs
from threadpoolctl import threadpool_limits

__all__ = ["progress", "parallel_map", "worker_threads"]


def progress(iterable: Iterable, verbose: int = 0, desc: str | None = None, total: int | None = None):
    """``iterable`` itself, or a tqdm bar over it when ``verbose >= 1``."""
    if not verbose:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


def worker_threads(n_jobs: int | None) -> int:
    """BLAS threads each of ``n_jobs`` workers may use: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(effective_n_jobs(n_jobs), 1))


def _limited(func, threads):
    def run(item):
        with threadpool_limits(limits=threads):
            return func(item)
    return run


def parallel_map(func: Callable, items: Iterable, n_jobs: int | None = None, verbose: int = 0,
                 desc: str | None = None) -> list:
    """``[func(item) for item in items]``, over ``n_jobs`` joblib workers.

    With ``n_jobs`` None or 1 (and no enclosing ``joblib.parallel_config``) the loop runs
    here, with a progress bar when ``verbose``. ``func`` must be picklable for process
    backends (a module-level function or a ``functools.partial`` of one).
    """
    items = list(items)
    if effective_n_jobs(n_jobs) == 1 or len(items) <= 1:
        return [func(item) for item in progress(items, verbose, desc)]
    run = _limited(func, worker_threads(n_jobs))
    jobs = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(run)(item) for item in items)
    return list(progress(jobs, verbose, desc, total=len(items)))
