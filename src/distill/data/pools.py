"""Labeled / unlabeled / validation pools: the setting of distillation with unlabeled examples.

With ``data.pools`` a data source's training examples are split, with a seeded permutation
(``data.split_seed``), into

- a small **validation** set V (labeled; model selection and the estimates SLaM and weighted
  distillation make of the teacher's reliability) — it replaces ``val_fraction``;
- a **labeled** set L (what the teacher trains on, and the only true labels a student sees);
- an **unlabeled** pool U: its labels are hidden from every method. The bundle holds U with
  every target set to :data:`HIDDEN_LABEL` (−1, which any loss on labels rejects), and keeps
  the true labels apart (``DataBundle.unlabeled_truth``) only so that a run can *report* the
  teacher's and its estimates' quality on U.

Which source rows went to each pool is kept (``DataBundle.pool_rows``) and written to the run
directory as ``pools.json``.

More unlabeled inputs may come from a file (``pools.unlabeled_file``: an ``.npz`` with an input
array, or a CSV of feature columns without a label column); they have no truth to report.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from distill.data.bundle import DataBundle, Split
from distill.data.csv_text import read_csv_text
from distill.data.npz import read_npz
from distill.errors import DataError
from distill.schema import FilePath, SampleCount, Section

HIDDEN_LABEL = -1


class PoolsSpec(Section):
    """Sizes of the labeled set, the validation set and the unlabeled pool (numbers of examples;
    ``unlabeled`` defaults to every remaining one), and an optional file of extra unlabeled
    inputs (``unlabeled_key`` names its array in an ``.npz``)."""

    labeled: SampleCount
    validation: SampleCount = 500
    unlabeled: SampleCount | None = None
    unlabeled_file: FilePath | None = None
    unlabeled_key: str = "x"


def hidden_labels(count: int) -> torch.Tensor:
    return torch.full((count,), HIDDEN_LABEL, dtype=torch.int64)


def split_pools(bundle: DataBundle, spec: PoolsSpec, seed: int) -> DataBundle:
    """Carve V, L and U out of ``bundle.train`` (its ``val`` is merged back first)."""
    train = bundle.train if bundle.val is None else _concat(bundle.train, bundle.val)
    wanted = spec.validation + spec.labeled + (spec.unlabeled or 0)
    leaves_no_pool = spec.unlabeled is None and wanted >= len(train) and spec.unlabeled_file is None
    if wanted > len(train) or leaves_no_pool:
        raise DataError(
            f"data.pools: {spec.validation} validation + {spec.labeled} labeled"
            + (f" + {spec.unlabeled} unlabeled" if spec.unlabeled else " + an unlabeled pool")
            + f" examples do not fit in the {len(train)} training examples of '{bundle.name}'"
        )
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    validation = train.subset(order[: spec.validation])
    labeled = train.subset(order[spec.validation : spec.validation + spec.labeled])
    end = None if spec.unlabeled is None else spec.validation + spec.labeled + spec.unlabeled
    pool = train.subset(order[spec.validation + spec.labeled : end])
    inputs = pool.inputs
    truth: torch.Tensor | None = pool.targets
    if spec.unlabeled_file is not None:
        extra = read_unlabeled_file(spec.unlabeled_file, spec.unlabeled_key, bundle.input_shape)
        inputs = torch.cat([inputs, extra])
        truth = None  # the file's examples have no labels to report against
    return DataBundle(
        bundle.name,
        labeled,
        validation,
        bundle.test,
        bundle.num_classes,
        unlabeled=Split(inputs, hidden_labels(len(inputs))),
        unlabeled_truth=truth,
        pool_rows={
            "validation": order[: spec.validation].tolist(),
            "labeled": order[spec.validation : spec.validation + spec.labeled].tolist(),
            "unlabeled": order[spec.validation + spec.labeled : end].tolist(),
        },
    )


def _concat(first: Split, second: Split) -> Split:
    return Split(torch.cat([first.inputs, second.inputs]), torch.cat([first.targets, second.targets]))


def read_unlabeled_file(path: Path, key: str, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Inputs from an ``.npz`` (array ``key``) or a CSV (a header row, numeric columns only),
    reshaped to ``input_shape`` when they hold as many values per row."""
    if not path.is_file():
        raise DataError(f"data.pools.unlabeled_file: file not found: {path}")
    if path.suffix == ".npz":
        values = read_npz(path, (key,), f"array '{key}' of unlabeled inputs")[key]
    elif path.suffix == ".csv":
        text = read_csv_text(path)
        try:
            values = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, ndmin=2)
        except ValueError as error:
            raise DataError(f"{path}: unlabeled rows must be numeric feature columns ({error})") from None
    else:
        raise DataError(f"{path}: unlabeled inputs must be an .npz or a .csv file")
    if values.ndim < 2 or values.shape[0] == 0:
        raise DataError(f"{path}: expected (samples, features...) unlabeled inputs, got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all():
        raise DataError(f"{path}: unlabeled inputs must be finite numbers")
    per_row = int(np.prod(values.shape[1:]))
    if per_row != int(np.prod(input_shape)):
        raise DataError(
            f"{path}: {per_row} values per unlabeled row, but the data's inputs are shaped "
            f"{input_shape} ({int(np.prod(input_shape))} values)"
        )
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(-1, *input_shape)


def with_unlabeled_pool(bundle: DataBundle) -> DataBundle:
    """The bundle a student of an unlabeled-data method trains on: ``train`` is L followed by U
    (U's targets hidden), ``val`` and ``test`` unchanged."""
    if bundle.unlabeled is None:
        raise DataError(f"data '{bundle.name}' has no unlabeled pool; set data.pools")
    return DataBundle(
        bundle.name,
        _concat(bundle.train, bundle.unlabeled),
        bundle.val,
        bundle.test,
        bundle.num_classes,
        unlabeled=bundle.unlabeled,
        unlabeled_truth=bundle.unlabeled_truth,
        pool_rows=bundle.pool_rows,
    )


__all__ = ["HIDDEN_LABEL", "PoolsSpec", "split_pools", "with_unlabeled_pool"]
