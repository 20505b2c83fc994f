"""Bounded memory, parallel and distributed attribution: every streamed answer against the
dense one (factors times every training row's removal gradient, in one product)."""

import tracemalloc

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from joblib import parallel_config
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LogisticRegression, Ridge

from skinfluence import FisherInfluence, HessianInfluence
from skinfluence._utils import parse_bytes, plan_blocks
from skinfluence.estimators import merge_top

TINY = 40_000   # bytes: forces blocks of a few rows on both sides


def _dense(inf, X, y):
    """The reference: all factors at once against all training rows at once."""
    F = inf.influence_factors(X, y)
    return F @ inf.training_gradients().T


def _data(kind, n=260, m=70, seed=0):
    if kind == "ridge":
        X, y = make_regression(n + m, 6, noise=5.0, random_state=seed)
        return X[:n], y[:n], X[n:], y[n:], Ridge(alpha=1.0)
    classes = 3 if kind == "multinomial" else 2
    X, y = make_classification(n + m, 6, n_informative=4, n_classes=classes, random_state=seed)
    if kind == "sparse":
        X = sp.csr_matrix(np.where(np.abs(X) < 0.5, 0.0, X))
    return X[:n], y[:n], X[n:], y[n:], LogisticRegression(C=1.0, tol=1e-12, max_iter=1000)


@pytest.fixture(scope="module", params=["binary", "multinomial", "ridge", "sparse"])
def case(request):
    Xtr, ytr, Xte, yte, est = _data(request.param)
    inf = FisherInfluence(est, polish=True, memory_budget=TINY, batch_size=64).fit(Xtr, ytr)
    return inf, Xte, yte, _dense(inf, Xte, yte), Xtr, ytr


def test_blocks_are_small_and_cover_the_budget():
    plan = plan_blocks(TINY, 7, 260, 70, keep=260)
    assert 1 < plan.test_rows < 70 and 1 < plan.train_rows < 260
    floats = 2 * 7 * plan.test_rows + 4 * plan.test_rows * plan.train_rows + 260 * plan.test_rows
    assert 8 * (floats + 7 * plan.train_rows) <= TINY
    # two workers in flight share the budget
    assert plan_blocks(TINY, 7, 260, 70, keep=260, workers=2).test_rows < plan.test_rows
    assert parse_bytes("1.5 KiB") == 1536 and parse_bytes("2GB") == 2 * 10**9


def test_streamed_matrix_equals_dense(case):
    inf, X, y, A, *_ = case
    np.testing.assert_allclose(inf.attribute(X, y), A, rtol=1e-12, atol=1e-15)


def test_out_receives_the_matrix(case, tmp_path):
    inf, X, y, A, *_ = case
    out = np.lib.format.open_memmap(tmp_path / "A.npy", mode="w+", shape=A.shape)
    got = inf.attribute(X, y, out=out)
    assert got is out
    np.testing.assert_allclose(np.load(tmp_path / "A.npy"), A, rtol=1e-12, atol=1e-15)


def test_out_zarr(case, tmp_path):
    zarr = pytest.importorskip("zarr")
    inf, X, y, A, *_ = case
    z = zarr.create_array(store=str(tmp_path / "A.zarr"), shape=A.shape, chunks=(16, 64), dtype="f8")
    assert inf.attribute(X, y, out=z) is z
    np.testing.assert_allclose(z[:], A, rtol=1e-12, atol=1e-15)


def test_top_k_equals_sorted_dense(case):
    inf, X, y, A, *_ = case
    k = 7
    top = inf.attribute(X, y, top_k=k)
    helpful = np.argsort(-A, axis=1, kind="stable")[:, :k]
    harmful = np.argsort(A, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(top.helpful_indices, helpful)
    np.testing.assert_array_equal(top.harmful_indices, harmful)
    np.testing.assert_allclose(top.helpful_scores, np.take_along_axis(A, helpful, 1), rtol=1e-12)
    np.testing.assert_allclose(top.harmful_scores, np.take_along_axis(A, harmful, 1), rtol=1e-12)


def test_group_sum_and_mean(case):
    inf, X, y, A, *_ = case
    np.testing.assert_allclose(inf.attribute(X, y, reduce="sum"), A.sum(axis=0), rtol=1e-10,
                               atol=1e-13)
    mean = inf.attribute(X, y, reduce="mean", as_frame=True)
    assert isinstance(mean, pd.Series) and len(mean) == inf.n_samples_
    np.testing.assert_allclose(mean.to_numpy(), A.mean(axis=0), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("seed", range(5))
def test_top_k_merge_breaks_ties_by_position(seed):
    """Integer scores (many ties) merged over uneven blocks: the k largest, ties in
    increasing position, exactly as a stable sort of the whole row."""
    rng = np.random.default_rng(seed)
    S = rng.integers(0, 4, size=(9, 101)).astype(float)
    k = int(rng.integers(1, 12))
    cuts = np.sort(rng.choice(np.arange(1, 101), size=6, replace=False))
    for sign in (1, -1):
        best = None
        for rows in np.split(np.arange(101), cuts):
            best = merge_top(best, S[:, rows], rows, k, sign)
        want = np.argsort(-sign * S, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(best[1], want)
        np.testing.assert_array_equal(best[0], np.take_along_axis(S, want, 1))


def test_top_k_as_frame():
    Xtr, ytr, Xte, yte, est = _data("binary")
    frame = pd.DataFrame(Xtr, index=[f"r{i}" for i in range(len(Xtr))])
    inf = FisherInfluence(est).fit(frame, ytr)
    test = pd.DataFrame(Xte[:3], index=["a", "b", "c"])
    got = inf.attribute(test, yte[:3], top_k=2, as_frame=True)
    assert list(got.index) == [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("c", 0), ("c", 1)]
    top = inf.attribute(Xte[:3], yte[:3], top_k=2)
    assert list(got["helpful"]) == [f"r{i}" for i in top.helpful_indices.ravel()]


def test_self_influence_streamed(case):
    inf, _, _, _, Xtr, ytr = case
    np.testing.assert_allclose(inf.self_influence("ij"), np.diag(_dense(inf, Xtr, ytr)),
                               rtol=1e-10, atol=1e-14)
    wide = FisherInfluence(inf.estimator_, prefit=True, memory_budget="1GiB").fit(Xtr, ytr)
    np.testing.assert_allclose(inf.self_influence("ns"), wide.self_influence("ns"), rtol=1e-10,
                               atol=1e-14)


def test_top_k_memory_stays_within_the_budget():
    """3,000 × 6,000 scores (144 MB dense) with a 2 MiB budget: top-k never holds the matrix."""
    X, y = make_classification(9000, 8, random_state=1)
    inf = FisherInfluence(LogisticRegression(tol=1e-12), polish=True, memory_budget="2MiB")
    inf.fit(X[:6000], y[:6000])
    tracemalloc.start()
    top = inf.attribute(X[6000:], y[6000:], top_k=10)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert top.helpful_indices.shape == (3000, 10)
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    A = _dense(inf, X[6000:6200], y[6000:6200])
    np.testing.assert_array_equal(top.helpful_indices[:200], np.argsort(-A, 1, kind="stable")[:, :10])


def test_out_memory_stays_within_the_budget(tmp_path):
    """The full 3,000 × 6,000 matrix (144 MB) into a memmap with a 2 MiB budget."""
    X, y = make_classification(9000, 8, random_state=2)
    inf = FisherInfluence(LogisticRegression(tol=1e-12), polish=True, memory_budget="2MiB")
    inf.fit(X[:6000], y[:6000])
    out = np.lib.format.open_memmap(tmp_path / "A.npy", mode="w+", shape=(3000, 6000))
    tracemalloc.start()
    inf.attribute(X[6000:], y[6000:], out=out)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    np.testing.assert_allclose(out[::97], _dense(inf, X[6000::97], y[6000::97]), rtol=1e-12,
                               atol=1e-15)


def test_n_jobs_equals_sequential(case):
    inf, X, y, A, Xtr, ytr = case
    seq_top = inf.attribute(X, y, top_k=5)
    seq_self = inf.self_influence("ij")
    par = FisherInfluence(inf.estimator_, prefit=True, memory_budget=TINY, batch_size=64, n_jobs=2)
    par.fit(Xtr, ytr)
    np.testing.assert_allclose(par.attribute(X, y), A, rtol=1e-12, atol=1e-15)
    top = par.attribute(X, y, top_k=5)
    np.testing.assert_array_equal(top.helpful_indices, seq_top.helpful_indices)
    np.testing.assert_allclose(top.harmful_scores, seq_top.harmful_scores, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(par.self_influence("ij"), seq_self, rtol=1e-12, atol=1e-15)


def test_dask_cluster_equals_sequential():
    distributed = pytest.importorskip("distributed")
    Xtr, ytr, Xte, yte, est = _data("multinomial")
    inf = HessianInfluence(est, polish=True, memory_budget=TINY, batch_size=64).fit(Xtr, ytr)
    A, top, own = inf.attribute(Xte, yte), inf.attribute(Xte, yte, top_k=4), inf.self_influence("ij")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        with parallel_config(backend="dask"), distributed.get_task_stream() as tasks:
            A_dask = inf.attribute(Xte, yte)
            top_dask = inf.attribute(Xte, yte, top_k=4)
            own_dask = inf.self_influence("ij")
    assert len({t["worker"] for t in tasks.data}) == 2   # the blocks ran on both workers
    np.testing.assert_allclose(A_dask, A, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(top_dask.helpful_indices, top.helpful_indices)
    np.testing.assert_array_equal(top_dask.harmful_indices, top.harmful_indices)
    np.testing.assert_allclose(own_dask, own, rtol=1e-12, atol=1e-15)


def test_iterative_solver_blocks_in_workers():
    """A torch net with CG: its curvature operator stays in the parent; workers score."""
    torch = pytest.importorskip("torch")
    from skinfluence.models.torch import TorchModel

    torch.manual_seed(0)
    X, y = make_classification(200, 5, random_state=0)
    X = X.astype("float32")
    net = TorchModel(torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)),
                     loss="cross_entropy")
    kw = dict(prefit=True, solver="cg", damping=0.1, dtype="float64")   # a float32 net, float64 work
    # CG's factors depend on the block's width at its tolerance: compare equal blocks (two
    # workers with two blocks each in flight share the budget four ways)
    inf = FisherInfluence(net, memory_budget=5_000, **kw).fit(X[:150], y[:150])
    A = inf.attribute(X[150:], y[150:])
    np.testing.assert_allclose(A, _dense(inf, X[150:], y[150:]), rtol=1e-6, atol=1e-10)
    par = FisherInfluence(net, n_jobs=2, memory_budget=20_000, **kw).fit(X[:150], y[:150])
    np.testing.assert_allclose(par.attribute(X[150:], y[150:]), A, rtol=1e-12, atol=1e-15)


def test_progress_bars_only_when_verbose(capsys):
    Xtr, ytr, Xte, yte, est = _data("binary")
    inf = FisherInfluence(est, memory_budget=TINY).fit(Xtr, ytr)
    inf.attribute(Xte, yte, top_k=3)
    inf.self_influence("ij")
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err == ""
    inf.set_params(verbose=1).fit(Xtr, ytr)
    inf.attribute(Xte, yte, top_k=3)
    inf.self_influence("ij")
    err = capsys.readouterr().err
    assert "FisherInfluence.fit" in err
    assert "attribution blocks" in err and "self-influence blocks" in err


def test_cg_iterations_show_progress(capsys):
    torch = pytest.importorskip("torch")
    from skinfluence.models.torch import TorchModel

    X, y = make_classification(100, 4, random_state=0)
    net = TorchModel(torch.nn.Sequential(torch.nn.Linear(4, 2)), loss="cross_entropy")
    inf = FisherInfluence(net, prefit=True, solver="cg", damping=0.1, verbose=1)
    inf.fit(X.astype("float32"), y).attribute(X[:5].astype("float32"), y[:5])
    assert "CG iterations" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, match", [
    (dict(top_k=0), "top_k"),
    (dict(top_k=10_000), "top_k"),
    (dict(top_k=True), "top_k"),
    (dict(top_k=2.0), "top_k"),
    (dict(reduce="max"), "reduce"),
    (dict(out=np.empty((3, 3))), r"out must have shape \(70, 260\)"),
    (dict(top_k=3, reduce="sum"), "at most one"),
])
def test_bad_options(case, kwargs, match):
    inf, X, y, *_ = case
    with pytest.raises(ValueError, match=match):
        inf.attribute(X, y, **kwargs)


def test_bad_memory_budget():
    Xtr, ytr, *_, est = _data("binary")
    with pytest.raises(ValueError, match="memory_budget"):
        FisherInfluence(est, memory_budget="lots").fit(Xtr, ytr)


def test_memory_error_names_the_options(monkeypatch):
    Xtr, ytr, Xte, yte, est = _data("binary")
    inf = FisherInfluence(est).fit(Xtr, ytr)
    monkeypatch.setattr("skinfluence._utils.MAX_DENSE_BYTES", 1000)
    with pytest.raises(MemoryError) as err:
        inf.attribute(Xte, yte)
    for option in ("top_k", "reduce='sum'", "out=", "memory_budget"):
        assert option in str(err.value)
    assert inf.attribute(Xte, yte, top_k=2).helpful_indices.shape == (70, 2)   # what it advises works


def test_inputs_are_not_mutated(case):
    inf, X, y, *_ = case
    X0 = X.copy()
    inf.attribute(X, y, top_k=2)
    inf.attribute(X, y, reduce="sum")
    assert (X != X0).nnz == 0 if sp.issparse(X) else np.array_equal(X, X0)
