"""The model registry: each entry pairs a typed spec with the function that builds the module."""

from __future__ import annotations

from distill.registry import SpecRegistry
from distill.schema import Section


class ModelSpec(Section):
    """Base of every model spec; ``name`` selects the registry entry."""

    name: str


#: Built-in models; ``build(spec, input_shape, num_classes) -> nn.Module``.
MODELS = SpecRegistry("model")
