"""The shared joblib helper: order, equality with the loop, BLAS threads limited in workers, progress bars."""

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
