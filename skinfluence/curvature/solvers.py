"""The solver registry: one place that turns a curvature operator into ``M⁻¹``.

A solver is built by :func:`make_solver` from a
:class:`~skinfluence.curvature.operators.CurvatureOperator` (penalty curvature
included) and owns what every solve needs:

* ``damping``: ``δ`` added to the diagonal;
* ``null_space``: orthonormal directions ``Z`` the objective ignores (a multinomial's
  common intercept shift); ``Z Zᵀ`` is added, so solves act as the pseudo-inverse on
  gradients, which are orthogonal to ``Z``;
* ``active``: the coordinates that move (an ℓ1 model's support; a parameter subset
  ``J``); the others are held fixed and solves return 0 there.

Capabilities are declared on the class (never probed): ``dense`` (needs the curvature as
a matrix), ``sparse_rows`` (takes sparse right-hand sides and Jacobian rows),
``can_shift`` (``shifted(d)``: the solver of ``M − diag(d)``, for exact leave-one-out of
mean-scaled penalties), ``has_prox_step`` (``prox_step``: the proximal Newton steps of ℓ1
penalties), ``uses_batch_size`` and ``uses_random_state`` (what the estimator passes), and
``options``: the keyword options a user may pass through ``solver_options``, with their
defaults (validated by :func:`check_solver_options`; scikit-learn's spellings
``max_iter`` and ``tol``).

Every solver implements ``solve(b)`` for ``b`` of shape (p,) or (p, m), ``inverse()``,
``downdated_solve(b, U, C, diag)`` (the curvature without some samples: ``M − Σ U_iᵀ C_i
U_i − diag(d)``), ``with_damping(δ)`` (the same curvature at another damping, from what the
solver kept: no rebuild) and reports ``info_``. Leave-one-out needs the quadratics ``J_i M⁻¹
J_iᵀ`` of every training row: ``inverse_operator()`` is what the model adapter's
``jacobian_quadratic`` reads them from, the dense ``M⁻¹`` by default, or an
:class:`InverseOperator` (``@`` solves, ``quadratic(U)`` gives ``diag(U M⁻¹ Uᵀ)``) for a
solver that never forms ``p × p`` (the dual form). Registered: ``"dense"`` (Cholesky and
Woodbury down-dates, :mod:`.factor`), ``"dual"`` (the ``n × n`` form of a linear model
with an ℓ2 penalty, :mod:`.dual`), ``"cg"`` and ``"lissa"`` (:mod:`.iterative`),
``"nystrom"`` and ``"arnoldi"`` (low-rank data term, :mod:`.lowrank`), ``"gif"`` and
``"gif_exact"`` (:mod:`.gif`). A new solver registers itself with :func:`register_solver`
and is then available to every estimator through ``solver=`` (its keyword options through
``solver_options=``).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

__all__ = ["SOLVERS", "Solver", "InverseOperator", "register_solver", "make_solver",
           "check_solver_options", "choose_solver", "DENSE_MAX_PARAMS", "DENSE_CHEAP_PARAMS", "DUAL_MAX_SAMPLES"]

DENSE_MAX_PARAMS = 12_000  # solver="auto": dense curvature up to this many parameters
DENSE_CHEAP_PARAMS = 2_000  # ... and, whatever n, while p × p is this cheap (32 MiB)
DUAL_MAX_SAMPLES = 10_000  # solver="auto": the n × n dual form up to this many curvature rows

SOLVERS: dict[str, type] = {}


class Solver:
    """Base class of the registered solvers (see the module docstring for the protocol)."""

    name = ""
    #: whether the solver needs the curvature as a dense matrix
    dense = False
    #: whether ``solve`` and ``downdated_solve`` take sparse right-hand sides and Jacobian rows
    sparse_rows = False
    #: whether the solver takes the estimator's ``batch_size`` (rows per block)
    uses_batch_size = False
    #: whether the solver takes the estimator's ``random_state``
    uses_random_state = False
    #: whether :meth:`shifted` gives the solver of ``M − diag(d)``
    can_shift = False
    #: whether :meth:`prox_step` takes proximal Newton steps (ℓ1 penalties)
    has_prox_step = False
    #: whether ``trace()`` gives the curvature's trace for free and ``redamp(δ)`` sets the
    #: damping after the fit (``damping="auto"`` then needs no probes; a solver built with
    #: ``damping=None`` waits for ``redamp``)
    traces_curvature = False
    #: whether ``solve_downdated(b, down)`` takes the down-date as products ``V ↦ D V``
    #: (a network's removed rows then need no per-sample Jacobians)
    downdates_by_products = False
    #: the options a user may set through ``solver_options``: name -> default
    options: dict = {}

    def solve(self, b):
        raise NotImplementedError

    def inverse(self):
        raise NotImplementedError

    def inverse_operator(self):
        """``M⁻¹`` as the model adapter's ``jacobian_quadratic`` reads it: the dense inverse
        here, computed once and kept; solvers that never form ``p × p`` return an
        :class:`InverseOperator`."""
        if self.__dict__.get("_inverse") is None:
            self._inverse = self.inverse()
        return self._inverse

    def shifted(self, diag):
        """The solver of ``M − diag(d)`` (only where ``can_shift``)."""
        raise NotImplementedError(f"solver={self.name!r} cannot shift its curvature")

    def prox_step(self, grad, theta, penalty, l1_factor=1.0, downdate=None):
        """A proximal Newton iterate (only where ``has_prox_step``)."""
        raise ValueError(f"solver={self.name!r} cannot take the proximal Newton steps of an ℓ1 "
                         "penalty (they need the dense curvature): use solver='dense'")

    def quadratic(self, U, diagonal=False):
        """``U M⁻¹ Uᵀ`` for rows ``U`` (m, p), dense or sparse, or only its diagonal (by
        solves, in blocks of rows whose ``p × rows`` solutions stay within 64 MiB)."""
        if not diagonal:
            X = self.solve(U.T.toarray() if sp.issparse(U) else np.asarray(U).T)
            return np.asarray(U @ X)
        size = max(2**23 // max(U.shape[1], 1), 1)
        out = []
        for i in range(0, U.shape[0], size):
            B = U[i:i + size]
            X = self.solve(B.T.toarray() if sp.issparse(B) else np.asarray(B).T)
            out.append(np.asarray(B.multiply(X.T).sum(axis=1)).ravel() if sp.issparse(B)
                       else np.einsum("mp,pm->m", B, X))
        return np.concatenate(out) if out else np.zeros(0)

    def quadratic_blocks(self, U, K):
        """Diagonal ``K × K`` blocks of ``U M⁻¹ Uᵀ`` for rows ``U`` (m·K, p) stacked per
        sample: shape (m, K, K)."""
        U = U.toarray() if sp.issparse(U) else np.asarray(U, dtype=float)
        X = self.solve(U.T)
        m = U.shape[0] // K
        return np.einsum("mkp,mlp->mkl", U.reshape(m, K, -1), X.T.reshape(m, K, -1))

    def solve_norms(self, b):
        """``‖M⁻¹ b‖`` of each column of ``b`` (p, m) (polishing's yardstick)."""
        b = b.toarray() if sp.issparse(b) else np.asarray(b, dtype=float)
        return np.linalg.norm(self.solve(b).reshape(b.shape[0], -1), axis=0)

    def downdated_solve(self, b, U, C, diag=None):
        raise NotImplementedError

    def with_damping(self, damping):
        """This solver at another ``damping``, from what it kept (the dense curvature, the
        operator, low-rank factors), or None where it must be rebuilt from the curvature."""
        return None


class InverseOperator:
    """``M⁻¹`` seen through a solver: ``A @ b`` solves, ``A.quadratic(U)`` is ``diag(U M⁻¹ Uᵀ)``
    and ``A.quadratic_blocks(U, K)`` its per-sample ``K × K`` blocks."""

    def __init__(self, solver):
        self.solver = solver
        self.shape = (solver.n_params, solver.n_params)

    def __matmul__(self, b):
        return self.solver.solve(b)

    def __rmatmul__(self, a):  # a M⁻¹ = (M⁻¹ aᵀ)ᵀ, M symmetric
        return self.solver.solve(np.asarray(a).T).T

    def quadratic(self, U):
        return self.solver.quadratic(U, diagonal=True)

    def quadratic_blocks(self, U, K):
        return self.solver.quadratic_blocks(U, K)


def register_solver(name: str):
    """Class decorator: make a :class:`Solver` available as ``solver=name``.

    Parameters
    ----------
    name : str

    Returns
    -------
    callable
        The decorator, which registers the class in :data:`SOLVERS` and returns it.
    """
    def add(cls):
        cls.name = name
        SOLVERS[name] = cls
        return cls
    return add


#: old spellings of solver options, accepted with a FutureWarning
RENAMED_OPTIONS = {"maxiter": "max_iter"}


def check_solver_options(name, options, internal=()):
    """``options`` for solver ``name``, checked against the options it declares
    (``Solver.options``); ``internal`` names options the estimator itself may set.
    Old spellings (``maxiter``) are renamed with a FutureWarning."""
    if name not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {name!r}")
    declared = SOLVERS[name].options
    out = {}
    for key, value in dict(options or {}).items():
        new = RENAMED_OPTIONS.get(key)
        if new is not None and new in declared:
            warnings.warn(f"solver option {key!r} is renamed {new!r} (scikit-learn's spelling); "
                          f"{key!r} will stop working in a future release", FutureWarning,
                          stacklevel=3)
            if new in options:
                raise ValueError(f"solver_options has both {key!r} and {new!r}")
            key = new
        out[key] = value
    unknown = sorted(set(out) - set(declared) - set(internal))
    if unknown:
        raise ValueError(f"solver_options {unknown} are not options of solver={name!r}; valid: "
                         f"{sorted(declared) or 'none'}")
    return out


def make_solver(name, operator, *, damping=0.0, null_space=None, active=None, **options):
    """Build the registered solver ``name`` for ``operator`` (a ``CurvatureOperator``,
    or for the dense solver a ``p × p`` matrix).

    Parameters
    ----------
    name : str
        A key of :data:`SOLVERS`.
    operator : CurvatureOperator or ndarray of shape (p, p)
    damping : float, default=0.0
        Added to the diagonal.
    null_space : ndarray of shape (p, r), optional
        Directions the objective ignores.
    active : ndarray of bool of shape (p,), optional
        Coordinates that move (ℓ1 support).
    **options
        The solver's declared options (old spellings accepted with a FutureWarning),
        ``random_state`` and ``batch_size`` where the solver uses them.

    Returns
    -------
    Solver
    """
    cls = SOLVERS.get(name)
    if cls is None:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {name!r}")
    internal = ({"random_state"} if cls.uses_random_state else set()) | (
        {"batch_size"} if cls.uses_batch_size else set())
    options = check_solver_options(name, options, internal)
    return cls(operator, damping=damping, null_space=null_space, active=active, **options)


def choose_solver(requested, n_params, iterative_ok, *, n_samples=None, n_outputs=1,
                  dual_ok=False, smooth=True):
    """``(name, reason)`` for ``solver=requested``.

    ``"auto"``: dense while the ``p × p`` curvature is small (``p ≤ DENSE_MAX_PARAMS`` and
    ``p ≤ n·K``, or ``p ≤ DENSE_CHEAP_PARAMS``); the ``n·K × n·K`` dual form when ``p > n·K``
    for a linear model with an ℓ2 penalty (``dual_ok``) and ``n·K ≤ DUAL_MAX_SAMPLES``; dense
    up to ``DENSE_MAX_PARAMS``; conjugate gradients beyond. An ℓ1 penalty (``smooth=False``)
    always takes the dense curvature, which its proximal Newton steps need.

    Parameters
    ----------
    requested : str
        ``"auto"`` or a registered solver.
    n_params : int
    iterative_ok : bool
        Whether the model offers curvature-vector products (else only dense works).
    n_samples : int, optional
        Rows that build the curvature.
    n_outputs : int, default=1
        Outputs ``K`` per row (the dual form has ``n·K`` rows).
    dual_ok : bool
        A linear model whose curvature is ``Σ z_i z_iᵀ ⊗ C_i + D`` with ``D > 0`` on all but
        a few coordinates.
    smooth : bool
        Whether the penalty is smooth (no ℓ1 part).
    """
    if not iterative_ok:
        return "dense", "this model offers no curvature products: a dense Cholesky factorisation"
    if requested != "auto":
        return requested, "requested"
    p = n_params
    n = None if n_samples is None else n_samples * n_outputs
    label = "n" if n_outputs == 1 else "n·K"
    size = f"{8 * p * p / 2**20:.0f} MiB"
    if not smooth:
        return "dense", (f"an ℓ1 penalty: its proximal Newton steps need the dense curvature "
                         f"(p={p}, {size})")
    if p <= DENSE_MAX_PARAMS and (n is None or p <= n or p <= DENSE_CHEAP_PARAMS or not dual_ok):
        return "dense", (f"p={p} <= DENSE_MAX_PARAMS={DENSE_MAX_PARAMS}"
                         + (f" and p <= {label}={n}" if n is not None and p <= n else "")
                         + f": the dense curvature ({size}) is built and factorised once")
    if dual_ok and n is not None and n < p and n <= DUAL_MAX_SAMPLES:
        return "dual", (f"p={p} > {label}={n} with an ℓ2 penalty: the {label} × {label} dual form "
                        f"({8 * n * n / 2**20:.0f} MiB) instead of a p × p curvature ({size})")
    if p <= DENSE_MAX_PARAMS:
        return "dense", (f"p={p} <= DENSE_MAX_PARAMS={DENSE_MAX_PARAMS}, {label}={n} too many "
                         f"rows for the dual form: the dense curvature ({size})")
    return "cg", (f"p={p} > DENSE_MAX_PARAMS={DENSE_MAX_PARAMS}: a dense curvature would take "
                  f"{8 * p * p / 2**30:.1f} GiB; conjugate gradients with curvature-vector products")
