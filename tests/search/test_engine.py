"""``distill search`` end to end: outputs, resume, determinism, backends, bad input."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from distill.cli import main
from distill.config import validate_recipe
from distill.search.backends import LocalBackend
from distill.search.engine import DistillerSearch, SearchSettings
from distill.search.proxy import ProxyTask
from tests.conftest import tiny_recipe


def _recipe(**changes):
    recipe = tiny_recipe(**changes)
    if recipe["teacher"] is not None:
        recipe["teacher"]["train"] = {"epochs": 2}
    return recipe


def _search(
    tmp_path: Path,
    directory: str,
    generations: int,
    backend: str = "local",
    workers: int = 0,
    budget: float | None = None,
    rerank: int = 0,
):
    settings = SearchSettings(
        generations=generations,
        population=3,
        proxy_epochs=1,
        backend=backend,
        workers=workers,
        budget=budget,
        rerank=rerank,
    )
    search = DistillerSearch(validate_recipe(_recipe(), "tiny"), settings, tmp_path / directory)
    return search, search.run()


def _candidates(directory: Path) -> list[tuple[int, str, str, float | None]]:
    lines = [json.loads(line) for line in (directory / "log.jsonl").read_text().splitlines()]
    return [(r["generation"], r["key"], r["status"], r["fitness"]) for r in lines if r["kind"] == "candidate"]


def test_search_writes_log_plot_and_a_recipe_that_distill_run_trains(tmp_path, write_recipe, capsys):
    recipe = write_recipe(_recipe())
    out = tmp_path / "search"
    code = main(
        [
            "search",
            str(recipe),
            "--generations",
            "2",
            "--population",
            "3",
            "--proxy-epochs",
            "1",
            "--feature",
            "f0=body.1:features.1",
            "--workers",
            "0",
            "--output-dir",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "generation 2/2: best" in printed and "candidates/min" in printed
    assert "\n  CE + " in printed  # the formula as the README writes it: CE beside the distiller
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    candidates = [r for r in lines if r["kind"] == "candidate"]
    assert sum(r["status"] != "rejected" for r in candidates) == 6
    for record in candidates:
        assert {"formula", "fitness", "seconds", "status", "generation", "distiller"} <= set(record)
        assert (record["status"] == "rejected") == (record.get("rejected") is not None)
    assert {r["key"] for r in lines if r["kind"] == "reference"} == {"scratch", "kd"}
    assert (out / "fitness.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trained"] == 6 and 0 <= summary["rejected_share"] < 1
    assert summary["best"]["fitness"] == max(r["fitness"] for r in candidates if r["fitness"] is not None)
    best = yaml.safe_load((out / "best_recipe.yaml").read_text())
    assert best["students"][-1]["method"]["terms"] == summary["best"]["distiller"]["terms"]
    assert best["teacher"]["checkpoint"].endswith("teacher/last.safetensors")
    assert best["students"][-1]["method"]["features"] == [
        {"name": "f0", "student": "body.1", "teacher": "features.1"}
    ]
    # the proxy trains feature terms too (this seeded search draws several)
    assert any("F_s[f0]" in r["formula"] and r["status"] == "ok" for r in candidates)
    assert main(["run", str(out / "best_recipe.yaml"), "--output-dir", str(tmp_path / "run"), "--quiet"]) == 0
    results = json.loads((tmp_path / "run" / "summary.json").read_text())["results"]
    assert [r["name"] for r in results][-1] == "student-searched"


def test_seeded_search_is_deterministic_and_resumes_without_training_again(tmp_path):
    _, whole = _search(tmp_path, "whole", generations=2)
    first, _ = _search(tmp_path, "parts", generations=1)
    trained_first = first.trained_here
    again, resumed = _search(tmp_path, "parts", generations=2)
    assert _candidates(tmp_path / "whole") == _candidates(tmp_path / "parts")
    assert again.trained_here == sum(1 for c in _candidates(tmp_path / "parts") if c[0] == 1 and c[2] == "ok")
    assert trained_first == 2 + sum(1 for c in _candidates(tmp_path / "parts") if c[0] == 0 and c[2] == "ok")
    assert whole["best"] == resumed["best"]
    # a kill mid-write leaves a cut last line: it is dropped, and its candidate trained again
    log = tmp_path / "parts" / "log.jsonl"
    text = log.read_text()
    log.write_text(text[: len(text) - 25])
    again, _ = _search(tmp_path, "parts", generations=2)
    assert again.trained_here == 1
    assert _candidates(tmp_path / "whole") == _candidates(tmp_path / "parts")


def test_rerank_trains_the_best_candidates_and_kd_at_the_full_budget(tmp_path):
    _, summary = _search(tmp_path, "rerank", generations=1, rerank=2)
    lines = [json.loads(line) for line in (tmp_path / "rerank" / "log.jsonl").read_text().splitlines()]
    reranked = [r for r in lines if r["kind"] == "rerank"]
    proxy_best = sorted(
        (r for r in lines if r["kind"] == "candidate" and r["fitness"] is not None),
        key=lambda r: (r["fitness"], -r["val_loss"]),
        reverse=True,
    )[:2]
    assert [r["key"] for r in reranked] == [r["key"] for r in proxy_best] + ["kd"]
    assert all(r["status"] == "ok" for r in reranked)
    winner = max(reranked, key=lambda r: (r["fitness"], -r["val_loss"]))
    assert summary["best"]["selected_by"] == "rerank"
    assert summary["best"]["distiller"] == winner["distiller"]
    recipe = yaml.safe_load((tmp_path / "rerank" / "best_recipe.yaml").read_text())
    method = recipe["students"][-1]["method"]
    assert method["terms"] == winner["distiller"]["terms"] and method["ce_weight"] == winner["ce_weight"]
    again, _ = _search(tmp_path, "rerank", generations=1, rerank=2)
    assert again.trained_here == 0  # finished full-budget runs are taken from the log


def test_a_spent_budget_starts_no_further_generation(tmp_path):
    _, summary = _search(tmp_path, "budget", generations=3, budget=0.001)
    assert {c[0] for c in _candidates(tmp_path / "budget")} == {0}
    assert summary["stopped"] == "budget of 0.001 s spent before generation 1"


def test_a_search_directory_refuses_other_settings(tmp_path, write_recipe, capsys):
    recipe = write_recipe(_recipe())
    args = [
        "search",
        str(recipe),
        "--generations",
        "1",
        "--population",
        "2",
        "--proxy-epochs",
        "1",
        "--workers",
        "0",
        "--output-dir",
        str(tmp_path / "s"),
    ]
    assert main(args) == 0
    args[args.index("--population") + 1] = "3"
    assert main(args) == 2
    assert "holds a search of another recipe or other settings" in capsys.readouterr().err


def test_search_needs_a_validation_split_and_a_teacher(tmp_path, write_recipe, capsys):
    no_val = _recipe()
    no_val["data"]["val_fraction"] = 0.0
    assert (
        main(["search", str(write_recipe(no_val)), "--workers", "0", "--output-dir", str(tmp_path / "a")])
        == 2
    )
    assert "never taken from the test set; set data.val_fraction" in capsys.readouterr().err
    no_teacher = _recipe(teacher=None)
    no_teacher["students"] = no_teacher["students"][:1]
    assert main(["search", str(write_recipe(no_teacher)), "--output-dir", str(tmp_path / "b")]) == 2
    assert "has no teacher" in capsys.readouterr().err
    assert main(["search", str(write_recipe(_recipe())), "--population", "1"]) == 2
    assert "--population" in capsys.readouterr().err
    bad_layer = ["--feature", "f0=body.9:features.1", "--output-dir", str(tmp_path / "c")]
    assert main(["search", str(write_recipe(_recipe())), *bad_layer]) == 2
    assert "--feature (student layer): unknown layer 'body.9'" in capsys.readouterr().err
    assert not (tmp_path / "c" / "teacher").exists()
    assert main(["search", str(write_recipe(_recipe())), "--feature", "f0=body.0"]) == 2
    assert "expected NAME=STUDENT_LAYER:TEACHER_LAYER" in capsys.readouterr().err


def flaky(task: ProxyTask, payload: dict) -> dict:
    """A stand-in candidate evaluation that succeeds, kills its worker, or hangs."""
    if payload["mode"] == "crash":
        os._exit(3)
    if payload["mode"] == "hang":
        time.sleep(60)
    return {"status": "ok", "fitness": payload["value"]}


def test_a_crashed_or_hung_worker_costs_one_candidate(tmp_path):
    task = ProxyTask(recipe={}, teacher_checkpoint="", train={}, fraction=1.0)
    backend = LocalBackend(task, workers=2, timeout=5.0, function=flaky)
    try:
        outcomes = backend.evaluate(
            [{"mode": "ok", "value": 1.0}, {"mode": "crash"}, {"mode": "hang"}, {"mode": "ok", "value": 2.0}]
        )
        later = backend.evaluate([{"mode": "ok", "value": 3.0}])
    finally:
        backend.close()
    assert [o.status for o in outcomes] == ["ok", "crashed", "timeout", "ok"]
    assert [o.result["fitness"] for o in (outcomes[0], outcomes[3], later[0])] == [1.0, 2.0, 3.0]


@pytest.mark.slow
def test_local_processes_and_ray_give_the_same_candidates_and_fitnesses(tmp_path):
    pytest.importorskip("ray")
    _search(tmp_path, "local", generations=2, backend="local", workers=2)
    _search(tmp_path, "ray", generations=2, backend="ray", workers=2)
    local = _candidates(tmp_path / "local")
    assert local == _candidates(tmp_path / "ray")
    assert sum(c[2] == "ok" for c in local) == 6


def test_teacher_table_answers_as_the_live_teacher_on_the_same_augmented_batch():
    import torch

    from distill.data.augment import AugmentSpec, apply_plan, draw_plan
    from distill.data.bundle import Split
    from distill.methods import Batch, EpochStart, FrozenTeacher
    from distill.models import build_model
    from distill.models.cnn import CNN1dSpec
    from distill.search.proxy import TeacherTable

    torch.manual_seed(0)
    teacher = FrozenTeacher(build_model(CNN1dSpec(channels=[8, 8]), (1, 24), 4), ["features.1"])
    split = Split(torch.randn(50, 1, 24), torch.arange(50) % 4)
    plan = draw_plan(AugmentSpec(mixup_alpha=1.0, shift=2, noise=0.1), 50, (1, 24), seed=5)
    table = TeacherTable(teacher, split, batch_size=16)
    table.prepare(EpochStart(0, 3, plan, split, torch.device("cpu")))
    rows = torch.tensor([7, 1, 42, 13])
    inputs, mixing = apply_plan(plan, split.inputs[rows], rows, split.inputs, split.targets)
    stored = table(inputs, Batch(inputs, split.targets[rows], rows, 4, mixing, draw=3))
    live = teacher(inputs)
    torch.testing.assert_close(stored.logits, live.logits)
    torch.testing.assert_close(stored.features["features.1"], live.features["features.1"])
    small = TeacherTable(teacher, split, batch_size=16, max_bytes=1)
    for draw in (0, 1, 3):
        small.prepare(EpochStart(draw, draw, plan, split, torch.device("cpu")))
    assert list(small.draws) == [3]  # beyond the byte limit only the current draw is kept
    again = small(inputs, Batch(inputs, split.targets[rows], rows, 4, mixing, draw=3))
    torch.testing.assert_close(again.logits, live.logits)


def test_in_process_evaluation_fails_a_candidate_not_the_search(monkeypatch):
    from distill.search import backends

    def broken(task, payload):
        if payload["mode"] == "raise":
            raise RuntimeError("shapes do not fit")
        return {"status": "ok", "fitness": 1.0}

    monkeypatch.setattr(backends, "evaluate_payload", broken)
    task = ProxyTask(recipe={}, teacher_checkpoint="", train={}, fraction=1.0)
    outcomes = backends.InlineBackend(task).evaluate([{"mode": "raise"}, {"mode": "ok"}])
    assert [o.status for o in outcomes] == ["failed", "ok"]
    assert outcomes[0].error == "RuntimeError: shapes do not fit"


def test_a_teacher_checkpoint_without_metadata_is_built_from_the_recipe_model(tmp_path):
    from safetensors.torch import load_file, save_file

    _search(tmp_path, "first", generations=1)
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(tmp_path / "first" / "teacher" / "last.safetensors"), bare)  # no metadata
    recipe = _recipe()
    recipe["teacher"]["checkpoint"] = str(bare)
    settings = SearchSettings(generations=1, population=2, proxy_epochs=1, workers=0)
    summary = DistillerSearch(validate_recipe(recipe, "tiny"), settings, tmp_path / "bare-search").run()
    assert summary["trained"] == 2
    assert not (tmp_path / "bare-search" / "teacher").exists()  # the given checkpoint was used
