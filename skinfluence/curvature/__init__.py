"""Curvature operators and the solvers that invert them (see :mod:`.solvers`)."""

from . import dual, factor, gif, iterative, kfac, lowrank  # noqa: F401  (they register their solvers)
from .solvers import SOLVERS, make_solver, register_solver

__all__ = ["SOLVERS", "make_solver", "register_solver"]
