"""The standard table end to end at a toy budget on the CPU: `distill compare cifar100
--methods students` on a generated CIFAR-100 folder (the real format), with the published
numbers beside the measured ones."""

from __future__ import annotations

import json

import pytest

from distill.cli import main
from tests.data.test_cifar100 import fake_parts, write_folder

TOY = [
    "--epochs",
    "1",
    "--set",
    "teacher.model.width=1",  # resnet32x1: a teacher the test can afford
    "--set",
    "students[7].method.negatives=64",  # CRD: 64 negatives instead of 16384
]


@pytest.mark.slow
def test_the_standard_table_runs_every_method_and_prints_the_published_numbers(tmp_path, capsys):
    folder = write_folder(tmp_path / "cifar-100-python", fake_parts(n_train=100, n_test=40))
    out = tmp_path / "table"
    argv = ["compare", "cifar100", "--methods", "students", "--seeds", "1", "--output-dir", str(out)]
    assert main([*argv, *TOY, "--set", f"data.path={folder}", "--quiet"]) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    names = [row["name"] for row in board["rows"]]
    assert names == [
        "teacher", "scratch", "kd", "dkd", "dist", "mlkd", "kd-ls", "ctkd", "crd", "rkd", "pkt", "sp",
        "reviewkd",
    ]  # fmt: skip
    assert board["reference"]["accuracy"]["mlkd"] == 77.08
    markdown = (out / "leaderboard.md").read_text()
    assert "| published (%) |" in markdown and "Tian et al., ICLR 2020" in markdown
    scratch = next(line for line in markdown.splitlines() if line.startswith("| scratch |"))
    assert "| 72.50 |" in scratch
    ctkd = next(line for line in markdown.splitlines() if line.startswith("| ctkd |"))
    assert "| — |" in ctkd  # no published number for this pair in the sources cited


@pytest.mark.slow
def test_a_subset_of_the_recipes_students_keeps_only_their_published_numbers(tmp_path):
    folder = write_folder(tmp_path / "cifar-100-python", fake_parts(n_train=60, n_test=20))
    out = tmp_path / "subset"
    argv = ["compare", "cifar100", "--methods", "scratch,dkd", "--seeds", "1", "--output-dir", str(out)]
    assert (
        main([*argv, "--epochs", "1", "--set", "teacher.model.width=1", "--set", f"data.path={folder}"]) == 0
    )
    board = json.loads((out / "leaderboard.json").read_text())
    assert [row["name"] for row in board["rows"]] == ["teacher", "scratch", "dkd"]
    assert board["reference"]["accuracy"] == {"scratch": 72.50, "dkd": 76.32}
    assert main(["compare", "cifar100", "--methods", "scratch,nope", "--set", f"data.path={folder}"]) == 2
