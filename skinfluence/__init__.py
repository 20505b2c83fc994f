"""skinfluence: influence functions for scikit-learn and torch models.

Approximate cross-validation, unlearning, attribution and fairness reweighting from
one fit, with Hessian, Fisher (AFIF) and generalised (GIF) influence.
"""

from . import datasets, fairness, model_selection
from .exceptions import CurvatureError, InfluenceWarning, SolverDivergenceError
from .estimators import BaseInfluence, FisherInfluence, HessianInfluence

__version__ = "0.1.0"

__all__ = [
    "BaseInfluence",
    "HessianInfluence",
    "FisherInfluence",
    "CurvatureError",
    "InfluenceWarning",
    "SolverDivergenceError",
    "datasets",
    "fairness",
    "model_selection",
]
