"""Bad recipes, data and checkpoints: one clear message naming file and field, exit status 2."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from distill.cli import main
from distill.engine import save_checkpoint
from distill.models import build_model
from distill.models.cnn import CNN1dSpec
from tests.conftest import tiny_recipe


def teacher_checkpoint(folder, spec=None):
    spec = spec or CNN1dSpec(channels=[16, 16])
    path = folder / "teacher.safetensors"
    save_checkpoint(path, build_model(spec, (1, 40), 10), {"model": spec.model_dump()})
    return path


def with_student(recipe, index=0, **fields):
    recipe["students"][index].update(fields)
    return recipe


def nan_file(folder):
    inputs = np.random.default_rng(0).standard_normal((40, 4))
    inputs[7, 2] = np.nan
    np.savez(folder / "nan.npz", x=inputs, y=np.arange(40) % 2)
    return {"name": "npz", "path": str(folder / "nan.npz")}


def labels_file(folder):
    np.savez(folder / "labels.npz", x=np.zeros((40, 4)), y=np.arange(40) % 5)
    return {"name": "npz", "path": str(folder / "labels.npz"), "num_classes": 3}


def corrupt_checkpoint(folder):
    path = folder / "corrupt.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return {"name": "teacher", "checkpoint": str(path), "model": {"name": "cnn1d"}}


CASES = {
    "unknown top-level key": (
        lambda f: {**tiny_recipe(), "studnets": []},
        "(top level): unknown key 'studnets' (did you mean 'students'?)",
    ),
    "negative width": (
        lambda f: with_student(tiny_recipe(), model={"name": "mlp", "hidden": [-3]}),
        "students[0].model.hidden[0]: must be a positive integer, got -3",
    ),
    "wrong type": (
        lambda f: tiny_recipe(train={"epochs": "ten"}),
        "train.epochs: must be an integer, got 'ten'",
    ),
    "unknown model": (
        lambda f: with_student(tiny_recipe(), model={"name": "mlpp"}),
        "students[0].model: unknown model 'mlpp' (did you mean 'mlp'?); allowed: cheap, cnn1d, cnn2d, "
        "minilm, mlp",
    ),
    "unknown dataset": (
        lambda f: tiny_recipe(data={"name": "cifar"}),
        "data: unknown dataset 'cifar' (did you mean 'cifar100'?); "
        "allowed: cifar100, csv, digits, fashion-mnist, mnist1d, npz, synthetic",
    ),
    "unknown method": (
        lambda f: with_student(tiny_recipe(), method={"name": "teleport"}),
        "students[0].method: unknown method 'teleport'; allowed: ",
    ),
    "unknown model key": (
        lambda f: with_student(tiny_recipe(), model={"name": "mlp", "widht": 3}),
        "students[0].model: unknown key 'widht'; allowed keys: activation, dropout, hidden, name",
    ),
    "missing students": (
        lambda f: {k: v for k, v in tiny_recipe().items() if k != "students"},
        "students: required field is missing",
    ),
    "duplicate names": (
        lambda f: with_student(tiny_recipe(), 1, name="scratch"),
        "student name 'scratch' is used twice",
    ),
    "negative temperature": (
        lambda f: with_student(tiny_recipe(), 1, method={"name": "kd", "temperature": -1}),
        "students[1].method.temperature: must be greater than 0.0, got -1",
    ),
    "kd without teacher": (
        lambda f: {**tiny_recipe(), "teacher": None},
        "student 'kd': method 'kd' needs a teacher; add a 'teacher' section",
    ),
    "best without validation split": (
        lambda f: tiny_recipe(
            data={"name": "mnist1d", "num_samples": 600, "val_fraction": 0},
            train={"epochs": 1, "report": "best"},
        ),
        "train.report 'best' selects on the validation split, but data.val_fraction is 0",
    ),
    "missing teacher checkpoint": (
        lambda f: tiny_recipe(teacher={"checkpoint": str(f / "nope.safetensors")}),
        "teacher.checkpoint: file not found",
    ),
    "corrupt teacher checkpoint": (
        lambda f: tiny_recipe(teacher=corrupt_checkpoint(f)),
        "not a readable safetensors checkpoint",
    ),
    "checkpoint of another architecture": (
        lambda f: tiny_recipe(
            teacher={"checkpoint": str(teacher_checkpoint(f)), "model": {"name": "cnn1d", "channels": [8, 8]}}
        ),
        "teacher.checkpoint: ",
    ),
    "data with NaN": (lambda f: tiny_recipe(data=nan_file(f)), "nan.npz ['x']: inputs contain NaN"),
    "label out of range": (
        lambda f: tiny_recipe(data=labels_file(f)),
        "label 4 is out of range for 3 classes",
    ),
    "image model on 1-D data": (
        lambda f: with_student(tiny_recipe(), model={"name": "cnn2d"}),
        "students[0].model: cannot build 'cnn2d': cnn2d expects inputs shaped (channels, height, width)",
    ),
    "shape mismatch with an imported model": (
        lambda f: with_student(
            tiny_recipe(), model={"name": "torch.nn:Linear", "kwargs": {"in_features": 7, "out_features": 10}}
        ),
        "students[0].model: 'torch.nn:Linear' cannot take inputs shaped (1, 40) from data 'mnist1d'",
    ),
    "wrong number of classes": (
        lambda f: with_student(
            tiny_recipe(),
            model={
                "name": "distill.models.mlp:MLP",
                "kwargs": {"input_shape": [1, 40], "num_classes": 3, "hidden": [8]},
            },
        ),
        "outputs (2, 3) for a batch of 2, but data 'mnist1d' has 10 classes",
    ),
    "every kd weight zero": (
        lambda f: with_student(tiny_recipe(), 1, method={"name": "kd", "kd_weight": 0, "ce_weight": 0}),
        "students[1].method: every loss weight is 0",
    ),
    "teacher cache on a scratch student": (
        lambda f: with_student(tiny_recipe(), 0, teacher_cache={}),
        "students[0]: teacher_cache: method 'scratch' cannot use a teacher-output cache",
    ),
    "learned loss with mixup": (
        lambda f: with_student(tiny_recipe(), 1, method={"name": "l2t-dlf"}),
        "student 'kd': l2t-dlf: the learned loss needs hard labels; set train.augment.mixup_alpha: 0",
    ),
    "unknown feature layer": (
        lambda f: with_student(
            tiny_recipe(), 1, method={"name": "kd", "features": [{"student": "body", "teacher": "layer9"}]}
        ),
        "unknown layer 'layer9'",
    ),
    "unknown feature layer, cached": (
        lambda f: with_student(
            tiny_recipe(),
            1,
            method={"name": "kd", "features": [{"student": "body", "teacher": "layer9"}]},
            teacher_cache={},
        ),
        "unknown layer 'layer9'",
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_recipe_gets_one_clear_message_and_status_2(case, tmp_path, write_recipe, capsys):
    make, expected = CASES[case]
    path = write_recipe(make(tmp_path))
    status = main(["run", str(path), "--output-dir", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert expected in " ".join(err.split()), err
    assert "Traceback" not in err


def test_invalid_yaml_names_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nstudents: [\n  - a: 1\n  b\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml: line" in err and "invalid YAML" in err


def test_recipe_that_is_not_a_mapping(tmp_path, capsys):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    assert main(["run", str(path)]) == 2
    assert "a recipe must be a mapping of keys, got list" in capsys.readouterr().err


def test_missing_recipe_file_and_unknown_builtin(capsys):
    assert main(["run", "does/not/exist.yaml"]) == 2
    assert "recipe file not found: does/not/exist.yaml" in capsys.readouterr().err
    assert main(["run", "quikstart"]) == 2
    assert "unknown built-in recipe 'quikstart' (did you mean 'quickstart'?)" in capsys.readouterr().err


def test_bad_override_path(capsys):
    assert main(["run", "--set", "students[9].name=x"]) == 2
    assert "'students[9]' does not exist in the recipe" in capsys.readouterr().err


def test_eval_of_missing_and_mismatched_checkpoints(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "none.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    path = teacher_checkpoint(tmp_path)
    assert main(["eval", str(path), "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert "cannot be built for data 'digits' shaped (1, 8, 8)" in " ".join(err.split())


def test_real_process_exits_2_without_traceback(tmp_path, write_recipe):
    path = write_recipe(with_student(tiny_recipe(), model={"name": "mlp", "hidden": [-3]}))
    completed = subprocess.run(
        [sys.executable, "-m", "distill", "run", str(path)], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 2
    assert "students[0].model.hidden[0]: must be a positive integer, got -3" in completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout


def test_checkpoint_metadata_rebuilds_the_teacher(tmp_path, write_recipe, capsys):
    """A checkpoint written by distill needs no model spec in the recipe."""
    torch.manual_seed(0)
    path = teacher_checkpoint(tmp_path)
    recipe = tiny_recipe(teacher={"checkpoint": str(path)}, train={"epochs": 1})
    recipe["students"] = recipe["students"][1:]
    assert main(["run", str(write_recipe(recipe)), "--output-dir", str(tmp_path / "r"), "--quiet"]) == 0


def test_only_rank_zero_prints_the_error_but_every_rank_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    assert main(["run", "does/not/exist.yaml"]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["run", "does/not/exist.yaml"]) == 2
    assert "recipe file not found" in capsys.readouterr().err
