"""Model selection from one fit: approximate cross-validation and grid search."""

from ._search import ApproxGridSearchCV
from ._validation import approx_cross_val_predict, approx_cross_val_score

__all__ = ["ApproxGridSearchCV", "approx_cross_val_predict", "approx_cross_val_score"]
