"""``distill compare --tune KEY=V1,V2,...``: every method at the value its validation accuracy
picks, the test split kept out of the choice; the full grid written for audit."""

from __future__ import annotations

import json

import pytest

from distill.cli import main
from distill.report.leaderboard import Leaderboard, LeaderboardRow, TuneBoard
from tests.conftest import tiny_recipe

LRS = ["0.001", "0.003", "0.01", "0.03"]


def _recipe(write_recipe, **changes):
    recipe = {
        "data": {"name": "mnist1d", "num_samples": 300},
        "teacher": None,
        "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 0.005}},
        "students": [{"name": "s", "model": {"name": "mlp", "hidden": [16]}}],
    }
    return write_recipe(tiny_recipe(**{**recipe, **changes}))


def _tune(recipe, out, tune, *extra):
    options = ["--methods", "scratch,dml", "--seeds", "2", "--output-dir", str(out), "--quiet"]
    return main(["compare", str(recipe), *options, "--tune", tune, *extra])


def _mean(values):
    return sum(values) / len(values)


def test_tune_reports_each_method_at_its_best_validation_value(tmp_path, write_recipe, capsys):
    recipe = _recipe(write_recipe)
    out = tmp_path / "tune"
    assert _tune(recipe, out, "train.optimizer.lr=" + ",".join(LRS)) == 0
    printed = capsys.readouterr().out
    grid = json.loads((out / "tune.json").read_text())
    assert grid["key"] == "train.optimizer.lr" and grid["values"] == LRS
    assert set(grid["methods"]) == {"scratch", "dml"}
    assert grid["methods"]["dml"]["selected_by"] == "dml/peer0"  # the primary model chooses
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["tuned"] == {"key": "train.optimizer.lr", "values": LRS, "selected_on": "val"}
    rows = {row["name"]: row for row in board["rows"]}
    assert list(rows) == ["scratch", "dml/peer0", "dml/peer1"]
    for method, primary in (("scratch", "scratch"), ("dml", "dml/peer0")):
        # the value chosen is the one with the best mean validation accuracy in that value's own
        # comparison folder, whatever the test accuracies say
        val = {}
        for value in LRS:
            folder = json.loads((out / f"train.optimizer.lr={value}" / "leaderboard.json").read_text())
            [row] = [row for row in folder["rows"] if row["name"] == primary]
            val[value] = _mean(row["val_accuracy_per_seed"])
        chosen = max(LRS, key=lambda value: (val[value], -LRS.index(value)))
        assert grid["methods"][method]["chosen"] == chosen
        assert rows[primary]["tuned_value"] == chosen
        folder = json.loads((out / f"train.optimizer.lr={chosen}" / "leaderboard.json").read_text())
        [expected] = [row for row in folder["rows"] if row["name"] == primary]
        assert rows[primary]["test_accuracy_per_seed"] == expected["test_accuracy_per_seed"]
    assert rows["dml/peer1"]["tuned_value"] == rows["dml/peer0"]["tuned_value"]  # one value per method
    table = (out / "leaderboard.md").read_text()
    assert "| model | method | `train.optimizer.lr` | val acc (%) | test acc (%) |" in table
    assert f"| scratch | scratch | {rows['scratch']['tuned_value']} |" in table and table in printed
    assert "**" in (out / "tune.md").read_text() and (out / "leaderboard.png").stat().st_size > 0

    # the choice follows the validation split alone: make the value with the best test accuracy
    # the worst on validation (in every finished seed), and the same command picks another
    def rewrite(value, val, test):
        for summary_path in (out / f"train.optimizer.lr={value}").glob("seed-*/summary.json"):
            summary = json.loads(summary_path.read_text())
            for result in summary["results"]:
                result["val_accuracy"], result["test_accuracy"] = val, test
            summary_path.write_text(json.dumps(summary))

    rewrite("0.001", 0.10, 0.99)  # best on test, worst on validation
    rewrite("0.003", 0.90, 0.20)  # best on validation, poor on test
    assert _tune(recipe, out, "train.optimizer.lr=" + ",".join(LRS)) == 0  # finished seeds reused
    board = json.loads((out / "leaderboard.json").read_text())
    for row in board["rows"]:
        assert row["tuned_value"] == "0.003" and row["test_accuracy_mean"] == pytest.approx(0.20)


def _row(name, val, test):
    return LeaderboardRow(name, name.split("/")[0], "student", [test, test], 10, [1.0, 1.0], [val, val])


def _board(rows):
    return Leaderboard("r", ("scratch", "dml"), [0, 1], {"name": "mlp"}, {"name": "d"}, rows)


def test_tune_board_selects_on_validation_never_on_test():
    boards = [
        _board([_row("scratch", 0.50, 0.90), _row("dml/peer0", 0.70, 0.60), _row("dml/peer1", 0.9, 0.9)]),
        _board([_row("scratch", 0.60, 0.40), _row("dml/peer0", 0.70, 0.99), _row("dml/peer1", 0.1, 0.1)]),
    ]
    board = TuneBoard("train.optimizer.lr", ["0.1", "0.5"], boards)
    assert board.choices() == {"scratch": "0.5", "dml": "0.1"}  # a tie keeps the value listed first
    selected = board.selected()
    assert [(row.name, row.mean) for row in selected.rows] == [
        ("scratch", 0.40),  # best by validation (0.60), not by test (0.90 at 0.1)
        ("dml/peer0", 0.60),
        ("dml/peer1", 0.90),  # the primary model's value, for every model of the method
    ]
    assert selected.chosen == {"scratch": "0.5", "dml/peer0": "0.1", "dml/peer1": "0.1"}
    assert "| scratch | scratch | 0.5 | 60.00 ± 0.00 | 40.00 ± 0.00 |" in selected.markdown()
    missing = TuneBoard("k", ["1", "2"], [_board([_row("scratch", None, 0.5)])] * 2)
    with pytest.raises(ValueError, match="no validation accuracy"):
        missing.choice("scratch")


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ("train.optimizer.lr=0.1", "--tune: expected KEY.PATH=V1,V2[,...] with at least two values"),
        ("train.optimizer.lr", "--tune: expected KEY.PATH=V1,V2[,...]"),
        ("=0.1,0.2", "--tune: expected KEY.PATH=V1,V2[,...]"),
        ("train.optimizer.lr=0.1,0.1", "--tune: a value is listed twice"),
        ("train.lr=0.1,0.2", "--tune train.lr=0.1: unknown key 'lr'"),
        ("train.optimizer.lr=0.1,abc", "--tune train.optimizer.lr=abc: must be a number"),
        ("students[3].train.epochs=1,2", "--tune students[3].train.epochs=1: 'students[3]' does not exist"),
        ("train.optimizer.lr=0.1,-1", "--tune train.optimizer.lr=-1"),
    ],
)
def test_bad_tune_options_exit_2_with_one_line_naming_the_option(
    tune, message, tmp_path, write_recipe, capsys
):
    out = tmp_path / "out"
    assert _tune(_recipe(write_recipe), out, tune) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
    assert not out.exists()  # refused before anything ran


def test_tune_refuses_sweep_no_validation_split_and_a_field_no_method_reads(tmp_path, write_recipe, capsys):
    recipe = _recipe(write_recipe)
    assert _tune(recipe, tmp_path / "a", "train.optimizer.lr=0.1,0.2", "--sweep", "train.epochs=1,2") == 2
    assert "--tune and --sweep cannot be combined" in capsys.readouterr().err
    no_val = _recipe(write_recipe, data={"name": "mnist1d", "num_samples": 300, "val_fraction": 0.0})
    assert _tune(no_val, tmp_path / "b", "train.optimizer.lr=0.1,0.2") == 2
    assert "validation split" in capsys.readouterr().err
    students = [
        {"name": "s", "model": {"name": "mlp", "hidden": [16]}},
        {"name": "k", "model": {"name": "mlp", "hidden": [16]}, "method": {"name": "dml"}},
    ]
    unread = _recipe(write_recipe, students=students)
    # students[1] is the recipe's dml student: its options do not reach a scratch-only comparison
    options = ["--methods", "scratch", "--output-dir", str(tmp_path / "c")]
    assert main(["compare", str(unread), *options, "--tune", "students[1].method.peers=2,3"]) == 2
    error = capsys.readouterr().err
    assert "--tune students[1].method.peers: every value gives the same comparison" in error
    assert not (tmp_path / "c").exists()
