"""Base classes for typed recipe sections: unknown keys are errors that list the allowed ones.

Sections validate strictly: an integer field takes only an integer (not ``'2'``, ``2.0`` or
``true``), a number field takes an integer or a float (not ``'1e-3'`` or ``true``), a true/false
field takes only ``true`` or ``false`` (not ``1``), and numbers must be finite. File paths still
take strings (:data:`FilePath`). Counts a user types are bounded: generous, but finite.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, model_validator
from pydantic_core import PydanticCustomError


class Section(BaseModel):
    """A strict recipe section: no unknown keys, no silent coercion of strings to numbers."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        protected_namespaces=(),
        strict=True,  # no '2' → 2, no true → 1, no 1 → true; a float field still takes an int
        allow_inf_nan=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        allowed = set(cls.model_fields)
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise PydanticCustomError(
                    "unknown_key",
                    "unknown key '{key}'{hint}; allowed keys: {allowed}",
                    {"key": str(key), "hint": hint, "allowed": ", ".join(sorted(allowed))},
                )
        return data

    def off_default(self, *keys: str) -> list[str]:
        """Those of ``keys`` whose value differs from the field's default, in the order given.

        What "the recipe sets this field" means for a validator: ``model_fields_set`` cannot
        tell, since a recipe written out in full (a run directory's, after a round trip through
        JSON) sets every field, most of them to their defaults.
        """
        fields = type(self).model_fields
        return [
            key for key in keys if getattr(self, key) != fields[key].get_default(call_default_factory=True)
        ]


def _check_positive(value: int) -> int:
    if value <= 0:
        raise PydanticCustomError("positive_int", "must be a positive integer, got {value}", {"value": value})
    return value


#: The most of anything a recipe counts (samples, classes, steps, …) unless a tighter bound fits.
MAX_COUNT = 1_000_000_000
#: The most epochs (and epoch-like counts: warmup, milestones, augmentation draws).
MAX_EPOCHS = 100_000
#: The largest batch.
MAX_BATCH = 1_000_000
#: The widest layer (hidden units, channels, input extent).
MAX_WIDTH = 65_536
#: The most samples a data set generates or a pool holds.
MAX_SAMPLES = 100_000_000
#: The largest seed (NumPy's seeds are 32-bit).
MAX_SEED = 2**32 - 1

#: ``x ≥ 1`` with the error "must be a positive integer, got -3"; for a tighter bound than the
#: aliases below, put the bound first: ``Annotated[int, Field(le=1000), Positive]`` (a bound
#: given after a validator, or as ``= Field(le=…)`` on a field of these types, is not applied).
Positive = AfterValidator(_check_positive)

#: An integer from 1 to :data:`MAX_COUNT` whose error reads "must be a positive integer, got -3".
PositiveInt = Annotated[int, Field(le=MAX_COUNT), Positive]
#: An integer from 0 to :data:`MAX_COUNT`.
NonNegativeInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
#: A number of epochs: 1 to :data:`MAX_EPOCHS`.
Epochs = Annotated[int, Field(le=MAX_EPOCHS), Positive]
#: A number of epochs that may be 0: 0 to :data:`MAX_EPOCHS`.
EpochsOrZero = Annotated[int, Field(ge=0, le=MAX_EPOCHS)]
#: A batch size: 1 to :data:`MAX_BATCH`.
BatchSize = Annotated[int, Field(le=MAX_BATCH), Positive]
#: A layer width: 1 to :data:`MAX_WIDTH`.
Width = Annotated[int, Field(le=MAX_WIDTH), Positive]
#: A number of samples: 1 to :data:`MAX_SAMPLES`.
SampleCount = Annotated[int, Field(le=MAX_SAMPLES), Positive]
#: A random seed: 0 to :data:`MAX_SEED`.
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
#: A file path: a string in a recipe (sections are otherwise strict, which would want a Path).
FilePath = Annotated[Path, Strict(False)]
