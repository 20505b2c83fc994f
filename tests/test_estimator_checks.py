"""scikit-learn's estimator checks on the influence estimators."""

from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.utils.estimator_checks import parametrize_with_checks

from skinfluence import FisherInfluence, HessianInfluence

# transform() has one column per *training row*: fitting on repeated rows instead of
# weights gives more columns by design, so the weight/repetition equivalence of its
# output cannot hold (the fitted model and leave-one-out predictions do obey it).
EXPECTED = {
    "check_sample_weight_equivalence_on_dense_data": "transform has a column per training row",
    "check_sample_weight_equivalence_on_sparse_data": "transform has a column per training row",
}


@parametrize_with_checks(
    [FisherInfluence(Ridge()), HessianInfluence(LogisticRegression())],
    expected_failed_checks=lambda est: EXPECTED,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_clone_and_params_round_trip():
    inf = FisherInfluence(LogisticRegression(C=2.0), damping=1e-3, fisher="mc", random_state=3)
    params = inf.get_params()
    assert params["estimator__C"] == 2.0 and params["fisher"] == "mc"
    other = clone(inf).set_params(estimator__C=0.5, damping=0.0)
    assert other.estimator.C == 0.5 and inf.estimator.C == 2.0 and other.damping == 0.0
