import json

import yaml

from distill.cli import main
from distill.compare import comparison_recipe, parse_methods
from distill.config import validate_recipe
from tests.conftest import tiny_recipe


def compare(recipe_path, out, methods="scratch,kd,dml", seeds=2):
    args = [
        "compare",
        str(recipe_path),
        "--methods",
        methods,
        "--seeds",
        str(seeds),
        "--output-dir",
        str(out),
    ]
    return main(args)


def test_compare_writes_a_leaderboard_over_seeds_and_reuses_finished_seeds(tmp_path, write_recipe, capsys):
    recipe = write_recipe(tiny_recipe(data={"name": "mnist1d", "num_samples": 400}))
    out = tmp_path / "cmp"
    assert compare(recipe, out) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["seeds"] == [3, 4] and board["methods"] == ["scratch", "kd", "dml"]
    rows = {row["name"]: row for row in board["rows"]}
    assert list(rows) == ["teacher", "scratch", "kd", "dml/peer0", "dml/peer1"]
    for row in rows.values():
        assert len(row["test_accuracy_per_seed"]) == 2 and row["params"] > 0
    assert rows["scratch"]["gain_over_scratch"] == 0.0
    assert rows["kd"]["params"] == rows["scratch"]["params"] == rows["dml/peer1"]["params"]
    assert (out / "leaderboard.png").stat().st_size > 0
    assert "| dml/peer1 | dml |" in (out / "leaderboard.md").read_text()
    # the kd student keeps the recipe's kd options; every student has the first student's model
    seed_recipe = yaml.safe_load((out / "seed-3" / "recipe.yaml").read_text())
    assert seed_recipe["seed"] == 3 and seed_recipe["students"][1]["method"]["temperature"] == 2.0
    assert {student["model"]["hidden"][0] for student in seed_recipe["students"]} == {32}

    # a second call reuses finished seeds; an unfinished one is continued
    (out / "seed-4" / "summary.json").unlink()
    capsys.readouterr()
    assert compare(recipe, out) == 0
    printed = capsys.readouterr().out
    assert "seed 3" in printed and "finished, reused" in printed
    assert json.loads((out / "leaderboard.json").read_text())["rows"] == board["rows"]


def test_compare_refuses_a_directory_made_for_other_methods(tmp_path, write_recipe, capsys):
    recipe = write_recipe(
        tiny_recipe(
            data={"name": "mnist1d", "num_samples": 300},
            teacher=None,
            students=[{"name": "s", "model": {"name": "mlp", "hidden": [16]}}],
        )
    )
    out = tmp_path / "cmp"
    assert compare(recipe, out, methods="scratch", seeds=1) == 0
    assert compare(recipe, out, methods="scratch,dml", seeds=1) == 2
    assert "holds a comparison of a different recipe" in capsys.readouterr().err


def test_a_folder_written_before_a_field_was_added_is_still_reused(tmp_path, write_recipe, capsys):
    """A run's recipe.yaml from before a schema addition lacks the new field (here ``train.sync``
    and ``reference``, both at their defaults); the comparison still recognises the finished seed."""
    recipe = write_recipe(
        tiny_recipe(
            data={"name": "mnist1d", "num_samples": 300},
            teacher=None,
            students=[{"name": "s", "model": {"name": "mlp", "hidden": [16]}}],
        )
    )
    out = tmp_path / "cmp"
    assert compare(recipe, out, methods="scratch", seeds=1) == 0
    stored_path = out / "seed-3" / "recipe.yaml"
    stored = yaml.safe_load(stored_path.read_text())
    del stored["train"]["sync"], stored["reference"]
    stored_path.write_text(yaml.safe_dump(stored, sort_keys=False))
    capsys.readouterr()
    assert compare(recipe, out, methods="scratch", seeds=1) == 0
    assert "finished, reused" in capsys.readouterr().out
    stored["train"]["epochs"] += 1  # a real difference is still one
    stored_path.write_text(yaml.safe_dump(stored, sort_keys=False))
    assert compare(recipe, out, methods="scratch", seeds=1) == 2


def test_compare_input_errors(tmp_path, write_recipe, capsys):
    recipe = write_recipe(tiny_recipe())
    assert compare(recipe, tmp_path / "a", methods="scratch,nope") == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert compare(recipe, tmp_path / "b", seeds=0) == 2
    assert compare(recipe, tmp_path / "c", methods="kd,kd") == 2
    assert "listed twice" in capsys.readouterr().err
    teacherless = tiny_recipe(teacher=None, students=[{"name": "s", "model": {"name": "mlp"}}])
    assert compare(write_recipe(teacherless, "t.yaml"), tmp_path / "d", methods="kd") == 2
    assert "needs a teacher" in capsys.readouterr().err


def test_comparison_recipe_drops_the_teacher_when_no_method_needs_one():
    recipe = validate_recipe(tiny_recipe())
    online = comparison_recipe(recipe, parse_methods("scratch,dml,one"), seed=9)
    assert online.teacher is None and online.seed == 9
    assert [student.name for student in online.students] == ["scratch", "dml", "one"]


def test_sweep_repeats_the_comparison_for_each_value(tmp_path, write_recipe):
    recipe = write_recipe(
        tiny_recipe(
            data={"name": "mnist1d", "num_samples": 300},
            teacher=None,
            students=[{"name": "s", "model": {"name": "mlp", "hidden": [16]}}],
        )
    )
    out = tmp_path / "sweep"
    options = ["--methods", "scratch,dml", "--seeds", "1", "--output-dir", str(out), "--quiet"]
    assert main(["compare", str(recipe), *options, "--sweep", "train.epochs=1,2"]) == 0
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["key"] == "train.epochs" and sweep["values"] == ["1", "2"]
    assert set(sweep["models"]) == {"scratch", "dml/peer0", "dml/peer1"}
    assert all(len(cells) == 2 for cells in sweep["models"].values())
    assert (out / "train.epochs=2" / "seed-3" / "summary.json").exists()
    assert (out / "sweep.png").stat().st_size > 0 and "train.epochs=2" in (out / "sweep.md").read_text()


def test_bad_sweeps_are_refused(tmp_path, write_recipe, capsys):
    recipe = write_recipe(tiny_recipe())
    assert (
        main(["compare", str(recipe), "--output-dir", str(tmp_path / "a"), "--sweep", "train.epochs=3"]) == 2
    )
    assert "at least two values" in capsys.readouterr().err
    assert (
        main(["compare", str(recipe), "--output-dir", str(tmp_path / "b"), "--sweep", "train.epochs=1,-2"])
        == 2
    )
    assert "train.epochs" in capsys.readouterr().err


def test_builtin_recipes_are_valid():
    from distill.config import builtin_recipe_names, load_recipe

    assert {"quickstart", "digits", "unlabeled"} <= set(builtin_recipe_names())
    for name in builtin_recipe_names():
        recipe, _ = load_recipe(name)
        assert recipe.name == name


def test_a_method_the_recipe_uses_keeps_its_students_training_options():
    recipe = tiny_recipe()
    recipe["students"][1]["train"] = {"epochs": 7}
    board = comparison_recipe(validate_recipe(recipe), parse_methods("scratch,kd,dml"), seed=0)
    epochs = {student.name: student.train.epochs for student in board.students}
    assert epochs == {"scratch": 3, "kd": 7, "dml": 3}
