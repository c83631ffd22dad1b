"""Grounding recipes: built-in ones under ``recipes/ground/``, or a YAML file; ``--set`` applies."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from distill.config import (
    load_section_recipe,
)
from distill.grounding.dwbd import METHODS, plan_of
from distill.grounding.models import GroundingModelSpec
from distill.grounding.training import GroundingTrainSpec
from distill.grounding.world import GroundingSpec
from distill.schema import Section, Seed

BUILTIN_GROUND_RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "ground"


class ExampleCounts(Section):
    """How many expressions train and test; the test examples are drawn from ``test_seed``
    whatever the run's seed (held-out scenes, the same for every seed)."""

    train: int = Field(default=3000, ge=1, le=1_000_000)
    test: int = Field(default=500, ge=1, le=1_000_000)
    test_seed: Seed = 10_000


class LatencySpec(Section):
    """CPU inference timing of TB against DB: median of ``repeats`` calls per batch size."""

    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32], min_length=1)
    repeats: int = Field(default=30, ge=1, le=10_000)

    @model_validator(mode="after")
    def _positive(self) -> LatencySpec:
        if any(not 1 <= size <= 4096 for size in self.batch_sizes):
            raise ValueError(f"batch_sizes: each from 1 to 4096, got {self.batch_sizes}")
        return self


class GroundRecipe(Section):
    """A grounding comparison: the synthetic world, the example counts, the model, the training
    budget, the methods (:data:`distill.grounding.dwbd.METHODS`) and the latency measurement."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    description: str = ""
    seed: Seed = 0
    world: GroundingSpec = Field(default_factory=GroundingSpec)
    examples: ExampleCounts = Field(default_factory=ExampleCounts)
    model: GroundingModelSpec = Field(default_factory=GroundingModelSpec)
    train: GroundingTrainSpec = Field(default_factory=GroundingTrainSpec)
    methods: list[str] = Field(default_factory=lambda: list(METHODS), min_length=1)
    latency: LatencySpec = Field(default_factory=LatencySpec)

    @model_validator(mode="after")
    def _known(self) -> GroundRecipe:
        for name in self.methods:
            try:
                plan_of(name)
            except ValueError as error:
                raise ValueError(f"methods: {error}") from None
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: a method is listed twice: {', '.join(self.methods)}")
        if self.world.image_size % self.model.patch:
            raise ValueError(
                f"model.patch ({self.model.patch}) must divide world.image_size ({self.world.image_size})"
            )
        return self


def load_ground_recipe(
    reference: str | None, overrides: list[str] | None = None
) -> tuple[GroundRecipe, Path]:
    """Read, override and validate a grounding recipe; returns it and its file."""
    return load_section_recipe(reference, overrides, BUILTIN_GROUND_RECIPES, "grounding recipe", GroundRecipe)
