"""
Fairness by influence reweighing on Adult: the gap / accuracy trade-off
=======================================================================

A LogisticRegression predicts income > 50K on the Adult train split; the sensitive
attribute is sex. ``InfluenceReweighing`` reweighs the training data so that the refitted
model is fairer, for equal opportunity (equal true positive rates) and for demographic
parity (equal rates of positive predictions). Sweeping the strength knob ``beta`` (the
share of the smooth gap the reweighing must remove, to first order) traces the trade-off
between the test-set gap and test accuracy; the star is the plain model, the square the
default ``beta="auto"``, and points where the target was out of reach to first order
(the fallback programme, whose budget is ``alpha``) are drawn hollow. The gap need not
fall monotonically in ``beta`` (large removals leave the first-order regime), so the
line joins the best trade-offs (no other model is both fairer and more accurate),
not the points in ``beta`` order.

Run: ``python examples/plot_fairness_adult.py [out.png]`` (about four minutes on one shared CPU core); saves
``fairness_adult.png``.
"""

import sys
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from skinfluence.datasets import adult_design  # noqa: E402
from skinfluence.plotting import plot_fairness_tradeoff  # noqa: E402
from skinfluence.fairness import (  # noqa: E402
    FairnessWarning,
    InfluenceReweighing,
    demographic_parity_difference,
    equal_opportunity_difference,
)

out = sys.argv[1] if len(sys.argv) > 1 else "fairness_adult.png"
train, test = adult_design(subset="train"), adult_design(subset="test")
est = LogisticRegression(max_iter=1000)
metrics = {"equal_opportunity": equal_opportunity_difference,
           "demographic_parity": demographic_parity_difference}
betas = {"equal_opportunity": [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4],
         "demographic_parity": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.2]}
plain = est.fit(train.X, train.y).predict(test.X)

fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
for ax, (constraint, metric) in zip(axes, metrics.items()):
    acc, gap, fallback = [], [], []
    for beta in betas[constraint]:
        model = InfluenceReweighing(est, constraint=constraint, beta=beta, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FairnessWarning)
            model.fit(train.X, train.y, sensitive_features=train.sensitive)
        pred = model.predict(test.X)
        acc.append(np.mean(pred == test.y))
        gap.append(metric(test.y, pred, sensitive_features=test.sensitive))
        fallback.append(model.fallback_)
        print(f"{constraint:<18} beta={beta:.1f}  accuracy {acc[-1]:.4f}  gap {gap[-1]:.4f}"
              f"{'  (fallback)' if model.fallback_ else ''}")
    auto = InfluenceReweighing(est, constraint=constraint, random_state=0).fit(
        train.X, train.y, sensitive_features=train.sensitive)
    pred = auto.predict(test.X)
    auto_gap, auto_acc = metric(test.y, pred, sensitive_features=test.sensitive), np.mean(pred == test.y)
    plot_fairness_tradeoff(gap + [auto_gap], acc + [auto_acc], labels=[f"β={b:g}" for b in betas[constraint]],
                           fallback=fallback + [auto.fallback_],
                           baseline=(metric(test.y, plain, sensitive_features=test.sensitive),
                                     np.mean(plain == test.y)), ax=ax)
    ax.scatter([auto_gap], [auto_acc], marker="s", s=60, color="tab:red", zorder=4, label=f'beta="auto" ({auto.beta_:g})')
    ax.set_xlabel(f"{constraint.replace('_', ' ')} gap on the test set, by sex (lower is fairer)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"InfluenceReweighing: {constraint.replace('_', ' ')}")
    ax.legend(fontsize=8)
fig.suptitle("Adult, LogisticRegression: fairness gap vs accuracy over the strength β")
fig.savefig(out, dpi=120)
print(f"saved {out}")
