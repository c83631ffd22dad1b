"""A shift study as a directory, resumable split by split and seed by seed.

``DIR/study.json``        the resolved shift recipe and base recipe (a directory made by another
                          study is refused instead of mixed)
``DIR/splits.json``       every kept split: its kind (``iid`` for the in-distribution reference,
                          else the move that made it), FID, sizes, and the (class, cluster)
                          units per side
``DIR/splits/split-<k>-train.npz``, ``-test.npz``  its examples
``DIR/split-<k>/seed-<s>/``  an ordinary run directory of the base recipe on split k (the teacher
                          and every compared student), written by ``distill compare``'s machinery,
                          so an interrupted study continues where it stopped
``DIR/split-<k>/agreement-seed-<s>.json``  teacher–student argmax agreement on split k's test set

The splits are a function of the recipe only (the pooled data, the feature map, the k-means seed),
so they are built once and read back on every later call.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.assemble import model_spec_from_json
from distill.compare import Comparison, run_comparison
from distill.config import Recipe, validate_recipe
from distill.data import load_data
from distill.data.bundle import DataBundle
from distill.data.sources import atomic_save_npz
from distill.engine.checkpoint import load_weights, read_metadata
from distill.errors import DataError, RunDirectoryError
from distill.files import atomic_write_json, make_directory, read_json_object
from distill.models import build_model
from distill.report.rundir import recipe_differences
from distill.runner import EpochCallback
from distill.shift.splits import (
    SubpopulationSplit,
    class_sample_fid,
    pca_features,
    random_class_split,
    random_projection_features,
    select_spread,
    subpopulation_splits,
)
from distill.shiftstudy.recipes import ShiftRecipe

SeedStart = Callable[[int, Path, bool], None]


@dataclass(frozen=True)
class SplitRecord:
    """One kept split: its position ``index`` in FID order, the swap ``step`` that made it, its
    FID, and the files holding its examples."""

    index: int
    kind: str
    step: int
    fid: float
    train_samples: int
    test_samples: int
    train_path: Path
    test_path: Path

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "step": self.step,
            "fid": self.fid,
            "train_samples": self.train_samples,
            "test_samples": self.test_samples,
            "train_path": self.train_path.name,
            "test_path": self.test_path.name,
        }


def pooled_examples(data: DataBundle) -> tuple[torch.Tensor, torch.Tensor]:
    """Every example of the base data (train, validation, test) as one pool of inputs and labels."""
    parts = [split for split in (data.train, data.val, data.test) if split is not None]
    return torch.cat([split.inputs for split in parts]), torch.cat([split.targets for split in parts])


def split_features(recipe: ShiftRecipe, inputs: torch.Tensor) -> np.ndarray:
    """The fixed features the splits are built on (``splits.features``)."""
    spec = recipe.splits.features
    if spec.name == "pca":
        if spec.dim > min(inputs.shape[0], int(np.prod(inputs.shape[1:]))):
            raise DataError(
                f"splits.features.dim {spec.dim} exceeds what PCA of {inputs.shape[0]} examples of "
                f"{int(np.prod(inputs.shape[1:]))} input values can give; lower it"
            )
        return pca_features(inputs, spec.dim, spec.seed, standardize=True)
    return random_projection_features(inputs, spec.dim, spec.seed)


def _study_payload(recipe: ShiftRecipe, base: Recipe) -> dict[str, Any]:
    return {"shift": recipe.model_dump(mode="json"), "base": base.model_dump(mode="json")}


def open_study(directory: Path, recipe: ShiftRecipe, base: Recipe) -> None:
    """Create the study directory, or check that it holds this very study."""
    path = directory / "study.json"
    payload = _study_payload(recipe, base)
    if path.exists():
        stored = read_json_object(path, "shift study", RunDirectoryError)
        if stored != json.loads(json.dumps(payload)):
            differences = "; ".join(recipe_differences(stored, payload))
            raise RunDirectoryError(
                f"{directory} holds a shift study of another recipe ({differences}); choose another "
                "--output-dir (nothing was overwritten)"
            )
        return
    make_directory(directory)
    atomic_write_json(path, payload)


def _read_splits(directory: Path) -> list[SplitRecord] | None:
    path = directory / "splits.json"
    if not path.exists():
        return None
    stored = read_json_object(path, "shift splits", RunDirectoryError)
    records = []
    for row in stored.get("splits", []):
        record = SplitRecord(
            index=int(row["index"]),
            kind=str(row["kind"]),
            step=int(row["step"]),
            fid=float(row["fid"]),
            train_samples=int(row["train_samples"]),
            test_samples=int(row["test_samples"]),
            train_path=directory / "splits" / row["train_path"],
            test_path=directory / "splits" / row["test_path"],
        )
        if not (record.train_path.is_file() and record.test_path.is_file()):
            return None  # an interrupted write: build them again (deterministic)
        records.append(record)
    return records


def _units(units: tuple[tuple[int, int], ...]) -> list[list[int]]:
    return [[int(label), int(cluster)] for label, cluster in units]


def build_splits(directory: Path, recipe: ShiftRecipe, base: Recipe) -> list[SplitRecord]:
    """The study's splits: read back when built before, else built from the base data and
    written (examples as ``.npz``, then ``splits.json`` last, so a half-written set is rebuilt)."""
    existing = _read_splits(directory)
    if existing is not None:
        return existing
    spec = recipe.splits
    inputs, labels = pooled_examples(load_data(base.data))
    features = split_features(recipe, inputs)
    try:
        found = subpopulation_splits(
            features,
            labels.numpy(),
            spec.clusters_per_class,
            spec.steps,
            spec.seed,
            history=spec.history,
            removal_steps=spec.removal_steps,
            train_fraction=spec.train_fraction,
            measure=spec.measure,
        )
    except ValueError as error:
        raise DataError(f"splits: {error}") from None
    if len(found) < spec.count:
        raise DataError(
            f"splits.count is {spec.count} but the swaps stopped raising the FID after "
            f"{len(found)} split(s); lower splits.count, or raise splits.clusters_per_class or "
            "splits.removal_steps"
        )
    kept: list[SubpopulationSplit] = select_spread(found, spec.count)
    folder = directory / "splits"
    make_directory(folder)
    records: list[SplitRecord] = []
    rows: list[dict[str, Any]] = []

    def keep(kind: str, step: int, fid: float, train_mask: np.ndarray, test_mask: np.ndarray) -> SplitRecord:
        index = len(records)
        paths = folder / f"split-{index}-train.npz", folder / f"split-{index}-test.npz"
        for path, mask in zip(paths, (train_mask, test_mask), strict=True):
            chosen = torch.from_numpy(np.flatnonzero(mask))
            atomic_save_npz(path, x=inputs[chosen].numpy(), y=labels[chosen].numpy())
        record = SplitRecord(index, kind, step, fid, int(train_mask.sum()), int(test_mask.sum()), *paths)
        records.append(record)
        return record

    if spec.iid:
        train_mask, test_mask = random_class_split(labels.numpy(), spec.train_fraction, spec.seed)
        fid = class_sample_fid(features, labels.numpy(), train_mask, test_mask)
        rows.append(keep("iid", -1, fid, train_mask, test_mask).as_json())
    for split in kept:
        record = keep(split.kind, split.step, float(split.fid), split.train_mask, split.test_mask)
        rows.append(
            {
                **record.as_json(),
                "train_units": _units(split.train_units),
                "test_units": _units(split.test_units),
            }
        )
    atomic_write_json(
        directory / "splits.json",
        {"features": spec.features.model_dump(mode="json"), "candidates": len(found), "splits": rows},
    )
    return records


def split_recipe(base: Recipe, record: SplitRecord) -> Recipe:
    """The base recipe trained and tested on one split (its data replaced by the split's files)."""
    payload = base.model_dump(mode="json")
    payload["data"] = {
        "name": "npz",
        "path": str(record.train_path),
        "test_path": str(record.test_path),
        "val_fraction": base.data.val_fraction,
        "split_seed": base.data.split_seed,
        "num_classes": None,
    }
    payload["name"] = f"{base.name}-split{record.index}"
    return validate_recipe(payload, f"{base.name} on split {record.index}")


def _predictions(checkpoint: Path, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    metadata = read_metadata(checkpoint)
    spec = model_spec_from_json(metadata["model"], checkpoint)
    model = build_model(spec, tuple(metadata["input_shape"]), int(metadata["num_classes"]))
    load_weights(checkpoint, model)
    model.eval()
    with torch.no_grad():
        parts = [model(inputs[i : i + batch_size]).argmax(1) for i in range(0, inputs.shape[0], batch_size)]
    return torch.cat(parts)


def agreement(run_dir: Path, test_path: Path, methods: list[str]) -> dict[str, float]:
    """Each method's argmax agreement with the run's teacher on the split's test examples."""
    summary = read_json_object(run_dir / "summary.json", "run summary", RunDirectoryError)
    rows = {row["name"]: row for row in summary["results"]}
    teacher = next(row for row in summary["results"] if row["role"] == "teacher")
    with np.load(test_path) as arrays:
        inputs = torch.from_numpy(arrays["x"])
    reference = _predictions(Path(teacher["checkpoint"]), inputs)
    return {
        name: float((_predictions(Path(rows[name]["checkpoint"]), inputs) == reference).float().mean())
        for name in methods
    }


def run_split(
    directory: Path,
    base: Recipe,
    record: SplitRecord,
    methods: list[str],
    seeds: int,
    on_epoch_end: EpochCallback | None = None,
    on_seed_start: SeedStart | None = None,
) -> dict[int, dict[str, Any]]:
    """Train (or reuse) the teacher and every method on one split for every seed; per seed the
    test accuracies by model name and each method's agreement with the teacher."""
    comparison = Comparison(
        split_recipe(base, record), tuple(methods), seeds, directory / f"split-{record.index}"
    )
    run_comparison(comparison, on_epoch_end=on_epoch_end, on_seed_start=on_seed_start)
    results: dict[int, dict[str, Any]] = {}
    for seed in comparison.seed_values():
        run_dir = comparison.run_dir(seed)
        summary = read_json_object(run_dir / "summary.json", "run summary", RunDirectoryError)
        accuracy = {row["name"]: float(row["test_accuracy"]) for row in summary["results"]}
        teacher = next(row["name"] for row in summary["results"] if row["role"] == "teacher")
        stored = comparison.output_dir / f"agreement-seed-{seed}.json"
        if stored.exists():
            agreed = read_json_object(stored, "agreement", RunDirectoryError)
        else:
            agreed = agreement(run_dir, record.test_path, methods)
            atomic_write_json(stored, agreed)
        results[seed] = {"teacher": accuracy[teacher], "accuracy": accuracy, "agreement": agreed}
    return results
