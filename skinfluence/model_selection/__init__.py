"""Model selection from one fit: approximate cross-validation and hyper-parameter search."""

from ._search import ApproxGridSearchCV, ApproxRandomizedSearchCV
from ._validation import approx_cross_val_predict, approx_cross_val_score

__all__ = ["ApproxGridSearchCV", "ApproxRandomizedSearchCV", "approx_cross_val_predict",
           "approx_cross_val_score"]
