"""Model adapters: one protocol (:mod:`.base`), one implementation per kind of model."""

from __future__ import annotations

import copy

from sklearn.pipeline import Pipeline

from .._utils import is_torch_model
from .base import ModelAdapter
from .glm import SUPPORTED_GLMS, GLMAdapter, is_supported_glm
from .subset import SubsetAdapter

__all__ = ["ModelAdapter", "GLMAdapter", "PipelineAdapter", "SubsetAdapter", "make_adapter",
           "supported_estimators"]


def supported_estimators() -> list[str]:
    """Names of the estimator types an influence estimator accepts.

    Returns
    -------
    list of str
    """
    names = [cls.__name__ for cls in SUPPORTED_GLMS]
    return names + ["skorch NeuralNetClassifier/NeuralNetRegressor", "torch.nn.Module",
                    "a Pipeline ending in one of these"]


class PipelineAdapter:
    """A fitted Pipeline: its preprocessing is held fixed, its last step is the model.

    Everything but :meth:`design` and :meth:`with_params` is the last step's adapter.

    Parameters
    ----------
    pipeline : fitted Pipeline
    inner : ModelAdapter
        The adapter of its last step.
    """

    def __init__(self, pipeline, inner):
        self.pipeline = pipeline
        self.inner = inner
        self.estimator = pipeline

    def __getattr__(self, name):  # the rest of the protocol is the model's
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def design(self, X):
        return self.inner.design(self.pipeline[:-1].transform(X))

    def with_params(self, theta):
        pipe = copy.deepcopy(self.pipeline)
        pipe.steps[-1] = (pipe.steps[-1][0], self.inner.with_params(theta))
        return pipe


def make_adapter(estimator, **options) -> ModelAdapter:
    """Return the adapter for a *fitted* estimator.

    Parameters
    ----------
    estimator : fitted estimator
        A supported linear model, a skorch net or torch module, or a Pipeline ending
        in one of these.
    **options
        Passed to the torch adapter (device, dtype, loss, ...); ignored for GLMs.

    Returns
    -------
    ModelAdapter
    """
    if isinstance(estimator, Pipeline):
        return PipelineAdapter(estimator, make_adapter(estimator[-1], **options))
    if is_supported_glm(estimator):
        return GLMAdapter(estimator)
    if is_torch_model(estimator):
        from .torch import make_torch_adapter

        return make_torch_adapter(estimator, **options)
    raise TypeError(
        f"{type(estimator).__name__} is not supported. Supported estimators: "
        + ", ".join(supported_estimators())
    )
