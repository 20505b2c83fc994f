"""Attribution and self-influence streamed over blocks of test and training rows.

The influence matrix ``A[j, i] = fⱼᵀ vᵢ`` (test factor ``fⱼ = M⁻¹ ∇ℓⱼ``, training row's
removal gradient ``vᵢ``) is produced a block at a time: a block of test rows is one solve
(its factors), then scored against consecutive blocks of training rows. What is kept of each
score block is the caller's question:

* ``"full"``: the block itself, written into the result (or ``out=``, any array-like that
  supports ``out[i0:i1, j0:j1] = block``);
* ``"top"``: each test row's ``k`` largest and ``k`` smallest scores, merged block by
  block, so that nothing of size ``n_test × n_train`` ever exists.

A group of test points needs no blocks of test rows at all: the factor of the summed
gradient ``M⁻¹ Σⱼ ∇ℓⱼ`` is one solve, and its scores one vector.

Blocks of test rows are independent: they run through
:func:`skinfluence._parallel.parallel_imap` (joblib, or Dask's joblib backend). The
factors are computed here, once, and sent with their block; the training side is a copy
of the engine without its solver (only ``removal_gradients`` is needed), passed as one
shared argument so that Dask scatters it to the workers once. Where all the training rows'
gradients (``n × p``) fit in a quarter of ``memory_budget`` they are computed once and kept
with it, instead of once per block of test rows. Block sizes come from
:func:`skinfluence._utils.plan_blocks` and the estimator's ``memory_budget``.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd

from .._parallel import parallel_imap
from .._utils import parse_bytes, plan_blocks, row_blocks
from ._updates import influence_factors, scores_from_factors

__all__ = ["TopInfluences", "stream_attribution", "group_scores", "stream_self_influence",
           "training_rows_per_block", "training_gradients"]


class TopInfluences:
    """Each test point's ``k`` most helpful and ``k`` most harmful training rows.

    Returned by ``attribute(X, y, top_k=k)``. Scores are the entries of
    :meth:`~skinfluence.BaseInfluence.attribute`'s matrix: positive ones help the test
    point (removing the row would raise its loss), negative ones harm it.

    Parameters
    ----------
    helpful_indices : ndarray of int, shape (n_test, k)
        Training-row positions, largest score first; equal scores in increasing position.
    helpful_scores : ndarray of shape (n_test, k)
        Their scores.
    harmful_indices : ndarray of int, shape (n_test, k)
        Training-row positions, smallest (most negative) score first; equal scores in
        increasing position.
    harmful_scores : ndarray of shape (n_test, k)
        Their scores.

    Attributes
    ----------
    helpful_indices, helpful_scores, harmful_indices, harmful_scores : ndarray
        As given; unpacking a ``TopInfluences`` yields the four in this order.
    """

    def __init__(self, helpful_indices, helpful_scores, harmful_indices, harmful_scores):
        self.helpful_indices, self.helpful_scores = helpful_indices, helpful_scores
        self.harmful_indices, self.harmful_scores = harmful_indices, harmful_scores

    def __iter__(self):  # helpful_indices, helpful_scores, harmful_indices, harmful_scores = top
        return iter((self.helpful_indices, self.helpful_scores,
                     self.harmful_indices, self.harmful_scores))

    @staticmethod
    def best(scores, positions, k):
        """Each row's ``k`` largest and ``k`` smallest scores, best first (equal scores in
        increasing position).

        Parameters
        ----------
        scores : ndarray of shape (n_test, s)
            Scores of ``s`` training rows.
        positions : ndarray of int, shape (s,) or (n_test, s)
            The training rows' positions, increasing along each row.
        k : int
            How many of each kind to keep.

        Returns
        -------
        tuple of ndarray, each of shape (n_test, min(k, s))
            ``(helpful_scores, helpful_positions, harmful_scores, harmful_positions)``.
        """
        return (*_best(scores, positions, k, 1), *_best(scores, positions, k, -1))

    def __repr__(self):
        n, k = self.helpful_indices.shape
        return f"TopInfluences(n_test={n}, k={k})"

    def to_frame(self, test_index=None, train_labels=None) -> pd.DataFrame:
        """The four arrays as one long table.

        Parameters
        ----------
        test_index : array-like of shape (n_test,), default=None
            Labels of the test points (their positions if None).
        train_labels : array-like of shape (n_train,), default=None
            Labels of the training rows, looked up by position (positions if None).

        Returns
        -------
        DataFrame
            Indexed by (test point, rank), with columns ``helpful``, ``helpful_score``,
            ``harmful``, ``harmful_score``.
        """
        n, k = self.helpful_indices.shape
        test_index = pd.RangeIndex(n) if test_index is None else pd.Index(test_index)
        index = pd.MultiIndex.from_product([test_index, range(k)], names=["test", "rank"])
        label = (lambda i: i.ravel()) if train_labels is None else (
            lambda i: np.asarray(train_labels)[i.ravel()])
        return pd.DataFrame({"helpful": label(self.helpful_indices),
                             "helpful_score": self.helpful_scores.ravel(),
                             "harmful": label(self.harmful_indices),
                             "harmful_score": self.harmful_scores.ravel()}, index=index)


def _tied_columns(scores, v, k, sign):
    """Columns of each row's ``k`` best scores when some equal to the k-th best ``v`` must
    be left out: every better score and the first ``k − #better`` equal to ``v``."""
    better = scores > v if sign > 0 else scores < v
    ties = scores == v
    room = k - better.sum(axis=1)
    r, c = np.nonzero(better | ties)                     # by row, then by position
    tie = ties[r, c]
    seen = np.concatenate([[0], np.cumsum(tie)])         # ties among the candidates so far
    first = np.searchsorted(r, np.arange(len(scores)))   # each row's first candidate
    keep = ~tie | (seen[1:] - seen[first][r] <= room[r])
    return c[keep].reshape(len(scores), k)


def _best(scores, positions, k, sign):
    """Per row, the ``k`` largest (``sign=1``) or smallest (``sign=-1``) ``scores`` and their
    ``positions``, best first, equal scores in increasing position. ``positions`` (of the
    columns, shape (s,) or like ``scores``) must increase along each row.

    ``np.argpartition`` picks k columns per row; it chooses arbitrarily among scores equal
    to the k-th best value ``v``, so the rows where one such score was left out are chosen
    again by position (:func:`_tied_columns`). The answer never depends on the
    partition's internal order.
    """
    t, s = scores.shape
    if s > k:
        kth = s - k if sign > 0 else k - 1
        cols = np.argpartition(scores, kth, axis=1)
        cols = cols[:, kth:] if sign > 0 else cols[:, :k]
        top = np.take_along_axis(scores, cols, 1)
        v = top.min(axis=1, keepdims=True) if sign > 0 else top.max(axis=1, keepdims=True)
        split = (scores == v).sum(axis=1) > (top == v).sum(axis=1)
        if split.any():
            cols[split] = _tied_columns(scores[split], v[split], k, sign)
        scores = np.take_along_axis(scores, cols, axis=1)
        positions = (positions[cols] if positions.ndim == 1
                     else np.take_along_axis(positions, cols, 1))
    elif positions.ndim == 1:
        positions = np.broadcast_to(positions, scores.shape)
    order = np.lexsort((positions, -sign * scores), axis=1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(positions, order, 1)


def merge_top(best, block, rows, k, sign=1):
    """``best = (scores, positions)`` so far merged with the scores ``block`` of training rows
    ``rows`` (all after the positions in ``best``): the block's own best ``k`` first, then
    the ``2k`` candidates in position order."""
    top = _best(block, rows, k, sign)
    if best is None:
        return top
    scores, positions = (np.concatenate(pair, axis=1) for pair in zip(best, top))
    order = np.argsort(positions, axis=1, kind="stable")
    return _best(np.take_along_axis(scores, order, 1), np.take_along_axis(positions, order, 1),
                 k, sign)


class _Scorer:
    """What a worker needs to score blocks of test factors: the engine without its solver
    (training rows' removal gradients, or all of them once computed: ``gradients``), the
    training blocks, and what to keep."""

    def __init__(self, model, train_rows, keep, k, gradients=None):
        self.model = copy.copy(model)
        self.model.solver = self.model.curvature = None   # only removal_gradients is used
        # its own adapter: while joblib pickles this for the workers (in a thread), the parent
        # computes the next block's factors, and torch.func swaps the module's parameters
        self.model.adapter = copy.deepcopy(model.adapter)
        self.train_blocks = row_blocks(model.n, train_rows)
        self.keep, self.k = keep, k
        self.gradients = gradients

    def scores(self, factors):
        """``(block of training rows, factorsᵀ V)`` over the training blocks."""
        for sl in self.train_blocks:
            rows = np.arange(sl.start, sl.stop)
            V = self.model.removal_gradients(rows) if self.gradients is None else self.gradients[sl]
            yield rows, factors @ V.T


def _score_block(scorer, factors):
    """One block of test factors: its full rows, or its top-k helpful and harmful rows."""
    if scorer.keep == "full":
        out = np.empty((len(factors), scorer.model.n))
        for rows, s in scorer.scores(factors):
            out[:, rows[0]:rows[-1] + 1] = s
        return out
    top = bottom = None
    for rows, s in scorer.scores(factors):
        top = merge_top(top, s, rows, scorer.k, 1)
        bottom = merge_top(bottom, s, rows, scorer.k, -1)
    return top[1], top[0], bottom[1], bottom[0]


def _test_gradients(estimator, Z, y_enc, sl):
    ad = estimator.adapter_
    return ad.gradients(Z[sl], ad.loss.gradient(y_enc[sl], ad.eta(Z[sl])))


def _plan(estimator, n_test, keep, n_jobs):
    from joblib import effective_n_jobs

    workers = effective_n_jobs(n_jobs)
    return plan_blocks(estimator.memory_budget, estimator.adapter_.n_params, estimator.n_samples_,
                       n_test, keep=keep, workers=2 * workers if workers > 1 else 1,
                       batch_size=estimator.batch_size)


def training_rows_per_block(estimator):
    """Rows per block of a pass over the training rows alone (leave-one-out, scores)."""
    return _plan(estimator, 1, 0, None).train_rows


def training_gradients(estimator, model, rows):
    """The removal gradients of training rows ``rows`` (len(rows), p), over blocks of rows."""
    out = np.empty((len(rows), estimator.adapter_.n_params))
    for sl in row_blocks(len(rows), training_rows_per_block(estimator)):
        out[sl] = model.removal_gradients(rows[sl])
    return out


def _kept_gradients(estimator, model, n_blocks):
    """All training rows' removal gradients, when more than one block of test rows would
    otherwise recompute them and ``n × p`` fits in a quarter of the memory budget."""
    if n_blocks < 2 or 32 * model.n * estimator.adapter_.n_params > parse_bytes(estimator.memory_budget):
        return None
    return training_gradients(estimator, model, np.arange(model.n))


def stream_attribution(estimator, Z, y_enc, *, top_k=None, out=None):
    """The influence matrix of test rows ``(Z, y_enc)`` (``out`` filled, or a new array), or
    with ``top_k`` a :class:`TopInfluences`; blocks of test rows over ``estimator.n_jobs``
    workers."""
    model, n_test, n_train = estimator.engine_, len(y_enc), estimator.n_samples_
    keep = "full" if top_k is None else "top"
    plan = _plan(estimator, n_test, n_train if keep == "full" else 4 * top_k, estimator.n_jobs)
    blocks = plan.test_blocks(n_test)
    factors = (influence_factors(model, _test_gradients(estimator, Z, y_enc, sl)) for sl in blocks)
    results = parallel_imap(_score_block, factors, estimator.n_jobs, estimator.verbose,
                            "attribution blocks", total=len(blocks),
                            shared=_Scorer(model, plan.train_rows, keep, top_k,
                                           _kept_gradients(estimator, model, len(blocks))))
    if keep == "full":
        out = np.empty((n_test, n_train)) if out is None else out
        for sl in blocks:   # (zip would hold the written block while the next is computed)
            out[sl] = next(results)
        return out
    parts = list(zip(*results))
    return TopInfluences(*(np.concatenate(p, axis=0) for p in parts))


def group_scores(estimator, Z, y_enc):
    """``(Σⱼ M⁻¹ ∇ℓⱼ)ᵀ vᵢ`` for every training row: the summed gradient over blocks of test
    rows (O(p) memory), one solve, one pass over the training rows."""
    model = estimator.engine_
    plan = _plan(estimator, len(y_enc), 0, None)
    total = sum(_test_gradients(estimator, Z, y_enc, sl).sum(axis=0)
                for sl in plan.test_blocks(len(y_enc)))
    factor = influence_factors(model, total)
    return scores_from_factors(model, factor, np.arange(model.n), plan.train_rows)[0]


def _own_block(model, sl):
    """First-order own-loss increase ``∇ℓᵢᵀ M⁻¹ vᵢ`` of the training rows ``sl``: one solve."""
    rows = np.arange(sl.start, sl.stop)
    factors = influence_factors(model, model.adapter.gradients(model.Z[rows], model.g[rows]))
    return np.einsum("bp,bp->b", factors, model.removal_gradients(rows))


def stream_self_influence(estimator):
    """Each training row's first-order self-influence, over blocks of training rows
    (``estimator.n_jobs`` workers; each holds the model with its solver)."""
    model, n = estimator.engine_, estimator.n_samples_
    # a block of b rows holds their gradients, factors and removal gradients: 3 b × p
    plan = _plan(estimator, n, 0, estimator.n_jobs)
    blocks = row_blocks(n, min(plan.test_rows, plan.train_rows))
    shared = copy.copy(model)
    shared.curvature = None
    parts = parallel_imap(_own_block, blocks, estimator.n_jobs, estimator.verbose,
                          "self-influence blocks", total=len(blocks), shared=shared)
    return np.concatenate(list(parts))
