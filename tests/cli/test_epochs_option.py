"""``--epochs N``: the one way to shrink a whole recipe — teacher, students, their own budgets."""

from __future__ import annotations

import json

import pytest

from distill.cli import main
from distill.config import builtin_recipe_names, epochs_overrides, load_recipe
from tests.conftest import tiny_recipe


@pytest.mark.parametrize("name", builtin_recipe_names())
def test_every_model_of_every_builtin_recipe_gets_n_epochs(name):
    recipe, _ = load_recipe(name, epochs_overrides(name, 2))
    members = [*recipe.students] + ([recipe.teacher] if recipe.teacher is not None else [])
    assert {recipe.train_of(member).epochs for member in members} == {2}


def test_later_set_options_still_win():
    recipe, _ = load_recipe("quickstart", [*epochs_overrides("quickstart", 2), "teacher.train.epochs=3"])
    assert recipe.train_of(recipe.teacher).epochs == 3
    assert {recipe.train_of(student).epochs for student in recipe.students} == {2}


def test_a_run_with_epochs_trains_each_model_that_long(tmp_path, write_recipe, capsys):
    recipe = tiny_recipe(teacher={"model": {"name": "cnn1d", "channels": [16, 16]}, "train": {"epochs": 4}})
    recipe["students"][1]["train"] = {"epochs": 5}
    path = write_recipe(recipe)
    assert main(["run", str(path), "--epochs", "1", "--output-dir", str(tmp_path / "r"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert [row["epochs"] for row in summary["results"]] == [1, 1, 1]


@pytest.mark.parametrize("value", ["0", "1000000"])
def test_an_epoch_count_out_of_range_is_refused_by_its_option(value, capsys):
    assert main(["run", "--epochs", value]) == 2
    assert f"--epochs: must be from 1 to 100000, got {value}" in capsys.readouterr().err
