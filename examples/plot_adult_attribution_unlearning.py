"""
Attribution and unlearning on Adult
===================================

A :class:`~sklearn.linear_model.LogisticRegression` predicts income > 50K on the Adult
train split. :meth:`~skinfluence.FisherInfluence.attribute` finds the training rows that
most help and most hurt a test prediction (``A[j, i]``: test row j's log-loss after
removing training row i, minus its loss now; positive helps), and the 50 rows that
raise the *mean* test log-loss most are removed with
:meth:`~skinfluence.FisherInfluence.unlearn`. The result is checked against an exact
refit without those rows: how far did each coefficient move, how much of that move
does one Newton step get right, and what do more steps (``steps="converge"``) add?

Run: ``python examples/plot_adult_attribution_unlearning.py [out.png]``; saves
``attribution_unlearning.png``.
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import skinfluence as ski  # noqa: E402
from skinfluence.plotting import plot_influential_examples  # noqa: E402
from skinfluence.refit import refit_without  # noqa: E402

out = sys.argv[1] if len(sys.argv) > 1 else "attribution_unlearning.png"
print(ski.set_threads(1))  # the package's thread policy: one torch and BLAS thread, for a small problem
train, test = ski.datasets.adult_design(), ski.datasets.adult_design(subset="test")
inf = ski.FisherInfluence(LogisticRegression(max_iter=1000), polish=True).fit(train.X, train.y)

# %%
# Attribution: the most helpful and harmful training rows for two test rows
# -------------------------------------------------------------------------

A = inf.attribute(test.X[:2], test.y[:2])              # (2, n_train)
for j in range(2):
    order = np.argsort(A[j])
    print(f"test row {j} (y={test.y[j]}): most helpful training rows {order[::-1][:3].tolist()}, "
          f"most harmful {order[:3].tolist()}")

# %%
# Unlearning the 50 rows that hurt the test set most
# --------------------------------------------------
# The mean test loss is linear in the per-row attributions, so its attribution is one
# removal effect of the summed test-loss gradient (no n_test × n_train matrix).

p = inf.estimator_.predict_proba(test.X)[:, 1]
grad = inf.parameter_gradients(test.X, (p - test.y) / len(test.y)).sum(axis=0)   # ∇ mean log-loss
effect = inf.removal_effect(grad)                        # mean test loss without row i − now
harmful = np.argsort(effect)[:50]                        # removing these lowers it most
approx = inf.unlearn(harmful)
exact = refit_without(inf.estimator_, train.X, train.y, harmful)


def logloss(est):
    q = np.clip(est.predict_proba(test.X)[:, 1], 1e-15, 1 - 1e-15)
    return np.mean(-test.y * np.log(q) - (1 - test.y) * np.log(1 - q))


before = logloss(inf.estimator_)
print(f"mean test log-loss: fitted {before:.5f}; without the 50 rows: one Newton step "
      f"{logloss(approx):.5f}, exact refit {logloss(exact):.5f}, first-order prediction "
      f"{before + effect[harmful].sum():.5f}")
coef0 = np.r_[inf.estimator_.intercept_, inf.estimator_.coef_.ravel()]
d_exact = np.r_[exact.intercept_, exact.coef_.ravel()] - coef0
d_approx = np.r_[approx.intercept_, approx.coef_.ravel()] - coef0
err = np.abs(d_approx - d_exact)
print(f"coefficients moved by up to {np.abs(d_exact).max():.3f} (exact refit); "
      f"the Newton step's error is at most {err.max():.3f} "
      f"({np.linalg.norm(d_approx - d_exact) / np.linalg.norm(d_exact):.1%} of the move, in norm)")
# more Newton steps on the changed objective close the gap (the curvature is rebuilt each step)
converged = inf.unlearn(harmful, steps="converge")
d_conv = np.r_[converged.intercept_, converged.coef_.ravel()] - coef0
print(f"unlearn(steps='converge'): error at most {np.abs(d_conv - d_exact).max():.2e} "
      f"after {inf.update_info_['steps']} steps")

fig = plt.figure(figsize=(13, 4.6), constrained_layout=True)
left, right = fig.subfigures(1, 2, width_ratios=[1.1, 1])
plot_influential_examples(A[:1], train.X, train.y, n_show=5, feature_names=train.feature_names, fig=left)
left.suptitle("Test row 0: training rows that most help (green) and hurt (red) its prediction", fontsize=10)
ax = right.subplots()
ax.scatter(d_exact, d_approx, s=12)
lim = np.abs(d_exact).max() * 1.1
ax.plot([-lim, lim], [-lim, lim], ":", color="gray", label="approximate = exact")
ax.set_xlabel("coefficient change, exact refit without the 50 rows")
ax.set_ylabel("coefficient change, unlearn() (one Newton step)")
ax.set_title(f"Unlearning the 50 most harmful rows: {len(coef0)} coefficients\n"
             f"largest move {np.abs(d_exact).max():.2f}; largest error: one step {err.max():.3f}, "
             f"steps='converge' {np.abs(d_conv - d_exact).max():.1e}", fontsize=10)
ax.legend(fontsize=8)
fig.savefig(out, dpi=100)
print(f"saved {out}")
