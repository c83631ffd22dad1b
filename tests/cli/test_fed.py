"""``distill fed``: end to end on Flower's simulation and in-process, boards, and bad recipes."""

from __future__ import annotations

import json

import pytest
import yaml

from distill.cli import main
from distill.fed.command import ALGORITHM_NAMES
from distill.federated.spec import ALGORITHMS
from tests.federated.conftest import TINY


def write_recipe(folder, **changes):
    path = folder / "fed.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return str(path)


def records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("seconds")} for line in lines]


def test_algorithm_names_in_the_help_match_the_spec():
    assert tuple(ALGORITHM_NAMES.split(",")) == ALGORITHMS


def test_fed_on_flower_simulation_matches_the_in_process_run(tmp_path, capsys):
    """The same rounds through Flower (a virtual SuperNode per client, Ray) and in one process:
    the recorded rounds and accuracies are identical."""
    recipe = write_recipe(tmp_path)
    assert main(["fed", recipe, "--output-dir", str(tmp_path / "flower")]) == 0
    output = capsys.readouterr().out
    assert "round 2/2" in output and "run directory" in output
    assert main(["fed", recipe, "--engine", "inprocess", "--output-dir", str(tmp_path / "local")]) == 0
    assert records(tmp_path / "flower") == records(tmp_path / "local")
    for name in ("recipe.yaml", "summary.json", "checkpoint.pt", "accuracy.png"):
        assert (tmp_path / "flower" / name).is_file()
    summary = json.loads((tmp_path / "flower" / "summary.json").read_text())
    assert summary["rounds"] == 2 and set(summary["prototypes"]) == {"small", "large"}


def test_a_finished_run_is_not_overwritten_and_resume_is_a_no_op(tmp_path, capsys):
    recipe = write_recipe(tmp_path, rounds=1)
    out = str(tmp_path / "run")
    assert main(["fed", recipe, "--engine", "inprocess", "--output-dir", out]) == 0
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert main(["fed", recipe, "--engine", "inprocess", "--output-dir", out]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert main(["fed", recipe, "--engine", "inprocess", "--output-dir", out, "--resume"]) == 0
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_board_compares_algorithms_over_seeds(tmp_path, capsys):
    recipe = write_recipe(tmp_path, rounds=1)
    board = tmp_path / "board"
    argv = ["fed", recipe, "--engine", "inprocess", "--algorithms", "fedavg,feddf", "--seeds", "2"]
    assert main([*argv, "--output-dir", str(board)]) == 0
    rows = json.loads((board / "board.json").read_text())["rows"]
    assert [row["algorithm"] for row in rows] == ["fedavg", "feddf"]
    assert rows[0]["small"]["runs"] == 2 and len(rows[0]["small"]["per_seed"]) == 2
    assert (board / "board.md").read_text().count("|") > 10 and (board / "board.png").is_file()
    assert sorted(p.name for p in board.iterdir() if p.is_dir()) == [
        "fedavg-seed0",
        "fedavg-seed1",
        "feddf-seed0",
        "feddf-seed1",
    ]
    capsys.readouterr()
    assert main([*argv, "--output-dir", str(board)]) == 0  # finished runs are reused, not trained again
    assert "round 1/1" not in capsys.readouterr().out


BAD = {
    "shares above one": (
        {"prototypes": [{**TINY["prototypes"][0], "data_share": 0.7}, TINY["prototypes"][1]]},
        "sum to 1.3; at most 1",
    ),
    "share too small for its clients": (
        {"prototypes": [{**TINY["prototypes"][0], "data_share": 0.01}, TINY["prototypes"][1]]},
        "prototypes[0].data_share: 0.01 of",
    ),
    "unknown model": (
        {"prototypes": [{**TINY["prototypes"][0], "model": {"name": "mlpp"}}, TINY["prototypes"][1]]},
        "prototypes[0].model: unknown model 'mlpp'",
    ),
    "fixed lambdas of the wrong shape": (
        {"merge": {"lambdas": "fixed", "fixed": [[1.0, 0.0]]}},
        "merge.fixed: lambdas 'fixed' needs a 2×2 matrix",
    ),
    "a fraction above one": (
        {"prototypes": [{**TINY["prototypes"][0], "fraction": 1.5}, TINY["prototypes"][1]]},
        "prototypes[0].fraction",
    ),
    "no clients": (
        {"prototypes": [{**TINY["prototypes"][0], "clients": 0}, TINY["prototypes"][1]]},
        "prototypes[0].clients",
    ),
    "unknown algorithm": ({"algorithm": "fedprox"}, "algorithm"),
    "public set as large as the data": ({"public_samples": 5000}, "public_samples: 5000 public examples"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipes_are_refused_before_anything_starts(case, tmp_path, capsys):
    changes, expected = BAD[case]
    out = tmp_path / "run"
    assert (
        main(["fed", write_recipe(tmp_path, **changes), "--engine", "inprocess", "--output-dir", str(out)])
        == 2
    )
    error = capsys.readouterr().err
    assert expected in error and "Traceback" not in error
    assert not out.exists()


def test_bad_options_are_refused(tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    assert main(["fed", recipe, "--algorithms", "fedavg,fedprox"]) == 2
    assert "--algorithms: unknown ['fedprox']" in capsys.readouterr().err
    assert main(["fed", recipe, "--rounds", "0"]) == 2
    assert "--rounds: must be a positive integer" in capsys.readouterr().err
    assert main(["fed", "no-such-recipe"]) == 2
    assert "unknown built-in federated recipe 'no-such-recipe'" in capsys.readouterr().err
