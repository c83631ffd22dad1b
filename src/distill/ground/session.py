"""One seed of a grounding comparison as a run directory, resumable model by model.

``DIR/seed-<seed>/`` holds ``recipe.json`` (the resolved recipe), ``metrics.jsonl`` (per model and
epoch: losses, w, mean ω, TB and DB accuracy on the test expressions), ``<method>.safetensors``
(each trained model) and ``results.json`` (per model: TB and DB Acc@0.5 and mean IoU, final w,
parameters, seconds). A model whose weights and result are there is not trained again, so an
interrupted seed continues with the next model; a directory made by another recipe is refused
instead of mixed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from safetensors.torch import save

from distill.files import atomic_write_bytes, atomic_write_json
from distill.ground.recipes import GroundRecipe
from distill.grounding.dwbd import plan_of
from distill.grounding.models import GroundingModel
from distill.grounding.training import build_model, stage_epochs, train_model
from distill.grounding.world import Examples, generate_examples
from distill.report.study import claim_seed_directory, load_stored_weights, read_stored_object

EpochLine = Callable[[str, dict[str, float]], None]


def train_examples(recipe: GroundRecipe, seed: int) -> Examples:
    """The seed's training expressions."""
    return generate_examples(recipe.world, recipe.examples.train, seed)


def shared_test_examples(recipe: GroundRecipe) -> Examples:
    """The held-out test expressions every seed is scored on."""
    return generate_examples(recipe.world, recipe.examples.test, recipe.examples.test_seed)


def _recipe_payload(recipe: GroundRecipe, seed: int) -> dict[str, Any]:
    payload = recipe.model_dump(mode="json")
    payload.pop("latency")  # timing settings do not change what is trained
    return {**payload, "seed": seed}


def run_seed(
    recipe: GroundRecipe, seed: int, directory: Path, on_epoch: EpochLine | None = None
) -> dict[str, Any]:
    """Train (or reuse) every method of ``recipe`` for ``seed`` in ``directory``; returns the
    per-model results."""
    claim_seed_directory(directory, _recipe_payload(recipe, seed), "grounding")
    results = read_stored_object(directory / "results.json", "grounding results")
    examples: tuple[Examples, Examples] | None = None  # generated only if some model still trains
    for name in recipe.methods:
        plan = plan_of(name)
        weights = directory / f"{name}.safetensors"
        if name in results and weights.exists():
            continue
        if examples is None:
            examples = train_examples(recipe, seed), shared_test_examples(recipe)
        trained = train_model(
            plan,
            *examples,
            recipe.train,
            recipe.model,
            seed,
            on_epoch=None if on_epoch is None else partial(on_epoch, name),
        )
        with (directory / "metrics.jsonl").open("a") as handle:
            for record in trained.history:
                handle.write(json.dumps({"model": name, **record}) + "\n")
        atomic_write_bytes(weights, save(trained.model.state_dict()))
        final = trained.history[-1]
        results[name] = {
            **trained.evaluation.as_dict(),
            "w_final": final["w"],
            "omega_final": final["omega"],
            "w_curve": [record["w"] for record in trained.history],
            "omega_curve": [record["omega"] for record in trained.history],
            "stages": [stage for stage, epochs in stage_epochs(plan, recipe.train) for _ in range(epochs)],
            "epochs": len(trained.history),
            "params": sum(parameter.numel() for parameter in trained.model.parameters()),
            "tb_params": sum(parameter.numel() for parameter in trained.model.token_parameters()),
            "db_params": sum(parameter.numel() for parameter in trained.model.decoder_parameters()),
            "seconds": round(trained.seconds, 2),
        }
        atomic_write_json(directory / "results.json", results)
    return {name: results[name] for name in recipe.methods if name in results}


def load_model(recipe: GroundRecipe, directory: Path, name: str) -> GroundingModel:
    """A trained model of a finished seed."""
    model = build_model(recipe.model, recipe.world.image_size)
    return load_stored_weights(model, directory / f"{name}.safetensors")
