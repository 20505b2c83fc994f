"""Generalized influence (GIF, Lyu et al.): influence restricted to a parameter subset J.

Only the parameters in J move. With ``H`` the curvature (Hessian or Fisher, penalty and
damping included) and ``g`` the gradient of the change (the removed samples' loss for
unlearning), the strategies compared in the GIF paper are all least-squares problems
``min_x ‖A x − b‖`` with ``x`` zero outside J:

=============  ==========================  ==========================================
strategy       ``A``, ``b``                solution
=============  ==========================  ==========================================
"gif"          ``H[:, J]``, ``g``          ``(H_Jᵀ H_J)⁻¹ H_Jᵀ g`` (all rows of H kept)
"freezing"     ``H[J, J]``, ``g_J``        ``H_JJ⁻¹ g_J`` (the other parameters frozen)
"projecting"   ``H``, ``g``, then masked   ``(H⁻¹ g)_J`` (the full step, indexed to J)
"full"         ``H``, ``g``                ``H⁻¹ g`` (J = all: the ordinary influence)
"second_order" as "freezing"               Basu et al. (2020): ``x₁ + H_JJ⁻¹ D_JJ x₁``
=============  ==========================  ==========================================

``"gif"`` with J = all is ``"full"``. ``"second_order"`` differs from the first order only
when a down-date ``D`` (the curvature of the removed samples) is given: the Newton step
``(H − D)⁻¹ g`` is expanded to second order in ``D``, ``H⁻¹g + H⁻¹ D H⁻¹ g`` (third
derivatives dropped, as in Basu et al.); the mean-scaled factors ``p/(1−p)`` of their
formula are this engine's down-dated penalty share and data weights.

Three ways to solve:

* ``method="exact"``: the dense ``H`` (``operator.dense()``), sliced and solved by
  least squares (LAPACK ``gelsd``: the minimum-norm solution when ``A`` is singular).
* ``method="lissa"``: the authors' modified LiSSA on the normal equations, two products
  with ``H`` per step (the mask between them for "freezing")::

      v = P (A/c)ᵀ (b/c);     I ← v + I − P (A/c)ᵀ (A/c) I

  whose fixed point is the least-squares solution; it converges when every eigenvalue
  of ``AᵀA/c²`` is below 2, i.e. ``c > σ_max(A)/√2``. The normaliser ``c`` starts at
  ``normalizer`` (1 in the authors' runs); every second step the step norm ``‖ΔI‖`` is
  compared with the one two steps before, and if it grew (or became non-finite) the
  iteration restarts from scratch with ``c ← c + normalizer_step``. It stops when
  ``‖ΔI‖ < tol·√|J|`` or after ``max_iter`` steps. **Truncation is a regulariser, not an
  error**: the iteration is gradient descent on ``‖Ax − b‖²`` from 0, and stopping early
  damps the directions of small singular value (like ridge with penalty
  ``≈ c² / max_iter``), which in the authors' experiments often unlearns better than
  the exact solution (the project's own measurement on a small digits CNN agreed:
  docs/user_guide/maths.rst §2). ``info_`` says whether it converged. Its products are the operator's
  (matrix-free), or the dense ``H``'s once that is cheaper: when a solve may take more
  products (``2 · max_iter ·`` right-hand sides) than ``H`` has columns and ``H`` fits in
  :data:`DENSE_PRODUCTS_BYTES` (an attribution's many test points; the iteration is the
  same, only the products are cheaper).
* ``method="lanczos"``: LiSSA's truncation without its dependence on the normaliser.
  A restart raises ``c``, and the same ``max_iter`` steps then invert only the directions
  of ``σ² ≳ c²/max_iter``: measured on a digits CNN, one restart (c 1 → 6) took GIF's
  class-removal F1 from 0.93 to 0.63. Counting the steps in units of ``c`` fixes the
  regulariser; its limit is the gradient flow's filter ``(1 − e^{−Tσ²})/σ²``,
  ``T = max_iter/normalizer²``, which :func:`gif_flow` evaluates by Lanczos in about
  ``√(T σ_max²)`` steps (no step size, so nothing to diverge).
"""

from __future__ import annotations

import copy
import numbers

import numpy as np
from scipy import linalg

from .._linalg import block_gram
from ..exceptions import SolverDivergenceError
from .operators import CurvatureOperator
from .solvers import Solver, register_solver

__all__ = ["STRATEGIES", "METHODS", "gif_lissa", "gif_flow", "GIFSolver", "GIFExactSolver"]

STRATEGIES = ("gif", "freezing", "projecting", "full", "second_order")
METHODS = ("lanczos", "lissa", "exact")
#: largest dense curvature LiSSA builds to replace its matrix-free products (p ≈ 8,000)
DENSE_PRODUCTS_BYTES = 2**29


def gif_lissa(matvec, b, mask, *, rows=None, normalizer=1.0, normalizer_step=5.0,
              max_iter=200, tol=1e-9, max_restarts=100):
    """The authors' modified LiSSA for ``min ‖A x − b‖`` over ``x`` supported on ``mask``.

    Parameters
    ----------
    matvec : callable
        ``V ↦ H V`` for ``V`` of shape (p,) or (p, m).
    b : ndarray of shape (p,) or (p, m)
    mask : ndarray of bool, shape (p,)
        The coordinates J that may move.
    rows : ndarray of bool, shape (p,), optional
        The rows of ``H`` (and ``b``) in ``A``: all (None: GIF, ``A = H[:, J]``), or e.g.
        ``mask`` itself (Freezing: ``A = H[J, J]``, ``b_J``).
    normalizer : float, default=1.0
        Initial ``c``.
    normalizer_step : float, default=5.0
        Added to ``c`` on each restart; after ``GEOMETRIC_AFTER`` (10) restarts ``c`` doubles
        instead, so that a curvature far from unit scale is reached.
    max_iter : int, default=200
        Steps per attempt; the iteration stops there without error (truncation).
    tol : float, default=1e-9
        Stop when ``‖ΔI‖ < tol·√|J|`` (largest column norm).
    max_restarts : int, default=100

    Returns
    -------
    x : ndarray like ``b``, zero outside ``mask``
    info : dict
        ``n_iter`` (steps of the final attempt), ``total_iter``, ``n_restarts``,
        ``normalizer`` (final ``c``), ``residual`` (``‖ΔI‖/‖v‖`` of the last step: the
        relative normal-equation residual), ``step_norm`` and ``converged``.

    Raises
    ------
    SolverDivergenceError
        If it still diverges after ``max_restarts`` restarts.
    """
    b = np.asarray(b, dtype=float)
    mask = np.asarray(mask, bool)
    P = mask if b.ndim == 1 else mask[:, None]
    c = float(normalizer)
    if not c > 0:
        raise ValueError(f"normalizer must be positive, got {normalizer!r}")
    stop = tol * np.sqrt(max(mask.sum(), 1))
    R = 1.0 if rows is None else np.asarray(rows, bool)
    R = R[:, None] if b.ndim == 2 and rows is not None else R
    rhs = P * matvec(R * b)                             # Aᵀb = (H R b)_J, H symmetric
    total = 0
    for restart in range(max_restarts + 1):
        v = rhs / c**2
        vnorm = _colmax(v) or 1.0
        x = v.copy()
        old, diff, k, diverged = np.inf, np.inf, 0, False
        while k < max_iter:
            k += 1
            Hx = matvec(x)
            step = v - P * matvec(R * Hx) / c**2
            x += step
            diff = _colmax(step)
            if not np.isfinite(diff):
                diverged = True
                break
            if k % 2 == 1:                               # the authors' check, every 2 steps
                if diff > old:
                    diverged = True
                    break
                old = diff
            if diff < stop:
                break
        total += k
        if not diverged:
            return x, {"n_iter": k, "total_iter": total, "n_restarts": restart, "normalizer": c,
                       "residual": diff / vnorm, "step_norm": diff, "converged": bool(diff < stop)}
        # the authors' additive restarts; past GEOMETRIC_AFTER of them the curvature's scale is
        # far above the normaliser (an unscaled linear model): double it, so any scale is reached
        c = c + normalizer_step if restart < GEOMETRIC_AFTER else max(c + normalizer_step, 2 * c)
    raise SolverDivergenceError(
        f"modified LiSSA still diverges after {max_restarts} restarts (normaliser {c:.3g}); "
        "pass normalizer='auto' (the curvature's scale), or a larger normalizer_step"
    )


def gif_flow(matvec, b, mask, *, rows=None, normalizer=1.0, max_iter=200, tol=1e-9, max_krylov=300):
    """The limit of :func:`gif_lissa`'s truncation, computed by Lanczos: the same regulariser
    whatever normaliser the iteration would have needed.

    Modified LiSSA at normaliser ``c`` multiplies an eigen-direction of ``N = AᵀA`` (eigenvalue
    ``z = σ²``) by ``(1 − (1 − z/c²)^k)/z`` after ``k`` steps. When a restart raises ``c``, the
    same ``k`` inverts only ``z ≳ c²/k``: the truncation (the result) changes with ``c``.
    Counting the steps in units of ``c``, ``k = max_iter · (c/normalizer)²``, keeps it fixed,
    and as ``c`` grows the filter tends to the gradient flow's

        f(z) = (1 − exp(−T z)) / z,    T = max_iter / normalizer²

    — LiSSA's own filter at ``c = normalizer`` wherever that converges (``z < 2c²``), and
    defined (and bounded by ``T``) for every ``z ≥ 0``, so it needs no restart. This computes
    ``x = f(N) Aᵀb`` by Lanczos on ``N`` (two products with ``H`` a step, as LiSSA),
    fully re-orthogonalised: ``x ≈ ‖r‖ Q f(T_k) e₁`` with ``T_k`` the tridiagonal matrix.
    ``f`` is entire, so the iterates converge (a degree of about ``√(T·σ_max²)`` suffices)
    without a step size and so without divergence.

    Parameters
    ----------
    matvec, b, mask, rows :
        As for :func:`gif_lissa`.
    normalizer : float, default=1.0
        The unit ``c`` in which ``max_iter`` counts steps.
    max_iter : int, default=200
        The truncation: ``max_iter`` LiSSA steps at normaliser ``normalizer``.
    tol : float, default=1e-9
        Stop when a Lanczos step changes ``x`` by less than ``tol·‖x‖``.
    max_krylov : int, default=300
        Most Lanczos steps per right-hand side (each keeps one vector of ``|J|``).

    Returns
    -------
    x : ndarray like ``b``, zero outside ``mask``
    info : dict
        ``n_iter`` (Lanczos steps, largest over columns), ``total_iter``, ``n_restarts`` (0),
        ``normalizer``, ``residual`` (the last relative change of ``x``), ``converged``.
    """
    b = np.asarray(b, dtype=float)
    mask = np.asarray(mask, bool)
    c = float(normalizer)
    if not c > 0:
        raise ValueError(f"normalizer must be positive, got {normalizer!r}")
    horizon = max_iter / c**2
    R = 1.0 if rows is None else np.asarray(rows, bool)
    n = int(mask.sum())

    def N(q):                                            # AᵀA on J's coordinates
        v = np.zeros(mask.shape)
        v[mask] = q
        return matvec(R * matvec(v))[mask]

    def flow(z):                                         # (1 − e^{−Tz})/z, T at z = 0
        z = np.maximum(z, 0.0)
        small = z * horizon < 1e-12
        return np.where(small, horizon, -np.expm1(-horizon * z) / np.where(small, 1.0, z))

    B = b.reshape(b.shape[0], -1)
    X = np.zeros_like(B)
    steps, total, worst, ok = 0, 0, 0.0, True
    for j in range(B.shape[1]):
        r = matvec(R * B[:, j])[mask]                    # Aᵀb on J
        beta0 = np.linalg.norm(r)
        if n == 0 or beta0 == 0 or not np.isfinite(beta0):
            continue
        Q = np.empty((min(max_krylov, n), n))
        Q[0] = r / beta0
        alpha, beta = [], []
        x_old, change, k = None, np.inf, 0
        while True:
            w = N(Q[k])
            alpha.append(float(Q[k] @ w))
            w -= alpha[-1] * Q[k] + (beta[-1] * Q[k - 1] if k else 0.0)
            for _ in range(2):                           # full re-orthogonalisation
                w -= Q[:k + 1].T @ (Q[:k + 1] @ w)
            k += 1
            theta, S = linalg.eigh_tridiagonal(np.array(alpha), np.array(beta))
            x = beta0 * (Q[:k].T @ (S @ (flow(theta) * S[0])))
            if x_old is not None:
                change = np.linalg.norm(x - x_old) / (np.linalg.norm(x) or 1.0)
            x_old = x
            b_next = np.linalg.norm(w)
            if change < tol or b_next <= 1e-12 * max(map(abs, alpha)) or k == len(Q):
                break
            beta.append(b_next)
            Q[k] = w / b_next
        converged = change < tol or b_next <= 1e-12 * max(map(abs, alpha))
        X[mask, j] = x
        steps, total = max(steps, k), total + k
        worst, ok = max(worst, change if np.isfinite(change) else 0.0), ok and converged
    return X.reshape(b.shape), {"n_iter": steps, "total_iter": total, "n_restarts": 0, "normalizer": c,
                                "residual": float(worst), "converged": bool(ok)}


#: restarts after which the normaliser doubles instead of growing by ``normalizer_step``
GEOMETRIC_AFTER = 10


def _colmax(V):
    if V.size == 0:
        return 0.0
    return float(np.max(np.linalg.norm(V.reshape(V.shape[0], -1), axis=0)))


@register_solver("gif")
class GIFSolver(Solver):
    """Solver of the generalized influence step, registered as ``solver="gif"``.

    Parameters
    ----------
    operator : CurvatureOperator
        ``H`` with the penalty curvature included.
    subset : ndarray of bool, shape (p,), optional
        The parameter subset J of the strategy (default: all parameters).
    active : ndarray of bool, shape (p,), optional
        The registry's meaning: coordinates that may move at all (an ℓ1 support); the
        others are held fixed and the system is restricted to the active ones, as every
        registered solver does (so ``solver="gif"`` with J = all and ``active`` is the
        frozen solve). J is intersected with it.
    strategy : {"gif", "freezing", "projecting", "full", "second_order"}, default="gif"
        See the module docstring.
    method : {"lissa", "lanczos", "exact"}, default="lissa"
        The authors' modified LiSSA (:func:`gif_lissa`), the limit of its truncation
        computed by Lanczos (:func:`gif_flow`: the same regulariser whatever the
        normaliser), or the dense least squares.
    damping : float, default=0.0
        Added to the diagonal of ``H``.
    null_space, random_state : ignored
        Least squares returns the minimum-norm solution and the iteration never excites
        directions outside the range of ``H``; accepted for the factory's signature.
    normalizer : float or "auto", default=1.0
        LiSSA's initial ``c`` (the authors start at 1). ``"auto"``: the curvature's largest
        eigenvalue by power iteration (``≥ σ_max(A)`` for every strategy, so the first
        attempt converges unless the estimate is far below it) — for curvatures whose
        scale is far from 1, where additive restarts from 1 would take many attempts.
    normalizer_step, max_iter, tol, max_restarts, max_krylov :
        Modified LiSSA's settings (see :func:`gif_lissa`; ``max_krylov``: Lanczos's, see
        :func:`gif_flow`). The solver's default
        ``max_iter`` runs to convergence on well-conditioned systems; the authors'
        truncation (30–1000 steps) is :class:`~skinfluence.GeneralizedInfluence`'s default.

    Attributes
    ----------
    info_ : dict
        The last solve's ``n_iter``, ``n_restarts``, ``normalizer``, ``residual``,
        ``converged`` (LiSSA), or for ``method="exact"`` its ``residual`` (and ``n_iter`` 1:
        one direct solve).
    """

    uses_random_state = True
    downdates_by_products = True
    options = {"subset": None, "strategy": "gif", "method": "lissa", "normalizer": 1.0,
               "normalizer_step": 5.0, "max_iter": 10_000, "tol": 1e-12, "max_restarts": 100,
               "max_krylov": 300}

    def __init__(self, operator, *, subset=None, active=None, strategy="gif", method="lissa",
                 damping=0.0, null_space=None, normalizer=1.0, normalizer_step=5.0,
                 max_iter=10_000, tol=1e-12, max_restarts=100, max_krylov=300, random_state=None):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        for name, val in (("max_iter", max_iter), ("max_restarts", max_restarts), ("max_krylov", max_krylov)):
            if not isinstance(val, numbers.Integral) or val < (0 if name == "max_restarts" else 1):
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        if isinstance(operator, np.ndarray):
            operator = CurvatureOperator.from_matrix(operator)
        self.n_params = operator.n_params
        self.damping = float(damping)
        self.operator = operator.add_diagonal(float(damping)) if damping else operator
        self.free = self._mask(active, "active")                 # rows and columns of the system
        J = self._mask(None if strategy == "full" else subset, "subset")
        self.active = J & self.free                               # what moves
        self.strategy = strategy
        self.method = method
        if normalizer == "auto":
            lam = self.operator.max_eigenvalue(random_state=random_state)
            normalizer = lam if lam > 0 else 1.0
        self.lissa_options = dict(normalizer=normalizer, normalizer_step=normalizer_step, max_iter=max_iter,
                                  tol=tol, max_restarts=max_restarts, max_krylov=max_krylov)
        self.info_ = {}
        self._dense = None

    def with_damping(self, damping):
        """The same subset and curvature with another damping (the dense ``H`` shifted)."""
        new = copy.copy(self)
        shift = float(damping) - self.damping
        new.damping, new.info_ = float(damping), {}
        new.operator = self.operator.add_diagonal(shift)
        if self._dense is not None:
            new._dense = self._dense + shift * np.eye(self.n_params)
        return new

    @property
    def curvature(self):
        """The curvature (damping included): dense for ``method="exact"``, else the operator."""
        return self._matrix() if self.method == "exact" else self.operator

    # ------------------------------------------------------------------ pieces
    def _mask(self, mask, name):
        mask = np.ones(self.n_params, bool) if mask is None else np.asarray(mask, bool)
        if mask.shape != (self.n_params,):
            raise ValueError(f"{name} must be a boolean mask of shape ({self.n_params},)")
        return mask

    @property
    def _cols(self):
        """Coordinates the least-squares problem solves for."""
        return self.free if self.strategy == "projecting" else self.active

    @property
    def _rows(self):
        """Rows of ``H`` in the problem: J's for the square strategies, else every free one."""
        return self._cols if self.strategy in ("freezing", "second_order") else self.free

    def _matrix(self):
        if self._dense is None:
            self._dense = self.operator.dense()
        return self._dense

    def _lstsq(self, H, b):
        cols, rows = self._cols, self._rows
        A = H[np.ix_(rows, cols)]
        rhs = b[rows]
        xs = linalg.lstsq(A, rhs, lapack_driver="gelsd", check_finite=False)[0]
        denom = np.linalg.norm(A.T @ rhs) or 1.0
        residual = float(np.linalg.norm(A.T @ (A @ xs - rhs)) / denom)
        self.info_ = {"method": "exact", "residual": residual,
                      "n_iter": 1, "n_restarts": 0, "normalizer": 1.0, "converged": True}
        x = np.zeros(b.shape)
        x[cols] = xs
        return x

    def _first_order(self, b, matvec=None, H=None):
        """The strategy's solution for right-hand side ``b`` (before masking)."""
        if self.method == "exact":
            return self._lstsq(self._matrix() if H is None else H, b)
        rows = None if self._rows.all() else self._rows
        opts = dict(self.lissa_options)
        if self.method == "lanczos":                     # no step size: nothing restarts
            iterate = gif_flow
            del opts["normalizer_step"], opts["max_restarts"]
        else:
            iterate = gif_lissa
            del opts["max_krylov"]
        x, self.info_ = iterate(matvec or self._products(b), b, self._cols, rows=rows, **opts)
        self.info_["method"] = self.method
        return x

    def _products(self, b):
        """LiSSA's ``V ↦ H V``: the dense ``H``'s once it exists or pays (see the module
        docstring), else the operator's."""
        columns = 1 if b.ndim == 1 else b.shape[1]
        steps = self.lissa_options["max_krylov" if self.method == "lanczos" else "max_iter"]
        products = 2 * steps * columns
        if self._dense is None and (products <= self.n_params
                                    or 8 * self.n_params**2 > DENSE_PRODUCTS_BYTES):
            return self.operator.matvec
        H = self._matrix()
        return lambda V: H @ V

    def _finish(self, x):
        if self.strategy == "projecting":
            x = x * (self.active if x.ndim == 1 else self.active[:, None])
        return x

    # -------------------------------------------------------------- interface
    def solve(self, b):
        """The step for right-hand side(s) ``b`` of shape (p,) or (p, m); zeros outside J."""
        b = np.asarray(b, dtype=float)
        if b.size == 0:
            return np.zeros_like(b)
        return self._finish(self._first_order(b))

    def inverse(self):
        """The p × p matrix of the linear map ``b ↦ solve(b)`` (not symmetric for "gif")."""
        return self.solve(np.eye(self.n_params))

    def downdated_solve(self, b, U, C, diag=None):
        """The step with curvature ``H − D``, ``D = Uᵀ C U + diag(d)`` (the removed samples).

        ``U``: per-sample Jacobians (m, K, p) with blocks ``C`` (m, K, K), or stacked
        (m, p) with ``C`` (m, m). ``"second_order"`` expands in ``D`` instead.
        """
        p = self.n_params
        d = np.zeros(p) if diag is None else np.broadcast_to(np.asarray(diag, float), (p,))
        Uf = U.reshape(-1, p)
        Cf = linalg.block_diag(*C) if U.ndim == 3 else C

        def down(V):
            return Uf.T @ (Cf @ (Uf @ V)) + (d if V.ndim == 1 else d[:, None]) * V

        dense = None
        if self.method == "exact" and self.strategy != "second_order":
            dense = (block_gram(U, C) if U.ndim == 3 else Uf.T @ Cf @ Uf) + np.diag(d)
        return self.solve_downdated(b, down, dense)

    def solve_downdated(self, b, down, dense=None):
        """The step with curvature ``H − D``, ``D`` given by its products ``down(V) = D V``.

        For networks whose per-sample Jacobians do not fit in memory: ``D`` is then
        e.g. the curvature operator of the removed rows. ``dense`` is ``D`` as a matrix,
        if known (``method="exact"``; otherwise it is assembled from ``down``).
        """
        b = np.asarray(b, dtype=float)
        if self.strategy == "second_order":
            x1 = self._first_order(b)
            info = self.info_
            J = self.active if b.ndim == 1 else self.active[:, None]
            x2 = self._first_order(down(x1) * J)
            self.info_ = {**info, "second_order": self.info_}
            return x1 + x2
        if self.method == "exact":
            D = down(np.eye(self.n_params)) if dense is None else dense
            return self._finish(self._first_order(b, H=self._matrix() - D))
        products = self._products(b)

        def retained(V):
            return products(V) - down(V)

        return self._finish(self._first_order(b, matvec=retained))


@register_solver("gif_exact")
class GIFExactSolver(GIFSolver):
    """:class:`GIFSolver` with ``method="exact"`` (dense least squares): ``solver="gif_exact"``."""

    dense = True
    options = {k: v for k, v in GIFSolver.options.items() if k != "method"}

    def __init__(self, operator, **options):
        super().__init__(operator, **{**options, "method": "exact"})
