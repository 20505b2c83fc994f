"""Helpers the test files share: tiny networks, one full-batch trainer, exact refits, comparisons.

Import them with ``from conftest import ...`` (pytest puts this folder on ``sys.path``).
"""

import numpy as np
import torch
from sklearn.base import clone


# ------------------------------------------------------------------------- comparisons
def rel_err(a, b):
    """``‖a − b‖ / ‖b‖`` (Frobenius for matrices)."""
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def coef_vector(est):
    """A fitted linear model's parameters ``[coef_ (raveled), intercept_]``."""
    return np.r_[np.ravel(est.coef_), np.ravel(est.intercept_)]


# --------------------------------------------------------------------------- exact refits
def refit_without(est, X, y, rows, sample_weight=None):
    """A clone of ``est`` fitted on every row but ``rows`` (indices or a boolean mask of them)."""
    keep = np.ones(len(y), bool)
    keep[rows] = False
    kw = {} if sample_weight is None else {"sample_weight": np.asarray(sample_weight)[keep]}
    return clone(est).fit(X[keep], y[keep], **kw)


def exact_loo(est, X, y, idx, method, sample_weight=None):
    """``method`` (e.g. ``"predict_proba"``) of row ``i`` by the model refitted without it, for ``i`` in ``idx``."""
    return np.array([getattr(refit_without(est, X, y, [i], sample_weight), method)(X[i:i + 1])[0] for i in idx])


# ------------------------------------------------------------------------------ networks
def tanh_mlp(*sizes, seed=0):
    """``Linear → tanh → … → Linear`` through the layer ``sizes``, float64, initialised after
    ``torch.manual_seed(seed)`` (which it sets)."""
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1]).double()


class TanhNet(torch.nn.Module):
    """``d`` inputs → ``h`` tanh units → ``k`` outputs, for skorch (a module-level class, so that
    skorch can copy the net by pickling). ``softmax``: probabilities out (for skorch's NLLLoss);
    ``squeeze``: one output per row (for ``NeuralNetBinaryClassifier``); ``dtype``: of the weights
    (float32 unless given). The test files fix their own sizes with ``functools.partial``."""

    def __init__(self, d=4, h=5, k=2, softmax=False, squeeze=False, dtype=None):
        super().__init__()
        self.hidden, self.out = torch.nn.Linear(d, h), torch.nn.Linear(h, k)
        self.softmax, self.squeeze = softmax, squeeze
        if dtype is not None:
            self.to(dtype)

    def forward(self, x):
        z = self.out(torch.tanh(self.hidden(x)))
        if self.softmax:
            return torch.softmax(z, dim=-1)
        return z[:, 0] if self.squeeze else z


def penalised_cross_entropy(net, X, y, wd):
    """The objective ``mean CE + wd/2 ‖θ‖²`` of ``net`` on ``(X, y)``, as a function of no arguments."""
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    return lambda: torch.nn.functional.cross_entropy(net(X), y) + wd / 2 * sum((p ** 2).sum() for p in net.parameters())


def lbfgs(params, objective, rounds=1, **options):
    """Minimise ``objective()`` over the tensors ``params`` by full-batch L-BFGS (torch's, strong Wolfe
    line search), ``rounds`` calls of its ``step`` (each up to ``max_iter`` iterations; ``options`` go
    to :class:`torch.optim.LBFGS`). In place; returns ``params``."""
    params = list(params)
    opt = torch.optim.LBFGS(params, line_search_fn="strong_wolfe", **options)

    def closure():
        opt.zero_grad()
        value = objective()
        value.backward()
        return value

    for _ in range(rounds):
        opt.step(closure)
    return params
