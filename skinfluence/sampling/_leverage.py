"""Leverage sampling: rows drawn in proportion to their leverage in the curvature."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils import check_random_state

from .._sklearn_compat import Interval
from ..models import make_adapter
from ._base import BaseSampler

__all__ = ["LeverageSampler", "inclusion_probabilities", "systematic_sample"]


def inclusion_probabilities(scores, m):
    """Probabilities ``π_i ∝ scores_i`` with ``Σ π = m`` and ``π_i ≤ 1``.

    Rows whose proportional share exceeds one are taken surely (``π = 1``) and the
    rest of ``m`` is shared among the others, again in proportion to their scores.
    """
    scores = np.asarray(scores, dtype=float)
    pi = np.zeros_like(scores)
    sure = np.zeros(len(scores), bool)
    while True:
        rest = ~sure
        pi[rest] = (m - sure.sum()) * scores[rest] / scores[rest].sum()
        over = rest & (pi >= 1)
        if not over.any():
            break
        sure |= over
        pi[sure] = 1.0
    return np.minimum(pi, 1.0)


def systematic_sample(pi, rng):
    """Indices of a fixed-size sample in which row i is included with probability ``π_i``.

    Systematic sampling in a random order: the rows' probabilities are laid end to end
    on ``[0, Σπ)`` and the points ``u, u + 1, u + 2, …`` (``u`` uniform on [0, 1))
    pick the rows they fall on. Each row is picked at most once (``π_i ≤ 1``) and
    exactly ``Σπ`` rows are picked.
    """
    order = rng.permutation(len(pi))
    edges = np.cumsum(pi[order])
    m = int(round(edges[-1]))
    points = rng.uniform() + np.arange(m)
    hit = np.minimum(np.searchsorted(edges, points, side="left"), len(pi) - 1)
    return np.unique(order[hit])


class LeverageSampler(BaseSampler):
    """Curvature rows drawn in proportion to their statistical leverage.

    The curvature is ``M = Σ_i c_i J_iᵀ W_i J_i + D`` (``D`` the penalty's curvature),
    a Gram matrix ``AᵀA + D`` of the row blocks ``a_i = (c_i W_i)^{1/2} J_i``. The
    leverage of row i, ``τ_i = tr(c_i W_i J_i M⁻¹ J_iᵀ)``, is its share of the
    curvature: rows with large τ carry directions few other rows carry, and sampling
    them in proportion to τ is the classical way to sketch a Gram matrix with few rows
    (Drineas, Mahoney et al.). The sampler estimates τ from a random sketch of the
    parameters: with ``G`` a ``p × r`` Gaussian matrix (``r = sketch_size``), the
    leverage of ``J_i G`` in ``Gᵀ (AᵀA + D + ridge·I) G`` (ridge leverage of the
    sketched rows, which approximates the ridge leverage of the rows themselves; exact
    when ``p ≤ r``, where ``G = I``). It costs ``r`` Jacobian-vector products over the
    data.

    Rows are then drawn without replacement with inclusion probabilities
    ``π_i ∝ (1 − uniform_mix) τ_i / Στ + uniform_mix / n`` (capped at 1, summing to
    ``m``; the uniform part keeps every row possible), by systematic sampling, and
    weighted ``1 / π_i``: the weighted subset curvature is an unbiased
    (Horvitz–Thompson) estimate of the full one, and ``n_samples=n`` takes every row
    with weight 1.

    The scores use the Fisher ``W_i`` (positive semi-definite) even when the sampled
    curvature is a Hessian; the weights keep the estimate unbiased either way.

    Parameters
    ----------
    n_samples : int or float, default=0.1
        Rows to select: a count in ``[1, n]`` or a fraction of the rows in ``(0, 1]``.
    sketch_size : int, default=64
        Columns ``r`` of the Gaussian sketch of the parameters.
    ridge : float, default=0.0
        Added to the sketched curvature besides the penalty's curvature (pass the
        influence estimator's ``damping``). After scaling the sketched curvature to a
        unit diagonal (so that the units of the features do not matter), directions
        whose curvature is below 1e-10 of the largest are left out (a pseudo-inverse).
    uniform_mix : float in [0, 1], default=0.1
        Share of the uniform distribution mixed into the leverage distribution.
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    sample_indices_ : ndarray of int, shape (m,)
    sample_weight_ : ndarray of float, shape (m,)
        ``1 / π_i``.
    leverage_ : ndarray of shape (n,)
        The estimated leverages ``τ_i``.
    inclusion_probability_ : ndarray of shape (n,)
        ``π_i`` of every row.
    n_rows_ : int

    Notes
    -----
    :meth:`fit` needs the fitted ``estimator`` (the influence estimators pass it); its
    ``sample_weight`` scale each row's curvature as in the estimator's objective.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skinfluence.sampling import LeverageSampler
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((300, 3)); y = (X[:, 0] + rng.standard_normal(300) > 0).astype(int)
    >>> model = LogisticRegression().fit(X, y)
    >>> sampler = LeverageSampler(n_samples=30, random_state=0).fit(X, y, estimator=model)
    >>> len(sampler.sample_indices_)
    30
    """

    _parameter_constraints: dict = {
        **BaseSampler._parameter_constraints,
        "sketch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "ridge": [Interval(numbers.Real, 0, None, closed="left")],
        "uniform_mix": [Interval(numbers.Real, 0, 1, closed="both")],
    }

    def __init__(self, n_samples=0.1, *, sketch_size=64, ridge=0.0, uniform_mix=0.1,
                 random_state=None):
        super().__init__(n_samples, random_state=random_state)
        self.sketch_size = sketch_size
        self.ridge = ridge
        self.uniform_mix = uniform_mix

    def _select(self, X, y, m, estimator, logits, sample_weight, rng):
        if estimator is None:
            raise ValueError("LeverageSampler needs the fitted model: pass estimator= "
                             "(the influence estimators do)")
        self.leverage_ = leverage_scores(make_adapter(estimator), X, y, logits, sample_weight,
                                         self.sketch_size, self.ridge, rng)
        n = len(y)
        total = self.leverage_.sum()
        q = np.full(n, 1.0 / n) if total <= 0 else \
            (1 - self.uniform_mix) * self.leverage_ / total + self.uniform_mix / n
        pi = inclusion_probabilities(q, m)
        self.inclusion_probability_ = pi
        idx = systematic_sample(pi, rng)
        return idx, 1.0 / pi[idx]


def leverage_scores(adapter, X, y, logits=None, sample_weight=None, sketch_size=64, ridge=0.0,
                    random_state=None):
    """Approximate ridge leverages ``τ_i`` of the rows in the model's Fisher curvature.

    Parameters
    ----------
    adapter : model adapter (:func:`skinfluence.models.make_adapter`)
    X, y : the training data
    logits : ndarray of shape (n, K), optional
        The model's outputs on ``X`` (computed if not given).
    sample_weight : ndarray of shape (n,), optional
    sketch_size : int
    ridge : float
    random_state : int, RandomState or None

    Returns
    -------
    ndarray of shape (n,)
    """
    rng = check_random_state(random_state)
    Z = adapter.design(X)
    y_enc = adapter.encode_target(y)
    n, p = len(y_enc), adapter.n_params
    eta = adapter.eta(Z) if logits is None else np.asarray(logits, dtype=float).reshape(n, -1)
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    c = adapter.data_weights(y_enc, sw)
    cW = adapter.loss.curvature(y_enc, eta, "fisher") * c[:, None, None]
    if p <= sketch_size:
        G = np.eye(p)
    else:
        G = rng.standard_normal((p, sketch_size)) / np.sqrt(sketch_size)
    P = np.stack([adapter.jvp(Z, G[:, j]) for j in range(G.shape[1])], axis=-1)  # J_i G: (n, K, r)
    WP = np.einsum("nkl,nlr->nkr", cW, P)
    B = P.reshape(-1, P.shape[2]).T @ WP.reshape(-1, P.shape[2])      # Gᵀ Σ c_i J_iᵀW_iJ_i G
    B += (G * adapter.penalty.hessian_diagonal()[:, None]).T @ G + ridge * (G.T @ G)
    # Jacobi scaling first, so that the cutoff is scale-invariant: a column ×1e6 (or a
    # condition number beyond ~1e10 from the units alone) must not lose a real direction
    d = np.sqrt(np.clip(np.diag(B), 0.0, None))
    d[d == 0] = 1.0
    lam, V = np.linalg.eigh((B + B.T) / 2 / np.outer(d, d))
    keep = lam > 1e-10 * max(lam.max(), 1e-300)   # a pseudo-inverse: null directions carry nothing
    PV = (P / d) @ V[:, keep]                             # J_i G in scaled B's eigenbasis
    return np.einsum("nkl,nlr,nkr->n", cW, PV / lam[keep], PV)
