"""The baseline: rows drawn uniformly at random."""

from __future__ import annotations

import numpy as np

from ._base import BaseSampler, stratified_draw

__all__ = ["RandomSampler"]


class RandomSampler(BaseSampler):
    """Curvature rows drawn uniformly at random, without replacement.

    Each of the ``m`` rows drawn from ``n`` gets the weight ``n / m``, so that the
    weighted subset curvature is an unbiased estimate of the full one. This is the
    baseline of the advanced-sampling paper (Koh et al.), whose point is that such
    subsets give influence estimates that vary from draw to draw.

    Parameters
    ----------
    n_samples : int or float, default=0.1
        Rows to select: a count in ``[1, n]`` or a fraction of the rows in ``(0, 1]``.
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    sample_indices_ : ndarray of int, shape (m,)
        The selected rows, ascending.
    sample_weight_ : ndarray of float, shape (m,)
        ``n / m`` for every selected row.
    n_rows_ : int

    See Also
    --------
    LogitSampler, FeatureSampler, LeverageSampler

    Examples
    --------
    >>> import numpy as np
    >>> from skinfluence.sampling import RandomSampler
    >>> X, y = np.arange(20.0).reshape(10, 2), np.arange(10) % 2
    >>> sampler = RandomSampler(n_samples=4, random_state=0).fit(X, y)
    >>> sampler.sample_weight_
    array([2.5, 2.5, 2.5, 2.5])
    >>> X_sub, y_sub = sampler.fit_resample(X, y)
    >>> X_sub.shape
    (4, 2)
    """

    def _select(self, X, y, m, estimator, logits, sample_weight, rng):
        return stratified_draw(np.arange(len(y)), m, rng)
