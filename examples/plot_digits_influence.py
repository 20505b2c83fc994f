"""
Which training images does a neural network rely on?
====================================================

A small network (64 → 16 tanh → 10, 1,210 parameters) is trained with skorch on
scikit-learn's 8×8 digits, and :class:`skinfluence.FisherInfluence` scores every
training image by its influence on the loss of a few test images:
``A[j, i] = attribute(X_test, y_test)[j, i]`` is test image j's log-loss after removing
training image i, minus its loss now (first order). **Positive: image i helps** (the
test loss would rise without it); **negative: image i hurts** (the test loss would fall).

Influence functions describe the *optimum* of the training objective. Minibatch Adam
stops far from it, so ``polish="lbfgs"`` finishes the trained net by full-batch L-BFGS
on exactly the objective skorch's optimizer defines (mean cross-entropy plus the weight
decay's ``λ/2 ‖θ‖²``), in float64. The estimator checks the result: its
``convergence_ratio_`` (Newton step to the optimum over a typical leave-one-out step)
must be below 0.05, or it warns.

Run: ``python examples/plot_digits_influence.py [out.png]``; saves
``digits_influence.png``.
"""

import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from skorch import NeuralNetClassifier  # noqa: E402

from skinfluence import FisherInfluence, set_threads  # noqa: E402
from skinfluence.plotting import plot_influential_examples  # noqa: E402

out = sys.argv[1] if len(sys.argv) > 1 else "digits_influence.png"
torch.manual_seed(0)
print(set_threads(1))  # the package's thread policy: one torch and BLAS thread, for a small problem

digits = load_digits()
X = digits.data / 16.0                                   # (1797, 64), float64
y = digits.target.astype(np.int64)
X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)


class MLP(torch.nn.Module):
    """64 → 16 (tanh) → 10 in float64: smooth, so L-BFGS can reach the optimum."""

    def __init__(self, hidden=16):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.Tanh(),
                                          torch.nn.Linear(hidden, 10))
        self.double()

    def forward(self, x):
        return self.layers(x)


# %%
# Train with minibatch Adam
# -------------------------

weight_decay = 1e-3
net = NeuralNetClassifier(MLP, criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=1e-2,
                          optimizer__weight_decay=weight_decay, max_epochs=20, batch_size=128,
                          train_split=None, verbose=0)
t = time.perf_counter()
net.fit(X_tr, y_tr)
print(f"Adam, 20 epochs: {time.perf_counter() - t:.1f} s; test accuracy {np.mean(net.predict(X_te) == y_te):.3f}")

# %%
# Attribute four test images to the training images
# -------------------------------------------------

t = time.perf_counter()
inf = FisherInfluence(net, prefit=True, polish="lbfgs", damping=1e-4).fit(X_tr, y_tr)
A = inf.attribute(X_te[:4], y_te[:4])                    # (4, n_train)
net = inf.estimator_                                      # the finished net the influences describe
print(f"L-BFGS finish + Fisher influence of {len(y_tr)} training images on 4 test images "
      f"({inf.adapter_.n_params} parameters, solver {inf.solver_!r}): {time.perf_counter() - t:.1f} s; "
      f"convergence ratio {inf.convergence_ratio_:.4f} (below 0.05: at the optimum); "
      f"test accuracy {np.mean(net.predict(X_te) == y_te):.3f}")
for j in range(4):
    print(f"test image {j} (a {y_te[j]}): loss {-np.log(net.predict_proba(X_te[j:j + 1])[0, y_te[j]]):.4f}; "
          f"largest help {A[j].max():+.2e}, largest harm {A[j].min():+.2e}")

axes = plot_influential_examples(A, X_tr, y_tr, X_te[:4], y_te[:4], n_show=5, image_shape=(8, 8))
fig = axes.flat[0].figure
fig.suptitle("Digits, MLP 64→16→10: for each test image (left), the training images whose removal would\n"
             "raise its log-loss most (green, helpful) and lower it most (red, harmful); "
             "numbers: change of the test loss (first order)", fontsize=9)
fig.savefig(out, dpi=110)
print(f"saved {out}")
