"""Base classes for typed recipe sections: unknown keys are errors that list the allowed ones."""

from __future__ import annotations

import difflib
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


class Section(BaseModel):
    """A strict recipe section: no unknown keys, no silent coercion of strings to numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

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
                raise ValueError(f"unknown key '{key}'{hint}; allowed keys: {', '.join(sorted(allowed))}")
        return data


def _check_positive(value: int) -> int:
    if value <= 0:
        raise PydanticCustomError("positive_int", "must be a positive integer, got {value}", {"value": value})
    return value


#: An integer ≥ 1 whose error reads "must be a positive integer, got -3".
PositiveInt = Annotated[int, AfterValidator(_check_positive)]
