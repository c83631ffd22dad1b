"""`distill ground` end to end at a toy budget: every method on one seed, the board, the plot of w
and the latency table; a re-run reuses the trained models, another recipe in the same folder is
refused, a bad recipe is a clear error with exit code 2."""

from __future__ import annotations

import json

from distill.cli import main

TOY = [
    "--set", "examples.train=24", "--set", "examples.test=8", "--set", "world.image_size=16",
    "--set", "world.objects=2", "--set", "model.dim=16", "--set", "model.heads=2",
    "--set", "model.feedforward=32", "--set", "train.batch_size=8", "--set", "train.stage1_epochs=1",
    "--set", "latency.repeats=2", "--set", "latency.batch_sizes=[1, 4]",
]  # fmt: skip


def test_ground_board_and_resume(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "board"
    argv = ["ground", "--epochs", "1", "--seeds", "1", "--output-dir", str(out), *TOY]
    assert main(argv) == 0
    board = json.loads((out / "board.json").read_text())
    assert [row["method"] for row in board["rows"]] == ["tb-gt", "fixed-mix", "dwbd", "dwbd-2stage"]
    assert all(0 <= row["tb_acc"] <= 100 and 0 <= row["db_acc"] <= 100 for row in board["rows"])
    assert set(board["latency"]["timings"]) == {"batch1", "batch4"}
    assert (out / "weights.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "seed-0" / "results.json").read_text())
    assert results["dwbd-2stage"]["stages"] == [1, 2] and results["dwbd"]["stages"] == [1]
    assert results["tb-gt"]["w_curve"] == [0.0] and results["fixed-mix"]["w_curve"] == [0.5]
    assert 0.0 <= results["dwbd"]["w_final"] <= 1.0
    printed = capsys.readouterr().out
    assert "| dwbd |" in printed and "DB / TB" in printed

    lines = (out / "seed-0" / "metrics.jsonl").read_text().splitlines()
    before = (out / "seed-0" / "dwbd.safetensors").read_bytes()
    assert main([*argv, "--quiet"]) == 0  # everything reused: nothing trains again
    assert (out / "seed-0" / "metrics.jsonl").read_text().splitlines() == lines
    assert (out / "seed-0" / "dwbd.safetensors").read_bytes() == before
    capsys.readouterr()
    assert main([*argv, "--set", "train.lambda_t=1.0"]) == 2  # another recipe in the same folder
    assert "holds a grounding run of a different recipe" in capsys.readouterr().err


def test_ground_bad_recipes_are_clear_errors(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "x")
    assert main(["ground", "--methods", "dwbd,telepathy", "--output-dir", out]) == 2
    assert "unknown grounding method 'telepathy'" in capsys.readouterr().err
    assert main(["ground", "--set", "model.patch=5", "--output-dir", out]) == 2
    assert "model.patch" in capsys.readouterr().err
    assert main(["ground", "--set", "train.fixed_weight=1.5", "--output-dir", out]) == 2
    assert "fixed_weight" in capsys.readouterr().err
    assert main(["ground", "--set", "train.epochs=two", "--output-dir", out]) == 2
    assert "train.epochs" in capsys.readouterr().err
    assert main(["ground", "--set", "world.colour=red", "--output-dir", out]) == 2
    assert "unknown key 'colour'" in capsys.readouterr().err
    assert main(["ground", "--seeds", "0", "--output-dir", out]) == 2
    assert "--seeds" in capsys.readouterr().err
    crowded = ["--set", "world.objects=12", "--set", "world.size_range=[0.6, 0.7]"]
    assert main(["ground", *crowded, "--output-dir", out]) == 2  # the world cannot be drawn
    assert "no scene with a uniquely referring expression" in capsys.readouterr().err
    assert main(["ground", "nope", "--output-dir", out]) == 2
    assert "quickstart" in capsys.readouterr().err
