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

Every solver implements ``solve(b)`` for ``b`` of shape (p,) or (p, m),
``inverse()``, ``downdated_solve(b, U, C, diag)`` (the curvature without some samples:
``M − Σ U_iᵀ C_i U_i − diag(d)``) and reports ``info_``. Registered here: ``"dense"``
(Cholesky and Woodbury down-dates, :mod:`.factor`), ``"cg"`` and ``"lissa"``
(:mod:`.iterative`). A new solver (low-rank, GIF's iteration) registers itself with
:func:`register_solver` and is then available to every estimator through ``solver=``.
"""

from __future__ import annotations

__all__ = ["SOLVERS", "Solver", "register_solver", "make_solver", "choose_solver",
           "DENSE_MAX_PARAMS"]

DENSE_MAX_PARAMS = 12_000  # solver="auto": dense curvature up to this many parameters

SOLVERS: dict[str, type] = {}


class Solver:
    """Base class of the registered solvers (see the module docstring for the protocol)."""

    name = ""
    #: whether the solver needs the curvature as a dense matrix
    dense = False

    def solve(self, b):
        raise NotImplementedError

    def inverse(self):
        raise NotImplementedError

    def downdated_solve(self, b, U, C, diag=None):
        raise NotImplementedError


def register_solver(name: str):
    """Class decorator: make a :class:`Solver` available as ``solver=name``."""
    def add(cls):
        cls.name = name
        SOLVERS[name] = cls
        return cls
    return add


def make_solver(name, operator, *, damping=0.0, null_space=None, active=None, **options):
    """Build the registered solver ``name`` for ``operator`` (a ``CurvatureOperator``,
    or for the dense solver a ``p × p`` matrix)."""
    if name not in SOLVERS:
        raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {name!r}")
    return SOLVERS[name](operator, damping=damping, null_space=null_space, active=active, **options)


def choose_solver(requested, n_params, iterative_ok):
    """``(name, reason)`` for ``solver=requested``: ``"auto"`` is dense while the ``p × p``
    curvature is small, conjugate gradients beyond (where the model offers products)."""
    if not iterative_ok:
        return "dense", "linear models use a dense Cholesky factorisation"
    if requested != "auto":
        return requested, "requested"
    p = n_params
    if p <= DENSE_MAX_PARAMS:
        return "dense", (f"p={p} <= DENSE_MAX_PARAMS={DENSE_MAX_PARAMS}: the dense curvature "
                         f"({8 * p * p / 2**20:.0f} MiB) is built and factorised once")
    return "cg", (f"p={p} > DENSE_MAX_PARAMS={DENSE_MAX_PARAMS}: a dense curvature would take "
                  f"{8 * p * p / 2**30:.1f} GiB; conjugate gradients with curvature-vector products")
