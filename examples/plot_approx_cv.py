"""Approximate vs exact cross-validation curves over the regularisation strength C.

A LogisticRegression on 3000 rows of Adult: 5-fold log-loss and accuracy over 15
values of C, from ``ApproxGridSearchCV`` (one fit per C) and from ``GridSearchCV``
(five refits per C). Saves ``approx_cv.png`` (or the path given as first argument).
"""

import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from skinfluence.datasets import adult_design  # noqa: E402
from skinfluence.model_selection import ApproxGridSearchCV  # noqa: E402

out = sys.argv[1] if len(sys.argv) > 1 else "approx_cv.png"
d = adult_design()
rows = np.random.default_rng(0).choice(len(d.y), 3000, replace=False)
X, y = d.X[rows], d.y[rows]
grid = {"C": np.logspace(-3, 2, 15)}
cv = StratifiedKFold(5, shuffle=True, random_state=0)
scoring = {"log-loss": "neg_log_loss", "accuracy": "accuracy"}

searches = {}
for name, cls in [("approximate (one fit per C)", ApproxGridSearchCV), ("exact (5 refits per C)", GridSearchCV)]:
    t = time.perf_counter()
    with threadpool_limits(1):   # small problems: one BLAS thread is fastest
        searches[name] = cls(LogisticRegression(max_iter=1000), grid, cv=cv, scoring=scoring,
                             refit="log-loss").fit(X, y)
    print(f"{name}: {time.perf_counter() - t:.2f}s, best C = {searches[name].best_params_['C']:.3g}")

fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
for (name, search), style in zip(searches.items(), ["-o", "--"]):
    res = search.cv_results_
    axes[0].plot(grid["C"], -res["mean_test_log-loss"], style, label=name, ms=4)
    axes[1].plot(grid["C"], res["mean_test_accuracy"], style, label=name, ms=4)
for ax, title in zip(axes, ["5-fold log-loss", "5-fold accuracy"]):
    ax.set_xscale("log")
    ax.set_xlabel("C")
    ax.set_title(title)
    ax.legend()
fig.suptitle("LogisticRegression on Adult (3000 rows): approximate vs exact CV")
fig.tight_layout()
fig.savefig(out, dpi=100)
print(f"saved {out}")
