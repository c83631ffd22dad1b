"""Perception recipes: built-in ones under ``recipes/perceive/``, or a YAML file; ``--set``
applies."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from distill.config import (
    load_section_recipe,
)
from distill.perception.training import BASE_METHODS, PerceptionTrainSpec, plan_of
from distill.perception.world import WorldSpec
from distill.schema import Section, Seed

BUILTIN_PERCEIVE_RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "perceive"


class SceneCounts(Section):
    """How many scenes train and test; the test scenes are drawn from ``test_seed`` whatever the
    run's seed, so every seed is scored on the same scenes."""

    train: int = Field(default=1500, ge=1, le=1_000_000)
    test: int = Field(default=300, ge=1, le=1_000_000)
    test_seed: Seed = 10_000


class PerceiveRecipe(Section):
    """A collaborative-perception comparison: the world, the scenes, the model width, the
    training budget, the methods and DiscoGraph's KD settings.

    ``width`` is every student's :class:`~distill.perception.models.BEVNet` width;
    ``teacher_width`` the early-fusion teacher's (``early``, ``early-warped``), ``width`` when unset.
    ``kd_weight`` multiplies the per-pixel channel KL averaged over every element (official
    DiscoGraph detection: 1e5; its segmentation script: 100). ``kd_keys``: the student maps
    distilled (the fused collaboration map and the decoder maps below full resolution, as the
    official code). ``methods`` may add ``discograph-c<k>``: a DiscoGraph student (with KD)
    whose shared map is compressed to ``k`` channels — the bandwidth–accuracy trade-off.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    description: str = ""
    seed: Seed = 0
    world: WorldSpec = Field(default_factory=WorldSpec)
    scenes: SceneCounts = Field(default_factory=SceneCounts)
    width: int = Field(default=16, ge=1, le=1024)
    teacher_width: int | None = Field(default=None, ge=1, le=1024)
    train: PerceptionTrainSpec = Field(default_factory=PerceptionTrainSpec)
    kd_weight: float = Field(default=1e5, ge=0.0)
    kd_keys: list[str] = Field(default_factory=lambda: ["fused", "dec1", "dec2"], min_length=1)
    methods: list[str] = Field(default_factory=lambda: list(BASE_METHODS), min_length=1)

    @model_validator(mode="after")
    def _known(self) -> PerceiveRecipe:
        channels = 4 * self.width
        for name in self.methods:
            try:
                plan = plan_of(name)
            except ValueError as error:
                raise ValueError(f"methods: {error}") from None
            if plan.compress_channels is not None and not 1 <= plan.compress_channels <= channels:
                raise ValueError(
                    f"methods: {name} compresses the shared map to {plan.compress_channels} channels; "
                    f"it has {channels} (4 × width), so use 1 to {channels}"
                )
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: a method is listed twice: {', '.join(self.methods)}")
        keys = {"fused", "dec1", "dec2", "dec3"}
        if not set(self.kd_keys) <= keys:
            raise ValueError(f"kd_keys: each of {sorted(keys)}, got {self.kd_keys}")
        distilled = [name for name in self.methods if plan_of(name).distils]
        if self.teacher_width not in (None, self.width) and distilled:
            raise ValueError(
                f"teacher_width: {distilled[0]} distils the teacher's maps channel by channel, so the "
                f"teacher needs the students' width {self.width}, got {self.teacher_width} (drop "
                "teacher_width, or the distilled methods)"
            )
        if self.world.view_cells % 4:
            raise ValueError(
                "world.view_cells must be a multiple of 4 (the models pool twice), got "
                f"{self.world.view_cells}"
            )
        return self

    def width_of(self, method: str) -> int:
        """The backbone width ``method``'s model is built with."""
        if plan_of(method).kind == "early" and self.teacher_width is not None:
            return self.teacher_width
        return self.width


def load_perceive_recipe(
    reference: str | None, overrides: list[str] | None = None
) -> tuple[PerceiveRecipe, Path]:
    """Read, override and validate a perception recipe; returns it and its file."""
    return load_section_recipe(
        reference, overrides, BUILTIN_PERCEIVE_RECIPES, "perception recipe", PerceiveRecipe
    )
