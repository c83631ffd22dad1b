"""`distill shift` end to end at a toy budget: splits of rising FID from a base recipe's data, the
teacher and two students on each split and seed, the report; a re-run reuses everything, another
recipe in the same folder is refused, and a wrong recipe is a clear error (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.cli import main

BASE = """\
name: toy-base
seed: 0
data:
  {name: synthetic, num_samples: 400, num_test: 200, num_classes: 3, shape: [12], clusters_per_class: 3}
train: {epochs: 2, batch_size: 64, optimizer: {name: adamw, lr: 0.01}}
teacher:
  name: teacher
  model: {name: mlp, hidden: [32]}
students:
  - name: scratch
    model: {name: mlp, hidden: [8]}
    method: {name: scratch}
  - name: kd
    model: {name: mlp, hidden: [8]}
    method: {name: kd, temperature: 2.0}
"""

NO_TEACHER = """\
name: toy-base
data: {name: synthetic, num_samples: 400, num_test: 200, num_classes: 3, shape: [12]}
train: {epochs: 2, batch_size: 64, optimizer: {name: adamw, lr: 0.01}}
students:
  - name: scratch
    model: {name: mlp, hidden: [8]}
    method: {name: scratch}
"""

STUDY = """\
name: toy-shift
base: base.yaml
methods: [scratch, kd]
splits: {count: 3, clusters_per_class: 4, steps: 30, features: {name: pca, dim: 6}}
"""


def _write(tmp_path: Path, base: str = BASE, study: str = STUDY) -> Path:
    (tmp_path / "base.yaml").write_text(base)
    path = tmp_path / "study.yaml"
    path.write_text(study)
    return path


@pytest.mark.slow
def test_shift_study_over_splits_and_seeds_then_reused(tmp_path, capsys):
    recipe = _write(tmp_path)
    out = tmp_path / "study"
    argv = ["shift", str(recipe), "--seeds", "2", "--output-dir", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "shift.json").read_text())
    fids = [row["fid"] for row in report["rows"]]
    assert len(fids) == 4 and fids == sorted(fids) and fids[0] < fids[-1]  # iid, then 3 shifted
    assert [row["kind"] for row in report["rows"]][:2] == ["iid", "initial"]
    assert report["reference"] == "scratch" and set(report["gains"]) == {"kd"}
    for row in report["rows"]:
        assert row["seeds"] == [0, 1]
        assert set(row["accuracy"]) == {"teacher", "scratch", "kd"}
        assert all(0.0 <= row["agreement"][m][0] <= 1.0 for m in ("scratch", "kd"))
        assert row["train_samples"] + row["test_samples"] == 600  # the pooled train + val + test
    splits = json.loads((out / "splits.json").read_text())["splits"]
    for split in splits[1:]:  # every class keeps sub-populations on both sides, none on both
        train = {tuple(unit) for unit in split["train_units"]}
        test = {tuple(unit) for unit in split["test_units"]}
        assert not train & test and {c for c, _ in train} == {c for c, _ in test} == {0, 1, 2}
    run = json.loads((out / "split-3" / "seed-1" / "summary.json").read_text())
    assert [r["name"] for r in run["results"]] == ["teacher", "scratch", "kd"]
    assert (out / "shift.png").read_bytes()[:4] == b"\x89PNG"
    assert "| gain over scratch |" in capsys.readouterr().out

    before = (out / "split-0" / "seed-0" / "kd" / "last.safetensors").read_bytes()
    assert main(argv) == 0  # the splits and every seed are reused
    assert "finished, reused" in capsys.readouterr().out
    assert (out / "split-0" / "seed-0" / "kd" / "last.safetensors").read_bytes() == before
    assert main([*argv, "--set", "splits.clusters_per_class=3"]) == 2
    assert "holds a shift study of another recipe" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("study", "base", "message"),
    [
        (
            STUDY.replace("[scratch, kd]", "[scratch, dkd]"),
            BASE,
            "unknown student of the base recipe base.yaml 'dkd'",
        ),
        (STUDY.replace("[scratch, kd]", "[scratch]"), NO_TEACHER, "trains no teacher"),
        (STUDY.replace("count: 3", "count: 1"), BASE, "splits.count"),
        (STUDY.replace("base: base.yaml", "base: missing.yaml"), BASE, "recipe file not found"),
        (STUDY.replace("count: 3", "count: 90"), BASE, "stopped raising the FID"),
    ],
)
def test_a_wrong_shift_recipe_is_a_clear_error(tmp_path, capsys, study, base, message):
    recipe = _write(tmp_path, base, study)
    assert main(["shift", str(recipe), "--output-dir", str(tmp_path / "out"), "--quiet"]) == 2
    assert message in capsys.readouterr().err


OPEN_SET = """\
name: toy-open
base: base.yaml
methods: [scratch, kd, rkd]
add_students:
  - name: rkd
    model: {name: mlp, hidden: [8]}
    method: {name: kd, terms: [{name: ce}, {name: rkd, student: body, teacher: body}]}
splits: {kind: classes, count: 2, steps: 6, features: {name: pca, dim: 6}}
"""


@pytest.mark.slow
def test_open_set_study_scores_recall_on_unseen_classes(tmp_path, capsys):
    base = BASE.replace("num_classes: 3", "num_classes: 8").replace(
        "clusters_per_class: 3", "clusters_per_class: 1"
    )
    recipe = _write(tmp_path, base, OPEN_SET)
    out = tmp_path / "open"
    assert main(["shift", str(recipe), "--output-dir", str(out), "--quiet"]) == 0
    report = json.loads((out / "shift.json").read_text())
    assert report["metric"] == "Recall@1 on unseen classes" and set(report["gains"]) == {"kd", "rkd"}
    splits = json.loads((out / "splits.json").read_text())
    assert splits["kind"] == "classes"
    assert splits["splits"][0]["fid"] < splits["splits"][1]["fid"]
    for split in splits["splits"]:  # half the classes train, the other half is unseen
        assert len(split["train_classes"]) == len(split["unseen_classes"]) == 4
        assert set(split["train_classes"]) | set(split["unseen_classes"]) == set(range(8))
    scores = json.loads((out / "split-0" / "scores-seed-0.json").read_text())
    assert all(0.0 <= value <= 1.0 for value in scores["accuracy"].values())
    assert set(scores["agreement"]) == {"scratch", "kd", "rkd"}
    assert "Recall@1 on unseen classes (%)" in capsys.readouterr().out


def test_options_of_the_other_split_kind_are_refused(tmp_path, capsys):
    recipe = _write(tmp_path, BASE, OPEN_SET.replace("steps: 6", "steps: 6, clusters_per_class: 3"))
    assert main(["shift", str(recipe), "--output-dir", str(tmp_path / "o"), "--quiet"]) == 2
    assert "clusters_per_class applies to kind: subpopulations" in capsys.readouterr().err


@pytest.mark.slow
def test_splits_built_on_a_teachers_features(tmp_path, capsys):
    recipe = _write(tmp_path, BASE, STUDY)
    assert main(["run", str(tmp_path / "base.yaml"), "--output-dir", str(tmp_path / "t")]) == 0
    checkpoint = tmp_path / "t" / "teacher" / "last.safetensors"
    study = STUDY.replace(
        "features: {name: pca, dim: 6}", f"features: {{name: teacher, checkpoint: {checkpoint}}}"
    )
    recipe.write_text(study.replace("count: 3", "count: 2"))
    out = tmp_path / "study"
    assert main(["shift", str(recipe), "--output-dir", str(out), "--quiet"]) == 0
    splits = json.loads((out / "splits.json").read_text())
    assert splits["features"]["name"] == "teacher"
    fids = [split["fid"] for split in splits["splits"]]
    assert len(fids) == 3 and fids[1] < fids[2]  # iid, then two shifted splits of rising FID
    capsys.readouterr()
    recipe.write_text(study.replace(str(checkpoint), str(tmp_path / "missing.safetensors")))
    assert main(["shift", str(recipe), "--output-dir", str(tmp_path / "o2"), "--quiet"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ("{name: teacher}", "checkpoint: name the .safetensors checkpoint"),
        ("{name: teacher, checkpoint: x.safetensors, dim: 8}", "dim and seed apply to pca and random"),
        ("{name: pca, checkpoint: x.safetensors}", "checkpoint applies to name: teacher"),
    ],
)
def test_teacher_features_need_exactly_a_checkpoint(tmp_path, capsys, features, message):
    recipe = _write(tmp_path, BASE, STUDY.replace("{name: pca, dim: 6}", features))
    assert main(["shift", str(recipe), "--output-dir", str(tmp_path / "o"), "--quiet"]) == 2
    assert message in capsys.readouterr().err
