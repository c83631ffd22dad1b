"""Shared fixtures: a private data cache, tiny recipes and data files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_configure(config: pytest.Config) -> None:
    cache = Path(config.rootpath) / ".pytest_cache" / "distill-data"
    os.environ.setdefault("DISTILL_CACHE", str(cache))


@pytest.fixture(autouse=True)
def _forget_trusted_factories():
    """``--trust-factory`` trusts a factory for the rest of the process; no test leaks it."""
    from distill.models.imported import _TRUSTED_FACTORIES

    yield
    _TRUSTED_FACTORIES.clear()


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny recipe run once for the whole session: ``(recipe file, run directory)``. Tests
    read it or copy from it; none writes into it."""
    import yaml

    from distill.cli import main

    folder = tmp_path_factory.mktemp("finished")
    recipe = folder / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe()))
    assert main(["run", str(recipe), "--output-dir", str(folder / "run"), "--quiet"]) == 0
    return recipe, folder / "run"


def interrupt_after(monkeypatch: pytest.MonkeyPatch, model: str, epoch: int) -> Any:
    """Make the next run stop with Ctrl-C right after ``model``'s ``epoch`` is recorded; returns
    the real ``RunDirectory.append_metrics``, to put back before resuming."""
    from distill.report import rundir

    original = rundir.RunDirectory.append_metrics

    def interrupting(self: Any, record: dict[str, Any]) -> None:
        original(self, record)
        if record["model"] == model and record["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(rundir.RunDirectory, "append_metrics", interrupting)
    return original


def records_without_seconds(path: Path) -> list[dict[str, Any]]:
    """A run's ``metrics.jsonl`` records without their wall-clock ``seconds``."""
    return [
        {key: value for key, value in json.loads(line).items() if key != "seconds"}
        for line in path.read_text().splitlines()
    ]


def tiny_recipe(**changes: Any) -> dict[str, Any]:
    """A recipe that trains a teacher and two students on 600 MNIST-1D samples in seconds."""
    recipe: dict[str, Any] = {
        "name": "tiny",
        "seed": 3,
        "data": {"name": "mnist1d", "num_samples": 600},
        "train": {
            "epochs": 3,
            "batch_size": 64,
            "optimizer": {"name": "adamw", "lr": 0.005},
            "augment": {"mixup_alpha": 1.0, "shift": 2, "noise": 0.05},
        },
        "teacher": {"model": {"name": "cnn1d", "channels": [16, 16]}},
        "students": [
            {"name": "scratch", "model": {"name": "mlp", "hidden": [32]}},
            {
                "name": "kd",
                "model": {"name": "mlp", "hidden": [32]},
                "method": {"name": "kd", "temperature": 2.0},
            },
        ],
    }
    recipe.update(changes)
    return recipe


@pytest.fixture
def write_recipe(tmp_path: Path):
    """Write a recipe mapping to a YAML file and return its path."""
    import yaml

    def write(recipe: dict[str, Any], name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return path

    return write


@pytest.fixture
def npz_file(tmp_path: Path) -> Path:
    """A small valid .npz classification file: 120 samples of 6 features, 3 classes."""
    rng = np.random.default_rng(0)
    labels = np.arange(120) % 3
    inputs = rng.standard_normal((120, 6)) + labels[:, None]
    path = tmp_path / "train.npz"
    np.savez(path, x=inputs, y=labels)
    return path
