"""What a newcomer trips on: `eval` on a file, custom code in the working directory, the hint
after Ctrl-C, and messages that name what is wrong (issue "What a newcomer trips on")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from distill.cli import main
from tests.conftest import tiny_recipe


def npz_recipe(data_path: Path, epochs: int = 1) -> dict:
    """A one-student recipe on a small .npz file (trains in about a second)."""
    return tiny_recipe(
        teacher=None,
        data={"name": "npz", "path": str(data_path)},
        train={"epochs": epochs, "batch_size": 32},
        students=[{"name": "s", "model": {"name": "mlp", "hidden": [8]}}],
    )


def write_npz(path: Path, rows: int, labels: np.ndarray | None = None) -> Path:
    rng = np.random.default_rng(1)
    y = np.arange(rows) % 3 if labels is None else labels
    np.savez(path, x=rng.standard_normal((rows, 6)), y=y)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path, Path]:
    """``(recipe, run directory, training file)`` of one finished run on a 120-row .npz file."""
    folder = tmp_path_factory.mktemp("newcomer")
    data = write_npz(folder / "train.npz", 120)
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(npz_recipe(data)))
    run = folder / "run"
    assert main(["run", str(recipe), "--output-dir", str(run), "--quiet"]) == 0
    return recipe, run, data


# --------------------------------------------------------------------------- 1. eval on a file


def test_eval_on_a_file_scores_every_row_and_says_so(finished, tmp_path, capsys):
    _, run, _ = finished
    checkpoint = run / "s" / "last.safetensors"
    test_file = write_npz(tmp_path / "test.npz", 50)
    capsys.readouterr()
    assert main(["eval", str(checkpoint), "--data", str(test_file)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{checkpoint} on {test_file} (all 50 samples): accuracy ")
    assert main(["eval", str(checkpoint), "--data", str(test_file), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["samples"] == 50 and metrics["split"] == "all" and metrics["source"] == "file"
    assert {"checkpoint", "data", "split", "samples", "accuracy", "loss", "ece"} <= set(metrics)
    # --split does not apply to a file, which is evaluated whole
    assert main(["eval", str(checkpoint), "--data", str(test_file), "--split", "val"]) == 2
    assert "--split val: a file given to --data is evaluated whole" in capsys.readouterr().err


def test_eval_without_data_names_the_training_data_and_split(finished, capsys):
    _, run, data = finished
    checkpoint = run / "s" / "last.safetensors"
    summary = json.loads((run / "summary.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(checkpoint)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(
        f"{checkpoint} on the test split of the data it was trained on (npz {data}, 24 samples): "
        f"accuracy {100 * summary['results'][0]['test_accuracy']:.2f}%"
    )
    assert main(["eval", str(checkpoint), "--split", "val"]) == 0
    assert "on the val split of the data it was trained on (npz" in capsys.readouterr().out


def test_eval_checks_a_files_contents_as_training_data(finished, tmp_path, capsys):
    _, run, _ = finished
    checkpoint = run / "s" / "last.safetensors"
    nan = tmp_path / "nan.npz"
    inputs = np.zeros((10, 6))
    inputs[3, 2] = np.nan
    np.savez(nan, x=inputs, y=np.arange(10) % 3)
    assert main(["eval", str(checkpoint), "--data", str(nan)]) == 2
    assert "nan.npz ['x']: inputs contain NaN or infinite values in 1 rows" in capsys.readouterr().err
    floats = write_npz(tmp_path / "floats.npz", 10, labels=np.linspace(0, 2, 10))
    assert main(["eval", str(checkpoint), "--data", str(floats)]) == 2
    assert "floats.npz ['y']: labels must be integer class ids" in capsys.readouterr().err
    many = write_npz(tmp_path / "many.npz", 10, labels=np.arange(10))
    assert main(["eval", str(checkpoint), "--data", str(many)]) == 2
    assert "has 10 classes, the checkpoint's model predicts 3" in capsys.readouterr().err


# --------------------------------------------------------------------------- 2. custom code

MODELS = textwrap.dedent(
    """
    from torch import nn


    def build(features, classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(features, classes))
    """
)

METHODS = textwrap.dedent(
    """
    from typing import Literal

    import torch.nn.functional as F

    from distill.methods import Method, MethodContext, MethodSpec
    from distill.methods.registry import METHODS


    class SmoothSpec(MethodSpec):
        name: Literal["smooth-newcomer"] = "smooth-newcomer"


    class Smooth(Method):
        def step(self, batch):
            logits = self.student(batch.inputs)
            return {"ce": F.cross_entropy(logits, batch.targets, label_smoothing=0.1)}


    @METHODS.register_factory("smooth-newcomer", "label smoothing from the working directory")
    def build_smooth(spec: SmoothSpec, context: MethodContext) -> Method:
        return Smooth(context.student)
    """
)


def console_script() -> str:
    beside = Path(sys.executable).with_name("distill")
    found = str(beside) if beside.is_file() else shutil.which("distill")
    if found is None:
        pytest.skip("the distill console script is not installed")
    return found


def test_console_script_imports_modules_from_the_working_directory(tmp_path):
    (tmp_path / "mymodels.py").write_text(MODELS)
    (tmp_path / "my_methods.py").write_text(METHODS)
    write_npz(tmp_path / "train.npz", 120)
    recipe = npz_recipe(Path("train.npz"))
    recipe["students"] = [
        {
            "name": "mine",
            "model": {"name": "mymodels:build", "kwargs": {"features": 6, "classes": 3}},
            "method": {"name": "smooth-newcomer"},
        }
    ]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    command = [console_script(), "run", "r.yaml", "--plugin", "my_methods", "--output-dir", "out", "--quiet"]
    ran = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["results"][0]["method"] == "smooth-newcomer"


def test_an_unimportable_model_fails_before_anything_is_written(tmp_path, write_recipe, capsys):
    recipe = tiny_recipe()  # with a teacher, which must not train first
    recipe["students"][1]["model"] = {"name": "nosuch.module:build"}
    path = write_recipe(recipe)
    assert main(["run", str(path), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 2
    assert "cannot import module 'nosuch.module' for model 'nosuch.module:build'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- 3. Ctrl-C


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("command", "patch", "extra", "hint"),
    [
        ("compare", "distill.compare.run_comparison", ["--seeds", "2"], "finished seeds are reused"),
        ("pareto", "distill.pareto.run_pareto", [], "finished seeds are reused"),
        ("search", "distill.search.engine.DistillerSearch.run", [], "log.jsonl are not trained again"),
    ],
)
def test_interrupted_commands_say_how_to_continue_themselves(
    command, patch, extra, hint, tmp_path, write_recipe, monkeypatch, capsys
):
    monkeypatch.setattr(patch, interrupt)
    monkeypatch.setattr(sys, "path", list(sys.path))  # main puts the working directory on it
    monkeypatch.chdir(tmp_path)
    args = [command, str(write_recipe(tiny_recipe())), "--output-dir", "out", *extra]
    assert main(args) == 130
    error = capsys.readouterr().err
    assert f"run the same command again to continue: `distill {' '.join(args)}`" in error
    assert hint in error and "--resume" not in error


def test_interrupted_run_says_resume(tmp_path, write_recipe, monkeypatch, capsys):
    monkeypatch.setattr("distill.runner.RecipeRunner.execute", interrupt)
    path = write_recipe(tiny_recipe())
    assert main(["run", str(path), "--output-dir", str(tmp_path / "o")]) == 130
    assert f"continue with `distill run {path} --output-dir {tmp_path / 'o'} --resume`" in (
        capsys.readouterr().err
    )


# --------------------------------------------------------------------------- 4. messages


def test_run_directory_messages_say_what_state_it_is_in(finished, tmp_path, capsys):
    recipe, run, _ = finished
    assert main(["run", str(recipe), "--output-dir", str(run), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "already holds a finished run; choose another --output-dir" in error
    assert "--resume" not in error
    assert main(["run", str(recipe), "--output-dir", str(run), "--resume", "--set", "train.epochs=2"]) == 2
    error = capsys.readouterr().err
    where = f"the recipe differs from the one in {run / 'recipe.yaml'} at train.epochs (1 there, 2 now)"
    assert where in error
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "summary.json").unlink()
    assert main(["run", str(recipe), "--output-dir", str(unfinished), "--quiet"]) == 2
    assert "already holds an unfinished run; pass --resume to continue it" in capsys.readouterr().err


def test_a_file_without_metadata_is_named_as_such(tmp_path, capsys):
    stray = tmp_path / "weights.safetensors"
    stray.write_bytes(b"not a distill checkpoint")
    for command in ("export", "eval"):
        assert main([command, str(stray)]) == 2
        error = capsys.readouterr().err
        meta = tmp_path / "weights.json"
        assert f"has no metadata file ({meta}) beside it; was it written by distill?" in error
        assert "lacks" not in error


def test_float_labels_blame_the_labels_key(tmp_path, write_recipe, capsys):
    data = write_npz(tmp_path / "floats.npz", 60, labels=np.full(60, 0.5))
    assert main(["run", str(write_recipe(npz_recipe(data))), "--output-dir", str(tmp_path / "o")]) == 2
    assert "floats.npz ['y']: labels must be integer class ids, got non-integer values" in (
        capsys.readouterr().err
    )


def test_search_options_are_worded_like_the_recipes(tmp_path, write_recipe, capsys):
    path = str(write_recipe(tiny_recipe()))
    assert main(["search", path, "--population", "0", "--output-dir", str(tmp_path / "s")]) == 2
    error = capsys.readouterr().err
    assert "--population: must be at least 2, got 0" in error and "Input should" not in error


@pytest.mark.parametrize(("command", "option"), [("eval", "--split"), ("export", "--format")])
def test_options_have_help(command, option, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    described = out[out.index(option, out.index("options:")) :].split("\n  -")[0]
    assert len(described.split()) > 3, described


def test_summarize_one_seed_shows_no_spread(finished, capsys):
    _, run, _ = finished
    capsys.readouterr()
    assert main(["summarize", str(run)]) == 0
    out = capsys.readouterr().out
    assert "(1 seed)" in out and "± 0.00" not in out
