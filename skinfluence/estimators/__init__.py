"""Influence estimators: a thin scikit-learn shell (:mod:`._base`) over the fitted engine
(:mod:`._model`, ``estimator.engine_``), its polishing (:mod:`._polish`) and the algebra of
removals (:mod:`._updates`).

Besides the estimators, what a new estimator outside this package builds on:
:data:`PARAMETERS` and :func:`influence_init` (the shared constructor, written once),
:class:`SolverChoice` (what the one solver hook returns), :class:`InfluenceEngine`.
"""

from ._base import PARAMETERS, BaseInfluence, FisherInfluence, HessianInfluence, influence_init
from ._model import EngineSpec, InfluenceEngine, SolverChoice
from ._polish import RESIDUAL_TARGET, NewtonPolisher, polish_engine
from ._diagnostics import InfluenceDiagnostics
from ._streaming import TopInfluences, merge_top  # noqa: F401  (the gradient store merges its top-k alike)

__all__ = ["BaseInfluence", "HessianInfluence", "FisherInfluence", "TopInfluences",
           "InfluenceEngine", "EngineSpec", "SolverChoice", "PARAMETERS", "influence_init",
           "RESIDUAL_TARGET", "NewtonPolisher", "polish_engine", "InfluenceDiagnostics"]
