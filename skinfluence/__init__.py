"""skinfluence: influence functions for scikit-learn and torch models.

Approximate cross-validation, unlearning, attribution and fairness reweighting from
one fit, with Hessian, Fisher (AFIF) and generalised (GIF) influence.
"""

from . import datasets, fairness, metrics, model_selection, selection, unlearning
from .exceptions import CurvatureError, InfluenceWarning, SolverDivergenceError
from .estimators import BaseInfluence, FisherInfluence, HessianInfluence
from .generalized import GeneralizedInfluence

__version__ = "0.1.0"

__all__ = [
    "BaseInfluence",
    "HessianInfluence",
    "FisherInfluence",
    "GeneralizedInfluence",
    "CurvatureError",
    "InfluenceWarning",
    "SolverDivergenceError",
    "datasets",
    "fairness",
    "metrics",
    "model_selection",
    "selection",
    "unlearning",
]
