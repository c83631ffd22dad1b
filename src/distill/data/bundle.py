"""In-memory datasets: the splits a run trains, selects and reports on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from distill.errors import DataError


@dataclass(frozen=True)
class Split:
    """Inputs ``(n, *input_shape)`` float32 and integer class targets ``(n,)``."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def subset(self, indices: torch.Tensor) -> Split:
        return Split(self.inputs[indices], self.targets[indices])


@dataclass(frozen=True)
class DataBundle:
    """Train / validation / test splits of one dataset plus what a model needs to know of it
    (and, for distillation with unlabeled examples, an unlabeled pool: :mod:`distill.data.pools`)."""

    name: str
    train: Split
    val: Split | None
    test: Split
    num_classes: int
    #: an unlabeled pool (targets hidden), when the recipe sets ``data.pools``
    unlabeled: Split | None = None
    #: the pool's true labels: for reports on the pool only, never for training
    unlabeled_truth: torch.Tensor | None = None
    #: which rows of the source's training examples went to each pool (written to the run)
    pool_rows: dict[str, list[int]] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.inputs.shape[1:])

    @cached_property
    def fingerprint(self) -> str:
        """A short hash of every split's bytes: identifies the exact data a run saw (computed
        once per bundle; the splits are immutable)."""
        digest = hashlib.sha256()
        for split in (self.train, self.val, self.test, self.unlabeled):
            if split is None:
                digest.update(b"none")
                continue
            digest.update(split.inputs.numpy().tobytes())
            digest.update(split.targets.numpy().tobytes())
        return digest.hexdigest()[:16]


def validated_split(
    inputs: np.ndarray, targets: np.ndarray, source: str, labels_source: str | None = None
) -> Split:
    """Check that ``inputs``/``targets`` form a usable classification split and convert them.

    ``source`` names the file (and array) in every error message; ``labels_source`` (default:
    ``source``) names the labels' array or column in the messages about the labels alone.
    """
    labels = labels_source or source
    inputs = np.asarray(inputs)
    targets = np.asarray(targets)
    if inputs.ndim < 2:
        raise DataError(f"{source}: inputs must be shaped (samples, features...), got {inputs.shape}")
    if targets.ndim != 1:
        raise DataError(f"{labels}: labels must be a 1-D array of class ids, got shape {targets.shape}")
    if inputs.shape[0] != targets.shape[0]:
        raise DataError(
            f"{source}: {inputs.shape[0]} input rows but {targets.shape[0]} labels; they must match"
        )
    if inputs.shape[0] == 0:
        raise DataError(f"{source}: no samples")
    if not np.issubdtype(inputs.dtype, np.number) or inputs.dtype == np.bool_:
        raise DataError(f"{source}: inputs must be numeric, got dtype {inputs.dtype}")
    flat = inputs.reshape(inputs.shape[0], -1)
    bad_rows = np.flatnonzero(~np.isfinite(flat).all(axis=1))
    if bad_rows.size:
        raise DataError(
            f"{source}: inputs contain NaN or infinite values in {bad_rows.size} rows "
            f"(first at row {int(bad_rows[0])})"
        )
    if np.issubdtype(targets.dtype, np.floating):
        if not np.all(np.isfinite(targets)) or not np.all(targets == np.round(targets)):
            raise DataError(f"{labels}: labels must be integer class ids, got non-integer values")
    elif not np.issubdtype(targets.dtype, np.integer):
        raise DataError(f"{labels}: labels must be integer class ids, got dtype {targets.dtype}")
    targets = targets.astype(np.int64)
    if targets.min() < 0:
        raise DataError(f"{labels}: labels must be ≥ 0, found {int(targets.min())}")
    return Split(
        torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)),
        torch.from_numpy(targets),
    )


def check_label_range(split: Split, num_classes: int, source: str) -> None:
    """Every label must lie in ``[0, num_classes)``."""
    top = int(split.targets.max())
    if top >= num_classes:
        raise DataError(
            f"{source}: label {top} is out of range for {num_classes} classes (expected 0..{num_classes - 1})"
        )


def check_two_classes(split: Split, source: str) -> None:
    """A classification split must hold at least two distinct classes (with one, every model
    trivially scores 100 %)."""
    classes = torch.unique(split.targets)
    if len(classes) < 2:
        raise DataError(
            f"{source}: every training label is {int(classes[0])}; a classification data set needs "
            "at least 2 classes"
        )


def split_off(split: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    """Seeded, stratified-by-shuffle hold-out: returns ``(rest, held_out)``."""
    if fraction <= 0:
        return split, None
    count = round(len(split) * fraction)
    if count < 1 or count >= len(split):
        raise DataError(
            f"a hold-out fraction of {fraction} leaves no samples on one side of {len(split)} rows"
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(split), generator=generator)
    return split.subset(order[count:]), split.subset(order[:count])
