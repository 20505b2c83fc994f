"""What every curvature sampler shares: the subset size, quotas, fitted attributes.

A sampler picks rows ``S`` of the training data and importance weights ``w_i`` such
that ``Σ_{i∈S} w_i c_i J_iᵀ W_i J_i`` stands for the full curvature
``Σ_i c_i J_iᵀ W_i J_i`` (docs/user_guide/maths.rst §3). Stratified samplers (class quotas, logit
strata, k-means clusters) weight a row of stratum ``h`` by ``N_h / m_h``, its stratum's
size over the rows taken from it; the leverage sampler by the inverse of its inclusion
probability.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_consistent_length, validate_data

from .._sklearn_compat import Interval, RealNotInt, _num_samples, _safe_indexing

__all__ = ["BaseSampler", "allocate"]


def allocate(total, capacity, share=None):
    """Integer quotas summing to ``min(total, Σ capacity)``, proportional to ``share``.

    Each group gets its proportional part of ``total`` (largest remainders decide the
    rounding) but never more than its ``capacity``: a group that cannot fill its part
    gives all it has, and the rest is spread over the others in the same proportions.

    Parameters
    ----------
    total : int
    capacity : array-like of int, shape (G,)
        Rows available in each group.
    share : array-like of float, shape (G,), optional
        Relative sizes of the quotas (default: ``capacity``, i.e. proportional allocation).

    Returns
    -------
    ndarray of int, shape (G,)
    """
    capacity = np.asarray(capacity, dtype=np.int64)
    share = capacity.astype(float) if share is None else np.asarray(share, dtype=float)
    total = int(min(total, capacity.sum()))
    ideal = np.zeros(len(capacity))
    full = (capacity == 0) | (share <= 0)
    while True:  # water-filling: groups whose part exceeds their capacity are filled
        free = ~full
        if not free.any():
            break
        left = total - capacity[full & (share > 0)].sum()
        ideal[free] = left * share[free] / share[free].sum()
        over = free & (ideal > capacity)
        if not over.any():
            break
        ideal[over] = capacity[over]
        full |= over
    quota = np.minimum(np.floor(ideal + 1e-9).astype(np.int64), capacity)
    short = total - quota.sum()
    if short > 0:  # largest remainders, among groups with room
        rest = np.where(quota < capacity, ideal - quota, -np.inf)
        quota[np.argsort(-rest, kind="stable")[:short]] += 1
    return quota


class BaseSampler(BaseEstimator):
    """Base class of the curvature samplers (not used directly).

    Parameters
    ----------
    n_samples : int or float, default=0.1
        Rows to select: a count in ``[1, n]`` or a fraction of the rows in ``(0, 1]``
        (rounded to the nearest count, at least one).
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    sample_indices_ : ndarray of int, shape (m,)
        The selected rows, ascending.
    sample_weight_ : ndarray of float, shape (m,)
        Their importance weights: the weighted subset curvature
        ``Σ_{i∈S} w_i c_i J_iᵀ W_i J_i`` stands for the full ``Σ_i c_i J_iᵀ W_i J_i``.
    n_rows_ : int
        Rows seen in :meth:`fit`.
    n_features_in_ : int
        Number of features (columns) of ``X`` in :meth:`fit`.
    feature_names_in_ : ndarray of str
        Their names, where ``X`` had string column names.
    """

    _parameter_constraints: dict = {
        "n_samples": [Interval(numbers.Integral, 1, None, closed="left"),
                      Interval(RealNotInt, 0, 1, closed="right")],
        "random_state": ["random_state"],
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True        # X is passed on as the estimator takes it
        tags.target_tags.required = True
        return tags

    def __init__(self, n_samples=0.1, *, random_state=None):
        self.n_samples = n_samples
        self.random_state = random_state

    def _n_selected(self, n):
        if isinstance(self.n_samples, numbers.Integral):
            if self.n_samples > n:
                raise ValueError(f"n_samples={self.n_samples} exceeds the number of rows "
                                 f"(X has n_samples={n}); "
                                 "pass at most that many, or a fraction in (0, 1]")
            return int(self.n_samples)
        return max(1, min(n, int(round(self.n_samples * n))))

    def fit(self, X, y, *, estimator=None, logits=None, sample_weight=None):
        """Choose the rows (and their weights) that build the curvature.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, ...)
            The training inputs, as the estimator takes them.
        y : array-like of shape (n_samples,)
        estimator : fitted estimator, optional
            The model whose curvature is sampled (a supported linear model, Pipeline or
            skorch / torch model). Some samplers need it (see each class).
        logits : ndarray of shape (n_samples,) or (n_samples, K), optional
            The model's natural-scale outputs on ``X`` (K = 1 for binary and
            regression models, the class logits for multiclass ones), when known.
        sample_weight : array-like of shape (n_samples,), optional
            The training weights; only :class:`LeverageSampler` uses them (they scale
            each row's curvature). Every sampler's weights are relative to the rows'
            own, so the weighted subset stands for the weighted full curvature.

        Returns
        -------
        self
        """
        self._validate_params()  # (not sklearn's _fit_context: it takes the name `estimator`)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(f"y must be one-dimensional, got shape {y.shape}")
        self._check_X(X)
        check_consistent_length(X, y)
        n = _num_samples(X)
        if logits is not None:
            logits = np.asarray(logits, dtype=float)
            if logits.ndim not in (1, 2) or len(logits) != n:
                raise ValueError(f"logits must have shape ({n},) or ({n}, K), one row per row of X; "
                                 f"got shape {logits.shape}")
            if not np.all(np.isfinite(logits)):
                raise ValueError("logits contains NaN or infinity")
            logits = logits.reshape(n, -1)
        if sample_weight is not None:
            sw = sample_weight = np.asarray(sample_weight, dtype=float)
            if sw.shape != (n,) or not np.all(np.isfinite(sw)) or (sw < 0).any():
                raise ValueError(f"sample_weight must be {n} finite non-negative numbers")
            if not sw.any():
                raise ValueError("sample_weight is zero for every row: no row has weight")
        m = self._n_selected(n)
        rng = check_random_state(self.random_state)
        idx, w = self._select(X, y, m, estimator, logits, sample_weight, rng)
        order = np.argsort(idx, kind="stable")
        self.sample_indices_ = np.asarray(idx, dtype=np.intp)[order]
        self.sample_weight_ = np.asarray(w, dtype=float)[order]
        self.n_rows_ = n
        return self

    def _check_X(self, X):
        """Validate ``X`` as scikit-learn does (at least one row, finite numbers, 2-D or more;
        sparse accepted) and set ``n_features_in_`` (and ``feature_names_in_``). ``X`` itself
        is passed on unchanged, since the estimator may take it in another form (a DataFrame
        for a Pipeline)."""
        if isinstance(X, dict) or type(X).__module__.startswith(("torch", "skorch")):
            X = np.asarray(X.detach().cpu()) if hasattr(X, "detach") else None   # a net's input
            if X is None:
                return
        arr = X if hasattr(X, "dtype") else np.asarray(X, dtype=object)
        numeric = getattr(arr, "dtype", None) is not None and arr.dtype.kind in "biufc"
        if hasattr(X, "dtypes"):   # a DataFrame: numeric if every column is
            numeric = all(np.dtype(t).kind in "biufc" for t in X.dtypes if isinstance(t, np.dtype))
        validate_data(self, X, accept_sparse=True, allow_nd=True, dtype=None,
                      ensure_all_finite=bool(numeric), ensure_min_features=1)

    def fit_resample(self, X, y, **fit_params):
        """Fit, then return the selected rows (imbalanced-learn style).

        Parameters
        ----------
        X, y : as in :meth:`fit`
        **fit_params : ``estimator``, ``logits``, ``sample_weight`` as in :meth:`fit`

        Returns
        -------
        X_resampled : the rows ``sample_indices_`` of ``X`` (same type as ``X``)
        y_resampled : ndarray of shape (m,)

        The importance weights are in ``sample_weight_``.
        """
        self.fit(X, y, **fit_params)
        idx = self.sample_indices_
        return _safe_indexing(X, idx), _safe_indexing(np.asarray(y), idx)

    def _select(self, X, y, m, estimator, logits, sample_weight, rng):
        """``(indices, weights)`` of ``m`` rows (abstract)."""
        raise NotImplementedError

    # ------------------------------------------------------------ stratification
    @staticmethod
    def _class_codes(y, classes=None, classifier=None):
        """Class code of each row, and the number of classes (one group for a regression
        model, or without a model for a continuous target)."""
        if classifier is False:
            return np.zeros(len(y), dtype=np.intp), 1
        if classes is not None:
            codes = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
            unknown = classes[codes] != y
            if unknown.any():
                raise ValueError(f"y contains labels {np.unique(y[unknown])[:5].tolist()} unknown "
                                 f"to the model, whose classes are {np.asarray(classes).tolist()}")
            return codes, len(classes)
        if type_of_target(y) in ("continuous", "continuous-multioutput"):
            return np.zeros(len(y), dtype=np.intp), 1
        classes, codes = np.unique(y, return_inverse=True)
        return codes, len(classes)

    @staticmethod
    def _class_quotas(codes, n_groups, m, class_quotas):
        sizes = np.bincount(codes, minlength=n_groups)
        share = None if class_quotas == "proportional" else (sizes > 0).astype(float)
        return allocate(m, sizes, share)


def stratified_draw(members, quota, rng):
    """``quota`` rows drawn uniformly without replacement from ``members``, with the
    stratum weight ``len(members) / quota``."""
    if quota <= 0:
        return members[:0], np.zeros(0)
    chosen = rng.choice(members, size=quota, replace=False) if quota < len(members) else members
    return chosen, np.full(len(chosen), len(members) / len(chosen))
