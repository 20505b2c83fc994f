"""Small dense linear-algebra kernels shared by the layers."""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas

__all__ = ["block_gram", "weighted_gram"]


def weighted_gram(U, w):
    """``Uᵀ diag(w) U`` for a dense ``U`` of shape (m, p) and weights ``w`` of shape (m,).

    With non-negative weights this is the rank-m update ``SᵀS`` of ``S = √w ∘ U``
    (BLAS ``syrk``: half the flops of a general product); otherwise a general product.
    """
    U = np.asarray(U, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if len(w) == 0 or U.shape[1] == 0:
        return np.zeros((U.shape[1], U.shape[1]))
    if w.min() < 0:
        return U.T @ (w[:, None] * U)
    S = np.sqrt(w)[:, None] * U
    upper = blas.dsyrk(1.0, S.T, trans=0)   # S.T is Fortran-ordered: no copy
    return np.triu(upper) + np.triu(upper, 1).T


def block_gram(J, C):
    """``Σ_i J_iᵀ C_i J_i`` for per-sample Jacobians ``J`` (m, K, p) and blocks ``C`` (m, K, K)."""
    m, K, p = J.shape
    if K == 1:  # one output per sample: a weighted Gram matrix
        return weighted_gram(J[:, 0, :], C[:, 0, 0])
    return J.reshape(-1, p).T @ np.matmul(C, J).reshape(-1, p)
