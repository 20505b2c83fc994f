"""The model protocol: what an influence estimator needs to know about a model.

A model maps an input row to a natural-scale output ``η_i ∈ R^K`` (the linear
predictor of a GLM, the logits of a network) through parameters ``θ ∈ R^p``; its
per-sample loss is an exponential-family loss of ``η_i`` (:mod:`.families`), and the
objective is ``Σ_i c_i ℓ_i(θ) + π(θ)`` with the estimator's own data weights ``c_i``
and penalty ``π`` (:mod:`.penalties`).

Influence computations touch a model only through ``J_i = ∂η_i/∂θ`` (``K × p``):

* ``gradients(Z, G)``: rows ``J_iᵀ G_i`` (per-sample parameter gradients when
  ``G = ∂ℓ/∂η``),
* ``jvp(Z, v)``: ``J_i v`` for every sample,
* ``jacobian_quadratic(Z, A)``: ``J_i A J_iᵀ`` for every sample,
* ``jacobians(Z)``: the explicit ``J_i`` for a few samples (down-dates),
* ``curvature(Z, y, c, kind, eta=None)``: ``Σ_i c_i J_iᵀ W_i J_i`` (and for a non-linear
  model's Hessian the second-derivative term), reusing the outputs ``eta`` when given.

Capabilities are declared, never probed: ``is_network`` (curvature products
``curvature_matvec``, parameter-dependent Jacobians, layers), ``has_gram`` (a linear
model: ``J_i = z_iᵀ ⊗ I_K``, ``curvature_weights`` gives ``c_i W_i``) and
``supports_sparse_rows`` (``jacobian_rows`` and ``gradients(..., sparse=True)`` keep a
sparse design sparse). A method an adapter does not declare raises
``NotImplementedError``. Everything else (leave-one-out, folds, unlearning, attribution) is
written once, in :mod:`skinfluence.estimators`.
"""

from __future__ import annotations

import copy

import numpy as np

__all__ = ["ModelAdapter"]


class ModelAdapter:
    """Base class of model adapters (see the module docstring for the protocol).

    Attributes set by subclasses
    ----------------------------
    estimator : the fitted model (never modified in place)
    loss : a loss from :mod:`skinfluence.models.families`
    penalty : :class:`~skinfluence.models.penalties.ElasticNetPenalty`
    theta : ndarray of shape (p,)
    mean_scaled : bool
        Whether the estimator divides the data term by the total sample weight (Lasso,
        the GLM regressors); removing data then also shifts the penalty's weight.
    classes_ : ndarray or None
    """

    #: a network: curvature-vector products (``curvature_matvec``) and the curvature's square-root
    #: factor (``curvature_factor``), Jacobians that depend on
    #: θ, layers (``layers()``, ``unit_mask``, ``layer_statistics``, ``module``)
    is_network = False
    #: a linear model: ``J_i = z_iᵀ ⊗ I_K``, the curvature is ``Σ z_i z_iᵀ ⊗ c_i W_i``
    #: (``curvature_weights``)
    has_gram = False
    #: ``jacobian_rows(Z)`` and ``gradients(Z, G, sparse=True)`` keep a sparse design sparse
    supports_sparse_rows = False
    #: per-layer Kronecker statistics for K-FAC (``kronecker_layers``, ``kronecker_statistics``)
    has_kronecker = False

    estimator = None
    loss = None
    penalty = None
    theta: np.ndarray
    mean_scaled = False
    classes_ = None
    #: whether a row's weight ``c_i`` depends on the other rows (``class_weight="balanced"``):
    #: removing or relabelling rows then changes every row's weight
    data_dependent_weights = False

    @property
    def n_params(self) -> int:
        return self.theta.shape[0]

    @property
    def n_outputs(self) -> int:
        return self.loss.n_outputs

    @property
    def is_classifier(self) -> bool:
        return self.classes_ is not None

    @property
    def keeps_outputs(self) -> bool:
        """Whether the model keeps all its outputs when a class loses every training row (a
        network's output layer keeps its units; a scikit-learn classifier's ``classes_``
        would change)."""
        return False

    @property
    def constant_curvature(self) -> bool:
        """Whether the curvature is the same at every θ (a linear model, quadratic loss)."""
        return False

    # ------------------------------------------------------------------ targets
    def encode_target(self, y):
        """Targets as the loss expects them (class codes for classifiers)."""
        y = np.asarray(y)
        if not self.is_classifier:
            y = y.astype(float)
            if not np.all(np.isfinite(y)):
                raise ValueError("y contains NaN or infinity")
            check = getattr(self.loss, "check_target", None)
            return check(y) if check is not None else y
        codes = np.searchsorted(self.classes_, y)
        codes = np.clip(codes, 0, len(self.classes_) - 1)
        unknown = self.classes_[codes] != y
        if unknown.any():
            raise ValueError(
                f"y contains labels {np.unique(y[unknown])[:5].tolist()} unknown to the model, "
                f"whose classes are {self.classes_.tolist()}"
            )
        return codes.astype(float) if self.n_outputs == 1 else codes

    def data_weights(self, y, sample_weight):
        """The weights ``c_i`` of the per-sample losses in the objective."""
        raise NotImplementedError

    # ------------------------------------------------------------------- outputs
    def response(self, eta, method="predict"):
        """Turn natural-scale outputs into what ``estimator.<method>`` returns."""
        mean = self.loss.mean(eta)
        if not self.is_classifier:
            if method != "predict":
                raise ValueError(f"response_method={method!r} is not available for a regressor")
            return mean
        binary = self.n_outputs == 1
        if method == "predict_proba":
            return np.column_stack([1 - mean, mean]) if binary else mean
        if method == "predict_log_proba":
            return np.log(self.response(eta, "predict_proba"))
        if method == "decision_function":
            return eta[:, 0] if binary else eta
        if method == "predict":
            codes = (eta[:, 0] > 0).astype(int) if binary else eta.argmax(axis=1)
            return self.classes_[codes]
        raise ValueError(
            f"response_method must be one of 'predict', 'predict_proba', 'predict_log_proba', "
            f"'decision_function'; got {method!r}"
        )

    # ------------------------------------------------------------------ protocol
    def design(self, X):
        """Validate ``X`` and return the model's own representation of it."""
        raise NotImplementedError

    def eta(self, Z, theta=None):
        raise NotImplementedError

    def jacobians(self, Z):
        """Explicit Jacobians, shape ``(n, K, p)``."""
        raise NotImplementedError

    def gradients(self, Z, G):
        return np.einsum("nkp,nk->np", self.jacobians(Z), G)

    def total_gradient(self, Z, G, theta=None):
        """``Σ_i J_iᵀ G_i``, shape (p,), with the Jacobians at ``theta`` (the fitted θ by default)."""
        if theta is not None:
            raise NotImplementedError(f"{type(self).__name__} has Jacobians at its fitted θ only")
        return self.gradients(Z, G).sum(axis=0)

    def loss_and_gradient(self, Z, y, c, theta=None):
        """``(Σ_i c_i ℓ_i, its gradient)`` at ``theta``: the data part of the objective."""
        eta = self.eta(Z, theta)
        G = np.asarray(c)[:, None] * self.loss.gradient(y, eta)
        return float(np.asarray(c) @ self.loss.loss(y, eta)), self.total_gradient(Z, G, theta)

    def jvp(self, Z, v):
        return self.jacobians(Z) @ v

    def jacobian_quadratic(self, Z, A):
        J = self.jacobians(Z)
        return np.einsum("nkp,pq,nlq->nkl", J, A, J)

    def output_curvature(self, y, eta, kind):
        """Per-sample ``W_i`` (n, K, K) of the curvature of kind ``"hessian"`` or ``"fisher"``."""
        return self.loss.curvature(y, eta, kind)

    def curvature(self, Z, y, c, kind="fisher", eta=None, weights=None):
        """Dense ``Σ_i c_i J_iᵀ W_i J_i`` (p × p); ``eta`` are the outputs at θ if known,
        ``weights`` the ``c_i W_i`` (n, K, K) if already computed."""
        raise NotImplementedError

    def curvature_matvec(self, Z, y, c, V, kind="fisher", eta=None, weights=None):
        """``M V`` for the data part of the curvature (``is_network`` adapters)."""
        raise NotImplementedError(f"{type(self).__name__} offers no curvature products")

    def curvature_factor(self, Z, y, c, kind="fisher", eta=None, weights=None):
        """``B`` with ``BᵀB`` the Gauss–Newton curvature ``Σ_i J_iᵀ c_i W_i J_i`` (``is_network``
        adapters), as a list of R row blocks (n, p): the rows ``J_iᵀ L_ir`` for ``c_i W_i = L_i L_iᵀ``."""
        raise NotImplementedError(f"{type(self).__name__} offers no curvature factor")

    def curvature_weights(self, y, c, kind="fisher", eta=None, Z=None):
        """``c_i W_i`` (n, K, K) of a linear model's Gram curvature (``has_gram`` adapters)."""
        raise NotImplementedError(f"{type(self).__name__} has no Gram curvature")

    def jacobian_rows(self, Z):
        """The Jacobians stacked as rows, in the design's format (``supports_sparse_rows``)."""
        raise NotImplementedError(f"{type(self).__name__} has no sparse Jacobian rows")

    def null_space(self):
        """Orthonormal directions (p × r) the objective is invariant to, or None."""
        return None

    def with_params(self, theta):
        """A deep copy of the estimator carrying the parameters ``theta``."""
        raise NotImplementedError

    def moved(self, theta, **options):
        """The adapter of ``with_params(theta)`` (``options`` as for
        :func:`~skinfluence.models.make_adapter`); networks copy their module once."""
        from . import make_adapter

        return make_adapter(self.with_params(theta), **options)

    def copy_estimator(self):
        return copy.deepcopy(self.estimator)
