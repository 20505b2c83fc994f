"""Curvature operators: a symmetric ``p × p`` matrix seen through its products.

Solvers (:mod:`.factor`, :mod:`.iterative`) see only these operators, never a model.
:func:`model_curvature` builds one from a model adapter: the Hessian or the Fisher
(generalised Gauss–Newton, in the adapter's flavour) of ``Σ_i c_i ℓ_i``, with ``matvec``
from the adapter's ``curvature_matvec`` (Jacobian-vector and vector-Jacobian products,
plus Hessian-vector products for the Hessian) and ``dense()`` from its ``curvature``.
A linear model's curvature is a weighted Gram matrix of its design
(:class:`GramOperator`): its products are two (sparse) products with the design, and the
dual solver (:mod:`.dual`) reads its structure.
"""

from __future__ import annotations

import copy
from functools import partial

import numpy as np

__all__ = ["CurvatureOperator", "GramOperator", "KroneckerStatistics", "model_curvature"]


def symmetric_matrix(apply, p, block=256):
    """The ``p × p`` symmetric matrix of a linear map, from its action on column blocks
    of the identity (symmetrised against rounding)."""
    M = np.empty((p, p))
    for j in range(0, p, block):
        E = np.zeros((p, min(block, p - j)))
        E[np.arange(j, j + E.shape[1]), np.arange(E.shape[1])] = 1.0
        M[:, j:j + E.shape[1]] = apply(E)
    return (M + M.T) / 2


class CurvatureOperator:
    """Symmetric linear operator ``M`` with ``matvec`` and, where p allows, ``dense()``.

    Parameters
    ----------
    n_params : int
    matvec : callable
        ``V ↦ M V`` for ``V`` of shape (p,) or (p, m).
    dense : callable, optional
        Returns the matrix; by default it is assembled from ``matvec`` on unit vectors.
    diagonal : ndarray of shape (p,) or float, default=0
        Added to the operator (penalty curvature, damping).
    """

    def __init__(self, n_params, matvec, dense=None, diagonal=0.0):
        self.n_params = int(n_params)
        self._matvec = matvec
        self._dense = dense
        self.diagonal = np.broadcast_to(np.asarray(diagonal, dtype=float), (self.n_params,)).copy()
        self.n_matvecs = 0  # columns multiplied so far (the cost measure of iterative solvers)
        #: per-layer Kronecker statistics (:class:`KroneckerStatistics`) where the model offers them
        self.kronecker = None
        #: ``(n, K, build)`` where the model offers it (a network's Fisher): ``build()`` gives the
        #: square-root factor ``B`` (at most ``n·K`` × p, as row blocks) whose ``BᵀB`` is the data part
        self.factor = None

    @classmethod
    def from_matrix(cls, matrix):
        matrix = np.asarray(matrix, dtype=float)
        return cls(matrix.shape[0], partial(np.matmul, matrix), partial(np.array, matrix))

    @property
    def shape(self):
        return (self.n_params, self.n_params)

    def matvec(self, V):
        V = np.asarray(V, dtype=float)
        self.n_matvecs += 1 if V.ndim == 1 else V.shape[1]
        D = self.diagonal if V.ndim == 1 else self.diagonal[:, None]
        return self._matvec(V) + D * V

    __matmul__ = matvec

    def dense(self, block=256):
        """The matrix, ``p × p`` (from the model directly where it can, else by products)."""
        if self._dense is not None:
            M = np.array(self._dense(), dtype=float)
            M[np.diag_indices_from(M)] += self.diagonal
            return M
        return symmetric_matrix(self.matvec, self.n_params, block)

    def factored(self):
        """The same operator with its data part applied as ``Bᵀ(B V)``, ``B`` the model's
        square-root factor (:attr:`factor`) built now, once: the products become two
        matrix products instead of passes through the model."""
        if self.factor is None:
            raise ValueError("this curvature has no square-root factor (a network's Fisher has one)")
        new = copy.copy(self)
        new._matvec = partial(factor_product, self.factor[2]())
        new.n_matvecs = 0
        return new

    def add_diagonal(self, d):
        """A new operator ``M + diag(d)``."""
        new = copy.copy(self)
        new.diagonal = self.diagonal + d
        new.n_matvecs = 0
        return new

    def max_eigenvalue(self, n_iter=30, random_state=None):
        """Largest eigenvalue in absolute value, by power iteration (an estimate from below)."""
        rng = np.random.default_rng(random_state)
        v = rng.standard_normal(self.n_params)
        v /= np.linalg.norm(v)
        lam = 0.0
        for _ in range(n_iter):
            w = self.matvec(v)
            lam_new = float(v @ w)
            norm = np.linalg.norm(w)
            if norm == 0:
                return 0.0
            v = w / norm
            if abs(lam_new - lam) <= 1e-3 * abs(lam_new):
                lam = lam_new
                break
            lam = lam_new
        return abs(lam)


class GramOperator(CurvatureOperator):
    """The curvature of a linear model: ``M = Σ_i z_i z_iᵀ ⊗ W_i + diag(D)``.

    With ``θ = vec(B)`` (row-major, ``B`` of shape ``q × K``) and ``J_i = z_iᵀ ⊗ I_K``,
    ``M v`` is ``Zᵀ (W ∘ (Z V))`` for ``V = v`` reshaped to ``q × K``: two products with
    the design, which stays sparse when it is.

    Parameters
    ----------
    design : ndarray or sparse matrix of shape (n, q)
        The rows ``z_i`` that build the curvature.
    weights : ndarray of shape (n, K, K)
        Their weighted output curvatures ``c_i W_i``.
    dense : callable, optional
        Returns the matrix without ``D`` (the model's own closed form).
    diagonal : ndarray of shape (p,) or float, default=0
    """

    def __init__(self, design, weights, dense=None, diagonal=0.0):
        self.design = design
        self.weights = np.asarray(weights, dtype=float)
        n, K, _ = self.weights.shape
        self.n_outputs = K
        super().__init__(design.shape[1] * K, self._gram_matvec, dense, diagonal)

    def _gram_matvec(self, V):
        Z, K = self.design, self.n_outputs
        cols = V.reshape(Z.shape[1], -1)                    # (q, K·m): row r holds θ_{r·K+k}
        E = np.asarray(Z @ cols).reshape(Z.shape[0], K, -1)  # J_i V, (n, K, m)
        E = self.weights[:, 0, 0, None, None] * E if K == 1 else np.matmul(self.weights, E)
        return np.asarray(Z.T @ E.reshape(Z.shape[0], -1)).reshape(V.shape)


def model_curvature(adapter, Z, y, c, kind, eta=None, weights=None):
    """The curvature ``Σ_i c_i ∇²ℓ_i`` (``kind="hessian"``) or its Fisher, as an operator.

    The adapter provides ``curvature(Z, y, c, kind, eta=, weights=)`` and, for networks
    (``is_network``), products ``curvature_matvec(Z, y, c, V, kind, eta=, weights=)`` (else
    they are taken from the dense matrix); ``eta`` are the outputs at θ and ``weights`` the
    ``c_i W_i`` if known. A linear model (``has_gram``) gives a :class:`GramOperator`. The
    penalty is not included.
    """
    if weights is None and adapter.has_gram:
        weights = adapter.curvature_weights(y, c, kind, eta=eta, Z=Z)
    dense = partial(_model_dense, adapter, Z, y, c, kind, eta, weights)
    if adapter.has_gram:  # a linear model: J_i = z_iᵀ ⊗ I_K
        operator = GramOperator(Z, weights, dense)
        operator.kronecker = _GramKronecker(operator, c)
        return operator
    if adapter.is_network:
        matvec = partial(_model_matvec, adapter, Z, y, c, kind, eta, weights)
    else:  # products from the matrix, built once on first use
        matvec = _DenseProducts(dense)
    operator = CurvatureOperator(adapter.n_params, matvec, dense)
    if adapter.is_network and kind != "hessian":
        operator.factor = (len(Z), adapter.n_outputs, partial(_model_factor, adapter, Z, y, c, kind, eta, weights))
    if adapter.has_kronecker:
        operator.kronecker = KroneckerStatistics(adapter, Z, y, c, kind, eta, weights)
    return operator


class _GramKronecker:
    """A linear model as one Kronecker-factored layer: ``J_i = z_iᵀ ⊗ I_K``, so ``A = Σ c_i z_i z_iᵀ``
    and ``G = Σ_i c_i W_i`` (the statistics of :class:`KroneckerStatistics`)."""

    def __init__(self, op, c):
        q, K = op.design.shape[1], op.n_outputs
        self.op, self.adapter, self.c = op, None, np.asarray(c, dtype=float)
        self.layers = {"linear": (np.arange(q * K).reshape(q, K).T, K, q)}   # θ = vec(B), B q × K

    def statistics(self, bases=None):
        Z, W = self.op.design, self.op.weights
        if bases is None:
            A = Z.T @ (Z.multiply(self.c[:, None]).tocsr() if hasattr(Z, "multiply") else self.c[:, None] * Z)
            return {"linear": (A.toarray() if hasattr(A, "toarray") else np.asarray(A), W.sum(axis=0),
                               float(self.c.sum()))}
        QA, QG = bases["linear"]
        dg = np.einsum("lk,nlm,mk->nk", QG, W, QG)          # diag(Q_Gᵀ c_i W_i Q_G)
        return {"linear": dg.T @ np.asarray(Z @ QA) ** 2}


class KroneckerStatistics:
    """What K-FAC reads of a network (the adapter's declared capability): ``layers`` (name ->
    positions in θ of the layer's ``[W | b]``, n_out, n_in) and ``statistics(bases=None)``,
    the adapter's ``kronecker_statistics`` over the curvature rows."""

    def __init__(self, adapter, Z, y, c, kind, eta, weights=None):
        self.adapter, self.args, self.weights = adapter, (Z, y, c, kind, eta), weights
        self.layers = adapter.kronecker_layers()
        self.kind = kind

    def statistics(self, bases=None):
        Z, y, c, kind, eta = self.args
        return self.adapter.kronecker_statistics(Z, y, c, kind, eta=eta, bases=bases, weights=self.weights)


# module-level pieces (not closures), so that operators and the estimators holding them pickle
def _model_dense(adapter, Z, y, c, kind, eta, weights):
    return adapter.curvature(Z, y, c, kind, eta=eta, weights=weights)


def _model_matvec(adapter, Z, y, c, kind, eta, weights, V):
    return adapter.curvature_matvec(Z, y, c, V, kind, eta=eta, weights=weights)


def _model_factor(adapter, Z, y, c, kind, eta, weights):
    return adapter.curvature_factor(Z, y, c, kind, eta=eta, weights=weights)


def factor_product(blocks, V):
    """``Bᵀ(B V)`` for ``B`` stacked from ``blocks``, in their precision (the model's own), as
    float64: by slices of about 2 MiB, each used twice while it is in cache (one read of
    ``B`` per product instead of two)."""
    Vb = V.astype(blocks[0].dtype, copy=False)
    out = np.zeros(V.shape, dtype=blocks[0].dtype)
    for B in blocks:
        step = max(1, 2**18 // max(B.shape[1], 1))
        for i in range(0, len(B), step):
            Bi = B[i:i + step]
            out += Bi.T @ (Bi @ Vb)
    return out.astype(float, copy=False)


class _DenseProducts:
    """``V ↦ M V`` with ``M`` built by ``dense()`` on first use."""

    def __init__(self, dense):
        self.dense, self.matrix = dense, None

    def __call__(self, V):
        if self.matrix is None:
            self.matrix = self.dense()
        return self.matrix @ V
