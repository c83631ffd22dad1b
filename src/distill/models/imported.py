"""Any model from an importable factory: ``name: "package.module:callable"``."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import Field
from torch import nn

from distill.errors import DistillError


def import_factory(reference: str) -> Any:
    """Resolve ``"package.module:attribute"`` to the object, with clear errors."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise DistillError(f"model factory '{reference}' must look like 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise DistillError(f"cannot import module '{module_name}' for model '{reference}': {error}") from None
    try:
        factory = getattr(module, attribute)
    except AttributeError:
        raise DistillError(f"module '{module_name}' has no attribute '{attribute}'") from None
    if not callable(factory):
        raise DistillError(f"model factory '{reference}' is not callable")
    return factory


def build_imported(reference: str, kwargs: dict[str, Any]) -> nn.Module:
    """Call the factory with ``kwargs``; it must return an ``nn.Module``."""
    factory = import_factory(reference)
    try:
        model = factory(**kwargs)
    except TypeError as error:
        raise DistillError(f"model factory '{reference}' rejected its kwargs {kwargs}: {error}") from None
    if not isinstance(model, nn.Module):
        raise DistillError(
            f"model factory '{reference}' returned {type(model).__name__}, expected torch.nn.Module"
        )
    return model


#: Field type for the keyword arguments of an imported factory.
FactoryKwargs = Field(default_factory=dict)
