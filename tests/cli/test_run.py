"""End-to-end runs of `distill run`, `distill list` and `distill eval` on tiny budgets."""

import json
import subprocess
import sys

import pytest

from distill.cli import main
from distill.report import rundir
from tests.conftest import interrupt_after, records_without_seconds, tiny_recipe

pytestmark = pytest.mark.slow


def run_cli(*args):
    return main([str(arg) for arg in args])


def test_run_directory_holds_everything(finished_run):
    _, run = finished_run
    for name in ("recipe.yaml", "metrics.jsonl", "summary.json", "curves.png"):
        assert (run / name).is_file(), name
    for model in ("teacher", "scratch", "kd"):
        assert (run / model / "last.safetensors").is_file()
        assert json.loads((run / model / "last.json").read_text())["model"]["name"]
        assert not (run / model / "resume.pt").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["model"], r["epoch"]) for r in records] == [
        (model, epoch) for model in ("teacher", "scratch", "kd") for epoch in (1, 2, 3)
    ]
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_summary_contract(finished_run):
    _, run = finished_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["recipe"] == "tiny"
    roles = [(row["name"], row["role"], row["method"]) for row in summary["results"]]
    assert roles == [
        ("teacher", "teacher", "scratch"),
        ("scratch", "student", "scratch"),
        ("kd", "student", "kd"),
    ]
    for row in summary["results"]:
        assert isinstance(row["test_accuracy"], float) and 0 <= row["test_accuracy"] <= 1
        assert isinstance(row["params"], int) and row["params"] > 0
        assert row["epochs"] == 3 and isinstance(row["seconds"], float)
    scratch, kd = summary["results"][1:]
    assert scratch["params"] == kd["params"]


def test_finished_run_is_never_overwritten(finished_run, capsys):
    recipe, run = finished_run
    before = (run / "summary.json").read_bytes()
    assert run_cli("run", recipe, "--output-dir", run) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert (run / "summary.json").read_bytes() == before


def test_resume_reproduces_the_uninterrupted_run(finished_run, tmp_path, monkeypatch, capsys):
    recipe, reference = finished_run
    original = interrupt_after(monkeypatch, "kd", 2)
    assert run_cli("run", recipe, "--output-dir", tmp_path / "run", "--quiet") == 130
    assert "--resume" in capsys.readouterr().err
    assert not (tmp_path / "run" / "summary.json").exists()
    monkeypatch.setattr(rundir.RunDirectory, "append_metrics", original)
    assert run_cli("run", recipe, "--output-dir", tmp_path / "run", "--resume", "--quiet") == 0

    def accuracies(run):
        summary = json.loads((run / "summary.json").read_text())
        return [(row["name"], row["test_accuracy"], row["val_accuracy"]) for row in summary["results"]]

    assert accuracies(tmp_path / "run") == accuracies(reference)
    assert records_without_seconds(tmp_path / "run" / "metrics.jsonl") == records_without_seconds(
        reference / "metrics.jsonl"
    )


def test_resume_refuses_a_changed_recipe_and_an_empty_directory(finished_run, tmp_path, capsys):
    recipe, run = finished_run
    before = (run / "summary.json").read_bytes()
    assert run_cli("run", recipe, "--output-dir", run, "--resume", "--set", "train.epochs=4") == 2
    assert "the recipe differs from the one in" in capsys.readouterr().err
    assert (run / "summary.json").read_bytes() == before
    assert run_cli("run", recipe, "--output-dir", tmp_path / "r", "--resume") == 2
    assert "holds no run to resume" in capsys.readouterr().err


def test_eval_reproduces_the_reported_accuracy(finished_run, capsys):
    _, run = finished_run
    summary = json.loads((run / "summary.json").read_text())
    kd = summary["results"][2]
    capsys.readouterr()
    assert run_cli("eval", run / "kd" / "last.safetensors", "--json") == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["accuracy"] == pytest.approx(kd["test_accuracy"], abs=1e-6)
    assert metrics["samples"] == 120


def test_teacher_from_checkpoint(finished_run, tmp_path, write_recipe):
    _, run = finished_run
    recipe = tiny_recipe(teacher={"checkpoint": str(run / "teacher" / "last.safetensors")})
    recipe["students"] = recipe["students"][1:]
    path = write_recipe(recipe)
    assert run_cli("run", path, "--output-dir", tmp_path / "r", "--quiet") == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    original = json.loads((run / "summary.json").read_text())
    assert summary["results"][0]["method"] == "checkpoint"
    assert summary["results"][0]["test_accuracy"] == original["results"][0]["test_accuracy"]
    assert summary["results"][1]["test_accuracy"] == original["results"][2]["test_accuracy"]


def test_list_names_every_registry(capsys):
    assert run_cli("list") == 0
    out = capsys.readouterr().out
    for name in (
        "mnist1d",
        "digits",
        "synthetic",
        "npz",
        "csv",
        "mlp",
        "cnn1d",
        "resnet",
        "wrn",
        "scratch",
        "kd",
        "hint",
        "attention",
        "distiller",
        "spatial_attention",
        "pearson_batch",
        "quickstart",
    ):
        assert name in out


def test_module_entry_point_runs_in_a_subprocess():
    completed = subprocess.run(
        [sys.executable, "-m", "distill", "--version"], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0 and "distill 0.1.0" in completed.stdout


def test_summarize_aggregates_runs(finished_run, tmp_path, capsys):
    import shutil

    _, run = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    summary = json.loads((copy / "summary.json").read_text())
    summary["results"][2]["test_accuracy"] += 0.02
    (copy / "summary.json").write_text(json.dumps(summary))
    capsys.readouterr()
    assert run_cli("summarize", run, copy, "--json") == 0
    aggregate = json.loads(capsys.readouterr().out)
    kd = aggregate["models"]["kd"]
    assert kd["runs"] == 2
    assert kd["mean"] == pytest.approx(sum(kd["test_accuracy"]) / 2)
    assert kd["std"] == pytest.approx(0.02 / 2**0.5)
    assert run_cli("summarize", tmp_path / "missing") == 2
    assert "no summary.json" in capsys.readouterr().err


HINT_STUDENT = {
    "model": {"name": "cnn1d", "channels": [8, 8]},
    "method": {
        "name": "kd",
        "temperature": 2.0,
        "features": [{"student": "features.1", "teacher": "features.1"}],
    },
}


@pytest.mark.parametrize("student", [{}, HINT_STUDENT], ids=["logits", "logits-and-hint-features"])
def test_cached_teacher_outputs_are_reused_across_runs(tmp_path, write_recipe, monkeypatch, caplog, student):
    import logging

    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    recipe = tiny_recipe()
    recipe["students"] = [dict(recipe["students"][1], teacher_cache={"precision": "float32"}, **student)]
    recipe["train"]["augment"]["draws"] = 2
    path = write_recipe(recipe)
    with caplog.at_level(logging.INFO, logger="distill"):
        assert run_cli("run", path, "--output-dir", tmp_path / "first") == 0
        assert "2 draw(s) computed" in caplog.text
        caplog.clear()
        assert run_cli("run", path, "--output-dir", tmp_path / "second") == 0
        assert "0 draw(s) computed" in caplog.text
    first = json.loads((tmp_path / "first" / "summary.json").read_text())["results"]
    second = json.loads((tmp_path / "second" / "summary.json").read_text())["results"]
    accuracy = lambda rows: [(r["name"], r["test_accuracy"], r["val_accuracy"]) for r in rows]  # noqa: E731
    assert accuracy(first) == accuracy(second)
    assert len(list((tmp_path / "cache" / "teacher-outputs").iterdir())) == 1


def test_bench_writes_json_with_the_documented_shape_and_markdown(tmp_path, capsys):
    assert run_cli("bench", "--tiny", "--output-dir", tmp_path / "bench") == 0
    result = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert set(result["tasks"]) == {"mnist1d-mlp", "mnist1d-cnn", "images-resnet32x4-resnet8x4"}
    for task in result["tasks"].values():
        for key in ("scratch_epoch_s", "kd_live_epoch_s", "kd_cached_epoch_s", "plain_loop_epoch_s"):
            assert isinstance(task[key], float) and task[key] > 0
        assert task["kd_cached_over_scratch"] == pytest.approx(
            task["kd_cached_epoch_s"] / task["scratch_epoch_s"]
        )
        assert task["kd_cached_extra_ms_per_step"] == pytest.approx(
            1000 * (task["kd_cached_epoch_s"] - task["scratch_epoch_s"]) / task["steps_per_epoch"]
        )
        assert task["scratch_unfused_optimizer_epoch_s"] > 0
    for name in ("mnist1d-cnn", "images-resnet32x4-resnet8x4"):  # tasks with a FitNet hint pair
        hinted = result["tasks"][name]
        assert hinted["kd_hint_cached_over_scratch"] == pytest.approx(
            hinted["kd_hint_cached_epoch_s"] / hinted["scratch_epoch_s"]
        )
        assert hinted["kd_hint_live_epoch_s"] > 0
    assert "kd_hint_cached_epoch_s" not in result["tasks"]["mnist1d-mlp"]
    assert result["cache"]["bytes_per_sample"] == {"full": 400, "top10": 40}
    assert result["machine"]["torch"]
    markdown = (tmp_path / "bench" / "bench.md").read_text()
    assert "| mnist1d-mlp |" in markdown and "top10" in markdown
    assert "| mnist1d-cnn | features.1 ← features.1 |" in markdown
    assert [c["temperature"] for c in result["cache"]["top_k_vs_full"]] == [4.0, 1.0]
    assert "| images-resnet32x4-resnet8x4 |" in capsys.readouterr().out
