"""The shared joblib helper: order, equality with the loop, BLAS threads limited in workers, progress bars."""

import os

import pytest
from threadpoolctl import threadpool_info

from skinfluence._parallel import parallel_map, progress, worker_threads


def _square_and_threads(x):
    blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return x * x, max(blas, default=1)


def test_parallel_map_keeps_order_and_limits_blas_threads():
    out = parallel_map(_square_and_threads, range(6), n_jobs=2)
    assert [v for v, _ in out] == [x * x for x in range(6)]
    assert all(threads <= worker_threads(2) for _, threads in out)


def test_parallel_map_sequential_equals_list_comprehension():
    assert parallel_map(abs, [-3, 2, -1], n_jobs=None) == [3, 2, 1]
    assert parallel_map(abs, [], n_jobs=2) == []


def test_progress_is_silent_by_default_and_a_bar_when_verbose(capsys):
    assert list(progress(range(3))) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    assert list(progress(range(3), verbose=1, desc="blocks")) == [0, 1, 2]
    assert "blocks" in capsys.readouterr().err


@pytest.mark.parametrize("n_jobs", [1, 2, -1])
def test_worker_threads_is_at_least_one(n_jobs):
    assert worker_threads(n_jobs) >= 1


def _threads_seen(x):
    import time

    time.sleep(0.05)   # the threads overlap
    blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return x, max(blas, default=1)


def test_workers_share_the_set_threads_budget(monkeypatch):
    """set_threads' budget is shared out among the workers (not the machine's cores)."""
    from skinfluence import _parallel

    monkeypatch.setattr(_parallel, "_BUDGET", [1])
    assert worker_threads(2) == 1 and worker_threads(4) == 1
    monkeypatch.setattr(_parallel, "_BUDGET", [8])
    assert worker_threads(2) == 4 and _parallel.thread_budget() == 8
    monkeypatch.setattr(_parallel, "_BUDGET", [])
    assert _parallel.thread_budget() == (os.cpu_count() or 1)


def test_threading_backend_limits_the_shared_pools_once():
    """Threads share the process's pools: every task sees the per-worker limit, and the limit
    is lifted afterwards (not restored by each thread while others still run)."""
    import joblib

    before = max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=1)
    with joblib.parallel_config(backend="threading"):
        out = parallel_map(_threads_seen, range(8), n_jobs=2)
    assert [x for x, _ in out] == list(range(8))
    assert all(threads <= worker_threads(2) for _, threads in out)
    after = max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=1)
    assert after == before


def test_set_threads_reaches_torch_imported_later():
    """Called before torch is imported, set_threads still sets torch's threads (through
    OMP_NUM_THREADS, which torch reads when imported)."""
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    code = ("from skinfluence import set_threads; set_threads(1); import torch; "
            "print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split()[-1] == "1"
