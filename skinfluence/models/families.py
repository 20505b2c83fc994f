"""Exponential-family losses on the linear predictor, each written once.

A loss is a function of the target ``y`` and the natural-scale prediction ``eta``
(the linear predictor of a GLM, the logits of a network). Every loss exposes the
three per-sample pieces influence functions need, all in terms of ``eta``:

* ``loss(y, eta)`` -- the per-sample loss ℓ_i,
* ``gradient(y, eta)`` -- g_i = ∂ℓ_i/∂η, shape ``(n, K)``,
* ``curvature(y, eta, kind)`` -- W_i, shape ``(n, K, K)``: the Hessian ∂²ℓ_i/∂η²
  (``kind="hessian"``) or the Fisher information (``kind="fisher"``), which is the
  expectation of the Hessian over y drawn from the model.

For a canonical link the two coincide. For a non-canonical link (Gamma or Tweedie
with a log link, say) the Hessian has an extra term ``ℓ_μ h''(η)`` that depends on the
residual and may be negative; the Fisher ``h'(η)² / V(μ)`` never is.

Scalar families use the deviance derivatives in μ and the chain rule through the
link: ``g = ℓ_μ h'``, ``H = ℓ_μμ h'² + ℓ_μ h''``, ``F = h'² / V(μ)``.
The losses are *half* deviances, as in scikit-learn's ``sklearn._loss``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logsumexp, softmax, xlogy

__all__ = [
    "IdentityLink",
    "LogLink",
    "LogitLink",
    "ScalarLoss",
    "Gaussian",
    "Bernoulli",
    "Tweedie",
    "Multinomial",
]

_TINY = np.finfo(float).tiny


# --------------------------------------------------------------------------- links
class IdentityLink:
    """μ = η."""

    name = "identity"

    def inverse(self, eta):
        return eta

    def derivatives(self, eta):
        """Return μ, dμ/dη and d²μ/dη²."""
        return eta, np.ones_like(eta), np.zeros_like(eta)


class LogLink:
    """μ = exp(η)."""

    name = "log"

    def inverse(self, eta):
        return np.exp(eta)

    def derivatives(self, eta):
        mu = np.exp(eta)
        return mu, mu, mu


class LogitLink:
    """μ = 1 / (1 + exp(-η))."""

    name = "logit"

    def inverse(self, eta):
        return expit(eta)

    def derivatives(self, eta):
        mu = expit(eta)
        d1 = mu * (1.0 - mu)
        return mu, d1, d1 * (1.0 - 2.0 * mu)


# ------------------------------------------------------------------ scalar families
class ScalarLoss:
    """Half-deviance loss of a one-parameter exponential family with a link.

    Subclasses define the variance function ``V(μ)``, the half deviance and its
    first two derivatives in μ; the chain rule through the link is written here once.
    """

    n_outputs = 1
    canonical_link: str = ""

    def __init__(self, link):
        self.link = link

    @property
    def is_canonical(self) -> bool:
        return self.link.name == self.canonical_link

    @property
    def is_quadratic(self) -> bool:
        """Half squared error on the identity link: the curvature does not depend on η."""
        return self.is_canonical and self.link.name == "identity"

    # half deviance and its μ-derivatives, vectorised over samples
    def unit_loss(self, y, mu):  # pragma: no cover - abstract
        raise NotImplementedError

    def variance(self, mu):  # pragma: no cover - abstract
        raise NotImplementedError

    def mean(self, eta):
        return self.link.inverse(eta[:, 0])

    def loss(self, y, eta):
        return self.unit_loss(y, self.link.inverse(eta[:, 0]))

    def gradient(self, y, eta):
        mu, d1, _ = self.link.derivatives(eta[:, 0])
        if self.is_canonical:
            return (mu - y)[:, None]
        return ((mu - y) / self.variance(mu) * d1)[:, None]

    def curvature(self, y, eta, kind="hessian"):
        mu, d1, d2 = self.link.derivatives(eta[:, 0])
        var = self.variance(mu)
        if self.is_canonical:  # h' = V(μ): Hessian and Fisher coincide
            w = d1
        elif kind == "fisher":
            w = d1**2 / var
        else:
            l_mu = (mu - y) / var
            w = self.second_derivative(y, mu) * d1**2 + l_mu * d2
        return w[:, None, None]

    def second_derivative(self, y, mu):  # pragma: no cover - abstract
        """∂²ℓ/∂μ² of the half deviance."""
        raise NotImplementedError

    def sample(self, eta, rng):
        """Draw targets from the model at ``eta`` (for Monte-Carlo Fisher)."""
        raise NotImplementedError(f"sampling is not available for {type(self).__name__}")


class Gaussian(ScalarLoss):
    """Half squared error ½(y − μ)²; canonical link identity."""

    canonical_link = "identity"

    def __init__(self, link=None):
        super().__init__(link or IdentityLink())

    def unit_loss(self, y, mu):
        return 0.5 * (y - mu) ** 2

    def variance(self, mu):
        return np.ones_like(mu)

    def second_derivative(self, y, mu):
        return np.ones_like(mu)

    def sample(self, eta, rng):
        return self.mean(eta) + rng.standard_normal(eta.shape[0])


class Bernoulli(ScalarLoss):
    """Log-loss of a binary target y ∈ {0, 1}; canonical link logit."""

    canonical_link = "logit"

    def __init__(self, link=None):
        super().__init__(link or LogitLink())

    def loss(self, y, eta):
        if self.is_canonical:  # stable for large |η|
            e = eta[:, 0]
            return np.logaddexp(0.0, e) - y * e
        return super().loss(y, eta)

    def unit_loss(self, y, mu):
        mu = np.clip(mu, _TINY, 1 - 1e-16)
        return -xlogy(y, mu) - xlogy(1 - y, 1 - mu)

    def variance(self, mu):
        return np.maximum(mu * (1 - mu), _TINY)

    def second_derivative(self, y, mu):
        mu = np.clip(mu, 1e-15, 1 - 1e-15)
        return y / mu**2 + (1 - y) / (1 - mu) ** 2

    def sample(self, eta, rng):
        return (rng.random(eta.shape[0]) < self.mean(eta)).astype(float)


class Tweedie(ScalarLoss):
    """Half Tweedie deviance with power ``p`` (0 Normal, 1 Poisson, 2 Gamma, 3 inverse Gaussian).

    The canonical link is the identity for ``p = 0``, the log for ``p = 1`` and a power
    link otherwise (not offered); Gamma and Tweedie with a log link are therefore
    non-canonical, and their Hessian and Fisher differ.
    """

    def __init__(self, power=0.0, link=None):
        if 0 < power < 1:
            raise ValueError(f"Tweedie power must be 0 or >= 1, got {power}")
        self.power = float(power)
        if link is None:
            link = IdentityLink() if power == 0 else LogLink()
        super().__init__(link)
        self.canonical_link = {0.0: "identity", 1.0: "log"}.get(self.power, "")

    def unit_loss(self, y, mu):
        p = self.power
        mu = np.maximum(mu, _TINY) if p > 0 else mu
        if p == 0:
            return 0.5 * (y - mu) ** 2
        if p == 1:
            return xlogy(y, y / mu) - y + mu
        if p == 2:
            return np.log(mu / np.where(y > 0, y, 1.0)) + y / mu - 1.0
        a = np.where(y > 0, np.maximum(y, 0) ** (2 - p) / ((1 - p) * (2 - p)), 0.0)
        return a - y * mu ** (1 - p) / (1 - p) + mu ** (2 - p) / (2 - p)

    def variance(self, mu):
        return np.maximum(mu, _TINY) ** self.power if self.power else np.ones_like(mu)

    def second_derivative(self, y, mu):
        p = self.power
        mu = np.maximum(mu, _TINY) if p > 0 else mu
        return p * y * mu ** (-p - 1) + (1 - p) * mu ** (-p) if p else np.ones_like(mu)

    def check_target(self, y):
        """Refuse targets outside the family's domain (as scikit-learn's fit does)."""
        if self.power >= 2 and np.any(y <= 0):
            raise ValueError(f"targets of a Tweedie power {self.power:g} model (Gamma: 2) must be "
                             f"positive; got a minimum of {np.min(y):g}")
        if self.power >= 1 and np.any(y < 0):
            raise ValueError(f"targets of a Tweedie power {self.power:g} model (Poisson: 1) must be "
                             f"non-negative; got a minimum of {np.min(y):g}")
        return y

    def sample(self, eta, rng):
        mu = self.mean(eta)
        if self.power == 0:
            return mu + rng.standard_normal(mu.shape)
        if self.power == 1:
            return rng.poisson(mu).astype(float)
        if self.power == 2:  # unit dispersion: shape 1, mean μ
            return rng.gamma(1.0, mu)
        return super().sample(eta, rng)


# ------------------------------------------------------------------------ multinomial
class Multinomial:
    """Softmax cross-entropy over K classes (targets are integer class codes).

    The curvature is ``diag(p) − p pᵀ`` for both kinds (the softmax link is canonical).
    """

    is_canonical = True
    is_quadratic = False

    def __init__(self, n_classes):
        self.n_outputs = int(n_classes)

    def mean(self, eta):
        return softmax(eta, axis=1)

    def loss(self, y, eta):
        y = np.asarray(y, dtype=int)
        return logsumexp(eta, axis=1) - eta[np.arange(len(y)), y]

    def gradient(self, y, eta):
        g = softmax(eta, axis=1)
        g[np.arange(len(g)), np.asarray(y, dtype=int)] -= 1.0
        return g

    def curvature(self, y, eta, kind="hessian"):
        p = softmax(eta, axis=1)
        return np.einsum("nk,kl->nkl", p, np.eye(p.shape[1])) - p[:, :, None] * p[:, None, :]

    def sample(self, eta, rng):
        p = softmax(eta, axis=1)
        u = rng.random((p.shape[0], 1))
        return (np.cumsum(p, axis=1) < u).sum(axis=1).clip(max=p.shape[1] - 1)
