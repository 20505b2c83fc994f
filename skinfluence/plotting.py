"""Figures for influence results (needs matplotlib: ``pip install "skinfluence[plot]"``).

Each function draws on a given ``ax`` (or a new figure) and returns the axes, so the
figures compose; none calls ``plt.show``. The numbers they take are the ones the
estimators return:

* :func:`plot_influential_examples` -- the most helpful and most harmful training
  examples for a few test points, from ``attribute(X_test, y_test)`` (images or rows);
* :func:`plot_self_influence` -- the distribution of ``self_influence()`` with the
  flagged outliers;
* :func:`plot_detection_curve` -- data cleaning: fraction of bad rows found against the
  fraction inspected, for rankings such as self-influence or the training loss;
* :func:`plot_cv_curves` -- approximate against exact cross-validation scores over a
  hyperparameter;
* :func:`plot_fairness_tradeoff` -- fairness gap against accuracy, with the best
  trade-offs joined;
* :func:`influence_plot` -- leverage against studentized residual, marker area by Cook's
  distance, the most influential rows labelled (statsmodels' figure), for any estimator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "plot_influential_examples",
    "plot_self_influence",
    "plot_detection_curve",
    "plot_cv_curves",
    "plot_fairness_tradeoff",
    "influence_plot",
    "flag_outliers",
    "detection_curve",
]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - exercised by hiding matplotlib
        raise ImportError('skinfluence.plotting needs matplotlib: pip install "skinfluence[plot]" '
                          "(or pip install matplotlib)") from None
    return plt


def _axes(ax, figsize=(6, 4)):
    if ax is None:
        _, ax = _pyplot().subplots(figsize=figsize, constrained_layout=True)
    return ax


def flag_outliers(scores, *, quantile: float = 0.99, threshold: float | None = None) -> np.ndarray:
    """Indices of the scores above ``threshold`` (default: their ``quantile``), largest first.

    Parameters
    ----------
    scores : array-like of shape (n,)
        E.g. ``self_influence()``.
    quantile : float in (0, 1), default=0.99
        Used when ``threshold`` is None.
    threshold : float, optional

    Returns
    -------
    ndarray of int
        Positions of the flagged scores, ordered by decreasing score.

    Examples
    --------
    >>> from skinfluence.plotting import flag_outliers
    >>> flag_outliers([0.1, 5.0, 0.2, 3.0], threshold=1.0)
    array([1, 3])
    """
    s = np.asarray(scores, dtype=float).ravel()
    if threshold is None:
        if not 0 < quantile < 1:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        threshold = np.quantile(s, quantile)
    idx = np.flatnonzero(s > threshold)
    return idx[np.argsort(-s[idx], kind="stable")]


def detection_curve(scores, is_bad) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of the bad rows found when inspecting rows by decreasing score.

    Parameters
    ----------
    scores : array-like of shape (n,)
        Higher means "inspect first" (e.g. ``self_influence()`` or the training loss).
    is_bad : array-like of bool of shape (n,)
        Which rows are really bad (e.g. the labels you flipped).

    Returns
    -------
    inspected, found : ndarray of shape (n + 1,)
        Fraction of rows inspected (0, 1/n, ..., 1) and fraction of bad rows found.

    Examples
    --------
    >>> from skinfluence.plotting import detection_curve
    >>> inspected, found = detection_curve([0.9, 0.1, 0.5, 0.2], [True, False, False, True])
    >>> found.tolist()
    [0.0, 0.5, 0.5, 1.0, 1.0]
    """
    s = np.asarray(scores, dtype=float).ravel()
    bad = np.asarray(is_bad, dtype=bool).ravel()
    if s.shape != bad.shape:
        raise ValueError(f"scores and is_bad must have the same length, got {s.shape[0]} and {bad.shape[0]}")
    if not bad.any():
        raise ValueError("is_bad marks no row: there is nothing to detect")
    order = np.argsort(-s, kind="stable")
    found = np.r_[0, np.cumsum(bad[order])] / bad.sum()
    return np.arange(len(s) + 1) / len(s), found


def plot_influential_examples(A, X_train, y_train=None, X_test=None, y_test=None, *, n_show: int = 5,
                              image_shape: Sequence[int] | None = None, feature_names=None,
                              fig=None):
    """The most helpful and most harmful training examples for each test point.

    Parameters
    ----------
    A : array-like of shape (n_test, n_train)
        ``attribute(X_test, y_test)``: ``A[j, i]`` is test point j's loss after removing
        training point i minus its loss now. Positive (helpful): the test loss would rise
        without the training point; negative (harmful): it would fall.
    X_train : array-like of shape (n_train, n_features)
    y_train : array-like of shape (n_train,), optional
        Shown in the panel titles.
    X_test, y_test : array-like, optional
        The test points, shown first in each row of an image grid.
    n_show : int, default=5
        Helpful and harmful examples shown per test point.
    image_shape : tuple of int, optional
        Draw each row of ``X`` reshaped to this shape as a grey image (e.g. ``(8, 8)``).
        Without it, each test point gets a bar chart of the influence of its top training
        rows, labelled by row number (and ``feature_names`` values of the first features).
    feature_names : sequence of str, optional
        Column names used in the bar labels of tabular data (the first three are shown).
    fig : matplotlib Figure, optional

    Returns
    -------
    ndarray of matplotlib Axes

    Examples
    --------
    >>> import numpy as np, matplotlib
    >>> matplotlib.use("Agg")
    >>> from skinfluence.plotting import plot_influential_examples
    >>> A = np.array([[0.3, -0.2, 0.1], [-0.1, 0.2, 0.0]])
    >>> axes = plot_influential_examples(A, np.eye(3), [0, 1, 1], n_show=1)
    >>> axes.shape
    (2,)
    """
    plt = _pyplot()
    from matplotlib.ticker import FormatStrFormatter

    A = np.atleast_2d(np.asarray(A, dtype=float))
    X_train = np.asarray(X_train)
    if A.shape[1] != len(X_train):
        raise ValueError(f"A has {A.shape[1]} columns but X_train has {len(X_train)} rows")
    n_show = min(n_show, A.shape[1])
    label = (lambda i: "") if y_train is None else (lambda i: f"y={np.asarray(y_train)[i]} ")
    if image_shape is not None:
        first = 1 if X_test is not None else 0
        ncols = first + 2 * n_show
        if fig is None:
            fig = plt.figure(figsize=(1.25 * ncols, 1.55 * len(A) + 0.6), constrained_layout=True)
        axes = fig.subplots(len(A), ncols, squeeze=False)
        for j, row in enumerate(axes):
            order = np.argsort(A[j], kind="stable")
            panels = []
            if first:
                truth = "" if y_test is None else f"y={np.asarray(y_test)[j]}"
                panels.append((np.asarray(X_test)[j], f"test {j}\n{truth}", "black"))
            panels += [(X_train[i], f"#{i} {label(i)}\n{A[j, i]:+.2g}", "tab:green") for i in order[::-1][:n_show]]
            panels += [(X_train[i], f"#{i} {label(i)}\n{A[j, i]:+.2g}", "tab:red") for i in order[:n_show]]
            for ax, (img, title, color) in zip(row, panels):
                ax.imshow(np.reshape(img, image_shape), cmap="gray_r")
                ax.set_title(title, fontsize=8, color=color)
                ax.set_xticks([])
                ax.set_yticks([])
        fig.suptitle("test point | most helpful training examples (green: removing one raises the test loss "
                     "by the number shown) | most harmful (red: removing one lowers it)", fontsize=9)
        return axes[:, 0] if axes.shape[1] == 1 else axes
    if fig is None:
        fig = plt.figure(figsize=(6, 0.45 * 2 * n_show * len(A) + 1), constrained_layout=True)
    axes = np.asarray(fig.subplots(len(A), 1, squeeze=False))[:, 0]
    names = list(feature_names)[:3] if feature_names is not None else []
    for j, ax in enumerate(axes):
        order = np.argsort(A[j], kind="stable")
        rows = np.r_[order[::-1][:n_show], order[:n_show][::-1]]
        vals = A[j, rows]

        def describe(i):
            feats = ", ".join(f"{nm}={X_train[i, k]:.3g}" for k, nm in enumerate(names))
            return f"row {i} {label(i)}{feats}".strip()

        ax.barh(np.arange(len(rows)), vals, color=np.where(vals >= 0, "tab:green", "tab:red"))
        ax.set_yticks(np.arange(len(rows)), [describe(i) for i in rows], fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0, color="k", lw=0.8)
        ax.xaxis.set_major_formatter(FormatStrFormatter("%.2g"))  # the scale on each tick, no offset text
        ax.set_title(f"test point {j}", fontsize=9)
        ax.set_xlabel("test loss after removing the row − loss now (green: helpful, red: harmful)", fontsize=8)
    return axes


def plot_self_influence(scores, *, quantile: float = 0.99, threshold: float | None = None, bins: int = 60,
                        ax=None):
    """Histogram of self-influence scores, with the flagged outliers marked.

    Parameters
    ----------
    scores : array-like of shape (n,)
        ``self_influence()``: each training row's own loss after leaving it out minus now.
    quantile, threshold :
        Which scores are flagged; see :func:`flag_outliers`.
    bins : int, default=60
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import numpy as np, matplotlib
    >>> matplotlib.use("Agg")
    >>> from skinfluence.plotting import plot_self_influence
    >>> ax = plot_self_influence(np.random.default_rng(0).exponential(size=500))
    """
    s = np.asarray(scores, dtype=float).ravel()
    flagged = flag_outliers(s, quantile=quantile, threshold=threshold)
    cut = np.quantile(s, quantile) if threshold is None else threshold
    kept = np.ones(s.shape, bool)
    kept[flagged] = False
    ax = _axes(ax)
    edges = np.histogram_bin_edges(s, bins=bins)
    ax.hist(s[kept], bins=edges, color="tab:blue", label="rows")
    ax.hist(s[flagged], bins=edges, color="tab:red", label=f"flagged: {flagged.size} rows")
    ax.axvline(cut, color="tab:red", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("self-influence: the row's own loss when left out − loss now")
    ax.set_ylabel("number of training rows (log scale)")
    ax.legend(fontsize=8)
    return ax


def plot_detection_curve(rankings: Mapping[str, np.ndarray], is_bad, *, ax=None):
    """Fraction of bad rows found against fraction inspected, for several rankings.

    Parameters
    ----------
    rankings : mapping of name to array-like of shape (n,)
        Scores that order the inspection (highest first), e.g.
        ``{"self-influence": inf.self_influence(), "training loss": loss}``.
    is_bad : array-like of bool of shape (n,)
        The rows that really are bad.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import numpy as np, matplotlib
    >>> matplotlib.use("Agg")
    >>> from skinfluence.plotting import plot_detection_curve
    >>> bad = np.arange(100) < 10
    >>> ax = plot_detection_curve({"oracle": bad.astype(float)}, bad)
    """
    ax = _axes(ax)
    bad = np.asarray(is_bad, dtype=bool)
    for k, (name, scores) in enumerate(rankings.items()):
        x, found = detection_curve(scores, bad)
        ax.plot(x, found, ["-", "--", "-.", (0, (5, 1, 1, 1))][k % 4], label=name)
    ax.plot([0, 1], [0, 1], ":", color="gray", label="random order")
    ax.axvline(bad.mean(), color="gray", lw=0.6)
    ax.set_xlabel("fraction of training rows inspected (highest score first)")
    ax.set_ylabel("fraction of the bad rows found")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=8, loc="lower right")
    return ax


def plot_cv_curves(values, curves: Mapping[str, np.ndarray], *, param_name: str = "parameter",
                   score_name: str = "score", log_scale: bool = True, ax=None):
    """Cross-validation scores over a hyperparameter, e.g. approximate against exact.

    Parameters
    ----------
    values : array-like of shape (m,)
        The hyperparameter values.
    curves : mapping of name to array-like of shape (m,)
        E.g. ``{"approximate": approx.cv_results_["mean_test_score"], "exact": ...}``.
        The first is drawn with markers, the others dashed.
    param_name, score_name : str
        Axis labels.
    log_scale : bool, default=True
        Logarithmic hyperparameter axis.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skinfluence.plotting import plot_cv_curves
    >>> ax = plot_cv_curves([0.1, 1, 10], {"approximate": [0.8, 0.9, 0.85], "exact": [0.8, 0.9, 0.86]},
    ...                     param_name="C", score_name="5-fold accuracy")
    """
    ax = _axes(ax)
    for k, (name, scores) in enumerate(curves.items()):
        ax.plot(values, scores, "-o" if k == 0 else "--", ms=4, label=name)
    if log_scale:
        ax.set_xscale("log")
    ax.set_xlabel(param_name)
    ax.set_ylabel(score_name)
    ax.legend(fontsize=8)
    return ax


def plot_fairness_tradeoff(gaps, accuracies, *, labels=None, fallback=None, baseline=None,
                           gap_name: str = "fairness gap", ax=None):
    """Fairness gap against accuracy for several fairer models, best trade-offs joined.

    The models are drawn as points (no line through them in parameter order, which
    loops when the gap is not monotone in the parameter); the line joins the Pareto
    front: the models no other model beats on both gap and accuracy.

    Parameters
    ----------
    gaps, accuracies : array-like of shape (m,)
        Each model's gap (lower is fairer) and accuracy, measured on test data.
    labels : sequence of str, optional
        Annotations, e.g. ``["β=0.2", ...]``.
    fallback : array-like of bool of shape (m,), optional
        Models from the fallback programme, drawn hollow.
    baseline : (gap, accuracy), optional
        The unconstrained model, drawn as a star.
    gap_name : str
        The x-axis label.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skinfluence.plotting import plot_fairness_tradeoff
    >>> ax = plot_fairness_tradeoff([0.05, 0.02, 0.04], [0.84, 0.83, 0.80], baseline=(0.1, 0.85))
    """
    ax = _axes(ax)
    gaps, acc = np.asarray(gaps, dtype=float), np.asarray(accuracies, dtype=float)
    hollow = np.zeros(len(gaps), bool) if fallback is None else np.asarray(fallback, bool)
    pts_g, pts_a = gaps, acc
    if baseline is not None:
        pts_g, pts_a = np.r_[gaps, baseline[0]], np.r_[acc, baseline[1]]
    front = [k for k in range(len(pts_g))
             if not np.any((pts_g <= pts_g[k]) & (pts_a >= pts_a[k]) & ((pts_g < pts_g[k]) | (pts_a > pts_a[k])))]
    front = sorted(front, key=lambda k: pts_g[k])
    ax.plot(pts_g[front], pts_a[front], "-", color="tab:blue", alpha=0.4, label="best trade-offs")
    ax.scatter(gaps[~hollow], acc[~hollow], color="tab:blue", zorder=3, label="reweighed")
    if hollow.any():
        ax.scatter(gaps[hollow], acc[hollow], facecolors="none", edgecolors="tab:blue", zorder=3,
                   label="reweighed (fallback programme)")
    if baseline is not None:
        ax.scatter([baseline[0]], [baseline[1]], marker="*", s=150, color="k", zorder=4, label="unconstrained")
    for text, g, a in zip(labels or [], gaps, acc):
        ax.annotate(text, (g, a), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"{gap_name} (lower is fairer)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    return ax


def influence_plot(diagnostics, *, external: bool = True, n_labels: int = 5, size: float = 300,
                   labels=None, ax=None):
    """Leverage against studentized residual, marker area by Cook's distance.

    The regression-diagnostics figure of statsmodels' ``influence_plot`` for any
    skinfluence estimator: rows far right have high leverage, rows far from zero are
    poorly fitted, large markers move the fit most (Cook's distance); the ``n_labels``
    largest Cook's distances are labelled.

    Parameters
    ----------
    diagnostics : fitted influence estimator or InfluenceDiagnostics
        An estimator (its :meth:`~skinfluence.HessianInfluence.diagnostics` are computed
        without the parameter changes) or their result.
    external : bool, default=True
        Externally studentized residuals (else internally).
    n_labels : int, default=5
        Rows labelled, by decreasing Cook's distance.
    size : float, default=300
        Marker area of the largest Cook's distance (points²); areas are proportional
        (at least 8, so that every row shows).
    labels : array-like of shape (n,), optional
        Row labels (default: the training rows' index labels).
    ax : matplotlib Axes, optional

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.linear_model import LinearRegression
    >>> from skinfluence import HessianInfluence
    >>> from skinfluence.plotting import influence_plot
    >>> X, y = load_diabetes(return_X_y=True)
    >>> ax = influence_plot(HessianInfluence(LinearRegression()).fit(X, y))
    >>> ax.get_xlabel()
    'leverage (hat diagonal)'
    """
    if hasattr(diagnostics, "diagnostics"):
        diagnostics = diagnostics.diagnostics(params=False)
    if not hasattr(diagnostics, "hat_matrix_diag"):
        raise TypeError("influence_plot needs a fitted influence estimator or its diagnostics(), "
                        f"got {type(diagnostics).__name__}")
    h = np.asarray(diagnostics.hat_matrix_diag)
    r = np.asarray(diagnostics.resid_studentized_external if external
                   else diagnostics.resid_studentized)
    cooks = np.nan_to_num(np.asarray(diagnostics.cooks_distance[0]), nan=0.0)
    names = np.asarray(diagnostics.index if labels is None else labels)
    if len(names) != len(h):
        raise ValueError(f"labels has {len(names)} entries for {len(h)} rows")
    ax = _axes(ax)
    area = size * cooks / max(cooks.max(), 1e-300)
    ax.scatter(h, r, s=np.maximum(area, 8.0), alpha=0.6, edgecolors="k", linewidths=0.5)
    for i in np.argsort(-cooks, kind="stable")[:max(int(n_labels), 0)]:
        ax.annotate(str(names[i]), (h[i], r[i]), xytext=(4, 3), textcoords="offset points",
                    fontsize=8)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("leverage (hat diagonal)")
    ax.set_ylabel(("externally" if external else "internally") + " studentized residual")
    ax.set_title("Influence plot (marker area: Cook's distance)")
    return ax
