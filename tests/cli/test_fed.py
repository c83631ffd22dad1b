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
    "hyperprism averaging without a validation split": (
        {
            "data": {**TINY["data"], "val_fraction": 0.0},
            "merge": {"lambdas": "fixed", "fixed": [[1.0, 1.0], [1.0, 1.0]]},
            "averaging": {"rule": "hyperprism"},
        },
        "data.val_fraction: HyperPrism averaging trains its degrees on the validation split",
    ),
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


def test_clients_that_miss_the_timeout_cost_their_updates_not_the_round(tmp_path):
    """On Flower's simulation with a timeout no client can meet: the round still finishes, every
    prototype keeps its model, and the record names each missing client and why."""
    recipe = write_recipe(tmp_path, rounds=1, timeout_s=0.001)
    out = tmp_path / "run"
    assert main(["fed", recipe, "--output-dir", str(out), "--quiet"]) == 0
    (record,) = records(out)
    for entry in record["prototypes"]:
        assert entry["replied"] == [] and entry["averaged_accuracy"] == entry["merged_accuracy"]
        assert set(entry["missing"]) == {str(client) for client in entry["sampled"]}
        assert all(why == "no reply within 0.001 s" for why in entry["missing"].values())


def test_ctrl_c_in_a_round_then_resume_gives_the_uninterrupted_result(tmp_path, monkeypatch, capsys):
    """Interrupted in round 2 inside Flower's simulation: exit 130 with the resume command;
    `--resume` runs round 2 again and ends where an uninterrupted run ends."""
    from distill.federated.server import Federation

    recipe = write_recipe(tmp_path, rounds=2)
    assert main(["fed", recipe, "--engine", "inprocess", "--output-dir", str(tmp_path / "straight")]) == 0
    original = Federation.run_round

    def interrupted(self, round_index, transport):
        if round_index == 1:
            raise KeyboardInterrupt
        return original(self, round_index, transport)

    monkeypatch.setattr(Federation, "run_round", interrupted)
    out = str(tmp_path / "cut")
    assert main(["fed", recipe, "--output-dir", out]) == 130
    assert f"continue with `distill fed {recipe} --output-dir {out} --resume`" in capsys.readouterr().err
    assert len(records(tmp_path / "cut")) == 1
    monkeypatch.setattr(Federation, "run_round", original)
    assert main(["fed", recipe, "--output-dir", out, "--resume"]) == 0
    assert records(tmp_path / "cut") == records(tmp_path / "straight")


def test_decentralized_board_compares_aggregation_rules(tmp_path, capsys):
    recipe = {
        "kind": "decentralized",
        "name": "gossip-cli",
        "data": {"name": "mnist1d", "num_samples": 1200, "val_fraction": 0.0},
        "model": {"name": "mlp", "hidden": [16]},
        "devices": 5,
        "dirichlet_alpha": 1.0,
        "rounds": 2,
    }
    path = tmp_path / "gossip.yaml"
    path.write_text(yaml.safe_dump(recipe))
    board = tmp_path / "board"
    argv = ["fed", str(path), "--algorithms", "linear,power-3,hyperprism", "--output-dir", str(board)]
    assert main(argv) == 0
    rows = json.loads((board / "board.json").read_text())["rows"]
    assert [row["rule"] for row in rows] == ["linear", "power-3", "hyperprism"]
    assert (board / "hyperprism-seed0" / "curves.png").is_file()
    summary = json.loads((board / "power-3-seed0" / "summary.json").read_text())
    assert summary["central_accuracy"] > 0 and summary["rounds"] == 2
    capsys.readouterr()
    assert main(["fed", str(path), "--algorithms", "power-x", "--output-dir", str(board)]) == 2
    assert "'power-x' is not power-<degree>" in capsys.readouterr().err
