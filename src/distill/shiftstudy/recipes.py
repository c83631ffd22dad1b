"""Shift-study recipes: built-in ones under ``recipes/shift/``, or a YAML file; ``--set`` applies.

A shift study names a *base* training recipe (a built-in name such as ``fashion`` or a ``.yaml``
file, relative paths read from the shift recipe's folder) whose data, teacher, students and
budget it reuses, the base recipe's students it compares (``methods``), and how its splits are
built (``splits``). ``base_set`` holds ``--set`` assignments for the base recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from distill.config import (
    Recipe,
    apply_override,
    epochs_overrides,
    load_section_recipe,
    read_recipe_file,
    resolve_recipe_path,
    validate_recipe,
)
from distill.errors import RecipeError, unknown_name_message
from distill.schema import FilePath, Section, Seed
from distill.shift.splits import ShiftMeasure

BUILTIN_SHIFT_RECIPES = Path(__file__).resolve().parent.parent / "recipes" / "shift"


class SplitFeatures(Section):
    """The fixed feature map the splits are built on: ``pca`` (the first ``dim`` principal
    components of the standardised inputs) or ``random`` (a seeded Gaussian projection to
    ``dim`` dimensions) — neither depends on a model, so no compared model is favoured — or
    ``teacher``: the embedding (the input of its last linear layer) of a trained model's
    ``checkpoint``, so the splits are hard in that model's eyes (ooDML used a pretrained
    network's features)."""

    name: Literal["pca", "random", "teacher"] = "pca"
    dim: int = Field(default=32, ge=2, le=4096)
    seed: Seed = 0
    checkpoint: FilePath | None = None

    @model_validator(mode="after")
    def _checkpoint_for_teacher(self) -> SplitFeatures:
        if self.name == "teacher":
            if self.checkpoint is None:
                raise ValueError("checkpoint: name the .safetensors checkpoint whose features to use")
            if self.off_default("dim", "seed"):
                raise ValueError("dim and seed apply to pca and random features, not to a teacher's")
        elif self.checkpoint is not None:
            raise ValueError("checkpoint applies to name: teacher")
        return self


class ShiftSplitsSpec(Section):
    """How the splits are built: ooDML's greedy swaps (:mod:`distill.shift.splits`).

    ``kind: subpopulations`` (closed set, for classifiers): every class of the pooled data (the
    base recipe's train, validation and test examples) is cut into ``clusters_per_class`` k-means
    sub-clusters; ``train_fraction`` of each class's clusters start on the training side; up to
    ``steps`` swaps (and ``removal_steps`` removals) raise the FID ``measure`` — by default
    ``class-samples``, the mean over classes of the FID between a class's training and test
    examples; ``unit-means`` is ooDML's FID between the two sides' cluster means. With ``iid``
    (default) a seeded random split of every class comes first, as the in-distribution reference
    (class swaps have none: their test classes are never seen).

    ``kind: classes`` (open set, as the paper): a seeded random half of the classes trains, the
    other half is unseen; ``steps`` swaps of whole classes (then ``removal_steps`` removals) as
    the official ``split_maker`` makes them — without checking that each raises the FID between the
    two sides' class means — and every distinct split they visit is a candidate. (With few classes
    the greedy swaps soon cycle; the visited splits still span the FID range.)
    Every model is scored by Recall@1 of its embedding on the unseen classes; ``held_out`` of the
    training classes' examples is kept out of training as the run's (closed-set) test split.

    Either way ``count`` splits spanning the FID range are kept.
    """

    kind: Literal["subpopulations", "classes"] = "subpopulations"
    count: int = Field(default=5, ge=2, le=100)
    clusters_per_class: int = Field(default=4, ge=2, le=1000)
    steps: int = Field(default=40, ge=1, le=100_000)
    history: int = Field(default=2, ge=0, le=1000)
    removal_steps: int = Field(default=0, ge=0, le=100_000)
    train_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    measure: ShiftMeasure = "class-samples"
    iid: bool = True
    held_out: float = Field(default=0.2, gt=0.0, lt=1.0)
    features: SplitFeatures = Field(default_factory=SplitFeatures)
    seed: Seed = 0

    @model_validator(mode="after")
    def _options_of_the_kind(self) -> ShiftSplitsSpec:
        if self.kind == "classes":
            for key in ("measure", "clusters_per_class", "train_fraction"):
                if self.off_default(key):
                    raise ValueError(f"{key} applies to kind: subpopulations; class swaps use class means")
        else:
            if self.off_default("held_out"):
                raise ValueError("held_out applies to kind: classes")
            if self.iid and self.measure == "unit-means":
                raise ValueError(
                    "iid: the i.i.d. reference split is placed on the class-samples FID axis; set "
                    "measure: class-samples or iid: false"
                )
        return self

    @property
    def with_iid(self) -> bool:
        """Whether an i.i.d. reference split comes first (sub-populations only)."""
        return self.kind == "subpopulations" and self.iid


class ShiftRecipe(Section):
    """A shift study: the base recipe (with ``add_students`` appended to its students), the
    students compared, and the splits."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    description: str = ""
    base: str = Field(min_length=1)
    base_set: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=lambda: ["scratch", "kd"], min_length=1)
    #: students appended to the base recipe's (as recipe mappings), e.g. RKD or PKT students
    add_students: list[dict[str, Any]] = Field(default_factory=list)
    splits: ShiftSplitsSpec = Field(default_factory=ShiftSplitsSpec)

    @model_validator(mode="after")
    def _distinct_methods(self) -> ShiftRecipe:
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: a method is listed twice: {', '.join(self.methods)}")
        return self


def _base_reference(recipe: ShiftRecipe, recipe_path: Path) -> str:
    """The base recipe as ``resolve_recipe_path`` takes it: a built-in name, or a path (a
    relative one read from the shift recipe's folder)."""
    reference = recipe.base
    if reference.endswith((".yaml", ".yml")) or "/" in reference:
        path = Path(reference)
        return str(path if path.is_absolute() else recipe_path.parent / path)
    return reference


def load_base_recipe(recipe: ShiftRecipe, recipe_path: Path, epochs: int | None = None) -> Recipe:
    """The base training recipe with ``base_set`` (and ``epochs`` for every model) applied; every
    one of ``methods`` must be one of its students, and it must train a teacher."""
    reference = _base_reference(recipe, recipe_path)
    path = resolve_recipe_path(reference)
    data = read_recipe_file(path)
    assignments = list(recipe.base_set)
    if epochs is not None:
        assignments = [*epochs_overrides(reference, epochs), *assignments]
    applied = [(apply_override(data, assignment), assignment) for assignment in assignments]
    if recipe.add_students:
        students = data.get("students")
        data["students"] = [*(students if isinstance(students, list) else []), *recipe.add_students]
    base = validate_recipe(data, f"{path} (the base of shift recipe {recipe.name})", applied)
    names = [student.name for student in base.students]
    for method in recipe.methods:
        if method not in names:
            raise RecipeError(
                f"{recipe_path}: methods: "
                + unknown_name_message(f"student of the base recipe {path.name}", method, names)
            )
    if base.teacher is None:
        raise RecipeError(f"{recipe_path}: base: {path.name} trains no teacher; a shift study needs one")
    if base.data.pools is not None:
        raise RecipeError(
            f"{recipe_path}: base: {path.name} splits its data into pools (data.pools); a shift study "
            "re-splits the data itself, so use a base recipe without pools"
        )
    return base


def load_shift_recipe(reference: str | None, overrides: list[str] | None = None) -> tuple[ShiftRecipe, Path]:
    """Read, override and validate a shift recipe; returns it and its file."""
    return load_section_recipe(reference, overrides, BUILTIN_SHIFT_RECIPES, "shift recipe", ShiftRecipe)
