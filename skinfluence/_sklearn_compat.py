"""The private scikit-learn names skinfluence uses, imported here and nowhere else.

scikit-learn may change its private names in any release. Each one below says why
skinfluence needs it and since which scikit-learn version it has the shape used here;
the supported range is scikit-learn 1.6 to 1.9 (``scikit-learn>=1.6`` in pyproject.toml).
When a release moves one, the change belongs in this module only.
"""

from __future__ import annotations

# Parameter validation (``_param_validation``, since 1.2; ``RealNotInt`` since 1.3): the
# estimators declare ``_parameter_constraints`` as scikit-learn's own estimators do, so a bad
# parameter raises scikit-learn's ``InvalidParameterError`` with its wording, and the functions
# of ``skinfluence.metrics`` and ``model_selection`` are checked by ``validate_params``.
from sklearn.utils._param_validation import (  # noqa: F401
    HasMethods,
    Interval,
    InvalidParameterError,
    RealNotInt,
    StrOptions,
    validate_params,
)

# ``_fit_context`` (since 1.3): validates the parameters once per ``fit`` and sets
# scikit-learn's nested-validation flag, exactly as scikit-learn's estimators' ``fit`` does.
from sklearn.base import _fit_context  # noqa: F401

# ``_safe_indexing`` (since 0.22; still re-exported by ``sklearn.utils`` for backward
# compatibility): rows of numpy arrays, sparse matrices, DataFrames and lists alike.
from sklearn.utils import _safe_indexing  # noqa: F401

# ``_num_samples`` (since 0.20): the number of rows of any array-like, without converting it.
from sklearn.utils.validation import _num_samples  # noqa: F401

# ``BaseSearchCV`` (in the private module ``sklearn.model_selection._search``): the
# approximate searches subclass it, so that their parameters, ``cv_results_``, ``best_*_``,
# ``predict``/``score`` delegation and metadata routing are GridSearchCV's own.
from sklearn.model_selection._search import BaseSearchCV  # noqa: F401

# ``_MultimetricScorer`` (since 1.0): what ``BaseSearchCV`` turns a dict or list of scorers
# into; its ``_scorers`` are the named scorers.
from sklearn.metrics._scorer import _MultimetricScorer

__all__ = ["BaseSearchCV", "HasMethods", "Interval", "InvalidParameterError", "RealNotInt", "StrOptions",
           "_fit_context", "_num_samples", "_safe_indexing", "best_index", "format_search_results",
           "routed_fit_params", "search_scorers", "validate_params"]


# The four private methods of ``BaseSearchCV`` that the approximate searches call from their
# own ``fit`` (which replaces ``BaseSearchCV.fit``: one fit per candidate instead of one per
# split). Reusing them keeps the searches' scoring, routing and ``cv_results_`` identical to
# GridSearchCV's.
def search_scorers(search):
    """``(named scorers, refit metric, multimetric)`` of a search.

    ``BaseSearchCV._get_scorers()``: this signature since 1.5 (1.4 took a
    ``convert_multimetric`` argument). ``named`` maps each metric to its scorer
    (``{"score": scorer}`` for a single metric).
    """
    scorers, refit_metric = search._get_scorers()
    multimetric = isinstance(scorers, _MultimetricScorer)
    named = scorers._scorers if multimetric else {"score": scorers}
    return named, refit_metric, multimetric


def routed_fit_params(search, params):
    """``fit``'s ``**params`` routed to the estimator, the splitter and the scorers.

    ``BaseSearchCV._get_routed_params_for_fit(params)``, since 1.4 (with routing off,
    1.9 also passes ``sample_weight`` to the scorers that accept it; 1.6 does not).
    """
    return search._get_routed_params_for_fit(params)


def format_search_results(search, candidates, n_splits, out):
    """``cv_results_`` from the candidates and one dict per (candidate, split) with
    ``fit_time``, ``score_time`` and ``test_scores``.

    ``BaseSearchCV._format_results(candidate_params, n_splits, out)``, unchanged since 1.3
    at least.
    """
    return search._format_results(candidates, n_splits, out)


def best_index(refit, refit_metric, results):
    """The index of the best candidate in ``results`` (``refit`` may be a callable).

    ``BaseSearchCV._select_best_index`` (a static method), unchanged since 1.3 at least.
    """
    return BaseSearchCV._select_best_index(refit, refit_metric, results)
