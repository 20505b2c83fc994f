"""Metrics of influence quality and of unlearning.

:func:`linear_datamodeling_score` and :func:`loo_correlation` score an attribution
matrix (``A[j, i]``: loss of test point j after removing training row i, minus now)
against models retrained on subsets of the rows, which :func:`retrain_on_subsets`
trains (any scikit-learn estimator or skorch net, in parallel, cached on disk).
:func:`unlearning_scores`, :func:`unlearning_f1` and :func:`backdoor_scores` measure
unlearning and relabelling (the GIF paper's protocol).
"""

from ._attribution import linear_datamodeling_score, loo_correlation
from ._datamodels import retrain_on_subsets
from ._unlearning import backdoor_scores, unlearning_f1, unlearning_scores

__all__ = ["linear_datamodeling_score", "loo_correlation", "retrain_on_subsets",
           "unlearning_f1", "unlearning_scores", "backdoor_scores"]
