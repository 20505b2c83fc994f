"""Averaging the influence of several models of the same data (TRAK's lesson).

A network's influence scores depend on the particular optimum its training found;
averaging the scores of a few models trained from different random seeds (or of
a few checkpoints) removes part of that variance.

With ``store=`` each member's training gradients are computed once into a
:class:`~skinfluence.gradient_store.GradientStore` and every query reads them from there.
TRAK (Park et al. 2023) is the configuration ``store={"projection": k, "curvature":
"projected"}``: random projections of the per-sample gradients, the Gauss–Newton (Fisher)
of the projected gradients as the curvature, and the mean over models.
"""

from __future__ import annotations

import copy
import os
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from ._sklearn_compat import _num_samples, _safe_indexing
from ._utils import MEMORY_ADVICE, check_memory, check_out, parse_bytes, row_blocks
from .estimators import BaseInfluence, TopInfluences

__all__ = ["InfluenceEnsemble"]


class InfluenceEnsemble(BaseEstimator):
    """Mean attribution of several influence estimators fitted on the same data.

    Parameters
    ----------
    influences : list of influence estimators
        E.g. ``[FisherInfluence(net_k, prefit=True, damping=d) for net_k in nets]`` with
        ``nets`` trained from different seeds. Each is fitted on the same ``(X, y)`` by
        :meth:`fit` (a clone, or a deep copy when ``prefit``: the given objects are not
        modified).
    store : dict, default=None
        Keep each member's training gradients in a
        :class:`~skinfluence.gradient_store.GradientStore`, computed once in :meth:`fit`, and
        answer :meth:`attribute` from it. Keys: the store's options (``projection``,
        ``path``: one sub-directory per member, ``memory_budget``, ``dtype``,
        ``block_size``, ``random_state``: member ``m`` projects with ``random_state + m``) and
        the query's ``curvature`` (``"estimator"``: each member's solver; ``"projected"``:
        the Fisher of its projected gradients, TRAK; then the member's own solver is unused,
        so give it a cheap one, e.g. ``solver="ekfac"``) and ``damping`` (of the projected
        Fisher). ``{"projection": 512, "curvature": "projected"}`` is TRAK; for network
        members ``{"projection": (k_out, k_in), ...}`` projects layer by layer without
        forming the per-sample gradients (LoGra), ``"basis": "curvature"`` on the leading
        K-FAC eigenvectors.

    Attributes
    ----------
    influences_ : list of fitted influence estimators
    stores_ : list of GradientStore or None
        The members' stores (with ``store``).
    n_samples_ : int
        Number of training samples.
    n_features_in_ : int
        Number of features seen in :meth:`fit`.
    feature_names_in_ : ndarray of str
        Their names, where ``X`` had string column names.

    Notes
    -----
    Measured in ``benchmarks/attribution_quality.py`` (digits, 50 retrained half-subsets):
    three CNNs trained from different seeds raised the linear datamodeling score of the
    Fisher influence (``damping="auto"``) from 0.554 to 0.579, at the price of training
    the two extra nets; worth it for nets whose optimum depends on their seed, not a
    default.

    Examples
    --------
    >>> from skinfluence import FisherInfluence                               # doctest: +SKIP
    >>> from skinfluence.ensemble import InfluenceEnsemble                     # doctest: +SKIP
    >>> members = [FisherInfluence(net, prefit=True, damping=1e-3) for net in nets]  # doctest: +SKIP
    >>> A = InfluenceEnsemble(members).fit(X, y).attribute(X_test, y_test)     # doctest: +SKIP
    >>> trak = InfluenceEnsemble(members, store={"projection": 512, "curvature": "projected"})  # doctest: +SKIP
    """

    _QUERY_OPTIONS = ("curvature", "damping")
    _STORE_OPTIONS = ("projection", "path", "memory_budget", "dtype", "block_size", "random_state", "basis")

    def __init__(self, influences, store=None):
        self.influences = influences
        self.store = store

    def _check_store(self):
        if self.store is None:
            return None
        if not isinstance(self.store, dict):
            raise TypeError(f"store must be a dict of GradientStore and query options, got {type(self.store).__name__}")
        unknown = sorted(set(self.store) - set(self._QUERY_OPTIONS) - set(self._STORE_OPTIONS))
        if unknown:
            raise ValueError(f"store options {unknown} are unknown; valid: "
                             f"{sorted(self._QUERY_OPTIONS + self._STORE_OPTIONS)}")
        if self.store.get("curvature", "estimator") not in ("estimator", "projected"):
            raise ValueError(f"store['curvature'] must be 'estimator' or 'projected', got {self.store['curvature']!r}")
        if self.store.get("curvature") == "projected" and not self.store.get("projection"):
            raise ValueError("store={'curvature': 'projected'} needs a projection (store['projection'] = k)")
        return dict(self.store)

    def _make_stores(self, options):
        from .gradient_store import GradientStore   # the store imports the estimators package

        kw = {k: v for k, v in options.items() if k in self._STORE_OPTIONS}
        seed, path = kw.pop("random_state", 0), kw.pop("path", None)
        return [GradientStore(m, random_state=seed + k, **kw,
                              path=None if path is None else os.path.join(os.fspath(path), f"member{k}")).fit()
                for k, m in enumerate(self.influences_)]

    def fit(self, X, y, sample_weight=None):
        """Fit every member on ``(X, y)``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        options = self._check_store()
        members = list(self.influences) if isinstance(self.influences, (list, tuple)) else None
        if not members:
            raise ValueError("influences must be a non-empty list of influence estimators")
        for m in members:
            if not isinstance(m, BaseInfluence):
                raise TypeError(f"every member must be an influence estimator (e.g. FisherInfluence), "
                                f"got {type(m).__name__}")
        self.influences_ = [(copy.deepcopy(m) if m.prefit else clone(m)).fit(X, y, sample_weight)
                            for m in members]
        self.stores_ = None if options is None else self._make_stores(options)
        self.n_samples_ = self.influences_[0].n_samples_
        first = self.influences_[0]
        if hasattr(first, "n_features_in_"):
            self.n_features_in_ = first.n_features_in_
        if hasattr(first, "feature_names_in_"):
            self.feature_names_in_ = first.feature_names_in_
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.sparse = True      # as its members (linear models take sparse X)
        return tags

    def _mean(self, name, *args, **kwargs):
        check_is_fitted(self, "influences_")
        return np.mean([getattr(m, name)(*args, **kwargs) for m in self.influences_], axis=0)

    def _mean_attribution(self, X, y):
        """The members' mean ``attribute(X, y)`` matrix, from their stores where kept."""
        if getattr(self, "stores_", None) is None:
            return self._mean("attribute", X, y)
        query = {k: self.store[k] for k in self._QUERY_OPTIONS if k in self.store}
        return np.mean([s.attribute(X, y, **query) for s in self.stores_], axis=0)

    def attribute(self, X, y, *, top_k=None, reduce=None, out=None):
        """Mean over the members of :meth:`skinfluence.BaseInfluence.attribute`.

        The mean is taken over blocks of test rows (sized from the first member's
        ``memory_budget``), so that ``top_k`` and ``out`` never hold the
        ``n_test × n_train`` matrix.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_test, n_features)
            Test rows.
        y : array-like of shape (n_test,)
            Their targets.
        top_k : int, default=None
            Each test point's ``top_k`` most helpful and most harmful training rows by the
            mean score (a :class:`skinfluence.TopInfluences`).
        reduce : {"sum", "mean"} or None, default=None
            Influence on the summed (mean) loss of the test rows: one solve per member.
        out : array-like of shape (n_test, n_train), default=None
            Receives the mean matrix block by block, and is returned.

        Returns
        -------
        A : ndarray of shape (n_test, n_train), ``out``, a ``TopInfluences``, or an ndarray
            of shape (n_train,) with ``reduce``
        """
        check_is_fitted(self, "influences_")
        if sum(option is not None for option in (top_k, reduce, out)) > 1:
            raise ValueError("pass at most one of top_k, reduce and out")
        if reduce is not None and getattr(self, "stores_", None) is None:
            return self._mean("attribute", X, y, reduce=reduce)
        if reduce is not None:
            if reduce not in ("sum", "mean"):
                raise ValueError(f"reduce must be 'sum', 'mean' or None, got {reduce!r}")
            A = self._mean_attribution(X, y)
            return A.sum(axis=0) if reduce == "sum" else A.mean(axis=0)
        n_test, n_train = _num_samples(X), self.n_samples_
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, Integral)
                                  or not 1 <= top_k <= n_train):
            raise ValueError(f"top_k must be an integer from 1 to the {n_train} training rows, got {top_k!r}")
        if out is not None:
            check_out(out, (n_test, n_train))
        if top_k is None and out is None:
            check_memory((n_test, n_train), "the influence matrix", MEMORY_ADVICE)
            out = np.empty((n_test, n_train))
        # a block holds each member's scores and their running sum
        floats = parse_bytes(self.influences_[0].memory_budget) // 8
        rows = max(1, floats // ((len(self.influences_) + 2) * n_train))
        top, positions = [], np.arange(n_train)
        for sl in row_blocks(n_test, rows):
            idx = np.arange(sl.start, sl.stop)
            A = self._mean_attribution(_safe_indexing(X, idx), _safe_indexing(y, idx))
            if top_k is None:
                out[sl] = A
            else:
                top.append(TopInfluences.best(A, positions, top_k))
        if top_k is None:
            return out
        helpful, helpful_idx, harmful, harmful_idx = (np.concatenate(p, axis=0) for p in zip(*top))
        return TopInfluences(helpful_idx, helpful, harmful_idx, harmful)

    def self_influence(self, method="ns"):
        """Mean over the members of :meth:`skinfluence.BaseInfluence.self_influence`.

        Parameters
        ----------
        method : {"ns", "ij"}, default="ns"
            See :meth:`skinfluence.BaseInfluence.self_influence`.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self._mean("self_influence", method=method)
