"""A checkpoint's metadata never runs code: an imported factory it names is refused at every
entry point (eval, export, a recipe's teacher checkpoint) unless the user trusts it."""

from __future__ import annotations

import json

import pytest
import torch

from distill.cli import main
from distill.engine import save_checkpoint
from distill.models import ImportedModelSpec, build_model
from distill.models.cnn import CNN1dSpec
from distill.models.imported import imported_factories
from tests.conftest import tiny_recipe


def hostile_checkpoint(folder, marker, nested=False):
    """A valid safetensors file whose metadata names ``os:system`` (directly or as the base of
    a ``cheap`` model) with a command that would create ``marker``."""
    path = folder / "hostile.safetensors"
    model = build_model(CNN1dSpec(channels=[16, 16]), (1, 40), 10)
    attack = {"name": "os:system", "kwargs": {"command": f"touch {marker}"}}
    spec = {"name": "cheap", "base": attack} if nested else attack
    save_checkpoint(path, model, {"model": spec, "input_shape": [1, 40], "num_classes": 10})
    return path


ENTRY_POINTS = {
    "eval": lambda ckpt, tmp: ["eval", str(ckpt), "--data", "mnist1d"],
    "export": lambda ckpt, tmp: ["export", str(ckpt), "--output", str(tmp / "out.onnx")],
}


@pytest.mark.parametrize("nested", [False, True], ids=["direct", "nested"])
@pytest.mark.parametrize("command", [*ENTRY_POINTS, "run"])
def test_hostile_metadata_is_refused_and_runs_nothing(command, nested, tmp_path, write_recipe, capsys):
    marker = tmp_path / "pwned"
    checkpoint = hostile_checkpoint(tmp_path, marker, nested)
    if command == "run":
        recipe = tiny_recipe(teacher={"checkpoint": str(checkpoint)}, train={"epochs": 1})
        argv = ["run", str(write_recipe(recipe)), "--output-dir", str(tmp_path / "r"), "--quiet"]
    else:
        argv = ENTRY_POINTS[command](checkpoint, tmp_path)
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "hostile.json: the checkpoint's metadata names the model factory 'os:system'" in err
    assert "distill does not import code that a checkpoint names" in err
    assert "--trust-factory os:system" in err
    if command == "run":
        assert "add teacher.model to the recipe" in err
        assert not (tmp_path / "r").exists()  # refused before the run directory was made
    assert "Traceback" not in err
    assert not marker.exists()


def imported_checkpoint(folder):
    """A checkpoint of an imported-factory model (what a recipe with such a model writes)."""
    spec = ImportedModelSpec(
        name="distill.models.mlp:MLP", kwargs={"input_shape": [1, 40], "num_classes": 10, "hidden": [8]}
    )
    torch.manual_seed(0)
    path = folder / "imported.safetensors"
    save_checkpoint(
        path,
        build_model(spec, (1, 40), 10),
        {
            "model": spec.model_dump(mode="json"),
            "input_shape": [1, 40],
            "num_classes": 10,
            "data_spec": {"name": "mnist1d", "num_samples": 600},
        },
    )
    return path


def test_an_imported_factory_needs_explicit_trust(tmp_path, capsys):
    checkpoint = imported_checkpoint(tmp_path)
    assert main(["eval", str(checkpoint), "--json"]) == 2
    assert "--trust-factory distill.models.mlp:MLP" in " ".join(capsys.readouterr().err.split())
    assert main(["eval", str(checkpoint), "--json", "--trust-factory", "distill.models.mlp:MLP"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] > 0


def test_trusting_one_factory_does_not_trust_another(tmp_path, capsys):
    checkpoint = hostile_checkpoint(tmp_path, tmp_path / "pwned")
    assert main(["eval", str(checkpoint), "--trust-factory", "distill.models.mlp:MLP"]) == 2
    assert "'os:system'" in capsys.readouterr().err
    assert not (tmp_path / "pwned").exists()


def test_a_recipe_that_names_the_teacher_model_needs_no_trust(tmp_path, write_recipe):
    checkpoint = imported_checkpoint(tmp_path)
    kwargs = {"input_shape": [1, 40], "num_classes": 10, "hidden": [8]}
    model = {"name": "distill.models.mlp:MLP", "kwargs": kwargs}
    recipe = tiny_recipe(teacher={"checkpoint": str(checkpoint), "model": model}, train={"epochs": 1})
    recipe["students"] = recipe["students"][1:]
    argv = ["run", str(write_recipe(recipe)), "--output-dir", str(tmp_path / "r"), "--quiet"]
    assert main(argv) == 0


def test_registered_models_rebuild_without_trust(tmp_path, capsys):
    """Built-in (and plugin-registered) models are what metadata may name freely."""
    path = tmp_path / "t.safetensors"
    spec = CNN1dSpec(channels=[16, 16])
    save_checkpoint(
        path,
        build_model(spec, (1, 40), 10),
        {"model": spec.model_dump(), "input_shape": [1, 40], "num_classes": 10},
    )
    assert main(["eval", str(path), "--data", "mnist1d", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["samples"] > 0 and 0.0 <= metrics["accuracy"] <= 1.0


def test_the_walker_finds_factories_at_any_depth():
    from distill.config import validate_recipe

    recipe = validate_recipe(
        tiny_recipe(
            students=[
                {
                    "name": "cohort",
                    "model": {"name": "cheap", "base": {"name": "a.b:c"}},
                    "method": {"name": "dml", "cohort": [{"name": "mlp"}, {"name": "d.e:f", "kwargs": {}}]},
                }
            ]
        )
    )
    assert sorted(imported_factories(recipe.students[0])) == ["a.b:c", "d.e:f"]
