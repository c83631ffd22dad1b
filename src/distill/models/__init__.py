"""Built-in models, imported factories, and feature taps.

``build_model(spec, input_shape, num_classes)`` is the one entry point; ``MODELS`` lists names.
"""

from __future__ import annotations

from typing import cast

from torch import nn

from distill.models import branches, cheap, cnn, mlp, resnet, text_models  # noqa: F401  (registration)
from distill.models.cnn import count_parameters
from distill.models.fields import model_field, validate_model_spec
from distill.models.imported import ImportedModelSpec, build_imported
from distill.models.registry import MODELS, ModelSpec
from distill.models.taps import FeatureTaps, module_names


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Instantiate the model that ``spec`` describes for inputs of ``input_shape``."""
    if isinstance(spec, ImportedModelSpec):
        return build_imported(spec.name, spec.kwargs)
    # registered model factories build modules; the registry stores them as Callable[..., object]
    return cast(nn.Module, MODELS.get(spec.name).build(spec, tuple(input_shape), num_classes))


__all__ = [
    "MODELS",
    "FeatureTaps",
    "ImportedModelSpec",
    "ModelSpec",
    "build_model",
    "count_parameters",
    "model_field",
    "module_names",
    "validate_model_spec",
]
