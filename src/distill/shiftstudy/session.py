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
``DIR/split-<k>/scores-seed-<s>.json``  the seed's scores on split k: test accuracy and argmax
                          agreement with the teacher (sub-populations), or Recall@1 on the unseen
                          classes and nearest-neighbour agreement (class swaps)

The splits are a function of the recipe only (the pooled data, the feature map, the k-means seed),
so they are built once and read back on every later call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distill.compare import Comparison, run_comparison
from distill.config import Recipe, validate_recipe
from distill.data import load_data
from distill.data.bundle import DataBundle
from distill.data.sources import atomic_save_npz
from distill.errors import DataError, DistillError, RunDirectoryError
from distill.export import model_from_checkpoint
from distill.files import atomic_write_json, make_directory, read_json_object
from distill.report.rundir import recipe_differences
from distill.runner import EpochCallback
from distill.shift.retrieval import nearest_neighbours, recall_of_neighbours, same_neighbours
from distill.shift.splits import (
    SubpopulationSplit,
    class_mean_features,
    class_sample_fid,
    class_swap_splits,
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
    FID, and the files holding its examples. Open-set splits (class swaps) also hold the unseen
    classes' examples (``unseen_path``, ``unseen_samples``): there ``test_path`` holds examples of
    the training classes held out of training."""

    index: int
    kind: str
    step: int
    fid: float
    train_samples: int
    test_samples: int
    train_path: Path
    test_path: Path
    unseen_path: Path | None = None
    unseen_samples: int = 0

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
            "unseen_path": None if self.unseen_path is None else self.unseen_path.name,
            "unseen_samples": self.unseen_samples,
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
    if spec.name == "random":
        return random_projection_features(inputs, spec.dim, spec.seed)
    assert spec.checkpoint is not None  # the recipe requires it for teacher features
    return _outputs(spec.checkpoint, inputs, embed=True).double().numpy()


def _study_payload(recipe: ShiftRecipe, base: Recipe) -> dict[str, Any]:
    return {"shift": recipe.model_dump(mode="json"), "base": base.model_dump(mode="json")}


def open_study(directory: Path, recipe: ShiftRecipe, base: Recipe) -> None:
    """Create the study directory, or check that it holds this very study. The stored recipes are
    validated again before the comparison, so a field added since (at its default) is no
    difference."""
    path = directory / "study.json"
    payload = _study_payload(recipe, base)
    if path.exists():
        stored = read_json_object(path, "shift study", RunDirectoryError)
        try:
            revalidated = _study_payload(
                ShiftRecipe.model_validate(stored.get("shift")), validate_recipe(stored.get("base", {}))
            )
        except (ValueError, DistillError):
            revalidated = stored
        if revalidated != payload:
            differences = "; ".join(recipe_differences(revalidated, payload))
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
            unseen_path=None if row.get("unseen_path") is None else directory / "splits" / row["unseen_path"],
            unseen_samples=int(row.get("unseen_samples", 0)),
        )
        files = [record.train_path, record.test_path, *([record.unseen_path] if record.unseen_path else [])]
        if not all(path.is_file() for path in files):
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
    inputs, labels = pooled_examples(load_data(base.data))
    features = split_features(recipe, inputs)
    folder = directory / "splits"
    make_directory(folder)
    writer = _SplitWriter(folder, inputs, labels)
    if recipe.splits.kind == "classes":
        candidates = _class_swap_splits(recipe, features, labels, writer)
    else:
        candidates = _subpopulation_splits(recipe, features, labels, writer)
    atomic_write_json(
        directory / "splits.json",
        {
            "kind": recipe.splits.kind,
            "features": recipe.splits.features.model_dump(mode="json"),
            "candidates": candidates,
            "splits": writer.rows,
        },
    )
    return writer.records


class _SplitWriter:
    """Writes each kept split's example files and collects its record and ``splits.json`` row."""

    def __init__(self, folder: Path, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        self.folder, self.inputs, self.labels = folder, inputs, labels
        self.records: list[SplitRecord] = []
        self.rows: list[dict[str, Any]] = []

    def _save(self, path: Path, mask: np.ndarray, relabel: dict[int, int] | None = None) -> int:
        chosen = torch.from_numpy(np.flatnonzero(mask))
        targets = self.labels[chosen].numpy()
        if relabel is not None:
            targets = np.asarray([relabel[int(label)] for label in targets], dtype=np.int64)
        atomic_save_npz(path, x=self.inputs[chosen].numpy(), y=targets)
        return int(chosen.numel())

    def keep(
        self,
        kind: str,
        step: int,
        fid: float,
        train_mask: np.ndarray,
        test_mask: np.ndarray,
        unseen_mask: np.ndarray | None = None,
        relabel: dict[int, int] | None = None,
        **extra: Any,
    ) -> None:
        index = len(self.records)
        train_path = self.folder / f"split-{index}-train.npz"
        test_path = self.folder / f"split-{index}-test.npz"
        unseen_path = None if unseen_mask is None else self.folder / f"split-{index}-unseen.npz"
        record = SplitRecord(
            index,
            kind,
            step,
            fid,
            self._save(train_path, train_mask, relabel),
            self._save(test_path, test_mask, relabel),
            train_path,
            test_path,
            unseen_path,
            0 if unseen_path is None or unseen_mask is None else self._save(unseen_path, unseen_mask),
        )
        self.records.append(record)
        self.rows.append({**record.as_json(), **extra})


def _too_few(count: int, found: int, remedy: str) -> DataError:
    return DataError(
        f"splits.count is {count} but the swaps stopped raising the FID after {found} split(s); "
        f"lower splits.count, or {remedy}"
    )


def _subpopulation_splits(
    recipe: ShiftRecipe, features: np.ndarray, labels: torch.Tensor, writer: _SplitWriter
) -> int:
    spec = recipe.splits
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
        raise _too_few(spec.count, len(found), "raise splits.clusters_per_class or splits.removal_steps")
    if spec.with_iid:
        train_mask, test_mask = random_class_split(labels.numpy(), spec.train_fraction, spec.seed)
        fid = class_sample_fid(features, labels.numpy(), train_mask, test_mask)
        writer.keep("iid", -1, fid, train_mask, test_mask)
    kept: list[SubpopulationSplit] = select_spread(found, spec.count)
    for split in kept:
        writer.keep(
            split.kind,
            split.step,
            float(split.fid),
            split.train_mask,
            split.test_mask,
            train_units=_units(split.train_units),
            test_units=_units(split.test_units),
        )
    return len(found)


def _class_swap_splits(
    recipe: ShiftRecipe, features: np.ndarray, labels: torch.Tensor, writer: _SplitWriter
) -> int:
    spec = recipe.splits
    label_array = labels.numpy()
    classes, means = class_mean_features(features, label_array)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 3]))
    initial = sorted(int(i) for i in rng.permutation(len(classes))[: len(classes) // 2])
    try:  # the official split_maker: swaps without an FID check; every distinct split it visits
        visited = class_swap_splits(
            means, initial, spec.steps, spec.history, spec.removal_steps, stop_when_flat=False
        )
    except ValueError as error:
        raise DataError(f"splits: {error}") from None
    found, seen_sides = [], set()
    for split in visited:
        sides = (frozenset(split.train_classes), frozenset(split.test_classes))
        if sides not in seen_sides:
            seen_sides.add(sides)
            found.append(split)
    if len(found) < spec.count:
        raise _too_few(spec.count, len(found), "raise splits.removal_steps")
    held_out, _ = random_class_split(label_array, spec.held_out, spec.seed)
    for split in select_spread(found, spec.count):
        seen = [int(classes[i]) for i in split.train_classes]
        unseen = [int(classes[i]) for i in split.test_classes]
        in_seen = np.isin(label_array, seen)
        writer.keep(
            split.kind,
            split.step,
            float(split.fid),
            in_seen & ~held_out,
            in_seen & held_out,
            unseen_mask=np.isin(label_array, unseen),
            relabel={label: position for position, label in enumerate(sorted(seen))},
            train_classes=sorted(seen),
            unseen_classes=sorted(unseen),
        )
    return len(found)


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


def _load(checkpoint: Path, input_shape: tuple[int, ...]) -> nn.Module:
    """The model a distill checkpoint holds, in eval mode, refused unless it takes inputs of
    ``input_shape``."""
    model, metadata = model_from_checkpoint(Path(checkpoint))
    if tuple(metadata["input_shape"]) != tuple(input_shape):
        raise DataError(
            f"{checkpoint}: the model takes inputs shaped {tuple(metadata['input_shape'])}, the "
            f"study's data are shaped {tuple(input_shape)}"
        )
    return model


def _outputs(checkpoint: Path, inputs: torch.Tensor, embed: bool, batch_size: int = 512) -> torch.Tensor:
    """The model's logits, or with ``embed`` its embedding: the input of its last linear layer
    (the features its classifier reads), flattened."""
    model = _load(checkpoint, tuple(inputs.shape[1:]))
    captured: list[torch.Tensor] = []
    handle = None
    if embed:
        last = [module for module in model.modules() if isinstance(module, nn.Linear)][-1]
        handle = last.register_forward_hook(lambda _m, args, _out: captured.append(args[0].flatten(1)))
    parts = []
    with torch.no_grad():
        for start in range(0, inputs.shape[0], batch_size):
            logits = model(inputs[start : start + batch_size])
            parts.append(captured.pop() if embed else logits)
    if handle is not None:
        handle.remove()
    return torch.cat(parts)


def _read_examples(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(path) as arrays:
        return torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])


def scores(run_dir: Path, record: SplitRecord, methods: list[str]) -> dict[str, Any]:
    """One seed's scores on a split. Closed set: every model's test accuracy on the shifted test
    split, and each method's argmax agreement with the teacher. Open set: every model's Recall@1
    on the unseen classes, and each method's nearest-neighbour agreement with the teacher."""
    summary = read_json_object(run_dir / "summary.json", "run summary", RunDirectoryError)
    rows = {row["name"]: row for row in summary["results"]}
    teacher = next(row for row in summary["results"] if row["role"] == "teacher")
    checkpoints = {name: Path(rows[name]["checkpoint"]) for name in methods}
    open_set = record.unseen_path is not None
    inputs, labels = _read_examples(record.unseen_path if record.unseen_path else record.test_path)
    reference = _outputs(Path(teacher["checkpoint"]), inputs, open_set)
    outputs = {name: _outputs(path, inputs, open_set) for name, path in checkpoints.items()}
    if open_set:  # each model's nearest neighbours, found once, give both scores
        teacher_nn = nearest_neighbours(reference)
        student_nn = {name: nearest_neighbours(output) for name, output in outputs.items()}
        return {
            "teacher": recall_of_neighbours(teacher_nn, labels),
            "accuracy": {name: recall_of_neighbours(nn_, labels) for name, nn_ in student_nn.items()},
            "agreement": {name: same_neighbours(nn_, teacher_nn) for name, nn_ in student_nn.items()},
            "closed_set": {name: float(row["test_accuracy"]) for name, row in rows.items()},
        }
    agreement = {
        name: float((output.argmax(1) == reference.argmax(1)).double().mean())
        for name, output in outputs.items()
    }
    return {
        "teacher": float(teacher["test_accuracy"]),
        "accuracy": {name: float(row["test_accuracy"]) for name, row in rows.items()},
        "agreement": agreement,
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
    scores of :func:`scores` (kept in ``split-<k>/scores-seed-<s>.json``)."""
    comparison = Comparison(
        split_recipe(base, record), tuple(methods), seeds, directory / f"split-{record.index}"
    )
    run_comparison(comparison, on_epoch_end=on_epoch_end, on_seed_start=on_seed_start)
    results: dict[int, dict[str, Any]] = {}
    for seed in comparison.seed_values():
        stored = comparison.output_dir / f"scores-seed-{seed}.json"
        if stored.exists():
            results[seed] = read_json_object(stored, "scores", RunDirectoryError)
        else:
            results[seed] = scores(comparison.run_dir(seed), record, methods)
            atomic_write_json(stored, results[seed])
    return results
