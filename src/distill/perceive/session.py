"""One seed of a perception comparison as a run directory, resumable model by model.

``DIR/seed-<seed>/`` holds ``recipe.json`` (the resolved recipe), ``metrics.jsonl`` (per model and
epoch), ``<method>.safetensors`` (each trained model) and ``results.json`` (per model: IoU over all
cells and over the ego's occluded cells, bytes per frame, parameters, seconds). A model whose
weights and result are there is not trained again, so an interrupted seed continues with the
next model; a directory made by another recipe is refused instead of mixed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from safetensors.torch import save

from distill.files import atomic_write_bytes, atomic_write_json
from distill.perceive.recipes import PerceiveRecipe
from distill.perception.models import PerceptionModel
from distill.perception.training import plan_of, train_model
from distill.perception.world import Scenes, generate_scenes
from distill.report.study import claim_seed_directory, load_stored_weights, read_stored_object

EpochLine = Callable[[str, dict[str, float]], None]


def train_scenes(recipe: PerceiveRecipe, seed: int) -> Scenes:
    """The seed's training scenes."""
    return generate_scenes(recipe.world, recipe.scenes.train, seed)


def shared_test_scenes(recipe: PerceiveRecipe) -> Scenes:
    """The test scenes every seed is scored on."""
    return generate_scenes(recipe.world, recipe.scenes.test, recipe.scenes.test_seed)


def _recipe_payload(recipe: PerceiveRecipe, seed: int) -> dict[str, Any]:
    return {**recipe.model_dump(mode="json"), "seed": seed}


def run_seed(
    recipe: PerceiveRecipe,
    seed: int,
    directory: Path,
    on_epoch: EpochLine | None = None,
) -> dict[str, Any]:
    """Train (or reuse) the teacher and every method of ``recipe`` for ``seed`` in ``directory``;
    returns the per-model results."""
    claim_seed_directory(directory, _recipe_payload(recipe, seed), "perception")
    results = read_stored_object(directory / "results.json", "perception results")
    scenes: tuple[Scenes, Scenes] | None = None  # generated only if some model still trains
    order = ["early", *(name for name in recipe.methods if name != "early")]
    teacher: PerceptionModel | None = None
    for name in order:
        plan = plan_of(name)
        weights = directory / f"{name}.safetensors"
        if name in results and weights.exists():
            if name == "early":
                teacher = load_model(recipe, directory, "early")
            continue
        if scenes is None:
            scenes = train_scenes(recipe, seed), shared_test_scenes(recipe)
        trained = train_model(
            plan,
            *scenes,
            recipe.train,
            seed,
            recipe.width_of(name),
            teacher=teacher,
            kd_weight=recipe.kd_weight,
            kd_keys=recipe.kd_keys,
            on_epoch=None if on_epoch is None else partial(on_epoch, name),
        )
        with (directory / "metrics.jsonl").open("a") as handle:
            for record in trained.history:
                handle.write(json.dumps({"model": name, **record}) + "\n")
        atomic_write_bytes(weights, save(trained.model.state_dict()))
        results[name] = {
            **trained.evaluation.as_dict(),
            "bytes_per_frame": trained.bytes_per_frame,
            "params": sum(parameter.numel() for parameter in trained.model.parameters()),
            "seconds": round(trained.seconds, 2),
            "distils": plan.distils,
        }
        atomic_write_json(directory / "results.json", results)
        if name == "early":
            teacher = trained.model.eval()
    return {name: results[name] for name in order if name in results}


def load_model(recipe: PerceiveRecipe, directory: Path, name: str) -> PerceptionModel:
    """A trained model of a finished seed."""
    model = plan_of(name).build(recipe.width_of(name))
    return load_stored_weights(model, directory / f"{name}.safetensors")
