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
