"""Adapter for scikit-learn's linear models, with closed forms for every protocol call.

Parameters are laid out as ``θ = vec(B)`` (row-major) with ``B = [coefᵀ; intercept]`` of
shape ``(d + 1) × K``; the design ``Z = [X, 1]`` has one row ``z_i`` per sample, so that
``η_i = Bᵀ z_i`` and ``J_i = z_iᵀ ⊗ I_K``. Dense and scipy.sparse ``X`` are both handled
without densifying the whole design.

Objective scalings follow each estimator (``c_i`` data weights, penalty ``π``):

=========================  =========================================  ==================
estimator                  objective                                  mean-scaled
=========================  =========================================  ==================
LogisticRegression         C Σ sw_i cw_i ℓ_i + (1−ρ)/2‖w‖² + ρ‖w‖₁    no
LinearRegression, Ridge    Σ sw_i ½r_i² + α/2‖w‖²                      no
Lasso, ElasticNet          Σ sw_i ½r_i² / Σsw + α(1−ρ)/2‖w‖² + αρ‖w‖₁  yes
Poisson/Gamma/Tweedie      Σ sw_i ½dev_i / Σsw + α/2‖w‖²               yes
SGDClassifier(log_loss)    Σ sw_i cw_i ℓ_i / Σsw + α R(w)              yes
=========================  =========================================  ==================

(Ridge's ``‖y − Xw‖² + α‖w‖²`` is halved, which changes no minimiser.) Class weights
(``class_weight="balanced"`` included) are held at their full-data values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import (
    ElasticNet,
    GammaRegressor,
    Lasso,
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
    Ridge,
    SGDClassifier,
    TweedieRegressor,
)
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import check_array, check_is_fitted

from .._linalg import weighted_gram
from .base import ModelAdapter
from .families import Bernoulli, Gaussian, IdentityLink, LogLink, Multinomial, Tweedie
from .penalties import ElasticNetPenalty

__all__ = ["GLMAdapter", "SUPPORTED_GLMS", "is_supported_glm", "tweedie_power"]

SUPPORTED_GLMS = (
    LogisticRegression,
    LinearRegression,
    Ridge,
    Lasso,
    ElasticNet,
    PoissonRegressor,
    GammaRegressor,
    TweedieRegressor,
    SGDClassifier,
)


def is_supported_glm(estimator) -> bool:
    return type(estimator) in SUPPORTED_GLMS


def tweedie_power(est):
    """The Tweedie power of a Poisson (1), Gamma (2) or Tweedie regressor, else None."""
    if isinstance(est, (PoissonRegressor, GammaRegressor, TweedieRegressor)):
        return {PoissonRegressor: 1.0, GammaRegressor: 2.0}.get(type(est), getattr(est, "power", 0))
    return None


@dataclass
class _Spec:
    """How one estimator's objective maps onto ``Σ c_i ℓ_i + π``."""

    loss: object
    l1: float
    l2: float
    data_scale: float = 1.0
    mean_scaled: bool = False
    intercept_penalty: float = 0.0  # liblinear penalises the intercept


def _unsupported(est, why, advice=""):
    return ValueError(f"{type(est).__name__} with {why} is not supported by skinfluence"
                      + (f"; {advice}" if advice else ""))


def _logistic_l1_ratio(est):
    """ℓ1 share ρ, or None for no penalty; old ``penalty=`` and new ``C``/``l1_ratio`` spellings."""
    penalty = getattr(est, "penalty", "deprecated")
    if penalty in (None, "none") or not np.isfinite(est.C):
        return None
    if penalty == "l1":
        return 1.0
    if penalty == "l2":
        return 0.0
    return float(est.l1_ratio or 0.0)


def _spec(est, n_classes) -> _Spec:
    name = type(est).__name__
    if getattr(est, "positive", False):
        raise _unsupported(est, "positive=True (a constrained fit)")
    if isinstance(est, LogisticRegression):
        rho = _logistic_l1_ratio(est)
        loss = Bernoulli() if n_classes == 2 else Multinomial(n_classes)
        if est.solver == "liblinear" and n_classes > 2:
            raise _unsupported(est, "solver='liblinear' on more than two classes (one-vs-rest)")
        ip = 1.0 / est.intercept_scaling if est.solver == "liblinear" and est.fit_intercept else 0.0
        if rho is None:
            return _Spec(loss, 0.0, 0.0)
        return _Spec(loss, rho, 1.0 - rho, data_scale=est.C, intercept_penalty=ip)
    if isinstance(est, SGDClassifier):
        if est.loss != "log_loss":
            raise _unsupported(est, f"loss={est.loss!r}", "use loss='log_loss'")
        if n_classes != 2:
            raise _unsupported(est, "more than two classes (SGD fits one-vs-rest)")
        rho = {"l2": 0.0, "l1": 1.0, "elasticnet": est.l1_ratio, None: None}[est.penalty]
        if rho is None:
            return _Spec(Bernoulli(), 0.0, 0.0, mean_scaled=True)
        return _Spec(Bernoulli(), est.alpha * rho, est.alpha * (1 - rho), mean_scaled=True)
    if isinstance(est, (LinearRegression, Ridge)):
        alpha = float(np.asarray(getattr(est, "alpha", 0.0)).squeeze())
        return _Spec(Gaussian(), 0.0, alpha)
    if isinstance(est, (Lasso, ElasticNet)):  # Lasso subclasses ElasticNet
        rho = 1.0 if type(est) is Lasso else float(est.l1_ratio)
        return _Spec(Gaussian(), est.alpha * rho, est.alpha * (1 - rho), mean_scaled=True)
    if isinstance(est, (PoissonRegressor, GammaRegressor, TweedieRegressor)):
        power = tweedie_power(est)
        link_name = getattr(est, "link", "auto")
        if link_name == "auto":
            link_name = "identity" if power == 0 else "log"
        link = {"identity": IdentityLink, "log": LogLink}[link_name]()
        return _Spec(Tweedie(power, link), 0.0, est.alpha, mean_scaled=True)
    raise TypeError(f"{name} is not a supported linear model")


class GLMAdapter(ModelAdapter):
    """Protocol implementation for a fitted scikit-learn linear model."""

    has_gram = True
    supports_sparse_rows = True

    def __init__(self, estimator):
        check_is_fitted(estimator)
        self.estimator = estimator
        coef = np.asarray(estimator.coef_, dtype=float)
        if coef.ndim == 2 and coef.shape[0] > 1 and not hasattr(estimator, "classes_"):
            raise _unsupported(estimator, "a multi-output target")
        self.classes_ = getattr(estimator, "classes_", None)
        n_classes = len(self.classes_) if self.classes_ is not None else 0
        spec = _spec(estimator, n_classes)
        self.loss = spec.loss
        self.mean_scaled = spec.mean_scaled
        self._data_scale = spec.data_scale
        self.fit_intercept = bool(estimator.fit_intercept)
        K = self.loss.n_outputs
        coef = coef.reshape(K, -1)
        self.n_features = coef.shape[1]
        intercept = np.broadcast_to(np.asarray(estimator.intercept_, dtype=float), (K,))
        B = coef.T
        scale = np.ones_like(B)
        if self.fit_intercept:
            B = np.vstack([B, intercept])
            scale = np.vstack([scale, np.full((1, K), spec.intercept_penalty)])
        self.theta = B.ravel().copy()
        if not np.all(np.isfinite(self.theta)):
            raise ValueError(f"the fitted {type(estimator).__name__} has NaN or infinite coefficients")
        self.penalty = ElasticNetPenalty(spec.l1, spec.l2, scale.ravel())

    @property
    def constant_curvature(self) -> bool:
        return self.loss.is_quadratic

    # ------------------------------------------------------------------ data
    def data_weights(self, y, sample_weight):
        c = self._data_scale * sample_weight
        if self.mean_scaled:
            c = c / sample_weight.sum()
        cw = getattr(self.estimator, "class_weight", None)
        if cw is not None and self.is_classifier:
            y_full = self.classes_[np.asarray(y, dtype=int)]
            weights = compute_class_weight(cw, classes=self.classes_, y=y_full)
            c = c * weights[np.asarray(y, dtype=int)]
        return c

    def design(self, X):
        # float32 is kept until the one float64 copy below (a large X is most of the memory)
        X = check_array(X, accept_sparse=("csr", "csc"), dtype=[np.float64, np.float32])
        if X.shape[1] != self.n_features:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self.estimator).__name__} "
                f"is expecting {self.n_features} features as input"
            )
        if not self.fit_intercept or sp.issparse(X):
            X = X.astype(np.float64, copy=False)
            return sp.hstack([X, np.ones((X.shape[0], 1))], format="csr") if self.fit_intercept else X
        Z = np.empty((X.shape[0], X.shape[1] + 1))  # one allocation: X may be most of the memory
        Z[:, :-1] = X
        Z[:, -1] = 1.0
        return Z

    @property
    def _q(self):
        return self.n_params // self.n_outputs

    # --------------------------------------------------------------- protocol
    def eta(self, Z, theta=None):
        theta = self.theta if theta is None else theta
        return np.asarray(Z @ theta.reshape(self._q, self.n_outputs))

    jvp = eta  # J_i v = z_iᵀ V: the model is linear in θ

    def jacobians(self, Z):
        Zd = Z.toarray() if sp.issparse(Z) else Z
        K = self.n_outputs
        if K == 1:
            return Zd[:, None, :]
        return np.einsum("nq,kl->nkql", Zd, np.eye(K)).reshape(len(Zd), K, -1)

    def jacobian_rows(self, Z):
        """The Jacobians stacked as rows ``J_i[k]`` (row ``i·K + k``), shape (n·K, p), in the
        design's own format (a sparse design stays sparse)."""
        K = self.n_outputs
        if K == 1:
            return Z
        return sp.kron(Z, sp.eye(K), format="csr") if sp.issparse(Z) else np.kron(Z, np.eye(K))

    def gradients(self, Z, G, sparse=False):
        """Rows ``J_iᵀ G_i`` (n, p); with ``sparse`` a sparse design gives a csr matrix."""
        if sp.issparse(Z) and sparse:
            K = self.n_outputs
            return sp.csr_matrix(self.jacobian_rows(Z).multiply(np.reshape(G, (-1, 1)))
                                 if K == 1 else self._sparse_gradients(Z, G))
        Zd = Z.toarray() if sp.issparse(Z) else Z
        return (Zd[:, :, None] * G[:, None, :]).reshape(len(Zd), -1)

    def _sparse_gradients(self, Z, G):
        Z = sp.coo_matrix(Z)
        K = self.n_outputs
        rows = np.repeat(Z.row, K)
        cols = (Z.col[:, None] * K + np.arange(K)).ravel()
        data = (Z.data[:, None] * G[Z.row]).ravel()
        return sp.csr_matrix((data, (rows, cols)), shape=(Z.shape[0], self.n_params))

    def total_gradient(self, Z, G, theta=None):  # J_i does not depend on θ
        return np.asarray(Z.T @ G).ravel()

    def _blocks(self):
        K = self.n_outputs
        return [(k, l) for k in range(K) for l in range(K)]

    def jacobian_quadratic(self, Z, A):
        """``J_i A J_iᵀ`` (n, K, K) for a dense ``A``, or for ``A`` an inverse operator
        (the dual solver's ``M⁻¹``) with ``quadratic(U)`` (``diag(U A Uᵀ)`` of rows) and
        ``quadratic_blocks(U, K)``."""
        K = self.n_outputs
        if not isinstance(A, np.ndarray):
            if K == 1:
                return A.quadratic(Z)[:, None, None]
            return A.quadratic_blocks(self.jacobian_rows(Z), K)
        out = np.empty((Z.shape[0], K, K))
        for k, l in self._blocks():
            ZA = np.asarray(Z @ A[k::K, l::K])
            out[:, k, l] = (np.asarray(Z.multiply(ZA).sum(axis=1)).ravel() if sp.issparse(Z)
                            else np.einsum("nq,nq->n", ZA, Z))
        return out

    def curvature_weights(self, y, c, kind="fisher", eta=None, Z=None):
        """Weighted output curvatures ``c_i W_i`` (n, K, K): the curvature is
        ``Σ_i z_i z_iᵀ ⊗ c_i W_i`` (a :class:`~skinfluence.curvature.operators.GramOperator`)."""
        eta = self.eta(Z) if eta is None else eta
        return self.output_curvature(y, eta, kind) * c[:, None, None]

    def curvature(self, Z, y, c, kind="fisher", eta=None, weights=None):
        K = self.n_outputs
        W = self.curvature_weights(y, c, kind, eta, Z) if weights is None else weights
        M = np.empty((self.n_params, self.n_params))
        for k, l in self._blocks():
            if sp.issparse(Z):  # sparse times dense column blocks: no sparse fill-in
                WZ = sp.csc_matrix(Z.multiply(W[:, k, l][:, None]))
                for j in range(0, Z.shape[1], 512):
                    M[k::K, l::K][:, j:j + 512] = np.asarray(Z.T @ WZ[:, j:j + 512].toarray())
            elif k == l:
                M[k::K, k::K] = weighted_gram(Z, W[:, k, k])
            else:
                M[k::K, l::K] = Z.T @ (Z * W[:, k, l][:, None])
        return M

    def null_space(self):
        K = self.n_outputs
        if K == 1:
            return None
        scale = self.penalty.scale.reshape(-1, K)[:, 0]
        free = np.ones_like(scale, bool) if self.penalty.l1 == self.penalty.l2 == 0 else scale == 0
        rows = np.flatnonzero(free)
        Z = np.zeros((self.n_params, len(rows)))
        for col, j in enumerate(rows):
            Z[j * K:(j + 1) * K, col] = 1.0 / np.sqrt(K)
        return Z

    def with_params(self, theta):
        est = self.copy_estimator()
        K = self.n_outputs
        B = np.asarray(theta, dtype=float).reshape(self._q, K)
        coef_shape = np.shape(self.estimator.coef_)
        est.coef_ = B[: self.n_features].T.reshape(coef_shape).astype(np.asarray(self.estimator.coef_).dtype)
        if self.fit_intercept:
            intercept = B[self.n_features]
            est.intercept_ = intercept.reshape(np.shape(self.estimator.intercept_)) if np.ndim(self.estimator.intercept_) else float(intercept[0])
        return est
