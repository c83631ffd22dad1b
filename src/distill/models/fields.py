"""The recipe type of a model spec: any registered model, or an imported factory.

The union is built from the registry when it is asked for, so it holds every model registered
by then — built-ins and what plugins register. :mod:`distill.config` asks once, when it builds
the recipe schema; a spec nested in another (a ``cheap`` model's ``base``, a DML cohort member,
a multi-branch backbone) and a spec read back from checkpoint metadata are validated with
:func:`validate_model_spec`, which asks at validation time.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import TypeAdapter

from distill.models.imported import IMPORTED_TAG, ImportedModelSpec, is_reference
from distill.models.registry import MODELS, ModelSpec


def model_field(optional: bool = False) -> Any:
    """The discriminated union of every model spec registered so far (plus imported factories;
    plus ``None`` when ``optional``)."""
    return MODELS.union("model", (IMPORTED_TAG, ImportedModelSpec, is_reference), optional=optional)


@functools.cache
def _adapter(registered: tuple[str, ...]) -> TypeAdapter[Any]:
    return TypeAdapter(model_field())


def validate_model_spec(value: Any) -> ModelSpec:
    """Validate ``value`` as a model spec of any registered or imported model; raises pydantic's
    ``ValidationError`` (with the same locations and messages as in a recipe)."""
    spec = _adapter(tuple(MODELS.names())).validate_python(value)
    assert isinstance(spec, ModelSpec)
    return spec
