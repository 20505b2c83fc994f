"""Logit sampling: per class, strata by quantiles of the logit margin (docs/user_guide/maths.rst §3)."""

from __future__ import annotations

import numbers

import numpy as np

from .._sklearn_compat import Interval, StrOptions
from ..models import make_adapter
from ._base import BaseSampler, allocate, stratified_draw

__all__ = ["LogitSampler", "logit_margin"]


def logit_margin(logits, codes):
    """True-class logit minus the best other one; ``±η`` for a single-logit binary model.

    Parameters
    ----------
    logits : ndarray of shape (n, K)
    codes : ndarray of int, shape (n,)
        Class positions (for K = 1: 0 the negative class, 1 the positive one).

    Returns
    -------
    ndarray of shape (n,)
    """
    logits = np.asarray(logits, dtype=float)
    if logits.shape[1] == 1:
        return np.where(codes == 1, logits[:, 0], -logits[:, 0])
    rows = np.arange(len(codes))
    true = logits[rows, codes]
    others = logits.copy()
    others[rows, codes] = -np.inf
    return true - others.max(axis=1)


class LogitSampler(BaseSampler):
    """Curvature rows stratified by class and by the model's logit margin.

    A reconstruction of the logit-based sampler of Koh et al. ("Faithful and fast
    influence function via advanced sampling"), the best of their samplers. Each
    class gets a quota proportional to its frequency (or equal quotas); its rows are
    sorted by their margin (true-class logit minus the best other; for a single-logit
    binary model ``η`` for the positive class and ``−η`` for the negative one) and cut
    at the margin's quantiles into ``min(n_strata, quota)`` strata of equal size; each
    stratum gets its share of the quota, drawn uniformly at random. So the subset's
    margin distribution matches the class's: confidently right, borderline and wrong
    rows (which carry most of the curvature) are all represented.

    A row of stratum ``h`` is weighted ``N_h / m_h`` (its stratum's size over the rows
    taken from it), which makes the weighted subset curvature unbiased for the full
    one as long as every stratum is sampled (the sum is exact when each stratum is
    taken whole). Classes whose quota rounds to zero are not represented.

    For a regression model there is one class and the strata are quantiles of the
    prediction ``η``.

    Parameters
    ----------
    n_samples : int or float, default=0.1
        Rows to select: a count in ``[1, n]`` or a fraction of the rows in ``(0, 1]``.
    n_strata : int, default=10
        Margin strata per class (fewer when a class's quota is smaller).
    class_quotas : {"proportional", "balanced"}, default="proportional"
        Class quotas proportional to the class frequencies, or equal. A class with fewer
        rows than its quota is taken whole and the rest of its quota is shared among
        the other classes.
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    sample_indices_ : ndarray of int, shape (m,)
    sample_weight_ : ndarray of float, shape (m,)
    margin_ : ndarray of shape (n,)
        The margin of every row.
    strata_ : ndarray of int, shape (n,)
        The stratum of every row (numbered across classes; -1 for rows of a class
        with a zero quota).
    n_rows_ : int

    Notes
    -----
    :meth:`fit` needs ``logits`` (the influence estimators pass them) or the fitted
    ``estimator``, whose outputs are then computed. Without an estimator, the columns
    of a multiclass ``logits`` are taken to follow ``np.unique(y)``, as scikit-learn's
    ``classes_`` do.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skinfluence.sampling import LogitSampler
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 3)); y = (X[:, 0] + rng.standard_normal(200) > 0).astype(int)
    >>> model = LogisticRegression().fit(X, y)
    >>> sampler = LogitSampler(n_samples=0.1, random_state=0).fit(X, y, estimator=model)
    >>> len(sampler.sample_indices_), float(sampler.sample_weight_.sum())
    (20, 200.0)
    """

    _parameter_constraints: dict = {
        **BaseSampler._parameter_constraints,
        "n_strata": [Interval(numbers.Integral, 1, None, closed="left")],
        "class_quotas": [StrOptions({"proportional", "balanced"})],
    }

    def __init__(self, n_samples=0.1, *, n_strata=10, class_quotas="proportional",
                 random_state=None):
        super().__init__(n_samples, random_state=random_state)
        self.n_strata = n_strata
        self.class_quotas = class_quotas

    def _select(self, X, y, m, estimator, logits, sample_weight, rng):
        classes, classifier = None, True
        if estimator is not None:
            adapter = make_adapter(estimator)
            classes, classifier = adapter.classes_, adapter.is_classifier
            if logits is None:
                logits = adapter.eta(adapter.design(X))
        elif logits is None:
            raise ValueError("LogitSampler needs the model's outputs: "
                             "pass logits= or the fitted estimator=")
        if classifier:
            codes, n_groups = self._class_codes(y, classes)
            binary = logits.shape[1] == 1
            if not binary and logits.shape[1] != n_groups:
                raise ValueError(f"logits has {logits.shape[1]} columns but y has {n_groups} "
                                 "classes; pass the estimator, whose classes_ order the columns")
            if binary and n_groups > 2:
                raise ValueError(f"a single column of logits cannot describe {n_groups} classes")
            if n_groups == 1 and classes is None:
                raise ValueError("y has a single class: a margin needs at least two")
            margin = logit_margin(logits, codes)
        else:
            codes, n_groups = np.zeros(len(y), dtype=np.intp), 1
            margin = logits[:, 0]
        self.margin_ = margin
        self.strata_ = np.full(len(y), -1)
        quotas = self._class_quotas(codes, n_groups, m, self.class_quotas)
        chosen, weights, stratum = [], [], 0
        for k in np.flatnonzero(quotas):
            rows = np.flatnonzero(codes == k)
            rows = rows[np.argsort(margin[rows], kind="stable")]
            strata = np.array_split(rows, min(self.n_strata, quotas[k]))  # equal-count quantiles
            for members, q in zip(strata, allocate(quotas[k], [len(s) for s in strata])):
                self.strata_[members] = stratum
                stratum += 1
                idx, w = stratified_draw(members, q, rng)
                chosen.append(idx)
                weights.append(w)
        return np.concatenate(chosen), np.concatenate(weights)
