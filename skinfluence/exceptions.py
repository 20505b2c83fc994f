"""Exceptions and warnings raised by skinfluence."""

from sklearn.exceptions import NotFittedError

__all__ = ["CurvatureError", "SolverDivergenceError", "InfluenceWarning", "NotFittedError"]


class CurvatureError(ValueError):
    """The curvature cannot be inverted as asked (singular, indefinite, or too large)."""


class SolverDivergenceError(RuntimeError):
    """An iterative solver failed to converge even after rescaling."""


class InfluenceWarning(UserWarning):
    """The influence approximation may be unreliable (e.g. the model is not converged)."""
