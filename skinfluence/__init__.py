"""skinfluence: influence functions for scikit-learn and torch models.

Approximate cross-validation, unlearning, attribution and fairness reweighting from
one fit, with Hessian, Fisher (AFIF) and generalised (GIF) influence.
"""

from importlib import metadata as _metadata

from . import datasets, fairness, metrics, model_selection, sampling, selection, unlearning
from .ensemble import InfluenceEnsemble
from .exceptions import CurvatureError, InfluenceWarning, SolverDivergenceError
from .estimators import (BaseInfluence, FisherInfluence, HessianInfluence, InfluenceDiagnostics,
                         TopInfluences)
from .generalized import GeneralizedInfluence

try:
    __version__ = _metadata.version("skinfluence")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BaseInfluence",
    "HessianInfluence",
    "FisherInfluence",
    "TopInfluences",
    "InfluenceDiagnostics",
    "GeneralizedInfluence",
    "CurvatureError",
    "InfluenceWarning",
    "SolverDivergenceError",
    "datasets",
    "fairness",
    "InfluenceEnsemble",
    "metrics",
    "model_selection",
    "sampling",
    "selection",
    "unlearning",
]
