"""Progress bars and joblib workers without oversubscription, written once for the package.

``progress`` wraps a loop in a tqdm bar when ``verbose >= 1`` (silent by default);
``FitStages`` is a bar over the named stages of a computation that is not a loop.
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

__all__ = ["progress", "parallel_map", "parallel_imap", "worker_threads", "FitStages"]


def progress(iterable: Iterable, verbose: int = 0, desc: str | None = None, total: int | None = None):
    """``iterable`` itself, or a tqdm bar over it when ``verbose >= 1``."""
    if not verbose:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


class FitStages:
    """A progress bar over named stages (``stages.start(name)`` as each begins); silent
    unless ``verbose >= 1``.

    Parameters
    ----------
    names : sequence of str
        The stages, in order (the bar's total).
    verbose : int
    desc : str
    """

    def __init__(self, names, verbose=0, desc=None):
        self._bar = None
        if verbose:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=len(names), desc=desc, leave=False)
        self._started = False

    def start(self, name: str) -> None:
        if self._bar is not None:
            if self._started:
                self._bar.update(1)
            self._bar.set_postfix_str(name)
            self._started = True

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.close()


def worker_threads(n_jobs: int | None) -> int:
    """BLAS threads each of ``n_jobs`` workers may use: the cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(effective_n_jobs(n_jobs), 1))


def _limited(func, threads):
    def run(*args):
        with threadpool_limits(limits=threads):
            return func(*args)
    return run


_NOTHING = object()


def parallel_imap(func: Callable, items: Iterable, n_jobs: int | None = None, verbose: int = 0,
                  desc: str | None = None, total: int | None = None, shared=_NOTHING):
    """``func(item)`` (or ``func(shared, item)``) for each of ``items``, yielded in order.

    ``items`` is consumed lazily: joblib dispatches a few items per worker ahead
    (``pre_dispatch="2*n_jobs"``), so a generator of large items (blocks of factors) never
    exists all at once. ``shared`` is passed to every call as one argument: the loky
    backend memory-maps its large arrays, Dask's backend scatters it to the workers once
    per call. ``total`` sizes the progress bar of a generator.
    """
    args = (lambda item: (item,)) if shared is _NOTHING else (lambda item: (shared, item))
    if effective_n_jobs(n_jobs) == 1:
        for item in progress(items, verbose, desc, total):
            yield func(*args(item))
        return
    run = _limited(func, worker_threads(n_jobs))
    jobs = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(run)(*args(item))
                                                          for item in items)
    yield from progress(jobs, verbose, desc, total)


def parallel_map(func: Callable, items: Iterable, n_jobs: int | None = None, verbose: int = 0,
                 desc: str | None = None) -> list:
    """``[func(item) for item in items]``, over ``n_jobs`` joblib workers.

    With ``n_jobs`` None or 1 (and no enclosing ``joblib.parallel_config``) the loop runs
    here, with a progress bar when ``verbose``. ``func`` must be picklable for process
    backends (a module-level function or a ``functools.partial`` of one).
    """
    items = list(items)
    if len(items) <= 1:
        return [func(item) for item in progress(items, verbose, desc)]
    return list(parallel_imap(func, items, n_jobs, verbose, desc, total=len(items)))
