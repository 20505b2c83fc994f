"""Influence estimators: a thin scikit-learn shell (:mod:`._base`) over the fitted state
(:mod:`._model`) and the algebra of removals (:mod:`._updates`)."""

from ._base import BaseInfluence, FisherInfluence, HessianInfluence

__all__ = ["BaseInfluence", "HessianInfluence", "FisherInfluence"]
