"""Fairness: influence-guided reweighing of training data, and group fairness metrics.

* :class:`InfluenceReweighing` -- a meta-estimator that reweighs the training data by
  influence functions so that the refitted classifier is fairer at little utility cost.
* :func:`demographic_parity_difference`, :func:`equal_opportunity_difference` -- the
  gaps it targets, computed from hard predictions.
"""

from ._reweighing import FairnessWarning, InfluenceReweighing, solve_reweighing_lp
from .metrics import demographic_parity_difference, equal_opportunity_difference

__all__ = [
    "InfluenceReweighing",
    "FairnessWarning",
    "solve_reweighing_lp",
    "demographic_parity_difference",
    "equal_opportunity_difference",
]
