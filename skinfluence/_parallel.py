"""Progress bars and joblib workers without oversubscription, written once for the package.

``progress`` wraps a loop in a tqdm bar when ``verbose >= 1`` (silent by default);
``FitStages`` is a bar over the named stages of a computation that is not a loop.
``parallel_map`` runs ``func`` over items with joblib (any backend: loky, threading, or
Dask's through ``joblib.parallel_config(backend="dask")``) and limits the BLAS threads
inside each worker to ``cpu_count // n_jobs``, so that ``n_jobs`` workers never start
``n_jobs × cores`` BLAS threads between them (and torch's intra-op threads alike, where
torch is loaded). Results come back in the order of ``items``.

**The thread policy** (one, for the package, its examples and benchmarks): a process runs
``threads`` torch intra-op threads and as many BLAS threads (:func:`set_threads`; default
all cores); ``n_jobs`` joblib workers share that budget, ``threads // n_jobs`` of both each
(at least one; :func:`worker_threads`), so that workers × threads never exceed it. Process
backends (loky, Dask) set the limit inside each worker; under the threading backend, whose
threads share the process's global pools (OpenBLAS, MKL, torch's), it is also set once
around the whole map, so that a thread that restores its limit while others run restores
the shared value, never the full budget (OpenMP's limit is per thread: set in each). On a
shared or loaded machine pass ``set_threads(1)``: a small network's forward and backward
pass then runs without waiting for busy cores (measured: 72 ms with torch's default 2
threads on a loaded 2-core machine against 1.9 ms with one).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable

from joblib import Parallel, delayed, effective_n_jobs
from joblib.parallel import get_active_backend
from threadpoolctl import threadpool_limits

__all__ = ["progress", "parallel_map", "parallel_imap", "worker_threads", "thread_budget",
           "set_threads", "FitStages"]

_LIMITS = []  # the process-wide BLAS limits set by set_threads (kept alive while in force)
_BUDGET = []  # the threads set by set_threads (empty: all cores)


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


def thread_budget() -> int:
    """Threads this process may use: :func:`set_threads`' value, else every core."""
    return _BUDGET[0] if _BUDGET else (os.cpu_count() or 1)


def worker_threads(n_jobs: int | None) -> int:
    """torch and BLAS threads each of ``n_jobs`` workers may use: the process's
    :func:`thread_budget` shared out, at least one."""
    return max(1, thread_budget() // max(effective_n_jobs(n_jobs), 1))


def set_threads(threads: int | None = None) -> str:
    """Set this process's torch intra-op and BLAS threads (the package's thread policy).

    Parameters
    ----------
    threads : int or None, default=None
        Threads for torch and for every BLAS library numpy and scipy load (None: all
        cores). Joblib workers started by the package (``n_jobs``) share them:
        ``threads // n_jobs`` each, at least one. Where torch is not imported yet (the
        package never imports it for this), ``OMP_NUM_THREADS`` is set instead, which torch
        reads when it is.

    Returns
    -------
    str
        The setting, in words (benchmarks print it).

    Examples
    --------
    >>> from skinfluence import set_threads
    >>> set_threads(1)  # doctest: +ELLIPSIS
    'threads: torch=..., BLAS=...'
    """
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    n = threads or os.cpu_count() or 1
    _BUDGET[:] = [] if threads is None else [threads]
    _LIMITS.clear()
    _LIMITS.append(threadpool_limits(limits=n))
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(n)
    elif threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(n)   # torch's intra-op threads once it is imported
    from threadpoolctl import threadpool_info

    blas = sorted({(i["internal_api"], i["num_threads"]) for i in threadpool_info()})
    return (f"threads: torch={torch.get_num_threads() if torch is not None else '-'}, "
            f"BLAS={', '.join(f'{a}={t}' for a, t in blas) or '-'}")


def _torch():
    """The torch module if it is already loaded (the package never imports it for this)."""
    import sys

    return sys.modules.get("torch")


@contextlib.contextmanager
def _threads_limited(threads):
    """torch's intra-op and every BLAS pool limited to ``threads`` while inside."""
    torch = _torch()
    before = torch.get_num_threads() if torch is not None else None
    try:
        if torch is not None:
            torch.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)


def _limited(func, threads):
    def run(*args):
        with _threads_limited(threads):
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
    threads = worker_threads(n_jobs)
    run = _limited(func, threads)   # per worker (OpenMP's limit is per thread)
    pools = (_threads_limited(threads) if getattr(get_active_backend()[0], "uses_threads", False)
             else contextlib.nullcontext())   # threads share the global pools: limited here too
    with pools:
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
