"""Ridge over a grid of alphas: every split's exact answer from alpha-independent Grams.

Ridge minimises ``Σ s_i (y_i − x_iᵀw − b)² + α‖w‖²``. In the design centred at the
weighted mean ``x̄`` (``z_i = [x_i − x̄, 1]``, which reparametrises the unpenalised
intercept and changes no prediction) its curvature is ``M_α = G + αD`` with the data
Gram ``G = Σ s_i z_i z_iᵀ`` and ``D = diag(1, …, 1, 0)``: only α changes between
candidates, so what depends on the data is computed once for the whole grid (as
:class:`~sklearn.linear_model.RidgeCV` does):

* leave-one-out: the eigendecomposition ``X̃ᵀSX̃ = V Λ Vᵀ`` of the centred data gives,
  for every α in O(np), the leverages ``h_i = 1/Σs + Σ_k (X̃V)²_ik / (λ_k + α)`` and the
  fitted values, hence ``η_{-i} = y_i − r_i / (1 − s_i h_i)``;
* a removal set R (a fold): ``G − G_R`` and ``Zᵀs y − Z_Rᵀs_R y_R`` once per set, then per
  α one Cholesky solve of size p.

Both are exact (the objective is quadratic), so they equal the engine's Newton step,
which refits and factorises ``M_α`` for every candidate.
"""

from __future__ import annotations

from numbers import Real

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.linear_model import Ridge

from ..models import make_adapter
from ..refit import fit_weighted

__all__ = ["RidgePath"]


class RidgePath:
    """Exact held-out outputs of ``Ridge(alpha)`` for any alpha, sharing the data's Grams.

    Parameters
    ----------
    estimator : Ridge
        The unfitted search base (its other parameters are held fixed).
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,)
    sample_weight : ndarray of shape (n,) or None
    """

    def __init__(self, estimator, X, y, sample_weight=None):
        self.estimator = estimator
        self.X = np.asarray(X, dtype=float)
        self.y = np.asarray(y, dtype=float)
        n, d = self.X.shape
        self.s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        self.intercept = bool(estimator.fit_intercept)
        self.mean = self.s @ self.X / self.s.sum() if self.intercept else np.zeros(d)
        Xc = self.X - self.mean
        self.Z = np.hstack([Xc, np.ones((n, 1))]) if self.intercept else Xc
        self.D = np.r_[np.ones(d), np.zeros(int(self.intercept))]
        Zs = self.Z * self.s[:, None]
        self.G, self.b = self.Z.T @ Zs, Zs.T @ self.y
        self._removed = {}  # removal set -> (G without it, b without it)
        self._eigen = None
        self._adapter = None

    @staticmethod
    def applies(estimator, X, y, candidates_vary, method, damping):
        """Whether the search's candidates can share the path: a plain dense ``Ridge`` with
        one scalar alpha per candidate (``candidates_vary``: the parameter names the
        candidates set), one target, exact Newton steps (``method="ns"``), no damping."""
        return (type(estimator) is Ridge and not estimator.positive and not sp.issparse(X)
                and np.ndim(estimator.alpha) == 0 and np.ndim(y) == 1 and method == "ns"
                and damping == 0 and set(candidates_vary) <= {"alpha"})

    # ------------------------------------------------------------------ helpers
    def _theta(self, G, b, alpha):
        """Parameters in the centred design (``[w, b + x̄ᵀw]``)."""
        return la.solve(G + np.diag(alpha * self.D), b, assume_a="pos")

    def _to_adapter(self, theta):
        """Centred parameters to the adapter's layout ``[w, b]``."""
        if not self.intercept:
            return theta
        w = theta[:-1]
        return np.r_[w, theta[-1] - self.mean @ w]

    def at(self, alpha):
        """The split oracle at ``alpha`` (what :func:`split_scores` reads of an influence)."""
        if not (isinstance(alpha, Real) and alpha >= 0):
            raise ValueError(f"alpha must be a non-negative number, got {alpha!r}")
        if self._adapter is None:  # one fit, only for the adapter (layout, scoring)
            self._adapter = make_adapter(fit_weighted(clone(self.estimator), self.X, self.y, self.s))
        return _RidgeAt(self, float(alpha))

    def removed(self, idx):
        """``(G − G_R, b − b_R)`` of the removal set ``idx`` (cached per set)."""
        key = np.sort(idx).tobytes()
        if key not in self._removed:
            Zr = self.Z[idx]
            Zrs = Zr * self.s[idx, None]
            self._removed[key] = (self.G - Zr.T @ Zrs, self.b - Zrs.T @ self.y[idx])
        return self._removed[key]

    def eigen(self):
        """``(Λ, X̃V, (X̃V)ᵀS y)`` of the centred data, computed once."""
        if self._eigen is None:
            d = self.X.shape[1]
            lam, V = np.linalg.eigh(self.G[:d, :d])
            Q = self.Z[:, :d] @ V
            self._eigen = (lam, Q, Q.T @ (self.s * self.y))
        return self._eigen


class _RidgeAt:
    """The exact split answers of ``Ridge(alpha)``: a fitted influence estimator's public
    attributes (``adapter_``, ``y_encoded_``, ``n_samples_``, ``loo_decision``) whose engine
    (``engine_``, itself) answers removals exactly, with the engine's methods
    (``removal_step``, ``removal_outputs``, ``cv_decision``)."""

    def __init__(self, path, alpha):
        self.path, self.alpha = path, alpha
        self.theta_c = path._theta(path.G, path.b, alpha)
        self.adapter_ = make_adapter(path._adapter.with_params(path._to_adapter(self.theta_c)))
        self.y_encoded_ = path.y
        self.n_samples_ = len(path.y)
        self.engine_ = self

    def check_indices(self, indices):
        return np.asarray(indices)

    def check_removal(self, idx):
        if len(idx) >= self.n_samples_:
            raise ValueError("cannot remove every training sample")

    def loo_decision(self, method="ns"):
        """``η_{-i}(x_i)`` for every row, from the eigendecomposition, shape (n, 1)."""
        p = self.path
        lam, Q, Qsy = p.eigen()
        inv = 1.0 / (lam + self.alpha)
        h = (Q ** 2) @ inv
        fitted = Q @ (inv * Qsy)
        if p.intercept:
            h += 1.0 / p.s.sum()
            fitted += p.s @ p.y / p.s.sum()
        r = p.y - fitted
        return (p.y - r / (1.0 - p.s * h))[:, None]

    def removal_step(self, idx, method="ns"):
        """Exact change of the parameters (adapter layout) when rows ``idx`` are removed."""
        p = self.path
        theta = p._theta(*p.removed(np.asarray(idx)), self.alpha)
        return p._to_adapter(theta) - p._to_adapter(self.theta_c)

    def removal_outputs(self, removed, rows, method="ns"):
        """Outputs on training rows ``rows`` of the exact model without rows ``removed``,
        shape (len(rows), 1)."""
        p = self.path
        theta = p._theta(*p.removed(np.asarray(removed)), self.alpha)
        return (p.Z[np.asarray(rows)] @ theta)[:, None]

    def cv_decision(self, test_folds, method="ns"):
        """Held-out outputs of each fold's exact model, shape (n, 1)."""
        out = np.full((len(self.path.y), 1), np.nan)
        for test in test_folds:
            test = np.asarray(test)
            out[test] = self.removal_outputs(test, test, method)
        return out
