"""Federated recipes: built-in ones under ``recipes/fed/``, or a YAML file; ``--set`` applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from distill.config import (
    Override,
    apply_override,
    format_validation_error,
    read_recipe_file,
    resolve_named_recipe,
)
from distill.errors import RecipeError
from distill.federated.gossip import GossipRecipe
from distill.federated.spec import FedRecipe

BUILTIN_FED_RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "fed"
DEFAULT_FED_RECIPE = "quickstart"


def resolve_fed_recipe(reference: str | None) -> Path:
    """A file path, or the name of a built-in federated recipe (default ``quickstart``)."""
    return resolve_named_recipe(
        reference, BUILTIN_FED_RECIPES, "built-in federated recipe", DEFAULT_FED_RECIPE
    )


def validate_fed_recipe(
    data: dict[str, Any], source: str = "recipe", overrides: list[Override] | None = None
) -> FedRecipe | GossipRecipe:
    """A server federation, or — with ``kind: decentralized`` — a gossip run."""
    try:
        if data.get("kind") == "decentralized":
            return GossipRecipe.model_validate(data)
        return FedRecipe.model_validate(data)
    except ValidationError as error:
        raise RecipeError(format_validation_error(error, data, source, overrides)) from None


def load_fed_recipe(
    reference: str | None, overrides: list[str] | None = None
) -> tuple[FedRecipe | GossipRecipe, Path]:
    """Read, override and validate a federated recipe; returns it and its file."""
    path = resolve_fed_recipe(reference)
    data = read_recipe_file(path)
    applied = [(apply_override(data, assignment), assignment) for assignment in overrides or []]
    return validate_fed_recipe(data, str(path), applied), path
