"""Curvature samplers: which training rows (and with which weights) build the curvature.

Influence needs ``M⁻¹`` for the curvature ``M = Σ_i c_i J_iᵀ W_i J_i`` of all ``n``
rows. A sampler picks ``m ≪ n`` rows ``S`` and importance weights ``w_i`` such that
``Σ_{i∈S} w_i c_i J_iᵀ W_i J_i`` stands for ``M`` (docs/user_guide/maths.rst §3); gradients,
leave-one-out, attribution and unlearning still use every row. Pass one to an
influence estimator as ``curvature_sampler=``, or use it on its own,
imbalanced-learn style::

    X_sub, y_sub = LogitSampler(n_samples=512).fit_resample(X, y, logits=eta)
    sampler.sample_indices_, sampler.sample_weight_

==================  ==========================================  ===============================
sampler             rows                                        weight of a row
==================  ==========================================  ===============================
RandomSampler       uniform, without replacement                ``n / m``
FeatureSampler      per class, nearest the k-means centroids    size of its cluster / rows taken
                    of the penultimate features (inputs for a
                    linear model)
LogitSampler        per class, uniform within quantile strata   ``N_h / m_h`` of its stratum
                    of the logit margin
LeverageSampler     ∝ approximate leverage in the curvature     ``1 / π_i`` (inclusion prob.)
==================  ==========================================  ===============================

Feature and logit samplers are reconstructions of Koh et al., "Faithful and fast
influence function via advanced sampling" (their code is not public); the leverage
sampler is skinfluence's own.
"""

from ._base import BaseSampler, allocate
from ._feature import FeatureSampler, penultimate_features
from ._leverage import LeverageSampler, leverage_scores
from ._logit import LogitSampler, logit_margin
from ._random import RandomSampler

__all__ = [
    "BaseSampler",
    "RandomSampler",
    "FeatureSampler",
    "LogitSampler",
    "LeverageSampler",
    "allocate",
    "leverage_scores",
    "logit_margin",
    "penultimate_features",
]
