"""Model adapters: one protocol (:mod:`.base`), one implementation per kind of model."""

from __future__ import annotations

import copy

from sklearn.pipeline import Pipeline

from .._utils import is_torch_model
from .base import ModelAdapter
from .glm import SUPPORTED_GLMS, GLMAdapter, is_supported_glm

__all__ = ["ModelAdapter", "GLMAdapter", "PipelineAdapter", "make_adapter",
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


#: what a pipeline's adapter takes from its last step's: the protocol of
#: :class:`~skinfluence.models.ModelAdapter`, its declared capabilities, and the
#: layer-level methods of network adapters (parameter selection, feature samplers)
FORWARDED = (
    "is_network", "has_gram", "data_dependent_weights", "supports_sparse_rows", "loss", "penalty", "theta", "mean_scaled",
    "classes_", "n_params", "n_outputs", "is_classifier", "constant_curvature", "encode_target",
    "data_weights", "response", "eta", "jacobians", "jacobian_rows", "gradients",
    "total_gradient", "jvp", "jacobian_quadratic", "output_curvature", "curvature",
    "curvature_matvec", "curvature_factor", "curvature_weights", "null_space", "copy_estimator",
    "param_slices", "layers", "unit_mask", "layer_statistics", "module", "fisher",
)


class PipelineAdapter(ModelAdapter):
    """A fitted Pipeline: its preprocessing is held fixed, its last step is the model.

    :meth:`design` and :meth:`with_params` are the pipeline's own; the names in
    :data:`FORWARDED` are the last step's adapter's (``inner``), nothing else.

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

    def design(self, X):
        return self.inner.design(self.pipeline[:-1].transform(X))

    def with_params(self, theta):
        pipe = copy.deepcopy(self.pipeline)
        pipe.steps[-1] = (pipe.steps[-1][0], self.inner.with_params(theta))
        return pipe

    def moved(self, theta, **options):
        """The pipeline at ``theta``: its preprocessing copied, its model copied once."""
        inner = self.inner.moved(theta, **options)
        pipe = copy.copy(self.pipeline)
        pipe.steps = ([(name, copy.deepcopy(step)) for name, step in self.pipeline.steps[:-1]]
                      + [(self.pipeline.steps[-1][0], inner.estimator)])
        return PipelineAdapter(pipe, inner)


def _forward(name):
    return property(lambda self: getattr(self.inner, name),
                    doc=f"The last step's ``{name}``.")


for _name in FORWARDED:
    setattr(PipelineAdapter, _name, _forward(_name))


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
