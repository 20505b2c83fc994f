"""Feature sampling: per class, the rows nearest the k-means centroids of the model's features."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import KMeans
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_array

from .._sklearn_compat import Interval, StrOptions
from ..models import make_adapter
from ._base import BaseSampler, allocate

__all__ = ["FeatureSampler", "penultimate_features"]


def _last_linear(module):
    import torch

    linear = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    if not linear:
        raise ValueError("the network has no torch.nn.Linear layer whose input could serve as its "
                         "features; use features='inputs'")
    return linear[-1]


def penultimate_features(estimator, X, batch_size=1024):
    """The input of the network's last ``torch.nn.Linear`` layer for every row of ``X``.

    Parameters
    ----------
    estimator : fitted skorch net, :class:`~skinfluence.models.torch.TorchModel` or a
        Pipeline ending in one
    X : array-like of shape (n, ...)
    batch_size : int, default=1024

    Returns
    -------
    ndarray of shape (n, d)
        Flattened, float64. The network runs in eval mode on the adapter's copy;
        ``estimator`` is untouched.
    """
    return _penultimate(make_adapter(estimator), X, batch_size)


def _penultimate(adapter, X, batch_size=1024):
    import torch

    module = getattr(adapter, "module", None)
    if module is None:
        raise ValueError(f"{type(adapter.estimator).__name__} is not a network: "
                         "it has no penultimate features")
    Z = adapter.design(X)
    param = next(module.parameters())
    layer = _last_linear(module)
    captured = []
    def hook(mod, inputs, out):
        captured.append(inputs[0].detach())

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for start in range(0, len(Z), batch_size):
                module(torch.as_tensor(np.asarray(Z[start:start + batch_size]), dtype=param.dtype,
                                       device=param.device))
    finally:
        handle.remove()
    if not captured:
        return np.zeros((0, layer.in_features))
    return torch.cat([c.reshape(c.shape[0], -1) for c in captured]).cpu().numpy().astype(np.float64)


def _model_inputs(estimator, X):
    """What a linear model (or a Pipeline's last step) sees: the transformed inputs."""
    if isinstance(estimator, Pipeline):
        X = estimator[:-1].transform(X)
    return check_array(X, accept_sparse="csr", dtype=np.float64)


def _distance_to_centroid(F, C):
    """Squared distance of each row of ``F`` (dense or CSR) to its row of ``C``."""
    if sp.issparse(F):
        FF = np.asarray(F.multiply(F).sum(axis=1)).ravel()
        FC = np.asarray(F.multiply(C).sum(axis=1)).ravel()
        return FF - 2 * FC + np.einsum("ij,ij->i", C, C)
    return np.einsum("ij,ij->i", F - C, F - C)


class FeatureSampler(BaseSampler):
    """Curvature rows nearest the k-means centroids of each class's features.

    A reconstruction of the feature-based sampler of Koh et al. ("Faithful and fast
    influence function via advanced sampling"). Each class gets a quota proportional
    to its frequency (or equal quotas). Its rows are clustered by k-means on the
    model's features and the rows nearest each centroid are taken: a small set spread
    over the feature distribution the way the data are.

    Features (``features="auto"``):

    * a network (skorch net, :class:`~skinfluence.models.torch.TorchModel`, or a
      Pipeline ending in one): the *penultimate* features, the input of its last
      ``torch.nn.Linear`` layer (captured by a forward hook, in eval mode);
    * a linear model (it has no hidden layer) or no estimator: the inputs ``X``, after
      a Pipeline's preprocessing steps. They are clustered as they are, so scale them
      first if their units differ.

    With the default ``n_clusters=None`` a class with quota ``m_c`` is cut into ``m_c``
    clusters and the row nearest each centroid is taken, weighted by its cluster's size
    (the subset is a weighted coreset of the class). With an integer ``n_clusters`` the
    class is cut into ``min(n_clusters, m_c)`` clusters, whose quotas are proportional
    to their sizes, filled with the rows nearest the centroid; a row of cluster ``h``
    is weighted ``N_h / m_h``. A class whose quota is its size is taken whole (weight
    1), so ``n_samples=n`` is the full curvature. Selection within a cluster is
    deterministic: the randomness is k-means' initialisation.

    Parameters
    ----------
    n_samples : int or float, default=0.1
        Rows to select: a count in ``[1, n]`` or a fraction of the rows in ``(0, 1]``.
    features : {"auto", "penultimate", "inputs"}, default="auto"
        ``"penultimate"`` on a linear model raises a ValueError (it has no hidden layer).
    n_clusters : int or None, default=None
        Clusters per class (None: one per selected row). k-means costs about
        ``N_c · k · d`` per iteration for a class of ``N_c`` rows and ``d`` features, so
        cap ``k`` for large subsets (5% of Adult's 30,162 rows, 87 features, one thread
        of a busy 2-core machine: 46 s with one cluster per row, 7 s with 64).
    class_quotas : {"proportional", "balanced"}, default="proportional"
        Class quotas proportional to the class frequencies, or equal. A class with fewer
        rows than its quota is taken whole and the rest of its quota is shared among
        the other classes.
    max_iter : int, default=100
        k-means iterations.
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    sample_indices_ : ndarray of int, shape (m,)
    sample_weight_ : ndarray of float, shape (m,)
    features_used_ : {"penultimate", "inputs"}
    n_rows_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from skinfluence.sampling import FeatureSampler
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 2)); y = np.repeat([0, 1], [70, 30])
    >>> sampler = FeatureSampler(n_samples=10, random_state=0).fit(X, y)
    >>> np.bincount(y[sampler.sample_indices_]).tolist(), float(sampler.sample_weight_.sum())
    ([7, 3], 100.0)
    """

    _parameter_constraints: dict = {
        **BaseSampler._parameter_constraints,
        "features": [StrOptions({"auto", "penultimate", "inputs"})],
        "n_clusters": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "class_quotas": [StrOptions({"proportional", "balanced"})],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(self, n_samples=0.1, *, features="auto", n_clusters=None,
                 class_quotas="proportional", max_iter=100, random_state=None):
        super().__init__(n_samples, random_state=random_state)
        self.features = features
        self.n_clusters = n_clusters
        self.class_quotas = class_quotas
        self.max_iter = max_iter

    def _features(self, X, estimator, adapter):
        network = adapter is not None and adapter.is_network
        if self.features == "penultimate" and not network:
            what = "no estimator was given" if estimator is None else \
                f"{type(estimator).__name__} is a linear model without hidden layers"
            raise ValueError(f"features='penultimate' needs a network, but {what}; "
                             "use features='inputs' (the default 'auto' does)")
        if network and self.features != "inputs":
            self.features_used_ = "penultimate"
            return _penultimate(adapter, X)
        self.features_used_ = "inputs"
        if estimator is not None and not network:
            return _model_inputs(estimator, X)
        X = check_array(X, accept_sparse="csr", dtype=np.float64, allow_nd=True)
        return X.reshape(len(X), -1) if X.ndim > 2 else X

    def _select(self, X, y, m, estimator, logits, sample_weight, rng):
        adapter = None if estimator is None else make_adapter(estimator)
        classes = classifier = None
        if adapter is not None:
            classes, classifier = adapter.classes_, adapter.is_classifier
        codes, n_groups = self._class_codes(y, classes, classifier)
        F = self._features(X, estimator, adapter)
        quotas = self._class_quotas(codes, n_groups, m, self.class_quotas)
        chosen, weights = [], []
        for k in np.flatnonzero(quotas):
            rows = np.flatnonzero(codes == k)
            if quotas[k] >= len(rows):
                chosen.append(rows)
                weights.append(np.ones(len(rows)))
                continue
            idx, w = self._cluster_draw(F[rows], quotas[k], rng)
            chosen.append(rows[idx])
            weights.append(w)
        return np.concatenate(chosen), np.concatenate(weights)

    def _cluster_draw(self, F, quota, rng):
        """Rows of ``F`` nearest the centroids of ``k`` clusters, and their weights."""
        k = quota if self.n_clusters is None else min(self.n_clusters, quota)
        km = KMeans(n_clusters=k, n_init=1, max_iter=self.max_iter,
                    random_state=rng.randint(np.iinfo(np.int32).max)).fit(F)
        sizes = np.bincount(km.labels_, minlength=k)
        # one row per cluster (a coreset) or quotas proportional to the cluster sizes
        per_cluster = np.minimum(sizes, 1) if k == quota else allocate(quota, sizes)
        dist = _distance_to_centroid(F, km.cluster_centers_[km.labels_])
        chosen, weights = [], []
        for h in np.flatnonzero(per_cluster):
            members = np.flatnonzero(km.labels_ == h)
            nearest = members[np.argsort(dist[members], kind="stable")[:per_cluster[h]]]
            chosen.append(nearest)
            weights.append(np.full(len(nearest), sizes[h] / len(nearest)))
        return np.concatenate(chosen), np.concatenate(weights)
