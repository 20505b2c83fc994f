"""skinfluence.plotting on the Agg backend: what each figure draws, and the helpers' numbers."""

import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from skinfluence import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_detection_curve_counts_bad_rows_in_score_order():
    rng = np.random.default_rng(0)
    scores, bad = rng.normal(size=50), rng.random(50) < 0.2
    x, found = plotting.detection_curve(scores, bad)
    order = np.argsort(-scores)
    for k in (0, 7, 25, 50):
        assert x[k] == k / 50
        assert found[k] == bad[order[:k]].sum() / bad.sum()
    with pytest.raises(ValueError, match="nothing to detect"):
        plotting.detection_curve(scores, np.zeros(50, bool))


def test_flag_outliers_quantile_and_threshold():
    s = np.r_[np.zeros(98), 5.0, 3.0]
    np.testing.assert_array_equal(plotting.flag_outliers(s, quantile=0.97), [98, 99])
    np.testing.assert_array_equal(plotting.flag_outliers(s, threshold=4.0), [98])
    with pytest.raises(ValueError, match="quantile"):
        plotting.flag_outliers(s, quantile=1.5)


def test_influential_images_show_top_and_bottom_rows():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(2, 30))
    X = rng.random((30, 16))
    axes = plotting.plot_influential_examples(A, X, np.arange(30) % 3, X[:2], [0, 1], n_show=3, image_shape=(4, 4))
    assert axes.shape == (2, 7)
    for j in range(2):
        titles = [ax.get_title() for ax in axes[j, 1:]]
        want = np.r_[np.argsort(A[j])[::-1][:3], np.argsort(A[j])[:3]]
        assert [t.split()[0] for t in titles] == [f"#{i}" for i in want]
        np.testing.assert_allclose(axes[j, 1].get_images()[0].get_array(), X[want[0]].reshape(4, 4))


def test_influential_rows_bar_chart_values():
    A = np.array([[0.3, -0.2, 0.1, -0.5]])
    X = np.arange(8.0).reshape(4, 2)
    (ax,) = plotting.plot_influential_examples(A, X, n_show=2, feature_names=["age", "hours"])
    widths = [p.get_width() for p in ax.patches]
    assert widths == [0.3, 0.1, -0.2, -0.5]
    assert ax.get_yticklabels()[0].get_text() == "row 0 age=0, hours=1"
    with pytest.raises(ValueError, match="columns"):
        plotting.plot_influential_examples(A, X[:3])


def test_self_influence_histogram_splits_flagged_rows():
    s = np.r_[np.linspace(0, 1, 99), 10.0]
    ax = plotting.plot_self_influence(s, quantile=0.995)
    kept = sum(p.get_height() for p in ax.containers[0])
    flagged = sum(p.get_height() for p in ax.containers[1])
    assert (kept, flagged) == (99, 1)
    assert "self-influence" in ax.get_xlabel()


def test_detection_cv_and_fairness_plots():
    bad = np.arange(40) < 4
    ax = plotting.plot_detection_curve({"perfect": bad.astype(float), "reversed": -bad.astype(float)}, bad)
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert lines["perfect"].get_ydata()[4] == 1.0 and lines["reversed"].get_ydata()[36] == 0.0
    ax = plotting.plot_cv_curves([0.1, 1.0, 10.0], {"approximate": [1, 2, 3], "exact": [1, 2, 4]},
                                 param_name="C", score_name="log-loss")
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "C"
    ax = plotting.plot_fairness_tradeoff([0.05, 0.02, 0.04, 0.03], [0.84, 0.83, 0.80, 0.835],
                                         fallback=[False, False, True, False], baseline=(0.1, 0.85))
    front = ax.get_lines()[0]
    # (0.04, 0.80) is beaten by (0.03, 0.835): it is not on the front, and the front is sorted by gap
    np.testing.assert_array_equal(front.get_xdata(), [0.02, 0.03, 0.05, 0.1])


def test_missing_matplotlib_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install \"skinfluence\[plot\]\""):
        plotting.plot_self_influence([1.0, 2.0])
