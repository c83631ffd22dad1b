"""Any model from an importable factory: ``name: "package.module:callable"``.

A factory named in a recipe is trusted: the user typed it. A factory named by a checkpoint's
metadata is not: the ``.json`` beside a ``.safetensors`` file is as easy to forge as the file
itself, and importing and calling what it names would undo the point of safetensors (a
``{"name": "os:system", "kwargs": {"command": ...}}`` spec would run the command). So a model
spec read from metadata may only reach registered models — built-ins and what ``--plugin``
modules register — unless the user trusts its factory explicitly (:func:`trust_factories`,
which ``--trust-factory`` calls) or names the model in the recipe instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, Field, field_validator
from torch import nn

from distill.errors import CheckpointError, DistillError
from distill.models.registry import ModelSpec

#: The union tag of imported models (their names are references, not registered names).
IMPORTED_TAG = "package.module:callable"


class ImportedModelSpec(ModelSpec):
    """A model from any importable factory: ``name: "package.module:callable"`` + ``kwargs``."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _is_reference(cls, name: str) -> str:
        if ":" not in name:
            raise ValueError(f"must look like 'package.module:callable', got '{name}'")
        return name


def is_reference(name: str) -> bool:
    """Whether a model name is a ``package.module:callable`` reference."""
    return ":" in name


#: Factories the user trusts to be rebuilt from checkpoint metadata (``--trust-factory``).
_TRUSTED_FACTORIES: set[str] = set()


def trust_factories(references: Iterable[str]) -> None:
    """Allow checkpoint metadata to name these ``package.module:callable`` factories, for the
    rest of this process (a decision like importing a plugin)."""
    _TRUSTED_FACTORIES.update(references)


def trusted_factories() -> frozenset[str]:
    """The factories :func:`trust_factories` has allowed so far."""
    return frozenset(_TRUSTED_FACTORIES)


def imported_factories(spec: Any) -> Iterator[str]:
    """Every ``package.module:callable`` a (possibly nested) model spec names: a ``cheap``
    model's base, a DML cohort member, a multi-branch backbone, ... — at any depth."""
    if isinstance(spec, BaseModel):
        name = getattr(spec, "name", None)
        if isinstance(name, str) and ":" in name:
            yield name
        for field in type(spec).model_fields:
            yield from imported_factories(getattr(spec, field))
    elif isinstance(spec, (list, tuple)):
        for item in spec:
            yield from imported_factories(item)
    elif isinstance(spec, dict):
        for item in spec.values():
            yield from imported_factories(item)


def refuse_untrusted_factories(spec: Any, source: str, remedy: str | None = None) -> None:
    """Raise :class:`CheckpointError` if ``spec``, read from ``source`` (a checkpoint's
    metadata), names a factory the user has not trusted; ``remedy`` is a further way to trust
    it than ``--trust-factory`` (e.g. "add teacher.model to the recipe")."""
    untrusted = sorted(set(imported_factories(spec)) - _TRUSTED_FACTORIES)
    if untrusted:
        names = ", ".join(f"'{name}'" for name in untrusted)
        flags = " ".join(f"--trust-factory {name}" for name in untrusted)
        ways = f"{remedy}, or pass {flags}" if remedy else f"pass {flags}"
        raise CheckpointError(
            f"{source}: the checkpoint's metadata names the model factory {names}; distill does "
            f"not import code that a checkpoint names. If you trust it, {ways}"
        )


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
