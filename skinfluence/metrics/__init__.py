"""Metrics of influence-based unlearning and relabelling."""

from ._unlearning import backdoor_scores, unlearning_f1, unlearning_scores

__all__ = ["unlearning_f1", "unlearning_scores", "backdoor_scores"]
