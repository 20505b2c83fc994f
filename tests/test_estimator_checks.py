"""scikit-learn's estimator checks on every public estimator.

Expected failures are listed only where a check cannot apply, each with its reason."""

from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.utils.estimator_checks import parametrize_with_checks

from skinfluence import FisherInfluence, GeneralizedInfluence, HessianInfluence, InfluenceEnsemble
from skinfluence.fairness import InfluenceReweighing
from skinfluence.model_selection import ApproxGridSearchCV, ApproxRandomizedSearchCV
from skinfluence.sampling import FeatureSampler, LeverageSampler, LogitSampler, RandomSampler

# transform() has one column per *training row*: fitting on repeated rows instead of
# weights gives more columns by design, so the weight/repetition equivalence of its
# output cannot hold (the fitted model and leave-one-out predictions do obey it).
TRANSFORM = {
    "check_sample_weight_equivalence_on_dense_data": "transform has a column per training row",
    "check_sample_weight_equivalence_on_sparse_data": "transform has a column per training row",
}
# samplers pass X on as the estimator takes it: a Pipeline may take strings (object columns)
SAMPLER = {"check_dtype_object": "X is passed on as the estimator takes it (strings for a Pipeline)"}
# checks that call fit(X, y) alone: these estimators' fit needs one more input
_FITS = """all_zero_sample_weights_error dict_unchanged dont_overwrite_parameters dtype_object
    estimator_sparse_array estimator_sparse_matrix estimator_sparse_tag estimators_dtypes
    estimators_fit_returns_self estimators_nan_inf estimators_overwrite_params estimators_pickle
    f_contiguous_array_estimator fit2d_1feature fit2d_1sample fit2d_predict1d fit_check_is_fitted
    fit_idempotent fit_score_takes_y methods_sample_order_invariance methods_subset_invariance
    n_features_in n_features_in_after_fitting pipeline_consistency positive_only_tag_during_fit
    readonly_memmap_input sample_weight_equivalence_on_dense_data
    sample_weight_equivalence_on_sparse_data sample_weights_list
    sample_weights_not_an_array sample_weights_not_overwritten sample_weights_pandas_series
    sample_weights_shape""".split()
_CLASSIFIER_FITS = """classifier_data_not_an_array classifiers_classes classifiers_one_label
    classifiers_one_label_sample_weights classifiers_regression_target classifiers_train
    complex_data decision_proba_consistency estimators_empty_data_messages fit1d
    requires_y_none supervised_y_2d supervised_y_no_nan""".split()


def _needs(what, names):
    return {f"check_{n}": f"fit needs {what}, which the check cannot pass" for n in names}


EXPECTED = {
    "FisherInfluence": TRANSFORM, "HessianInfluence": TRANSFORM, "GeneralizedInfluence": TRANSFORM,
    "RandomSampler": SAMPLER,
    "LogitSampler": _needs("the model's outputs (logits= or estimator=)", _FITS),
    "LeverageSampler": _needs("the fitted model (estimator=)", _FITS),
    "InfluenceReweighing": _needs("sensitive_features=", _FITS + _CLASSIFIER_FITS),
}

ESTIMATORS = [
    FisherInfluence(Ridge()), HessianInfluence(LogisticRegression()),
    GeneralizedInfluence(LogisticRegression()), InfluenceEnsemble([FisherInfluence(Ridge())]),
    RandomSampler(5), FeatureSampler(5), LogitSampler(5), LeverageSampler(5),
    InfluenceReweighing(LogisticRegression()),
    ApproxGridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}),
    ApproxRandomizedSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, n_iter=2, random_state=0),
]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED.get(type(est).__name__, {}))
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_clone_and_params_round_trip():
    inf = FisherInfluence(LogisticRegression(C=2.0), damping=1e-3, fisher="mc", random_state=3)
    params = inf.get_params()
    assert params["estimator__C"] == 2.0 and params["fisher"] == "mc"
    other = clone(inf).set_params(estimator__C=0.5, damping=0.0)
    assert other.estimator.C == 0.5 and inf.estimator.C == 2.0 and other.damping == 0.0
