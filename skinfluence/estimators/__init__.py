"""Influence estimators: a thin scikit-learn shell (:mod:`._base`) over the fitted state
(:mod:`._model`) and the algebra of removals (:mod:`._updates`)."""

from ._base import BaseInfluence, FisherInfluence, HessianInfluence
from ._diagnostics import InfluenceDiagnostics
from ._streaming import TopInfluences

__all__ = ["BaseInfluence", "HessianInfluence", "FisherInfluence", "TopInfluences",
           "InfluenceDiagnostics"]
