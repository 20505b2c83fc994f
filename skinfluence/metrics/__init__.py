"""Metrics of influence quality: how well an attribution predicts retraining.

:func:`linear_datamodeling_score` and :func:`loo_correlation` score an attribution
matrix (``A[j, i]``: loss of test point j after removing training row i, minus now)
against models retrained on subsets of the rows, which :func:`retrain_on_subsets`
trains (any scikit-learn estimator or skorch net, in parallel, cached on disk).
"""

from ._attribution import linear_datamodeling_score, loo_correlation
from ._datamodels import retrain_on_subsets

__all__ = ["linear_datamodeling_score", "loo_correlation", "retrain_on_subsets"]
