"""A store of per-sample training gradients, computed once and reused by every query.

Attribution scores a test point ``j`` against training row ``i`` as ``f_jᵀ v_i`` (test factor
``f_j = M⁻¹ ∇ℓ_j``, removal gradient ``v_i``). An influence estimator recomputes every
``v_i`` for each block of test rows; :class:`GradientStore` computes them once:

* kept in memory while they fit ``memory_budget``, else in a ``numpy.memmap`` under
  ``path`` (float32 by default);
* optionally as random projections of size ``k`` (TRAK, Park et al. 2023; LoGra):
  ``φ_i = P v_i`` with ``P`` a ``k × p`` Gaussian matrix scaled by ``1/√k``, so that
  ``E[Pᵀ P] = I`` and ``(P f_j)ᵀ φ_i`` is an unbiased estimate of ``f_jᵀ v_i`` (relative
  error ``O(1/√k)``). ``P`` is never stored: its column blocks are regenerated from
  ``random_state``;
* or, for a network's ``nn.Linear`` / ``nn.Conv2d`` layers, as Kronecker-structured random
  projections (``projection=(k_out, k_in)``; LoGra, Choe et al. 2024): a layer's per-sample
  gradient is ``S_i = Σ_t g_it a_itᵀ`` (output gradients ``g``, inputs ``a`` at positions
  ``t``), stored as ``P_out S_i P_inᵀ = Σ_t (P_out g_it)(P_in a_it)ᵀ`` — ``k_out·k_in`` floats
  per layer, computed from the projected inputs and output gradients, so that the full
  per-sample gradient (``p`` floats) is never formed. This is the projection of ``v_i`` by
  the block-diagonal matrix of the ``P_out ⊗ P_in``; with Gaussian ``P_out``, ``P_in`` scaled
  by ``1/√k_out`` and ``1/√k_in`` it is unbiased too, with a larger variance than a dense
  projection of the same size (its rows are not independent): the attribution error is
  random, of relative size about ``1/√k_l`` per layer. A side with ``k`` at least the layer's
  size is the identity (exact); parameters outside those layers are stored unprojected.
  With ``basis="curvature"`` (an estimator fitted with ``solver="kfac"`` / ``"ekfac"``) the
  rows of ``P_out`` and ``P_in`` are instead the leading eigenvectors of the layer's K-FAC
  factors ``G`` and ``A``: the store keeps each gradient's exact coordinates in the top
  ``k_out × k_in`` block of the Kronecker eigenbasis, and the scores are EK-FAC's restricted
  to that block — deterministic and biased (the other directions are dropped), but far more
  accurate for the same ``k`` than a random projection where the gradients concentrate on the
  leading directions;
* written block by block with a record of the finished blocks, so that an interrupted
  computation resumes where it stopped (``fit`` again on the same ``path``);
* saved with its settings and loaded by :meth:`GradientStore.load` (the estimator itself
  is pickled by the user as usual).

Queries: :meth:`GradientStore.attribute` (the full matrix or ``top_k``) with the estimator's
own curvature (its solver, e.g. EK-FAC), or with ``curvature="projected"``: the Fisher of
the stored projected gradients ``Φᵀ Φ + δ I`` (``k × k``), which is TRAK's estimator —
projected gradients and a Gauss–Newton in the projected space; averaging the scores of
stores over several trained models (``InfluenceEnsemble``'s idea) completes it.
"""

from __future__ import annotations

import json
import os
from numbers import Integral

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._sklearn_compat import _num_samples, _safe_indexing
from ._utils import parse_bytes, row_blocks
from .estimators import TopInfluences, merge_top

__all__ = ["GradientStore"]

_P_COLUMNS = 4096   # parameters per regenerated block of the projection


def _positive_int(k):
    return isinstance(k, Integral) and not isinstance(k, bool) and k >= 1


def _settings(saved):
    """A saved store's settings, with the defaults of settings added since (stores saved
    before ``basis`` existed are random-basis stores)."""
    return {"basis": "random", **saved["settings"]}


class GradientStore:
    """Per-sample training removal gradients of a fitted influence estimator (module docstring).

    Parameters
    ----------
    estimator : fitted BaseInfluence
        Its training rows, model and solver.
    projection : int or (int, int), default=None
        ``k``: store ``P v_i`` (k floats per row, a dense Gaussian ``P``) instead of ``v_i``
        (p floats). ``(k_out, k_in)``: a network's layer-wise Kronecker-structured projection
        (module docstring), ``min(k_out, n_out) · min(k_in, n_in)`` floats per layer; needs a
        model whose layers the adapter factorises (a torch network).
    path : str or os.PathLike, default=None
        Directory of the on-disk store (a memmap), its settings and progress. Needed when
        the gradients exceed ``memory_budget``.
    memory_budget : int or str, default=None
        Bytes the store may take in memory (the estimator's budget if None).
    dtype : {"float32", "float64"}, default="float32"
    block_size : int, default=None
        Training rows per block (the estimator's ``batch_size`` if None).
    random_state : int, default=0
        Seed of the projection.
    basis : {"random", "curvature"}, default="random"
        With ``projection=(k_out, k_in)``: Gaussian ``P_out``, ``P_in``, or the leading
        eigenvectors of each layer's K-FAC factors (the estimator's Kronecker-factored solver;
        module docstring).

    Attributes
    ----------
    gradients_ : ndarray or numpy.memmap of shape (n_train, p or k)
    on_disk_ : bool
    blocks_done_ : int
        Finished blocks (all of them after :meth:`fit`).
    """

    def __init__(self, estimator, *, projection=None, path=None, memory_budget=None, dtype="float32",
                 block_size=None, random_state=0, basis="random"):
        check_is_fitted(estimator, "curvature_solver_")
        if isinstance(projection, (tuple, list)):
            if len(projection) != 2 or not all(_positive_int(k) for k in projection):
                raise ValueError(f"a Kronecker projection must be two positive integers (k_out, k_in), "
                                 f"got {projection!r}")
            projection = (int(projection[0]), int(projection[1]))
            if not estimator.adapter_.has_kronecker:
                raise ValueError("projection=(k_out, k_in) projects the layers of a network (a torch "
                                 f"model); {type(estimator.adapter_).__name__} has none: pass an integer k")
        elif projection is not None and not _positive_int(projection):
            raise ValueError(f"projection must be a positive integer, a pair (k_out, k_in) or None, "
                             f"got {projection!r}")
        if basis not in ("random", "curvature"):
            raise ValueError(f"basis must be 'random' or 'curvature', got {basis!r}")
        if basis == "curvature" and not (isinstance(projection, tuple)
                                         and hasattr(estimator.curvature_solver_, "layers")):
            raise ValueError("basis='curvature' takes the eigenvectors of a Kronecker-factored solver's "
                             "layers: it needs projection=(k_out, k_in) and an estimator fitted with "
                             f"solver='kfac' or 'ekfac' (its solver is {type(estimator.curvature_solver_).__name__})")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if block_size is not None and (not isinstance(block_size, Integral) or block_size < 1):
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        if not isinstance(random_state, Integral):
            raise ValueError(f"random_state must be an integer (the projection is regenerated from it), "
                             f"got {random_state!r}")
        self.estimator = estimator
        self.projection = projection
        self.path = None if path is None else os.fspath(path)
        self.memory_budget = memory_budget
        self.dtype = dtype
        self.block_size = block_size
        self.random_state = random_state
        self.basis = basis

    # ------------------------------------------------------------------ layout
    def _n_params(self):
        return self.estimator.adapter_.n_params

    def _kronecker(self):
        return isinstance(self.projection, tuple)

    def _width(self):
        if self._kronecker():
            layers, rest = self._layout()
            return sum(w for *_, w in layers.values()) + len(rest)
        return self.projection or self._n_params()

    def _layout(self):
        """A Kronecker projection's layers ``name -> (index, P_out, P_in, width)`` (``None``: the
        identity) and the coordinates outside them (kept as they are); regenerated from
        ``random_state``."""
        if "_layout_" not in self.__dict__:
            k_out, k_in = self.projection
            layers, covered = {}, np.zeros(self._n_params(), bool)
            eigen = self.estimator.curvature_solver_.layers if self.basis == "curvature" else {}
            for li, (name, (index, n_out, n_in)) in enumerate(self.estimator.adapter_.kronecker_layers().items()):
                if name in eigen:          # eigenvalues ascending: the last columns lead
                    QA, QG = eigen[name][1:3]
                    P_out = QG[:, -k_out:].T if k_out < n_out else None
                    P_in = QA[:, -k_in:].T if k_in < n_in else None
                else:
                    rng = np.random.default_rng([self.random_state, li])
                    P_out = rng.standard_normal((k_out, n_out)) / np.sqrt(k_out) if k_out < n_out else None
                    P_in = rng.standard_normal((k_in, n_in)) / np.sqrt(k_in) if k_in < n_in else None
                layers[name] = (index, P_out, P_in, min(k_out, n_out) * min(k_in, n_in))
                covered[index.ravel()] = True
            self._layout_ = layers, np.flatnonzero(~covered)
        return self._layout_

    def _settings(self):
        return {"n_train": int(self.estimator.n_samples_), "width": int(self._width()), "n_params": int(self._n_params()),
                "projection": list(self.projection) if self._kronecker() else self.projection,
                "basis": self.basis, "dtype": self.dtype, "random_state": int(self.random_state),
                "block_size": int(self._block_size())}

    def _block_size(self):
        return int(self.block_size or self.estimator.batch_size)

    def project(self, V):
        """The rows ``V`` projected, ``V Pᵀ`` (``V`` itself without ``projection``).

        Parameters
        ----------
        V : ndarray of shape (m, p)

        Returns
        -------
        ndarray of shape (m, k) or (m, p)
        """
        V = np.asarray(V, dtype=float)
        if not self.projection:
            return V
        if self._kronecker():          # per layer P_out S P_inᵀ = (P_out ⊗ P_in) vec(S), row-major vec
            layers, rest = self._layout()
            parts = []
            for index, P_out, P_in, _ in layers.values():
                S = V[:, index]                                   # (m, n_out, n_in)
                S = S if P_out is None else np.einsum("ko,mod->mkd", P_out, S)
                S = S if P_in is None else S @ P_in.T
                parts.append(S.reshape(len(V), -1))
            return np.hstack(parts + [V[:, rest]])
        out = np.zeros((V.shape[0], self.projection))
        for j in range(0, self._n_params(), _P_COLUMNS):
            rng = np.random.default_rng([self.random_state, j])
            P = rng.standard_normal((min(_P_COLUMNS, self._n_params() - j), self.projection))
            out += V[:, j:j + P.shape[0]] @ P
        return out / np.sqrt(self.projection)

    # --------------------------------------------------------------------- fit
    def fit(self):
        """Compute the missing blocks (all of them, or those an interrupted run left).

        Returns
        -------
        self
        """
        n, width = self.estimator.n_samples_, self._width()
        size = n * width * np.dtype(self.dtype).itemsize
        budget = parse_bytes(self.memory_budget or self.estimator.memory_budget)
        self.on_disk_ = self.path is not None or size > budget
        if self.on_disk_ and self.path is None:
            raise MemoryError(f"the store needs {size / 2**20:,.0f} MiB, more than memory_budget "
                              f"({budget / 2**20:,.0f} MiB): pass path= (a directory) for an on-disk store, "
                              "or projection=k")
        blocks = row_blocks(n, self._block_size())
        done = set()
        if self.on_disk_:
            os.makedirs(self.path, exist_ok=True)
            meta, file = os.path.join(self.path, "store.json"), os.path.join(self.path, "gradients.npy")
            if os.path.exists(meta):
                with open(meta) as fh:
                    saved = json.load(fh)
                if _settings(saved) != self._settings():
                    raise ValueError(f"{self.path} holds a store with other settings {saved['settings']}; "
                                     "use another path or delete it")
                done = set(saved["done"])
                self.gradients_ = np.lib.format.open_memmap(file, mode="r+")
            else:
                self.gradients_ = np.lib.format.open_memmap(file, mode="w+", dtype=self.dtype, shape=(n, width))
        else:
            self.gradients_ = np.empty((n, width), dtype=self.dtype)
        for b, sl in enumerate(blocks):
            if b in done:
                continue
            self.gradients_[sl] = self._training_gradients(np.arange(sl.start, sl.stop))
            done.add(b)
            if self.on_disk_:
                self.gradients_.flush()
                self._write_meta(sorted(done))
        self.blocks_done_ = len(done)
        return self

    def _training_gradients(self, rows):
        """The stored rows of training rows ``rows``: ``P v_i`` (or ``v_i``)."""
        if not self._kronecker():
            return self.project(self.estimator.training_gradients(rows))
        engine, layers, rest = self.estimator.engine_, *self._layout()
        Z, G, share = engine.removal_parts(rows)
        ad = self.estimator.adapter_
        out = np.empty((len(rows), self._width()))
        width = out.shape[1] - len(rest)
        out[:, :width] = ad.kronecker_gradients(Z, G, {n: L[1:3] for n, L in layers.items()})
        for sl in row_blocks(len(rows), max(1, 2**24 // self._n_params())) if len(rest) else ():
            out[sl, width:] = ad.gradients(Z[sl], G[sl])[:, rest]     # outside the layers: full rows, ≤ 128 MiB
        if share.any():                # the penalty's share, projected like the rest
            out += share[:, None] * self.project(engine.pen_grad[None, :])
        return out

    def _write_meta(self, done):
        tmp = os.path.join(self.path, "store.json.tmp")
        with open(tmp, "w") as fh:
            json.dump({"settings": self._settings(), "done": done}, fh)
        os.replace(tmp, os.path.join(self.path, "store.json"))   # atomic: a crash keeps the last record

    @classmethod
    def load(cls, estimator, path):
        """The on-disk store at ``path`` for ``estimator`` (the one it was computed from).

        Parameters
        ----------
        estimator : fitted BaseInfluence
        path : str or os.PathLike

        Returns
        -------
        GradientStore

        Raises
        ------
        ValueError
            If the store is unfinished (call :meth:`fit` to resume) or was made for another model.
        """
        with open(os.path.join(path, "store.json")) as fh:
            saved = json.load(fh)
        s = _settings(saved)
        projection = tuple(s["projection"]) if isinstance(s["projection"], list) else s["projection"]
        store = cls(estimator, projection=projection, path=path, basis=s["basis"], dtype=s["dtype"],
                    block_size=s["block_size"], random_state=s["random_state"])
        if store._settings() != s:
            raise ValueError(f"the store at {path} was made for another model or data ({s})")
        if len(saved["done"]) < len(row_blocks(s["n_train"], s["block_size"])):
            raise ValueError(f"the store at {path} is unfinished ({len(saved['done'])} blocks): call fit() to resume")
        store.gradients_ = np.lib.format.open_memmap(os.path.join(path, "gradients.npy"), mode="r")
        store.on_disk_, store.blocks_done_ = True, len(saved["done"])
        return store

    # ----------------------------------------------------------------- queries
    def test_factors(self, X, y, curvature="estimator", damping=None):
        """The test side ``f_j`` (projected when the store is): ``P M⁻¹ ∇ℓ_j``, or with
        ``curvature="projected"`` ``(ΦᵀΦ + δI)⁻¹ P ∇ℓ_j``.

        Parameters
        ----------
        X, y : test rows and targets.
        curvature : {"estimator", "projected"}, default="estimator"
        damping : float, default=None
            ``curvature="projected"``: its damping (0.1 × the mean eigenvalue if None).

        Returns
        -------
        ndarray of shape (n_test, k) or (n_test, p)
        """
        est = self.estimator
        Z = est._design(X)
        y_enc = est.adapter_.encode_target(y)
        ad = est.adapter_
        G = ad.gradients(Z, ad.loss.gradient(y_enc, ad.eta(Z)))
        if curvature == "estimator":
            return self.project(est.curvature_solver_.solve(G.T).T)
        if curvature == "projected":
            if not self.projection:
                raise ValueError("curvature='projected' needs a projected store (projection=k)")
            F = self._projected_fisher()
            delta = 0.1 * np.trace(F) / len(F) if damping is None else float(damping)
            return np.linalg.solve(F + delta * np.eye(len(F)), self.project(G).T).T
        raise ValueError(f"curvature must be 'estimator' or 'projected', got {curvature!r}")

    def _projected_fisher(self):
        """``Φᵀ Φ`` of the stored projected removal gradients (k × k), by blocks."""
        F = np.zeros((self._width(), self._width()))
        for sl in row_blocks(len(self.gradients_), self._block_size()):
            B = np.asarray(self.gradients_[sl], dtype=float)
            F += B.T @ B
        return F

    def attribute(self, X, y, *, top_k=None, curvature="estimator", damping=None):
        """Influence of each training row on each test point's loss, from the stored gradients.

        Parameters
        ----------
        X, y : test rows and targets.
        top_k : int, default=None
            Return a :class:`~skinfluence.estimators.TopInfluences` of each test point's
            ``top_k`` most helpful and harmful rows instead of the matrix.
        curvature : {"estimator", "projected"}, default="estimator"
            The estimator's solver, or the Fisher of the projected gradients (TRAK).
        damping : float, default=None
            ``curvature="projected"``: its damping (0.1 × the mean eigenvalue if None).

        Returns
        -------
        ndarray of shape (n_test, n_train) or TopInfluences
            As :meth:`~skinfluence.BaseInfluence.attribute` (exactly, up to the stored
            precision, without a projection). The test rows are taken in blocks whose
            gradients, solves and scores stay within the memory budget.
        """
        if not hasattr(self, "gradients_"):
            raise ValueError("the store is empty: call fit() first")
        n_test = _num_samples(X)
        # test rows per block: their gradients and solves (p each), factors and scores within the budget
        floats = parse_bytes(self.memory_budget or self.estimator.memory_budget) // 8
        per_row = 2 * self._n_params() + self._width() + (len(self.gradients_) if top_k is None else 4 * top_k)
        blocks = [self._attribute_block(_safe_indexing(X, idx), _safe_indexing(y, idx), top_k, curvature, damping)
                  for idx in (np.arange(sl.start, sl.stop)
                              for sl in row_blocks(n_test, max(1, floats // (2 * per_row))))]
        if top_k is None:
            return np.vstack(blocks) if blocks else np.zeros((0, len(self.gradients_)))
        return TopInfluences(*(np.concatenate(part, axis=0) for part in zip(*blocks)))

    def _attribute_block(self, X, y, top_k, curvature, damping):
        F = self.test_factors(X, y, curvature, damping)
        n = len(self.gradients_)
        if top_k is None:
            out = np.empty((len(F), n))
            for sl in row_blocks(n, self._block_size()):
                out[:, sl] = F @ np.asarray(self.gradients_[sl], dtype=float).T
            return out
        top = bottom = None
        for sl in row_blocks(n, self._block_size()):
            s = F @ np.asarray(self.gradients_[sl], dtype=float).T
            rows = np.arange(sl.start, sl.stop)
            top, bottom = merge_top(top, s, rows, top_k, 1), merge_top(bottom, s, rows, top_k, -1)
        return top[1], top[0], bottom[1], bottom[0]
