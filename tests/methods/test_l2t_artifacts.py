"""The L2T methods compute and hand what they make to ``MethodArtifacts``; the application (the
engine's ``RunArtifacts``, the report's plots) owns the files."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
import torch
from torch import nn

from distill.engine import checkpoint
from distill.engine.artifacts import ModuleFileReader, RunArtifacts
from distill.methods.base import EpochStart
from distill.methods.registry import Budget
from tests.methods.learned_loss_setup import learned_loss_method


class MemoryArtifacts:
    """A :class:`~distill.methods.base.MethodArtifacts` that keeps everything in dicts."""

    def __init__(self) -> None:
        self.modules: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] = {}
        self.tables: dict[str, Any] = {}

    def has_module(self, name: str) -> bool:
        return name in self.modules

    def module_metadata(self, name: str) -> dict[str, Any] | None:
        return dict(self.modules[name][1]) if name in self.modules else None

    def load_module(self, name: str, module: nn.Module) -> dict[str, Any]:
        state, metadata = self.modules[name]
        module.load_state_dict(state)
        return dict(metadata)

    def save_module(self, name: str, module: nn.Module, metadata: dict[str, Any]) -> None:
        state = {key: value.detach().clone() for key, value in module.state_dict().items()}
        self.modules[name] = (state, json.loads(json.dumps(metadata)))  # JSON values only

    def module_location(self, name: str) -> str:
        return f"memory:{name}"

    def read_table(self, name: str) -> Any | None:
        return self.tables.get(name)

    def write_table(self, name: str, rows: Any) -> None:
        self.tables[name] = json.loads(json.dumps(rows))


def _method(method: dict[str, Any]):
    return learned_loss_method(method, samples=200, hidden=8, epochs=1, budget=Budget(1, 32, 4, 0.2))


@pytest.fixture
def no_disk(tmp_path, monkeypatch):
    """A context in an empty working directory where every checkpoint and atomic-write helper
    refuses; the directory must stay empty."""
    import distill.files

    @contextlib.contextmanager
    def context():
        def refuse(*args, **kwargs):
            raise AssertionError("a method touched the disk")

        with monkeypatch.context() as patch:
            for name in ("save_checkpoint", "load_weights", "read_metadata"):
                patch.setattr(checkpoint, name, refuse)
            patch.setattr(distill.files, "atomic_file", refuse)
            patch.chdir(tmp_path)
            yield
        assert list(tmp_path.iterdir()) == []

    return context


def _epoch(data) -> EpochStart:
    return EpochStart(epoch=0, draw=0, plan=None, train=data.train, device=torch.device("cpu"))


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def test_l2t_dlf_hands_its_teacher_and_tables_to_the_artifacts(no_disk):
    method, data = _method({"name": "l2t-dlf", "episodes": 1, "unroll": 2, "matrices": 2})
    again, _ = _method({"name": "l2t-dlf", "episodes": 1, "unroll": 2, "matrices": 2})
    artifacts = MemoryArtifacts()
    with no_disk():
        method.prepare(artifacts)
    assert set(artifacts.modules) == {"loss_teacher"}
    state, metadata = artifacts.modules["loss_teacher"]
    assert {key: tuple(value.shape) for key, value in state.items()} == _shapes(method.loss_teacher)
    assert metadata["kind"] == "l2t-dlf-loss-teacher" and metadata["matrices"] == 2
    assert metadata["data_fingerprint"] == data.fingerprint
    assert set(artifacts.tables) == {"meta_history", "meta_episodes"}
    # 4 steps: 2 warm-up steps (the default 1,000, cut to half the budget), then one unroll of 2
    assert len(artifacts.tables["meta_history"]) == 1
    assert artifacts.tables["meta_episodes"]["kept_episode"] == 0

    with no_disk():
        method.on_epoch_start(_epoch(data))
        extras = method.finish(artifacts)
    assert extras == {
        "loss_teacher": "memory:loss_teacher",
        "meta_seconds": round(method.meta_seconds, 3),
        "warm_start_steps": 2,
    }
    [row] = artifacts.tables["loss_parameters"]
    assert list(row) == ["epoch", "attention_0", "attention_1", "W_diagonal", "W_off_diagonal", "b_mean"]

    # a rerun of the student (same data) reloads the teacher instead of meta-training again
    artifacts.tables.clear()
    with no_disk():
        again.prepare(artifacts)
    assert artifacts.tables == {}
    assert again.meta_seconds == metadata["meta_seconds"]
    for key, value in again.loss_teacher.state_dict().items():
        assert torch.equal(value, state[key])


def test_l2t_dln_hands_its_teacher_and_tables_to_the_artifacts(no_disk):
    method, data = _method({"name": "l2t-dln", "episodes": 1, "unroll": 2, "dln_init": "random"})
    artifacts = MemoryArtifacts()
    with no_disk():
        method.prepare(artifacts)
    assert set(artifacts.modules) == {"loss_teacher"} and set(artifacts.tables) == {"meta_history"}
    state, metadata = artifacts.modules["loss_teacher"]
    assert {key: tuple(value.shape) for key, value in state.items()} == _shapes(method.teacher)
    assert (
        metadata["kind"] == "l2t-dln-loss-teacher"
        and metadata["meta_episodes"] == artifacts.tables["meta_history"]
    )

    with no_disk():
        method.on_epoch_start(_epoch(data))
        assert method.finish(artifacts) == {"loss_teacher": "memory:loss_teacher"}
    [row] = artifacts.tables["loss_parameters"]
    assert row["epoch"] == 1 and "val_ce_lookahead" in row and "mean_dln_step" in row
    # the teacher kept learning: saved again as it ends
    assert artifacts.modules["loss_teacher"][1]["rounds_with_this_student"] == 0


def test_run_artifacts_round_trip_a_module_and_a_table(tmp_path):
    artifacts = RunArtifacts(tmp_path / "student")
    assert artifacts.module_metadata("teacher") is None and not artifacts.has_module("teacher")
    assert artifacts.read_table("rows") is None
    torch.manual_seed(0)
    module = nn.Linear(3, 2)
    artifacts.save_module("teacher", module, {"kind": "test", "width": 3})
    assert sorted(path.name for path in (tmp_path / "student").iterdir()) == [
        "teacher.json",
        "teacher.safetensors",
    ]
    assert artifacts.has_module("teacher")
    assert artifacts.module_location("teacher") == str(tmp_path / "student" / "teacher.safetensors")
    assert artifacts.module_metadata("teacher") == {"format": checkpoint.FORMAT, "kind": "test", "width": 3}
    copy = nn.Linear(3, 2)
    assert artifacts.load_module("teacher", copy)["kind"] == "test"
    assert all(torch.equal(a, b) for a, b in zip(module.parameters(), copy.parameters(), strict=True))

    rows = [{"epoch": 1, "value": 0.5}, {"epoch": 2, "value": None}]
    artifacts.write_table("rows", rows)
    assert artifacts.read_table("rows") == rows
    assert (tmp_path / "student" / "rows.json").read_text() == json.dumps(rows, indent=2) + "\n"

    reader = ModuleFileReader()
    assert reader.module_file_metadata(tmp_path / "missing.safetensors") is None
    assert (
        reader.load_module_file(tmp_path / "student" / "teacher.safetensors", nn.Linear(3, 2))["width"] == 3
    )


def test_the_report_plots_the_loss_parameters_a_method_handed_over(tmp_path, monkeypatch):
    from distill.report import teaching

    teaching.plot_method_tables(tmp_path, "l2t-dlf")  # nothing handed over: nothing drawn
    assert list(tmp_path.iterdir()) == []

    artifacts = RunArtifacts(tmp_path)
    table = [
        {"epoch": 1, "attention_0": 1.0, "W_diagonal": 0.5},
        {"epoch": 2, "attention_0": 1.0, "W_diagonal": 0.4},
    ]
    meta = [{"episode": 0.0, "dev_measure": 0.3, "dev_accuracy": 0.5}]
    artifacts.write_table("loss_parameters", table)
    artifacts.write_table("meta_history", meta)
    teaching.plot_method_tables(tmp_path, "l2t-dlf")
    assert (tmp_path / "loss_parameters.png").stat().st_size > 0

    calls = []
    monkeypatch.setattr(teaching, "plot_loss_parameters", lambda *args: calls.append(args))
    teaching.plot_method_tables(tmp_path, "l2t-dlf")
    teaching.plot_method_tables(tmp_path, "l2t-dln")  # its plot has no meta-training panel
    assert calls == [
        (table, meta, tmp_path / "loss_parameters.png", "l2t-dlf"),
        (table, [], tmp_path / "loss_parameters.png", "l2t-dln"),
    ]
