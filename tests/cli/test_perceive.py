"""`distill perceive` end to end at a toy budget: the teacher and every method over two seeds,
the board, the bandwidth plot and the edge-weight picture; a re-run reuses, another recipe is
refused, a bad recipe is a clear error."""

from __future__ import annotations

import json

import pytest

from distill.cli import main

TOY = [
    "--set", "scenes.train=16", "--set", "scenes.test=6", "--set", "width=4",
    "--set", "world.view_cells=16", "--set", "world.vehicles=4", "--set", "world.walls=2",
    "--set", "world.rays=64", "--set", "train.batch_size=8",
]  # fmt: skip


@pytest.mark.slow
def test_perceive_board_over_two_seeds_with_pictures(tmp_path, capsys):
    out = tmp_path / "board"
    argv = ["perceive", "--epochs", "1", "--seeds", "2", "--output-dir", str(out), *TOY]
    assert main(argv) == 0
    board = json.loads((out / "board.json").read_text())
    methods = [row["method"] for row in board["rows"]]
    assert methods == [
        "early",
        "early-warped",
        "ego",
        "late",
        "mean",
        "max",
        "discograph-nokd",
        "discograph",
        "discograph-c8",
    ]
    sizes = {row["method"]: row["bytes_per_frame"] for row in board["rows"]}
    assert sizes["ego"] == 0 and sizes["discograph-c8"] < sizes["discograph"] == sizes["mean"]
    assert all(0 <= row["iou"] <= 100 and len(row["per_seed"]) == 2 for row in board["rows"])
    trust = {row["method"]: row for row in board["edge_weights"]}
    assert set(trust) == {"discograph-nokd", "discograph", "discograph-c8"}
    assert all(0 <= trust[name]["seen"] <= 1 for name in trust)
    for picture in ("bandwidth.png", "edge-weights.png"):
        assert (out / picture).read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "seed-0" / "results.json").read_text())
    assert results["discograph"]["distils"] and not results["discograph-nokd"]["distils"]
    printed = capsys.readouterr().out
    assert "| discograph |" in printed and "on unseen pixels" in printed

    before = (out / "seed-0" / "discograph.safetensors").read_bytes()
    assert main(argv) == 0  # everything reused: nothing trains again
    assert (out / "seed-0" / "discograph.safetensors").read_bytes() == before
    assert main([*argv, "--set", "kd_weight=1.0"]) == 2  # another recipe in the same folder
    assert "holds a perception run of a different recipe" in capsys.readouterr().err


def test_perceive_bad_recipes_are_clear_errors(tmp_path, capsys):
    out = str(tmp_path / "x")
    assert main(["perceive", "--methods", "ego,telepathy", "--output-dir", out]) == 2
    assert "unknown perception method 'telepathy'" in capsys.readouterr().err
    assert main(["perceive", "--set", "world.view_cells=30", "--output-dir", out]) == 2
    assert "multiple of 4" in capsys.readouterr().err
    assert main(["perceive", "--methods", "discograph-c999", "--output-dir", out]) == 2
    assert "use 1 to 32" in capsys.readouterr().err
    assert main(["perceive", "--set", "teacher_width=16", "--output-dir", out]) == 2
    assert "needs the students' width" in capsys.readouterr().err
    wider = [*TOY, "--set", "teacher_width=8", "--set", "train.epochs=1", "--quiet"]
    assert main(["perceive", *wider, "--methods", "early,ego", "--output-dir", str(tmp_path / "w")]) == 0
    board = json.loads((tmp_path / "w" / "board.json").read_text())
    params = {row["method"]: row["params"] for row in board["rows"]}
    assert params["early"] > 3 * params["ego"]  # the teacher alone is twice as wide
    assert main(["perceive", "nope", "--output-dir", out]) == 2
    assert "quickstart" in capsys.readouterr().err
