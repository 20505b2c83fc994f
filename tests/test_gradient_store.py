"""The training-gradient store against the estimator's own attribution."""

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from skinfluence import FisherInfluence
from skinfluence.gradient_store import GradientStore


@pytest.fixture(scope="module")
def fitted():
    X, y = make_classification(300, 6, n_informative=4, n_classes=3, random_state=0)
    return FisherInfluence(LogisticRegression(tol=1e-10)).fit(X, y), X, y


def test_in_memory_and_on_disk_equal_attribute(fitted, tmp_path):
    inf, X, y = fitted
    A = inf.attribute(X[:7], y[:7])
    mem = GradientStore(inf, dtype="float64", block_size=64).fit()
    assert not mem.on_disk_ and mem.blocks_done_ == 5
    np.testing.assert_allclose(mem.attribute(X[:7], y[:7]), A, rtol=1e-10, atol=1e-14)
    disk = GradientStore(inf, path=tmp_path / "s", block_size=64).fit()   # float32 on disk
    assert disk.on_disk_ and isinstance(disk.gradients_, np.memmap)
    np.testing.assert_allclose(disk.attribute(X[:7], y[:7]), A, rtol=1e-4, atol=1e-6 * np.abs(A).max())
    top, ref = disk.attribute(X[:7], y[:7], top_k=5), inf.attribute(X[:7], y[:7], top_k=5)
    assert (top.helpful_indices == ref.helpful_indices).mean() > 0.9
    loaded = GradientStore.load(inf, tmp_path / "s")
    np.testing.assert_array_equal(loaded.gradients_, disk.gradients_)
    with pytest.raises(MemoryError, match="path="):
        GradientStore(inf, memory_budget=1000).fit()


def test_a_store_saved_before_the_basis_setting_still_loads(fitted, tmp_path):
    """Settings added since a store was saved take their defaults: its settings file without
    ``basis`` is a random-basis store, which loads and resumes."""
    import json

    inf, X, y = fitted
    disk = GradientStore(inf, path=tmp_path, projection=4, block_size=64).fit()
    meta = tmp_path / "store.json"
    saved = json.loads(meta.read_text())
    del saved["settings"]["basis"]
    meta.write_text(json.dumps(saved))
    loaded = GradientStore.load(inf, tmp_path)
    assert loaded.basis == "random"
    np.testing.assert_array_equal(loaded.gradients_, disk.gradients_)
    assert GradientStore(inf, path=tmp_path, projection=4, block_size=64).fit().blocks_done_ == 5


def test_resumes_by_blocks(fitted, tmp_path, monkeypatch):
    inf, X, y = fitted
    calls = []
    real = GradientStore._training_gradients

    def failing(self, rows):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(rows[0])
        return real(self, rows)

    monkeypatch.setattr(GradientStore, "_training_gradients", failing)
    with pytest.raises(KeyboardInterrupt):
        GradientStore(inf, path=tmp_path, block_size=64).fit()
    with pytest.raises(ValueError, match="unfinished"):
        GradientStore.load(inf, tmp_path)
    monkeypatch.setattr(GradientStore, "_training_gradients", real)
    seen = []
    monkeypatch.setattr(GradientStore, "_training_gradients", lambda self, rows: seen.append(rows[0]) or real(self, rows))
    store = GradientStore(inf, path=tmp_path, block_size=64).fit()
    assert seen == [128, 192, 256] and store.blocks_done_ == 5         # only the missing blocks
    np.testing.assert_allclose(store.attribute(X[:3], y[:3]), inf.attribute(X[:3], y[:3]), rtol=1e-4,
                               atol=1e-6 * np.abs(inf.attribute(X[:3], y[:3])).max())
    with pytest.raises(ValueError, match="other settings"):
        GradientStore(inf, path=tmp_path, block_size=32).fit()


def test_projection_is_unbiased_and_trak(fitted):
    inf, X, y = fitted
    A = inf.attribute(X[:20], y[:20])
    errs = [np.linalg.norm(GradientStore(inf, projection=k, random_state=1).fit().attribute(X[:20], y[:20]) - A)
            / np.linalg.norm(A) for k in (50, 2000)]
    assert errs[1] < 0.1 and errs[1] < errs[0] / 3                    # O(1/√k)
    trak = GradientStore(inf, projection=200).fit().attribute(X[:20], y[:20], curvature="projected")
    assert np.corrcoef(trak.ravel(), A.ravel())[0, 1] > 0.5
    with pytest.raises(ValueError, match="projected store"):
        GradientStore(inf).fit().attribute(X[:2], y[:2], curvature="projected")
    with pytest.raises(ValueError, match="projection"):
        GradientStore(inf, projection=0)


def test_ensemble_answers_from_stores(fitted, tmp_path):
    from sklearn.base import clone

    from skinfluence import InfluenceEnsemble

    inf, X, y = fitted
    members = [FisherInfluence(LogisticRegression(tol=1e-10)), FisherInfluence(LogisticRegression(C=0.3, tol=1e-10))]
    plain = InfluenceEnsemble(members).fit(X, y)
    stored = InfluenceEnsemble([clone(m) for m in members], store={"dtype": "float64"}).fit(X, y)
    assert len(stored.stores_) == 2 and plain.stores_ is None
    np.testing.assert_allclose(stored.attribute(X[:5], y[:5]), plain.attribute(X[:5], y[:5]), rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(stored.attribute(X[:5], y[:5], reduce="sum"), plain.attribute(X[:5], y[:5]).sum(0),
                               rtol=1e-9, atol=1e-12)
    top = stored.attribute(X[:5], y[:5], top_k=3)
    np.testing.assert_array_equal(top.helpful_indices, plain.attribute(X[:5], y[:5], top_k=3).helpful_indices)
    # TRAK: projected gradients and their Fisher; with k ≥ p and no damping it is exactly
    # v_tᵀ (Σ_i v_i v_iᵀ)⁻¹ v_i for each member (a projection of full column rank drops out)
    trak = InfluenceEnsemble(members, store={"projection": 60, "curvature": "projected", "damping": 0.0,
                                             "dtype": "float64", "path": tmp_path}).fit(X, y)
    assert (tmp_path / "member1" / "store.json").exists()
    expected = []
    for m in trak.influences_:
        V = m.training_gradients()
        F = GradientStore(m, dtype="float64").test_factors(X[:5], y[:5])     # M⁻¹ ∇ℓ_t
        G = np.linalg.solve(m.curvature_solver_.inverse(), F.T).T             # ∇ℓ_t
        expected.append(G @ np.linalg.solve(V.T @ V, V.T))
    np.testing.assert_allclose(trak.attribute(X[:5], y[:5]), np.mean(expected, axis=0), rtol=1e-6,
                               atol=1e-9 * np.abs(expected).max())
    with pytest.raises(ValueError, match="needs a projection"):
        InfluenceEnsemble(members, store={"curvature": "projected"}).fit(X, y)
    with pytest.raises(ValueError, match="unknown"):
        InfluenceEnsemble(members, store={"rank": 3}).fit(X, y)


def test_test_rows_in_blocks_within_the_budget(fitted, tmp_path):
    inf, X, y = fitted
    whole = GradientStore(inf, dtype="float64").fit()
    small = GradientStore(inf, dtype="float64", path=tmp_path, memory_budget=4000).fit()   # a test row per block
    A = whole.attribute(X[:6], y[:6])
    np.testing.assert_allclose(small.attribute(X[:6], y[:6]), A, rtol=1e-10, atol=1e-12 * np.abs(A).max())
    a, b = small.attribute(X[:6], y[:6], top_k=4), whole.attribute(X[:6], y[:6], top_k=4)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12 * np.abs(A).max())


# ---------------------------------------------------------------- Kronecker-structured projection
@pytest.fixture(scope="module")
def net_fitted():
    """A tiny CNN (two convolutions, a LayerNorm outside the factorised layers, two linear
    layers), trained a little, with weight decay."""
    import torch

    from skinfluence.models.torch import TorchModel

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 2, 6, 6))
    y = rng.integers(0, 3, 60)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1, stride=2), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 5, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(45, 8), torch.nn.LayerNorm(8), torch.nn.Tanh(),
                              torch.nn.Linear(8, 3)).double()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(50):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.as_tensor(X)), torch.as_tensor(y)).backward()
        opt.step()
    model = TorchModel(net, loss="cross_entropy", weight_decay=1e-2)
    inf = FisherInfluence(model, prefit=True, solver="dense", damping=1e-3).fit(X, y)
    return inf, X, y


@pytest.mark.filterwarnings("ignore::skinfluence.exceptions.InfluenceWarning")
def test_kronecker_projection_is_the_dense_kronecker_matrix(net_fitted, tmp_path):
    inf, X, y = net_fitted
    p = inf.adapter_.n_params
    store = GradientStore(inf, projection=(3, 4), dtype="float64", block_size=16, random_state=2).fit()
    layers, rest = store._layout()
    assert len(layers) == 4 and len(rest) == 16                          # the LayerNorm's 16 parameters
    # the dense matrix: P_out ⊗ P_in on each layer's [W | b] (row-major), the identity elsewhere
    blocks, cols = [], []
    for index, P_out, P_in, width in layers.values():
        P_out = np.eye(index.shape[0]) if P_out is None else P_out
        P_in = np.eye(index.shape[1]) if P_in is None else P_in
        blocks.append(np.kron(P_out, P_in))
        cols.append(index.ravel())
        assert width == P_out.shape[0] * P_in.shape[0] == min(3, index.shape[0]) * min(4, index.shape[1])
    P = np.zeros((sum(len(b) for b in blocks) + len(rest), p))
    r = 0
    for b, c in zip(blocks, cols):
        P[r:r + len(b), c] = b
        r += len(b)
    P[r + np.arange(len(rest)), rest] = 1.0
    V = inf.training_gradients()
    assert np.abs(V @ np.ones(p)).max() > 0 and store.gradients_.shape == (60, len(P))
    # computed from projected inputs and output gradients, never the full per-sample gradient
    np.testing.assert_allclose(store.gradients_, V @ P.T, rtol=1e-10, atol=1e-12 * np.abs(V).max())
    np.testing.assert_allclose(store.project(V[:5]), V[:5] @ P.T, rtol=1e-10, atol=1e-12 * np.abs(V).max())
    # saved and loaded with its layout; the same seed gives the same projection
    disk = GradientStore(inf, projection=[3, 4], path=tmp_path, block_size=16, random_state=2).fit()
    loaded = GradientStore.load(inf, tmp_path)
    assert loaded.projection == (3, 4)
    np.testing.assert_allclose(loaded.gradients_, store.gradients_, rtol=1e-6, atol=1e-7 * np.abs(V).max())
    np.testing.assert_allclose(loaded.attribute(X[:3], y[:3]), disk.attribute(X[:3], y[:3]), rtol=1e-12)


@pytest.mark.filterwarnings("ignore::skinfluence.exceptions.InfluenceWarning")
def test_kronecker_projection_attribution(net_fitted):
    inf, X, y = net_fitted
    A = inf.attribute(X[:15], y[:15])
    # sides at least the layers' sizes: the identity, exact
    full = GradientStore(inf, projection=(100, 100), dtype="float64").fit()
    assert full.gradients_.shape[1] == inf.adapter_.n_params
    np.testing.assert_allclose(full.attribute(X[:15], y[:15]), A, rtol=1e-9, atol=1e-12 * np.abs(A).max())
    # random projections: unbiased, relative error about 1/√k per layer, falling as k grows (scores
    # are small against ‖f‖‖v‖ here: a dense projection of the same size errs by 1.42 / 0.35)
    def err(k, seed):
        S = GradientStore(inf, projection=k, dtype="float64", random_state=seed).fit().attribute(X[:15], y[:15])
        return np.linalg.norm(S - A) / np.linalg.norm(A)

    small = np.median([err((2, 3), s) for s in range(5)])
    large = np.median([err((8, 32), s) for s in range(5)])         # 535 of 672 floats: 0.35
    assert large < 0.5 and large < small / 3
    mean = np.mean([GradientStore(inf, projection=(2, 3), dtype="float64", random_state=s).fit()
                    .attribute(X[:15], y[:15]) for s in range(40)], axis=0)
    assert np.linalg.norm(mean - A) / np.linalg.norm(A) < small / 2        # averaging the seeds: unbiased
    top = GradientStore(inf, projection=(8, 32), random_state=0).fit().attribute(X[:15], y[:15], top_k=1)
    assert np.mean(top.helpful_indices[:, 0] == np.argmax(A, axis=1)) >= 0.6


def test_kronecker_projection_refused_where_it_does_not_apply(fitted, net_fitted):
    inf, _, _ = fitted
    with pytest.raises(ValueError, match="pass an integer k"):
        GradientStore(inf, projection=(2, 3))
    for bad in [(0, 3), (2,), (2, 3.5), (True, 2)]:
        with pytest.raises(ValueError, match="two positive integers"):
            GradientStore(net_fitted[0], projection=bad)


@pytest.mark.filterwarnings("ignore::skinfluence.exceptions.InfluenceWarning")
def test_ensemble_takes_the_kronecker_projection(net_fitted):
    from skinfluence import InfluenceEnsemble

    inf, X, y = net_fitted
    member = FisherInfluence(inf.estimator, prefit=True, solver="dense", damping=1e-3)
    plain = InfluenceEnsemble([member]).fit(X, y).attribute(X[:4], y[:4])
    exact = InfluenceEnsemble([member], store={"projection": (100, 100), "dtype": "float64"}).fit(X, y)
    np.testing.assert_allclose(exact.attribute(X[:4], y[:4]), plain, rtol=1e-9, atol=1e-12 * np.abs(plain).max())
    assert exact.stores_[0].projection == (100, 100)


@pytest.mark.filterwarnings("ignore::skinfluence.exceptions.InfluenceWarning")
def test_kronecker_projection_on_the_curvature_basis(net_fitted):
    inf, X, y = net_fitted
    ek = FisherInfluence(inf.estimator, prefit=True, solver="ekfac", damping=1e-3).fit(X, y)
    A = ek.attribute(X[:15], y[:15])
    full = GradientStore(ek, projection=(100, 100), basis="curvature", dtype="float64").fit()
    np.testing.assert_allclose(full.attribute(X[:15], y[:15]), A, rtol=1e-9, atol=1e-12 * np.abs(A).max())
    store = GradientStore(ek, projection=(3, 8), basis="curvature", dtype="float64").fit()
    layers, rest = store._layout()
    V = ek.training_gradients()
    for name, (index, P_out, P_in, _) in layers.items():     # the leading eigenvectors of G and A
        _, QA, QG = ek.curvature_solver_.layers[name][:3]
        for P, Q in ((P_out, QG), (P_in, QA)):
            if P is not None:
                np.testing.assert_array_equal(P, Q[:, -len(P):].T)
    np.testing.assert_allclose(store.gradients_[:, -len(rest):], V[:, rest], rtol=1e-10,   # the LayerNorm's
                               atol=1e-12 * np.abs(V).max())
    # the same layer-wise projection as the random one, so the dense-matrix test covers it; here the
    # deterministic block of EK-FAC's scores beats random projections of the same size
    S = store.attribute(X[:15], y[:15])
    err = np.linalg.norm(S - A) / np.linalg.norm(A)
    random = [np.linalg.norm(GradientStore(ek, projection=(3, 8), dtype="float64", random_state=s).fit()
                             .attribute(X[:15], y[:15]) - A) / np.linalg.norm(A) for s in range(5)]
    assert err < np.median(random)
    with pytest.raises(ValueError, match="Kronecker-factored solver"):
        GradientStore(inf, projection=(3, 8), basis="curvature")            # a dense solver
    with pytest.raises(ValueError, match="basis must be"):
        GradientStore(ek, projection=(3, 8), basis="pca")
