"""
Approximate vs exact cross-validation over the regularisation strength
======================================================================

A LogisticRegression on 3000 rows of Adult: 5-fold log-loss and accuracy over 15
values of C, from ``ApproxGridSearchCV`` (one fit per C) and from ``GridSearchCV``
(five refits per C). The curves should lie on top of each other, and both searches
should pick the same C.

Run: ``python examples/plot_approx_cv.py [out.png]``; saves ``approx_cv.png``.
"""

import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402

from skinfluence import set_threads  # noqa: E402
from skinfluence.datasets import adult_design  # noqa: E402
from skinfluence.model_selection import ApproxGridSearchCV  # noqa: E402
from skinfluence.plotting import plot_cv_curves  # noqa: E402

out = sys.argv[1] if len(sys.argv) > 1 else "approx_cv.png"
print(set_threads(1))  # the package's thread policy: one torch and BLAS thread, for a small problem
d = adult_design()
rows = np.random.default_rng(0).choice(len(d.y), 3000, replace=False)
X, y = d.X[rows], d.y[rows]
grid = {"C": np.logspace(-3, 2, 15)}
cv = StratifiedKFold(5, shuffle=True, random_state=0)
scoring = {"log-loss": "neg_log_loss", "accuracy": "accuracy"}

searches = {}
for name, cls in [("approximate (one fit per C)", ApproxGridSearchCV), ("exact (5 refits per C)", GridSearchCV)]:
    t = time.perf_counter()
    searches[name] = cls(LogisticRegression(max_iter=1000), grid, cv=cv, scoring=scoring,
                         refit="log-loss").fit(X, y)
    print(f"{name}: {time.perf_counter() - t:.2f}s, best C = {searches[name].best_params_['C']:.3g}")

fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
for ax, key, name, sign in [(axes[0], "log-loss", "5-fold mean log-loss (lower is better)", -1),
                            (axes[1], "accuracy", "5-fold mean accuracy", 1)]:
    plot_cv_curves(grid["C"], {f"{label}, best C {s.best_params_['C']:.3g}": sign * s.cv_results_[f"mean_test_{key}"]
                               for label, s in searches.items()},
                   param_name="C (inverse regularisation strength)", score_name=name, ax=ax)
fig.suptitle("LogisticRegression on 3000 Adult rows: approximate (ApproxGridSearchCV) vs exact (GridSearchCV) CV")
fig.savefig(out, dpi=100)
print(f"saved {out}")
