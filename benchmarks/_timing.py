"""Timing shared by the benchmark scripts (run as ``python benchmarks/<script>.py``)."""

import time

import numpy as np


def median_time(fn, repeats):
    """Median wall time of ``repeats`` calls of ``fn`` and the last call's result."""
    times, out = [], None
    for _ in range(max(int(repeats), 1)):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def interleaved_times(fns, repeats):
    """Median wall times of the callables in ``fns``, run in turn ``repeats`` times.

    Taking the contenders in turn, rather than each ``repeats`` times in a row, spreads
    a shared machine's slow spells over all of them, so that their ratios stay honest.
    Returns ``(medians, last results)``, both lists in the order of ``fns``.
    """
    times = [[] for _ in fns]
    outs = [None] * len(fns)
    for _ in range(max(int(repeats), 1)):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t)
    return [float(np.median(t)) for t in times], outs
