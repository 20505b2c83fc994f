"""Influence estimators: one base class, a curvature choice per subclass.

Notation (see ALGORITHMS.md): the fitted model minimises ``Σ_i c_i ℓ_i(θ) + π(θ)``.
Removing a set ``U`` of training points moves the optimum by one Newton step::

    Δθ_U = M_{-U}⁻¹ v_U,     v_U = Σ_{i∈U} c_i ∇ℓ_i + s_U ∇π

``M`` is the curvature (Hessian or Fisher, penalty included, plus damping),
``M_{-U} = M − Σ_U c_i J_iᵀ W_i J_i`` (the Newton step, "ns") or ``M`` (the
infinitesimal jackknife, "ij"), and ``s_U`` the share of the total sample weight
removed when the estimator averages its data term (0 otherwise): with the mean
rescaled, the penalty weighs relatively more after removal.

For an ℓ1 penalty, leave-one-out restricts the step to the support of θ̂ (zeros stay
zero), and unlearning takes a proximal Newton step in which coordinates may enter or
leave the support.

Error of the approximations: NS is exact for a quadratic objective and otherwise
has error O(1/n²) per leave-one-out fit of a smooth, strongly convex objective (one
Newton step from θ̂); IJ has error O(1/n). Both grow with the removed fraction and
with leverage.
"""

from __future__ import annotations

import copy
import numbers
import sys
import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_consistent_length, check_is_fitted

from ._linalg import block_gram
from .curvature.factor import Factorization
from .curvature.iterative import IterativeSolver
from .curvature.operators import model_curvature
from .curvature.proximal import prox_newton_step
from .exceptions import InfluenceWarning
from .models import make_adapter
from .refit import fit_weighted

__all__ = ["BaseInfluence", "HessianInfluence", "FisherInfluence"]

_METHODS = ("ns", "ij")


MAX_DENSE_BYTES = 4 * 2**30  # largest dense array the influence computations allocate
DENSE_MAX_PARAMS = 12_000    # solver="auto": dense curvature up to this many parameters


def _is_torch_module(obj):
    torch = sys.modules.get("torch")  # a torch object means torch is imported: never import it here
    return torch is not None and isinstance(obj, torch.nn.Module)


def _check_memory(shape, what):
    """Refuse an allocation of ``shape`` float64 that would not fit in memory."""
    nbytes = 8 * int(np.prod(shape, dtype=float))
    if nbytes > MAX_DENSE_BYTES:
        raise MemoryError(
            f"{what} would need a dense {' x '.join(map(str, shape))} array "
            f"({nbytes / 2**30:.1f} GiB > {MAX_DENSE_BYTES / 2**30:.0f} GiB); "
            "use fewer parameters (selection, smaller model), fewer points, or batches"
        )


def _check_method(method):
    if method not in _METHODS:
        raise ValueError(f"method must be 'ns' or 'ij', got {method!r}")
    return method


def _batched_solve(M, b):
    """Solve ``M[i] x[i] = b[i]`` for stacks of small systems."""
    if M.shape[-1] == 1:
        return b / M[..., 0]
    return np.linalg.solve(M, b[..., None])[..., 0]


class BaseInfluence(TransformerMixin, BaseEstimator):
    """Shared machinery of the influence estimators (not used directly).

    Parameters
    ----------
    estimator : estimator object
        A supported scikit-learn linear model (LogisticRegression, LinearRegression,
        Ridge, Lasso, ElasticNet, PoissonRegressor, GammaRegressor, TweedieRegressor,
        SGDClassifier with ``loss="log_loss"``), a Pipeline ending in one, or a skorch
        net / torch module. It is cloned and fitted by :meth:`fit` unless ``prefit``.
    prefit : bool, default=False
        Use the already fitted ``estimator`` as it is (a deep copy; the user's object is
        never modified).
    damping : float, default=0.0
        Added to the diagonal of the curvature. Needed when it is singular (no penalty
        and collinear features, unpenalised multinomial with separable data) or
        indefinite (a Hessian away from a minimum).
    polish : bool, default=False
        If the fitted parameters are too far from the optimum for the approximation to
        be meaningful, take Newton steps with the curvature (proximal Newton steps
        for ℓ1, in which coordinates may enter or leave the support) until they are
        not, and use the polished model as ``estimator_``. If False, a
        :class:`~skinfluence.exceptions.InfluenceWarning` is raised instead.
    solver : {"auto", "dense", "cg", "lissa"}, default="auto"
        How the curvature is inverted. Linear models always use a dense Cholesky
        factorisation. Torch models: ``"dense"`` builds the p × p curvature from
        per-sample Jacobians; ``"cg"`` / ``"lissa"`` only multiply by it (conjugate
        gradients; the Neumann series with automatic rescaling); ``"auto"`` is dense
        while p ≤ ``DENSE_MAX_PARAMS`` and CG beyond. The choice and its reason are
        in ``solver_`` and ``solver_reason_``.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Torch models only: where the work runs.
    dtype : {"float64", "float32"}, default="float64"
        Torch models only: precision of the influence computations.
    batch_size : int, default=4096
        Number of samples processed at a time; bounds memory.
    random_state : int, RandomState or None, default=None
        Seed for the randomised parts (Monte-Carlo Fisher, LiSSA, subsampling).
    verbose : int, default=0
    """

    _curvature_kind: str = ""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.sparse = True
        return tags

    def __init__(
        self,
        estimator,
        *,
        prefit=False,
        damping=0.0,
        polish=False,
        solver="auto",
        device="auto",
        dtype="float64",
        batch_size=4096,
        random_state=None,
        verbose=0,
    ):
        self.estimator = estimator
        self.prefit = prefit
        self.damping = damping
        self.polish = polish
        self.solver = solver
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    def _adapter_options(self):
        return dict(device=self.device, dtype=self.dtype, solver=self.solver,
                    batch_size=self.batch_size, random_state=self.random_state,
                    curvature=self._curvature_kind)

    def _fit_estimator(self, X, y, sample_weight):
        est = self.estimator
        last = est[-1] if isinstance(est, Pipeline) else est
        if _is_torch_module(last):
            if not self.prefit:
                raise ValueError(f"a torch module ({type(last).__name__}) cannot be fitted by "
                                 "skinfluence: train it, then pass prefit=True")
            return copy.deepcopy(est)
        if self.prefit:
            check_is_fitted(last)
            return copy.deepcopy(est)
        return fit_weighted(clone(est), X, y, sample_weight)

    def fit(self, X, y, sample_weight=None):
        """Fit the estimator (unless ``prefit``) and factorise its curvature.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        if self.solver not in ("auto", "dense", "cg", "lissa"):
            raise ValueError(f"solver must be 'auto', 'dense', 'cg' or 'lissa', got {self.solver!r}")
        if not isinstance(self.damping, numbers.Real) or self.damping < 0:
            raise ValueError(f"damping must be a non-negative number, got {self.damping!r}")
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None: "
                             "influence is defined through the training loss")
        check_consistent_length(X, y)
        y = np.asarray(y)
        if y.ndim != 1:
            y = np.ravel(y) if y.ndim == 2 and y.shape[1] == 1 else y
        if y.ndim != 1:
            raise ValueError(f"y must be one-dimensional, got shape {y.shape}")
        est = self._fit_estimator(X, y, sample_weight)
        adapter = make_adapter(est, **self._adapter_options())
        for attr in ("n_features_in_", "feature_names_in_"):
            if hasattr(est, attr):
                setattr(self, attr, getattr(est, attr))
        Z = adapter.design(X)
        y_enc = adapter.encode_target(y)
        if not adapter.is_classifier and not np.all(np.isfinite(y_enc)):
            raise ValueError("y contains NaN or infinity")
        sw = self._check_sample_weight(sample_weight, len(y_enc))
        self.sample_weight_ = sw
        self.n_samples_ = len(y_enc)
        self._Z, self._y = Z, y_enc
        self._set_model(adapter)
        self._check_convergence()
        return self

    @staticmethod
    def _check_sample_weight(sample_weight, n):
        if sample_weight is None:
            return np.ones(n)
        sw = np.asarray(sample_weight, dtype=float)
        if sw.shape != (n,):
            raise ValueError(f"sample_weight has shape {sw.shape}, expected ({n},)")
        if not np.all(np.isfinite(sw)) or (sw < 0).any():
            raise ValueError("sample_weight must be finite and non-negative")
        return sw

    def _set_model(self, adapter, refactor=True, eta=None):
        """Compute every per-sample piece and factorise the curvature at ``adapter.theta``.

        With ``refactor=False`` the previous factorisation is kept (see
        :meth:`_check_convergence`); ``eta`` are the outputs at ``adapter.theta`` if known.
        """
        self.adapter_ = adapter
        self.estimator_ = adapter.estimator
        Z, y = self._Z, self._y
        self._c = adapter.data_weights(y, self.sample_weight_)
        self._share = self.sample_weight_ / self.sample_weight_.sum() if adapter.mean_scaled else np.zeros(len(y))
        self._eta = adapter.eta(Z) if eta is None else eta
        self._g = adapter.loss.gradient(y, self._eta)
        self._W = adapter.loss.curvature(y, self._eta, self._curvature_kind)
        self._data_grad = adapter.total_gradient(Z, self._c[:, None] * self._g)
        pen = adapter.penalty
        self._pen_grad = pen.gradient(adapter.theta)
        if not refactor:
            return
        self._typical_loo = None
        self.solver_, self.solver_reason_ = self._choose_solver(adapter)
        if self.verbose:
            print(f"[{type(self).__name__}] solver={self.solver_!r}: {self.solver_reason_}")
        if self.solver_ != "dense":  # torch models only; smooth penalties only
            op = model_curvature(adapter, Z, y, self._c, self._curvature_kind)
            self.curvature_ = op.add_diagonal(pen.hessian_diagonal())
            self._active = np.ones(adapter.n_params, bool)
            self.factor_ = IterativeSolver(self.curvature_, self.solver_, self.damping,
                                           null_space=adapter.null_space(),
                                           random_state=self.random_state)
            return
        _check_memory((adapter.n_params, adapter.n_params), "the curvature")
        M = adapter.curvature(Z, y, self._c, self._curvature_kind)
        M[np.diag_indices_from(M)] += pen.hessian_diagonal()
        self.curvature_ = M
        self._active = pen.active_set(adapter.theta)
        self.factor_ = Factorization(M, self.damping, self._active, adapter.null_space())

    def _choose_solver(self, adapter):
        """``(solver, reason)``: dense where the p × p curvature fits, else CG."""
        if not hasattr(adapter, "curvature_matvec"):
            return "dense", "linear models use a dense Cholesky factorisation"
        if self.solver != "auto":
            return self.solver, "requested"
        p = adapter.n_params
        if p <= DENSE_MAX_PARAMS:
            return "dense", (f"p={p} <= DENSE_MAX_PARAMS={DENSE_MAX_PARAMS}: the dense curvature "
                             f"({8 * p * p / 2**20:.0f} MiB) is built and factorised once")
        return "cg", (f"p={p} > DENSE_MAX_PARAMS={DENSE_MAX_PARAMS}: a dense curvature would take "
                      f"{8 * p * p / 2**30:.1f} GiB; conjugate gradients with curvature-vector products")

    # ------------------------------------------------------------- convergence
    def _objective(self, theta, eta):
        """Training objective ``Σ c_i ℓ_i + π`` at ``theta`` with outputs ``eta``, up to a constant."""
        return float(self._c @ self.adapter_.loss.loss(self._y, eta)) + self.adapter_.penalty.value(theta)

    def _newton_step(self):
        """Newton step from θ̂ towards the optimum (θ̂ minus the step is the next iterate).

        For ℓ1 penalties a proximal Newton step with the full curvature, so that zero
        coordinates whose gradient exceeds their threshold enter the support.
        """
        ad = self.adapter_
        if ad.penalty.is_smooth:
            return self.factor_.solve(self._data_grad + ad.penalty.gradient(ad.theta))
        grad = self._data_grad + ad.penalty.smooth_gradient(ad.theta)
        return ad.theta - self._prox_step(self.curvature_.copy(), grad)

    def _prox_step(self, M, grad, l1_factor=1.0):
        """Proximal Newton iterate from θ̂ with smooth gradient ``grad`` and curvature ``M``.

        ``M`` (modified in place) gets the damping, and the directions the objective
        ignores (a multinomial's common intercept shift) a unit curvature, so that
        the step does not move along them, as the factorised solves do not.
        """
        ad = self.adapter_
        M[np.diag_indices_from(M)] += self.damping
        null = ad.null_space()
        if null is not None and null.size:
            M += null @ null.T
        return prox_newton_step(M, grad, ad.theta, ad.penalty, l1_factor)

    def _convergence_ratio(self):
        """‖Newton step to the optimum‖ relative to a typical leave-one-out step."""
        self._step = self._newton_step()
        step = np.linalg.norm(self._step)
        if self._typical_loo is None:  # the yardstick, once per factorisation
            rng = np.random.default_rng(0)
            idx = rng.choice(self.n_samples_, size=min(256, self.n_samples_), replace=False)
            loo = np.linalg.norm(self.factor_.solve(self._removal_gradients(idx).T), axis=0)
            self._typical_loo = np.median(loo)
        return step / self._typical_loo if self._typical_loo > 0 else 0.0

    def _check_convergence(self, threshold=0.05, target=0.05, max_steps=20):
        """Warn (or polish) when θ̂ is too far from the optimum for influence to mean anything.

        The yardstick is the Newton step to the optimum, relative to the median
        leave-one-out step: above ``threshold`` the optimisation error is of the order
        of the effects being estimated. Polishing takes Newton steps (proximal Newton
        steps for ℓ1 penalties) until the ratio is below ``target``.
        """
        ratio = self._convergence_ratio()
        self.n_polish_steps_ = 0
        if ratio > threshold and not self.polish:
            warnings.warn(
                f"{type(self.estimator_).__name__} is not converged enough for influence: the "
                f"distance to the optimum is {ratio:.0%} of a typical leave-one-out change. "
                "Refit with a smaller tol / larger max_iter, or pass polish=True to take Newton "
                "steps with the factorised curvature.",
                InfluenceWarning,
                stacklevel=3,
            )
        best = (ratio, dict(vars(self)))
        f0 = self._objective(self.adapter_.theta, self._eta)
        while self.polish and ratio > target and self.n_polish_steps_ < max_steps:
            ad = self.adapter_
            # the Newton step of the ratio, halved until the objective does not rise: a
            # net's Gauss–Newton or damped curvature promises descent only for short
            # steps. Near the optimum the decrease is below the objective's rounding
            # error, hence the tolerance.
            for t in 0.5 ** np.arange(10):
                new = ad.theta - t * self._step
                eta = ad.eta(self._Z, new)
                f = self._objective(new, eta)
                if f <= f0 + 1e-10 * abs(f0):
                    break
            else:
                break
            f0 = f
            # the curvature moves with θ: a step longer than a leave-one-out step changes it
            # by more than the error of the Newton step itself (a network's, always)
            refactor = (hasattr(ad, "curvature_matvec") or (ratio > 1 and not ad.constant_curvature)
                        or not np.array_equal(ad.penalty.active_set(new), self._active))
            adapter = make_adapter(ad.with_params(new), **self._adapter_options())
            # the outputs of the line search, unless the model stores θ rounded (float32)
            self._set_model(adapter, refactor, eta if np.array_equal(adapter.theta, new) else None)
            self.n_polish_steps_ += 1
            ratio = self._convergence_ratio()
            if ratio < best[0]:
                best = (ratio, dict(vars(self)))
        if self.polish and ratio > best[0]:  # keep the parameters closest to the optimum
            ratio = best[0]
            vars(self).clear()
            vars(self).update(best[1])
        if self.polish and ratio > threshold:
            warnings.warn(
                f"polishing stopped {ratio:.0%} of a typical leave-one-out change away from the "
                f"optimum after {self.n_polish_steps_} Newton step(s) with the {self._curvature_kind} "
                "curvature, too far for influence to be reliable: train the model closer to "
                "convergence first", InfluenceWarning, stacklevel=3)
        self.convergence_ratio_ = ratio

    # ---------------------------------------------------------------- building blocks
    def _check_fitted(self):
        check_is_fitted(self, "factor_")

    def _batches(self, n):
        bs = max(int(self.batch_size), 1)
        return (slice(i, min(i + bs, n)) for i in range(0, n, bs))

    def _removal_gradients(self, idx):
        """Rows ``v_i = c_i ∇ℓ_i + s_i ∇π`` for training points ``idx``."""
        Z = self._Z[idx]
        V = self.adapter_.gradients(Z, self._c[idx, None] * self._g[idx])
        return V + self._share[idx, None] * self._pen_grad[None, :]

    def _test_pieces(self, X, y):
        ad = self.adapter_
        Z = ad.design(X)
        y_enc = ad.encode_target(np.asarray(y))
        if len(y_enc) != Z.shape[0]:
            raise ValueError(f"X and y have inconsistent lengths {Z.shape[0]} and {len(y_enc)}")
        eta = ad.eta(Z)
        return Z, y_enc, eta

    def _indices(self, indices, allow_all=False):
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (self.n_samples_,):
                raise ValueError(f"a boolean mask must have shape ({self.n_samples_},)")
            idx = np.flatnonzero(idx)
        idx = np.atleast_1d(idx)
        if idx.size == 0:
            raise ValueError("indices is empty")
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError("indices must be a 1-d array of integer positions or a boolean mask")
        if idx.min() < -self.n_samples_ or idx.max() >= self.n_samples_:
            raise IndexError(f"indices out of range for {self.n_samples_} training samples")
        idx = idx % self.n_samples_
        if np.bincount(idx, minlength=self.n_samples_).max() > 1:
            raise ValueError("indices contains duplicates")
        return idx

    def _check_removal(self, idx):
        if len(idx) >= self.n_samples_:
            raise ValueError("cannot remove every training sample")
        if self.adapter_.is_classifier:
            K, codes = len(self.adapter_.classes_), self._y.astype(int)
            left = np.bincount(codes, minlength=K) - np.bincount(codes[idx], minlength=K)
            if not left.all():
                gone = np.flatnonzero(left == 0)
                raise ValueError(
                    f"removing these samples removes every sample of class "
                    f"{self.adapter_.classes_[gone].tolist()}; the model would change its classes"
                )

    def _newton_update(self, idx, g_delta, W_delta, share, method):
        """Δθ for a change of the objective on samples ``idx``.

        The change removes ``Σ c_i ℓ_i`` terms whose η-gradients and curvatures change by
        ``g_delta`` and ``W_delta`` (old minus new), and ``share`` of the normaliser.
        """
        ad = self.adapter_
        c = self._c[idx]
        J = ad.jacobians(self._Z[idx])                      # (m, K, p)
        v = np.einsum("mkp,mk->p", J, c[:, None] * g_delta) + share * self._pen_grad
        # diagonal blocks c_i W_i of the down-date (the m·K × m·K matrix is never formed)
        C = c[:, None, None] * W_delta if method == "ns" else np.zeros_like(W_delta)
        pen_diag = share * ad.penalty.hessian_diagonal() if method == "ns" else 0.0
        if ad.penalty.is_smooth:
            return self.factor_.downdated_solve(v, J, C, pen_diag) if C.any() else self.factor_.solve(v)
        # ℓ1: proximal Newton on the new objective's quadratic model
        smooth_grad = self._data_grad + ad.penalty.smooth_gradient(ad.theta) - v
        smooth_grad += share * (ad.penalty.gradient(ad.theta) - ad.penalty.smooth_gradient(ad.theta))
        M = self.curvature_ - block_gram(J, C)
        M[np.diag_indices_from(M)] -= pen_diag
        return self._prox_step(M, smooth_grad, 1.0 - share) - ad.theta

    # --------------------------------------------------------------- public API
    def parameter_gradients(self, X, output_gradients):
        """Parameter gradients ``J_iᵀ G_i`` of a quantity given by its η-gradients on ``X``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (m, n_features)
        output_gradients : ndarray of shape (m,) or (m, K)
            Derivative of the quantity with respect to each row's natural-scale output
            (e.g. ``∂ℓ/∂η`` for the loss, ``dμ/dη / m`` for a mean prediction).

        Returns
        -------
        ndarray of shape (m, n_params)
        """
        self._check_fitted()
        G = np.asarray(output_gradients, dtype=float)
        G = G.reshape(len(G), -1)
        return self.adapter_.gradients(self.adapter_.design(X), G)

    def removal_effect(self, gradients):
        """First-order change of differentiable quantities when each training point is removed.

        Parameters
        ----------
        gradients : ndarray of shape (n_params,) or (m, n_params)
            Gradients ``∇f`` of m quantities with respect to the parameters at θ̂
            (see :meth:`parameter_gradients`).

        Returns
        -------
        ndarray of shape (n_train,) or (m, n_train)
            ``∇fᵀ M⁻¹ v_i``: quantity after removing training point i minus now.
        """
        self._check_fitted()
        grads = np.asarray(gradients, dtype=float)
        _check_memory((np.atleast_2d(grads).shape[0], self.n_samples_), "the influence matrix")
        GA = self.factor_.solve(np.atleast_2d(grads).T).T
        out = np.empty((GA.shape[0], self.n_samples_))
        for sl in self._batches(self.n_samples_):
            out[:, sl] = GA @ self._removal_gradients(np.arange(sl.start, sl.stop)).T
        return out[0] if grads.ndim == 1 else out

    def attribute(self, X, y):
        """Influence of each training point on the loss of each test point.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_test, n_features)
        y : array-like of shape (n_test,)

        Returns
        -------
        A : ndarray of shape (n_test, n_train)
            ``A[j, i]`` ≈ loss of test point j after removing training point i, minus
            its loss now (first order). Positive: training point i helps test point j.
        """
        self._check_fitted()
        Z, y_enc, eta = self._test_pieces(X, y)
        g = self.adapter_.loss.gradient(y_enc, eta)
        return self.removal_effect(self.adapter_.gradients(Z, g))

    def transform(self, X):
        """Influence of each training point on the predictions for ``X``.

        Returns
        -------
        T : ndarray of shape (n_samples, n_train)
            Change of the decision function (binary and regression: the linear
            predictor; multiclass: the predicted class's logit) when each training
            point is removed, to first order.
        """
        self._check_fitted()
        ad = self.adapter_
        Z = ad.design(X)
        J = ad.jacobians(Z)                                  # (m, K, p)
        if ad.n_outputs > 1:
            J = J[np.arange(len(J)), ad.eta(Z).argmax(axis=1)]
        else:
            J = J[:, 0]
        return self.removal_effect(J)

    def loo_decision(self, method="ns"):
        """Approximate leave-one-out natural-scale outputs ``η_{-i}(x_i)``, shape (n, K).

        NS uses the Woodbury identity per sample, from the one factorisation:
        ``η_{-i} − η_i = (I − c_i G_i W_i)⁻¹ J_i M⁻¹ v_i`` with ``G_i = J_i M⁻¹ J_iᵀ``.
        Points whose removal leaves the curvature singular (leverage 1) get NaN and a
        warning.
        """
        self._check_fitted()
        _check_method(method)
        ad = self.adapter_
        A = self.factor_.inverse()
        a_pen = ad.jvp(self._Z, A @ self._pen_grad)          # J_i M⁻¹ ∇π, (n, K)
        out = np.empty_like(self._eta)
        bad = np.zeros(self.n_samples_, bool)
        eye = np.eye(ad.n_outputs)
        for sl in self._batches(self.n_samples_):
            G = ad.jacobian_quadratic(self._Z[sl], A)        # (b, K, K)
            c = self._c[sl]
            q = c[:, None] * np.einsum("bkl,bl->bk", G, self._g[sl]) + self._share[sl, None] * a_pen[sl]
            if method == "ns":
                D = eye - c[:, None, None] * G @ self._W[sl]
                det = D[:, 0, 0] if ad.n_outputs == 1 else np.linalg.det(D)
                sing = np.abs(det) < 1e-10
                D[sing] = eye
                q = _batched_solve(D, q)
                q[sing] = np.nan
                bad[sl] = sing
            out[sl] = self._eta[sl] + q
        if bad.any():
            warnings.warn(f"{bad.sum()} training points have leverage 1: their leave-one-out "
                          "prediction is undefined (NaN)", InfluenceWarning, stacklevel=2)
        return out

    def approx_loocv(self, method="ns", response_method="predict"):
        """Approximate leave-one-out predictions for every training point.

        Returns what ``cross_val_predict(estimator, X, y, cv=LeaveOneOut(),
        method=response_method)`` would, from one fit.

        Parameters
        ----------
        method : {"ns", "ij"}, default="ns"
            Newton step with the leave-one-out curvature, or infinitesimal jackknife.
        response_method : {"predict", "predict_proba", "predict_log_proba", "decision_function"}

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        self._check_fitted()
        return self.adapter_.response(self.loo_decision(method), response_method)

    def self_influence(self, method="ns"):
        """Each training point's own leave-one-out loss increase.

        ``method="ns"`` evaluates the loss at the approximate leave-one-out prediction;
        ``"ij"`` is the first-order value, the diagonal of ``attribute`` on the
        training set.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        self._check_fitted()
        _check_method(method)
        loss = self.adapter_.loss
        if method == "ns":
            return loss.loss(self._y, self.loo_decision("ns")) - loss.loss(self._y, self._eta)
        A = self.factor_.inverse()
        a_pen = self.adapter_.jvp(self._Z, A @ self._pen_grad)
        out = np.empty(self.n_samples_)
        for sl in self._batches(self.n_samples_):
            G = self.adapter_.jacobian_quadratic(self._Z[sl], A)
            q = self._c[sl, None] * np.einsum("bkl,bl->bk", G, self._g[sl]) + self._share[sl, None] * a_pen[sl]
            out[sl] = np.einsum("bk,bk->b", self._g[sl], q)
        return out

    def parameter_change(self, indices, method="ns"):
        """Approximate change of the parameter vector when ``indices`` are removed."""
        self._check_fitted()
        _check_method(method)
        idx = self._indices(indices)
        self._check_removal(idx)
        return self._newton_update(idx, self._g[idx], self._W[idx], self._share[idx].sum(), method)

    def unlearn(self, indices, method="ns"):
        """The model as if ``indices`` had not been in the training data.

        Parameters
        ----------
        indices : array-like of int or bool mask
            Training points to remove.
        method : {"ns", "ij"}, default="ns"
            ``"ns"``: one Newton step on the objective without those points (for a
            canonical GLM without penalty and one point this is Pregibon's one-step
            leave-one-out estimate). ``"ij"``: the step with the full-data curvature.

        Returns
        -------
        estimator
            A new fitted estimator of the user's type; ``estimator_`` is unchanged.
        """
        delta = self.parameter_change(indices, method)
        return self.adapter_.with_params(self.adapter_.theta + delta)

    def relabel(self, indices, y_new, method="ns"):
        """The model as if training points ``indices`` had labels ``y_new``.

        Returns
        -------
        estimator
            A new fitted estimator of the user's type.
        """
        self._check_fitted()
        _check_method(method)
        idx = self._indices(indices)
        ad = self.adapter_
        y_new = ad.encode_target(np.broadcast_to(np.asarray(y_new), idx.shape))
        eta = self._eta[idx]
        g_new = ad.loss.gradient(y_new, eta)
        W_new = ad.loss.curvature(y_new, eta, self._curvature_kind)
        delta = self._newton_update(idx, self._g[idx] - g_new, self._W[idx] - W_new, 0.0, method)
        return ad.with_params(ad.theta + delta)

    def cv_decision(self, test_folds, method="ns"):
        """Approximate held-out natural-scale outputs for each fold.

        Parameters
        ----------
        test_folds : iterable of index arrays
            The held-out samples of each fold.

        Returns
        -------
        ndarray of shape (n_samples, K)
            Rows of samples in no fold are NaN; a sample in several folds keeps its last.
        """
        self._check_fitted()
        _check_method(method)
        out = np.full_like(self._eta, np.nan)
        for fold in test_folds:
            idx = self._indices(fold)
            self._check_removal(idx)
            delta = self._newton_update(idx, self._g[idx], self._W[idx], self._share[idx].sum(), method)
            out[idx] = self.adapter_.eta(self._Z[idx], self.adapter_.theta + delta)
        return out


class HessianInfluence(BaseInfluence):
    """Classical influence functions, with the Hessian of the training objective.

    See :class:`BaseInfluence` for the parameters and methods. For a GLM with a
    canonical link (logistic, Poisson with log link, linear) the Hessian equals the
    Fisher and both estimators agree.
    """

    _curvature_kind = "hessian"


class FisherInfluence(BaseInfluence):
    """Approximate Fisher influence functions (AFIF, Lev & Wilson).

    The Hessian is replaced by the Fisher information of the exponential-family loss
    (for a GLM ``Xᵀ W X`` with ``W = h'(η)² / V(μ)``; for a network the generalised
    Gauss–Newton ``Σ J_iᵀ Λ_i J_i``), which is positive semi-definite and needs no
    second derivative of the model. See :class:`BaseInfluence` for the parameters.

    Parameters
    ----------
    fisher : {"exact", "mc", "empirical"}, default="exact"
        Torch models: analytic output Fisher, labels sampled from the model, or observed
        labels (gradient outer products). Linear models use the analytic Fisher.
    """

    _curvature_kind = "fisher"

    def __init__(self, estimator, *, fisher="exact", prefit=False, damping=0.0, polish=False,
                 solver="auto", device="auto", dtype="float64", batch_size=4096,
                 random_state=None, verbose=0):
        super().__init__(estimator, prefit=prefit, damping=damping, polish=polish, solver=solver,
                         device=device, dtype=dtype, batch_size=batch_size,
                         random_state=random_state, verbose=verbose)
        self.fisher = fisher

    def _adapter_options(self):
        return {**super()._adapter_options(), "fisher": self.fisher}
