"""Attribution and unlearning on Adult with a logistic regression.

Finds the training rows that most help and most hurt a few test predictions, removes the
most harmful ones with ``unlearn`` and checks the result against an exact refit.

Run: ``python examples/adult_attribution_unlearning.py``
"""

import numpy as np
from sklearn.linear_model import LogisticRegression

import skinfluence as ski
from skinfluence.refit import refit_without

train, test = ski.datasets.adult_design(), ski.datasets.adult_design(subset="test")
inf = ski.FisherInfluence(LogisticRegression(max_iter=1000), polish=True).fit(train.X, train.y)

# attribution: A[j, i] = loss of test row j after removing training row i, minus now
Xt, yt = test.X[:5], test.y[:5]
A = inf.attribute(Xt, yt)
for j in range(len(yt)):
    helps, hurts = np.argsort(A[j])[-3:][::-1], np.argsort(A[j])[:3]
    print(f"test row {j} (y={yt[j]}): most helpful training rows {helps.tolist()}, "
          f"most harmful {hurts.tolist()}")

# unlearning: drop the 50 rows that raise the test log-loss the most
A_all = inf.attribute(test.X, test.y).sum(axis=0)
harmful = np.argsort(A_all)[:50]
approx = inf.unlearn(harmful)
exact = refit_without(inf.estimator_, train.X, train.y, harmful)


def logloss(est):
    p = np.clip(est.predict_proba(test.X)[:, 1], 1e-15, 1 - 1e-15)
    return np.mean(-test.y * np.log(p) - (1 - test.y) * np.log(1 - p))


print(f"test log-loss: fitted {logloss(inf.estimator_):.5f}, after unlearning 50 rows "
      f"{logloss(approx):.5f} (exact refit {logloss(exact):.5f}; predicted change "
      f"{A_all[harmful].sum() / len(test.y):+.5f})")
print("max |coef approx - exact|:", np.abs(approx.coef_ - exact.coef_).max())
