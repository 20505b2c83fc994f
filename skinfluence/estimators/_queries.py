"""The public questions a fitted influence estimator answers, each a few lines over the engine.

Attribution is a solve per test point (:meth:`InfluenceQueries.influence_factors`) and a
product per block of training rows (:meth:`InfluenceQueries.influences_from_factors`);
leave-one-out, folds and removals are :mod:`._updates`; several Newton steps are
:mod:`._changes`. With ``as_frame=True`` results are pandas objects indexed like the
inputs (training rows as columns, test rows as the index).

**Rows: positions or labels.** Training rows are named by their *positions* (0 to n − 1)
in arrays, lists and masks, and by their *labels* in pandas objects: a ``pandas.Index``
(e.g. ``inf.self_influence(as_frame=True).nlargest(5).index``) holds labels of the
training ``X``'s index, and a boolean Series is aligned on it, so that what a frame shows
is what :meth:`~InfluenceQueries.unlearn` removes.
"""

from __future__ import annotations

import functools
import threading
import warnings
from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_consistent_length, check_is_fitted, validate_data

from ..exceptions import InfluenceWarning
from .._utils import MEMORY_ADVICE, check_memory, check_method, check_out, check_target
from . import _streaming, _updates
from ._changes import iterate_change

__all__ = ["InfluenceQueries"]

#: options that may change after fit: how queries run, and ``damping`` (re-solved from what
#: fit kept, without refitting)
RUNTIME_OPTIONS = frozenset({"n_jobs", "verbose", "memory_budget", "batch_size", "damping"})
_AS_FITTED = threading.RLock()


def as_fitted(method):
    """Run ``method`` with the parameters :meth:`fit` saw: a query that rebuilds the model
    (several Newton steps, GIF's selection, a torch Fisher) must not pick up a later
    ``set_params``. The user's values are put back afterwards (threads take turns)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        fitted = getattr(self, "_fit_params", None)
        if fitted is None:
            return method(self, *args, **kwargs)
        with _AS_FITTED:
            now = self.get_params(deep=False)
            changed = {k: v for k, v in fitted.items()
                       if k not in RUNTIME_OPTIONS and now.get(k, v) is not v}
            try:
                vars(self).update(changed)
                return method(self, *args, **kwargs)
            finally:
                vars(self).update({k: now[k] for k in changed})
    return run


class InfluenceQueries:
    """Mixin of :class:`~skinfluence.BaseInfluence`: the queries (see the module docstring)."""

    # --------------------------------------------------------------- plumbing
    def _fitted(self):
        check_is_fitted(self, "engine_")
        self._sync_damping()
        return self.engine_

    def _sync_damping(self):
        """Nothing here; estimators that can re-damp without refitting override this."""

    def _design(self, X):
        Z = self.adapter_.design(X)
        validate_data(self, X, reset=False, skip_check_array=True)  # the feature names seen in fit
        return Z

    def _train_labels(self):
        return self._train_index if self._train_index is not None else pd.RangeIndex(self.n_samples_)

    def _positions(self, indices):
        """Training-row positions of ``indices``: positions or a mask as given (arrays, lists),
        or the labels of a ``pandas.Index`` / the entries of a boolean ``Series`` looked up in
        the training index (see the module docstring)."""
        if isinstance(indices, pd.DataFrame):
            raise TypeError("indices must be row positions, a boolean mask, or a pandas Index of "
                            "training labels, not a DataFrame")
        if not isinstance(indices, (pd.Index, pd.Series)):
            return indices
        labels = self._train_labels()
        if isinstance(indices, pd.Series):
            if indices.dtype != bool:
                raise TypeError("a Series is ambiguous as rows: pass its .index (training labels) "
                                "or a boolean Series (a mask aligned on the training index)")
            if not indices.index.equals(labels):
                if not indices.index.sort_values().equals(labels.sort_values()):
                    raise ValueError("a boolean Series must be indexed like the training X")
                indices = indices.reindex(labels)
            return indices.to_numpy()
        if not labels.is_unique:
            raise ValueError("the training X's index has duplicate labels, so a pandas Index cannot "
                             "name rows: pass row positions (a numpy array) instead")
        pos = labels.get_indexer(indices)
        if (pos < 0).any():
            raise KeyError(f"labels {list(indices[pos < 0][:5])} are not in the training X's index "
                           "(a pandas Index names rows by label; pass a numpy array for positions)")
        return pos

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Names of :meth:`transform`'s columns: one per training row.

        Parameters
        ----------
        input_features : ignored
            Present for scikit-learn's API.

        Returns
        -------
        ndarray of str, shape (n_train,)
            ``"train_<label>"`` with the training row's index label (its position for
            arrays), so that ``set_output(transform="pandas")`` names the columns.
        """
        check_is_fitted(self, "curvature_solver_")
        return np.asarray([f"train_{label}" for label in self._train_labels()], dtype=object)

    def _frame(self, values, test=None):
        """``values`` (n_test, n_train) as a DataFrame: test rows by ``test``'s index."""
        index = test.index if isinstance(test, (pd.DataFrame, pd.Series)) else None
        return pd.DataFrame(values, index=index, columns=self._train_labels())

    # ------------------------------------------------------------ attribution
    def parameter_gradients(self, X, output_gradients) -> np.ndarray:
        """Parameter gradients ``J_iᵀ G_i`` of a quantity given by its η-gradients on ``X``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (m, n_features)
            Rows at which the quantity is evaluated.
        output_gradients : ndarray of shape (m,) or (m, K)
            Derivative of the quantity with respect to each row's natural-scale output
            (e.g. ``∂ℓ/∂η`` for the loss, ``dμ/dη / m`` for a mean prediction).

        Returns
        -------
        ndarray of shape (m, n_params)
        """
        self._fitted()
        G = np.asarray(output_gradients, dtype=float)
        return self.adapter_.gradients(self._design(X), G.reshape(len(G), -1))

    def influence_factors(self, X, y) -> np.ndarray:
        """Factors ``M⁻¹ ∇ℓ(x_j, y_j)`` of test points, one solve each.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (m, n_features)
            Test rows.
        y : array-like of shape (m,)
            Their targets.

        Returns
        -------
        ndarray of shape (m, n_params)
            Scores follow by :meth:`influences_from_factors` over any block of training
            rows; :meth:`attribute` is the two in turn.
        """
        model = self._fitted()
        Z = self._design(X)
        y_enc = self.adapter_.encode_target(check_target(y, "influence_factors"))
        check_consistent_length(Z, y_enc)
        g = self.adapter_.loss.gradient(y_enc, self.adapter_.eta(Z))
        return _updates.influence_factors(model, self.adapter_.gradients(Z, g))

    def training_gradients(self, indices=None) -> np.ndarray:
        """Per-row training gradients ``v_i = c_i ∇ℓ_i + s_i ∇π``: the first-order change of
        the fitted objective's gradient when row ``i`` is removed (``c_i`` the row's data
        weight, ``s_i`` its share of a mean-scaled penalty ``π``, zero otherwise).

        Computed over blocks of rows sized from ``memory_budget``.

        Parameters
        ----------
        indices : array-like of int or bool mask, default=None
            Training rows (all by default).

        Returns
        -------
        ndarray of shape (len(indices), n_params)

        Raises
        ------
        MemoryError
            If the ``len(indices) × n_params`` result would not fit in memory.
        """
        model = self._fitted()
        rows = np.arange(self.n_samples_) if indices is None else model.check_indices(indices)
        check_memory((len(rows), self.adapter_.n_params), "the training gradients",
                     "ask for fewer rows at a time (indices=) or score them against test "
                     "factors with influences_from_factors, which streams blocks of rows")
        return _streaming.training_gradients(self, model, rows)

    def influences_from_factors(self, factors, indices=None) -> np.ndarray:
        """Scores ``factorsᵀ v_i`` of training rows: the first-order change of each factor's
        quantity when row ``i`` is removed.

        Parameters
        ----------
        factors : ndarray of shape (m, n_params)
            From :meth:`influence_factors`.
        indices : array-like of int or bool mask, default=None
            Training rows to score (all by default).

        Returns
        -------
        ndarray of shape (m, len(indices))
        """
        model = self._fitted()
        rows = (np.arange(self.n_samples_) if indices is None
                else model.check_indices(self._positions(indices)))
        check_memory((np.atleast_2d(factors).shape[0], len(rows)), "the influence matrix",
                     MEMORY_ADVICE)
        return _updates.scores_from_factors(model, np.atleast_2d(factors), rows, self.batch_size)

    def removal_effect(self, gradients) -> np.ndarray:
        """First-order change of quantities with parameter gradients ``∇f`` when each
        training row is removed: ``∇fᵀ M⁻¹ v_i``.

        Parameters
        ----------
        gradients : ndarray of shape (n_params,) or (m, n_params)
            See :meth:`parameter_gradients`.

        Returns
        -------
        ndarray of shape (n_train,) or (m, n_train)
            Quantity after removing training row i minus now.
        """
        model = self._fitted()
        grads = np.asarray(gradients, dtype=float)
        check_memory((np.atleast_2d(grads).shape[0], self.n_samples_), "the influence matrix",
                     MEMORY_ADVICE)
        out = self.influences_from_factors(_updates.influence_factors(model, grads))
        return out[0] if grads.ndim == 1 else out

    def attribute(self, X, y, *, top_k=None, reduce=None, out=None, as_frame=False):
        """Influence of each training row on the loss of each test point.

        Computed over blocks of test rows (one solve per block) and training rows
        (scores), sized from ``memory_budget`` and run over ``n_jobs`` workers; the
        ``n_test × n_train`` matrix exists only when it is what is asked for.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_test, n_features)
            Test rows.
        y : array-like of shape (n_test,)
            Their targets.
        top_k : int, default=None
            Return only each test point's ``top_k`` most helpful and ``top_k`` most harmful
            training rows (a ``TopInfluences``: ``helpful_indices``, ``helpful_scores``,
            ``harmful_indices``, ``harmful_scores``, each (n_test, top_k)), merged block
            by block: memory ``O(n_test · top_k)`` beyond the blocks.
        reduce : {"sum", "mean"}, default=None
            Return the influence of each training row on the summed (or mean) loss of the
            test points, shape (n_train,): one solve of the summed gradient, ``O(p)``
            memory beyond the blocks of training rows.
        out : array-like of shape (n_test, n_train), default=None
            Receives the full matrix block by block (``out[i0:i1] = block``): a
            ``numpy.memmap``, a zarr array, or any array-like supporting slice assignment.
            It is returned.
        as_frame : bool, default=False
            Return a DataFrame indexed like ``X`` (columns: the training rows; with
            ``top_k`` a long frame indexed by (test row, rank); with ``reduce`` a Series
            indexed like the training rows).

        Returns
        -------
        A : ndarray, DataFrame, TopInfluences, Series or ``out``
            ``A[j, i]`` ≈ loss of test point j after removing training row i, minus its
            loss now (first order). Positive: training row i helps test point j.

        Examples
        --------
        >>> from sklearn.datasets import make_classification
        >>> from sklearn.linear_model import LogisticRegression
        >>> from skinfluence import FisherInfluence
        >>> X, y = make_classification(300, 5, random_state=0)
        >>> inf = FisherInfluence(LogisticRegression(tol=1e-10)).fit(X, y)
        >>> top = inf.attribute(X[:4], y[:4], top_k=3)
        >>> top.helpful_indices.shape, inf.attribute(X[:4], y[:4], reduce="sum").shape
        ((4, 3), (300,))
        """
        self._fitted()
        if sum(option is not None for option in (top_k, reduce, out)) > 1:
            raise ValueError("pass at most one of top_k, reduce and out")
        Z = self._design(X)
        y_enc = self.adapter_.encode_target(check_target(y, "attribute"))
        check_consistent_length(Z, y_enc)
        n_test, n_train = len(y_enc), self.n_samples_
        if reduce is not None:
            if reduce not in ("sum", "mean"):
                raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
            r = _streaming.group_scores(self, Z, y_enc) / (n_test if reduce == "mean" else 1)
            if as_frame:
                return pd.Series(r, index=self._train_labels(), name=f"influence_{reduce}")
            return r
        if top_k is not None:
            if (isinstance(top_k, bool) or not isinstance(top_k, Integral)
                    or not 1 <= top_k <= n_train):
                raise ValueError(f"top_k must be an integer from 1 to the {n_train} training rows, "
                                 f"got {top_k!r}")
            top = _streaming.stream_attribution(self, Z, y_enc, top_k=int(top_k))
            if not as_frame:
                return top
            index = X.index if isinstance(X, (pd.DataFrame, pd.Series)) else None
            return top.to_frame(index, self._train_labels())
        if out is not None:
            check_out(out, (n_test, n_train))
            return _streaming.stream_attribution(self, Z, y_enc, out=out)
        check_memory((n_test, n_train), "the influence matrix", MEMORY_ADVICE)
        A = _streaming.stream_attribution(self, Z, y_enc)
        return self._frame(A, X) if as_frame else A

    def transform(self, X) -> np.ndarray:
        """Change of the decision function for ``X`` when each training row is removed.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_samples, n_features)

        Returns
        -------
        T : ndarray of shape (n_samples, n_train)
            First-order change of the linear predictor (binary and regression) or of the
            predicted class's logit (multiclass). ``set_output(transform="pandas")`` gives
            a DataFrame whose columns are :meth:`get_feature_names_out`.
        """
        self._fitted()
        ad = self.adapter_
        Z = self._design(X)
        J = ad.jacobians(Z)                                  # (m, K, p)
        J = J[np.arange(len(J)), ad.eta(Z).argmax(axis=1)] if ad.n_outputs > 1 else J[:, 0]
        return self.removal_effect(J)

    # ---------------------------------------------------------- leave-one-out
    def loo_decision(self, method="ns", *, return_error=False, refine=None):
        """Approximate leave-one-out natural-scale outputs ``η_{-i}(x_i)``.

        Parameters
        ----------
        method : {"ns", "ij"}, default="ns"
            Newton step with the leave-one-out curvature, or infinitesimal jackknife.
        return_error : bool, default=False
            Also return each row's estimated error (see :meth:`approx_loocv`).
        refine : int or float, default=None
            Converge this many rows (a fraction of the rows if a float in (0, 1)) exactly:
            those with the largest estimated error (see :meth:`approx_loocv`).

        Returns
        -------
        ndarray of shape (n_samples, K)
            NaN (with a warning) where no leave-one-out model exists: leverage-1 rows, the
            only row of a class.
        error : ndarray of shape (n_samples,)
            With ``return_error``: the estimated error ``‖η̂_{-i} − η_{-i}‖`` of each row.
        """
        engine = self._fitted()
        self._warn_frozen_weights("leave-one-out")
        eta = engine.loo_decision(check_method(method), _streaming.training_rows_per_block(self))
        if not (return_error or refine):
            return eta
        eta, error = self._loo_refine(eta, method, refine)
        return (eta, error) if return_error else eta

    def _warn_frozen_weights(self, what):
        if self.adapter_.data_dependent_weights:
            warnings.warn(f"class_weight='balanced': the {what} answers keep the full data's class "
                          "weights, while a refit re-derives them from the remaining rows (an error of "
                          "the order of the change itself for small classes); unlearn(), relabel() and "
                          "cv_decision() (K-fold) re-derive them, or pass explicit "
                          "class_weight={class: weight}",
                          InfluenceWarning, stacklevel=3)

    def approx_loocv(self, method="ns", response_method="predict", *, return_error=False,
                     refine=None):
        """Approximate leave-one-out predictions of every training row, from one fit.

        Parameters
        ----------
        method : {"ns", "ij"}, default="ns"
            Newton step with the leave-one-out curvature, or infinitesimal jackknife.
        response_method : {"predict", "predict_proba", "predict_log_proba", "decision_function"}
            The estimator method whose leave-one-out output is returned.
        return_error : bool, default=False
            Also return the estimated error of each row's leave-one-out natural-scale
            output ``η_{-i}(x_i)`` (the linear predictor or logits; Euclidean norm over
            classes): the next Newton step on each leave-one-out objective after the
            one-step answer, from that objective's gradient there (summed over all rows,
            or a uniform sample of ``ERROR_MAX_ROWS`` = 4,096 beyond): for a linear model
            in blocks of rows at the cost of two products with the design per block, for
            a network one forward and one backward pass per row. With ``"ij"`` the gap
            between the ``"ij"`` and ``"ns"`` answers is added.
            Refined rows have error 0. Calibration against exact refits: user guide,
            *Diagnostics and error estimates*.
        refine : int or float, default=None
            Converge the rows with the largest estimated error exactly (Newton to
            convergence on the leave-one-out objective, as ``unlearn(steps="converge")``):
            this many rows, or this fraction of them for a float in (0, 1). The rows a
            user inspects (the most influential, the worst fitted) are the ones whose
            one-step answer errs most, so they become exact and the rest stay cheap.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes)
            What ``cross_val_predict(estimator, X, y, cv=LeaveOneOut(),
            method=response_method)`` returns.
        error : ndarray of shape (n_samples,)
            With ``return_error``. Also in ``loo_info_`` (with the refined rows).
        """
        out = self.loo_decision(method, return_error=return_error, refine=refine)
        if return_error:
            return self.adapter_.response(out[0], response_method), out[1]
        return self.adapter_.response(out, response_method)

    def self_influence(self, method="ns", *, as_frame=False):
        """Each training row's own leave-one-out loss increase.

        Parameters
        ----------
        method : {"ns", "ij"}, default="ns"
            ``"ns"``: the loss at the approximate leave-one-out output; ``"ij"``: the first
            order value (the diagonal of :meth:`attribute` on the training set).
        as_frame : bool, default=False
            Return a Series indexed like the training ``X``.

        Returns
        -------
        ndarray or Series of shape (n_samples,)
            Large values: rows the model fits only because it saw them (outliers,
            mislabelled rows).

        Notes
        -----
        Computed over blocks of training rows sized from ``memory_budget``; ``"ij"`` is one
        solve per block, run over ``n_jobs`` workers with a progress bar when ``verbose``.
        """
        model = self._fitted()
        if check_method(method) == "ij":
            out = _streaming.stream_self_influence(self)
        else:
            loss = self.adapter_.loss
            out = loss.loss(model.y, self.loo_decision("ns")) - loss.loss(model.y, model.eta)
        return pd.Series(out, index=self._train_labels(), name="self_influence") if as_frame else out

    def cv_decision(self, test_folds, method="ns") -> np.ndarray:
        """Approximate held-out natural-scale outputs of each fold's model on its rows.

        Parameters
        ----------
        test_folds : iterable of array-like of int
            The rows each fold removes and predicts.
        method : {"ns", "ij"}, default="ns"

        Returns
        -------
        ndarray of shape (n_samples, K)
            Rows in no fold are NaN; a row in several keeps its last.

        Notes
        -----
        With ``class_weight="balanced"`` each fold's step is Newton's step on that fold's
        objective, whose class weights are re-derived from the remaining rows (one
        factorisation per fold), as the refit would.
        """
        model = self._fitted()
        if not self.adapter_.data_dependent_weights:
            return model.cv_decision(test_folds, check_method(method))
        return self._changed_cv(model, test_folds, method)

    @as_fitted
    def _changed_cv(self, model, test_folds, method):
        out, ad = np.full_like(model.eta, np.nan), self.adapter_
        for fold in test_folds:
            idx = model.check_indices(fold)
            model.check_removal(idx)
            sw = self.sample_weight_.copy()
            sw[idx] = 0.0
            out[idx] = ad.eta(model.Z[idx], ad.theta + self._changed_step((model.y, sw), method))
        return out

    # --------------------------------------------------------------- removals
    @as_fitted
    def parameter_change(self, indices, method="ns", steps=1) -> np.ndarray:
        """Change of the parameter vector when training rows ``indices`` are removed.

        Parameters
        ----------
        indices : array-like of int or bool mask, or pandas Index
            Training rows to remove: positions, a mask, or the training ``X``'s index labels
            (a ``pandas.Index``, as the ``as_frame=True`` outputs show).
        method : {"ns", "ij"}, default="ns"
            First step with the curvature without those rows, or with the full one.
        steps : int or "converge", default=1
            Newton steps on the objective without those rows (each rebuilds the curvature
            at the current parameters and is line-searched; proximal for ℓ1). One step is
            the influence approximation; ``"converge"`` iterates to the exact optimum
            (relative step 1e-12), which for a GLM costs one Gram matrix and one
            factorisation per step. ``update_info_`` reports the steps taken and how far
            the first was from the last.

        Returns
        -------
        ndarray of shape (n_params,)
        """
        return self._iterate(*self._removal(indices, method), steps)

    def _removal(self, indices, method):
        """The first step of removing ``indices``, and the changed ``(targets, weights)``."""
        model = self._fitted()
        idx = model.check_indices(self._positions(indices))
        model.check_removal(idx)
        sw = self.sample_weight_.copy()
        sw[idx] = 0.0
        if self.adapter_.data_dependent_weights:
            return self._changed_step((model.y, sw), method), (model.y, sw)
        return model.removal_step(idx, check_method(method)), (model.y, sw)

    def _changed_step(self, target, method):
        """The first step when the change moves every row's weight (balanced class weights
        re-derived on the remaining rows): Newton's step on the changed objective, with its
        own curvature ("ns") or the fitted one ("ij")."""
        model = self._fitted()
        if check_method(method) == "ij" and self.adapter_.penalty.is_smooth:
            return -model.solver.solve(model.objective_gradient(*target))
        return -model.with_target(*target).newton_step()

    @as_fitted
    def unlearn(self, indices, method="ns", steps=1):
        """The model as if training rows ``indices`` had not been in the training data.

        Parameters
        ----------
        indices : array-like of int or bool mask, or pandas Index
            Training rows to remove: positions, a mask, or the training ``X``'s index labels
            (a ``pandas.Index``, as the ``as_frame=True`` outputs show).
        method : {"ns", "ij"}, default="ns"
            See :meth:`parameter_change`.
        steps : int or "converge", default=1
            See :meth:`parameter_change`. A single step that leaves over 10% of the
            changed objective's Newton decrement warns.

        Returns
        -------
        estimator
            A new fitted estimator of the user's type; ``estimator_`` is unchanged.
        """
        delta = self._iterate(*self._removal(indices, method), steps, check=True)
        return self.adapter_.with_params(self.adapter_.theta + delta)

    @as_fitted
    def relabel(self, indices, y_new, method="ns", steps=1):
        """The model as if training rows ``indices`` had targets ``y_new``.

        Parameters
        ----------
        indices : array-like of int or bool mask, or pandas Index
            Training rows to relabel: positions, a mask, or index labels (see :meth:`unlearn`).
        y_new : array-like of shape (len(indices),) or scalar
            Their new labels (classes the model knows) or targets.
        method : {"ns", "ij"}, default="ns"
            See :meth:`parameter_change`.
        steps : int or "converge", default=1
            See :meth:`parameter_change`; one Newton step is a poor model of a confidently
            misclassified logistic loss, ``"converge"`` gives the refit's answer.

        Returns
        -------
        estimator
            A new fitted estimator of the user's type.
        """
        model = self._fitted()
        idx = model.check_indices(self._positions(indices))
        ad = self.adapter_
        y_new = check_target(y_new, "relabel") if np.ndim(y_new) else np.asarray(y_new)
        if y_new.ndim and y_new.shape != idx.shape:
            raise ValueError(f"y_new has {len(y_new)} labels for {len(idx)} indices")
        y_new = ad.encode_target(np.broadcast_to(y_new, idx.shape))
        y = model.y.copy()
        y[idx] = y_new
        if ad.data_dependent_weights:
            target = (y, self.sample_weight_)
            return ad.with_params(ad.theta + self._iterate(self._changed_step(target, method), target,
                                                           steps, True))
        eta = model.eta[idx]
        g_new = ad.loss.gradient(y_new, eta)
        W_new = ad.output_curvature(y_new, eta, model.kind)
        delta = model.change_step(idx, model.g[idx] - g_new, model.W[idx] - W_new, 0.0,
                                  check_method(method))
        return ad.with_params(ad.theta + self._iterate(delta, (y, self.sample_weight_), steps, True))

    def _iterate(self, delta, target, steps, check=False):
        delta, self.update_info_ = iterate_change(self._fitted(), delta, target, steps, check)
        return delta
