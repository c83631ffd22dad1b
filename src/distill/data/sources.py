"""Data sources a recipe can name: built-in generated/shipped sets and user files.

Every loader returns a :class:`DataBundle` with train / validation / test splits; the validation
split is carved from the training data with ``split_seed`` (fixed across run seeds, so changing
the run seed never changes which samples are held out).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from distill.data.bundle import (
    DataBundle,
    Split,
    check_label_range,
    check_two_classes,
    split_off,
    validated_split,
)
from distill.data.csv_text import read_csv_text
from distill.data.npz import read_npz
from distill.data.pools import PoolsSpec, split_pools
from distill.errors import DataError
from distill.files import atomic_file
from distill.registry import SpecRegistry
from distill.schema import FilePath, PositiveInt, SampleCount, Section, Seed, Width

#: Data sources; ``build(spec) -> DataBundle``.
DATASETS = SpecRegistry("dataset")


class DataSpec(Section):
    """Fields every data source shares.

    ``pools``: split the training examples into labeled, validation and unlabeled pools
    (:mod:`distill.data.pools`); ``pools.validation`` then replaces ``val_fraction``.
    """

    name: str
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    split_seed: Seed = 0
    pools: PoolsSpec | None = None


def _finish(
    name: str,
    train: Split,
    test: Split,
    spec: DataSpec,
    num_classes: int | None = None,
    source: str | None = None,
) -> DataBundle:
    """Check the splits and carve the validation split (or the pools) out of ``train``;
    ``source`` names the data in messages (default: ``name``)."""
    check_two_classes(train, source or name)
    if num_classes is None:
        num_classes = int(max(train.targets.max(), test.targets.max())) + 1
    check_label_range(train, num_classes, f"{name} train split")
    check_label_range(test, num_classes, f"{name} test split")
    if train.inputs.shape[1:] != test.inputs.shape[1:]:
        raise DataError(
            f"{name}: train inputs {tuple(train.inputs.shape[1:])} and test inputs "
            f"{tuple(test.inputs.shape[1:])} have different shapes"
        )
    if spec.pools is not None:
        return split_pools(DataBundle(name, train, None, test, num_classes), spec.pools, spec.split_seed)
    train, val = split_off(train, spec.val_fraction, spec.split_seed)
    return DataBundle(name, train, val, test, num_classes)


def cache_dir() -> Path:
    """Where generated built-in data is kept: ``$DISTILL_CACHE`` or ``~/.cache/distill``."""
    return Path(os.environ.get("DISTILL_CACHE", Path.home() / ".cache" / "distill"))


def atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` as one ``.npz`` file, atomically."""
    with atomic_file(path) as handle:
        # numpy's stub types savez(..., allow_pickle: bool, **kwds); mypy cannot rule out that key
        np.savez(handle, **arrays)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- MNIST-1D


class MNIST1DSpec(DataSpec):
    """MNIST-1D (Greydanus & Kobak 2020), generated offline from its ten templates.

    The defaults reproduce the standard data set: 5000 samples, 4000 train / 1000 test, seed 42.
    """

    name: Literal["mnist1d"] = "mnist1d"
    num_samples: SampleCount = 5000
    train_fraction: float = Field(default=0.8, gt=0.0, lt=1.0)
    seed: Seed = 42


def _generate_mnist1d(spec: MNIST1DSpec) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = spec.num_samples
    args.train_split = spec.train_fraction
    args.seed = spec.seed
    saved_state = np.random.get_state()  # the generator seeds NumPy's global RNG; restore it
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(saved_state)
    return {key: data[key] for key in ("x", "y", "x_test", "y_test")}


@DATASETS.register_factory("mnist1d", "MNIST-1D signals (40 steps, 10 classes), generated offline")
def load_mnist1d(spec: MNIST1DSpec) -> DataBundle:
    key = json.dumps([spec.num_samples, spec.train_fraction, spec.seed, "mnist1d-v1"])
    path = cache_dir() / f"mnist1d-{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"
    arrays = None
    if path.exists():
        try:
            with np.load(path) as stored:
                arrays = {name: stored[name] for name in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            arrays = None  # a damaged cache file is regenerated below
    if arrays is None:
        arrays = _generate_mnist1d(spec)
        atomic_save_npz(path, **arrays)
    train = validated_split(arrays["x"][:, None, :], arrays["y"], "mnist1d train")
    test = validated_split(arrays["x_test"][:, None, :], arrays["y_test"], "mnist1d test")
    return _finish("mnist1d", train, test, spec, num_classes=10)


# --------------------------------------------------------------------------- digits


class DigitsSpec(DataSpec):
    """scikit-learn's 8×8 handwritten digits (1797 images), shipped with scikit-learn."""

    name: Literal["digits"] = "digits"
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)


@DATASETS.register_factory("digits", "scikit-learn 8×8 handwritten digits, 10 classes, shipped offline")
def load_digits(spec: DigitsSpec) -> DataBundle:
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    images = digits.images[:, None, :, :].astype(np.float32) / 16.0
    everything = validated_split(images, digits.target, "digits")
    rest, test = split_off(everything, spec.test_fraction, seed=12345)
    assert test is not None
    return _finish("digits", rest, test, spec, num_classes=10)


# --------------------------------------------------------------------------- synthetic


class SyntheticSpec(DataSpec):
    """A generated classification task: smooth class prototypes plus per-sample noise.

    ``shape`` is one sample's shape: ``[20]`` for vectors, ``[1, 64]`` for signals,
    ``[3, 32, 32]`` for images. Each class mixes ``clusters_per_class`` prototypes.
    """

    name: Literal["synthetic"] = "synthetic"
    num_samples: SampleCount = 2000
    num_test: SampleCount = 500
    num_classes: int = Field(default=10, ge=2, le=1_000_000)
    shape: list[Width] = Field(default_factory=lambda: [32])
    clusters_per_class: PositiveInt = 2
    noise: float = Field(default=1.0, ge=0.0)
    seed: Seed = 0

    @field_validator("shape")
    @classmethod
    def _rank(cls, shape: list[int]) -> list[int]:
        if not 1 <= len(shape) <= 3:
            raise ValueError(f"must have 1 to 3 dimensions, got {shape}")
        return shape


def _smooth_prototypes(count: int, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    """Random low-frequency patterns: coarse noise upsampled to ``shape`` (spatial dims only)."""
    spatial = shape[1:] if len(shape) > 1 else []
    coarse_shape = [shape[0]] + [max(1, size // 4) for size in spatial]
    coarse = rng.standard_normal((count, *coarse_shape))
    for axis, size in enumerate(spatial, start=2):
        repeat = -(-size // coarse.shape[axis])
        coarse = np.repeat(coarse, repeat, axis=axis).take(range(size), axis=axis)
    return coarse


@DATASETS.register_factory("synthetic", "generated task of any shape (vectors, signals, images)")
def load_synthetic(spec: SyntheticSpec) -> DataBundle:
    rng = np.random.default_rng(spec.seed)
    prototypes = _smooth_prototypes(spec.num_classes * spec.clusters_per_class, spec.shape, rng)
    total = spec.num_samples + spec.num_test
    labels = np.arange(total) % spec.num_classes
    rng.shuffle(labels)
    clusters = labels * spec.clusters_per_class + rng.integers(0, spec.clusters_per_class, total)
    scale = rng.uniform(0.7, 1.3, size=(total,) + (1,) * len(spec.shape))
    inputs = prototypes[clusters] * scale + spec.noise * rng.standard_normal((total, *spec.shape))
    train = validated_split(inputs[: spec.num_samples], labels[: spec.num_samples], "synthetic")
    test = validated_split(inputs[spec.num_samples :], labels[spec.num_samples :], "synthetic")
    return _finish("synthetic", train, test, spec, num_classes=spec.num_classes)


# --------------------------------------------------------------------------- user files


class FileSpec(DataSpec):
    """Fields shared by file sources: a training file and an optional separate test file."""

    path: FilePath
    test_path: FilePath | None = None
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    num_classes: PositiveInt | None = None
    standardize: bool = False


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    return path


def _split_file_data(name: str, train: Split, test: Split | None, spec: FileSpec) -> DataBundle:
    if test is None:
        train, test = split_off(train, spec.test_fraction, seed=12345)
        assert test is not None
    if spec.standardize:
        mean, std = train.inputs.mean(), train.inputs.std().clamp_min(1e-8)
        train = Split((train.inputs - mean) / std, train.targets)
        test = Split((test.inputs - mean) / std, test.targets)
    return _finish(name, train, test, spec, spec.num_classes, source=str(spec.path))


class NpzSpec(FileSpec):
    """A NumPy ``.npz`` file with an input array and a label array (keys configurable)."""

    name: Literal["npz"] = "npz"
    inputs_key: str = "x"
    labels_key: str = "y"


def _read_npz(path: Path, spec: NpzSpec) -> Split:
    expected = f"arrays '{spec.inputs_key}' (inputs) and '{spec.labels_key}' (labels)"
    arrays = read_npz(_require_file(path), (spec.inputs_key, spec.labels_key), expected)
    return validated_split(
        arrays[spec.inputs_key],
        arrays[spec.labels_key],
        f"{path} ['{spec.inputs_key}']",
        labels_source=f"{path} ['{spec.labels_key}']",
    )


@DATASETS.register_factory("npz", "your data in a .npz file (inputs and integer labels)")
def load_npz(spec: NpzSpec) -> DataBundle:
    train = _read_npz(spec.path, spec)
    test = _read_npz(spec.test_path, spec) if spec.test_path else None
    return _split_file_data(spec.path.stem, train, test, spec)


class CsvSpec(FileSpec):
    """A CSV file with a header row: one label column, every other column a numeric feature."""

    name: Literal["csv"] = "csv"
    label_column: str = "label"


def _read_csv(path: Path, spec: CsvSpec) -> Split:
    import csv
    import io

    text = read_csv_text(_require_file(path))
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise DataError(f"{path}: not a valid CSV file ({error})") from None
    if not rows:
        raise DataError(f"{path}: empty CSV file")
    header, body = rows[0], rows[1:]
    if spec.label_column not in header:
        raise DataError(f"{path}: no label column '{spec.label_column}'; columns are: {', '.join(header)}")
    label_index = header.index(spec.label_column)
    features, labels = [], []
    for line_number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}:{line_number}: {len(row)} fields, header has {len(header)}")
        try:
            values = [float(value) for value in row]
        except ValueError:
            raise DataError(f"{path}:{line_number}: non-numeric value in row {row}") from None
        labels.append(values.pop(label_index))
        features.append(values)
    return validated_split(
        np.array(features),
        np.array(labels),
        str(path),
        labels_source=f"{path} (column '{spec.label_column}')",
    )


@DATASETS.register_factory("csv", "your data in a CSV file (header row, numeric features, a label column)")
def load_csv(spec: CsvSpec) -> DataBundle:
    train = _read_csv(spec.path, spec)
    test = _read_csv(spec.test_path, spec) if spec.test_path else None
    return _split_file_data(spec.path.stem, train, test, spec)


def read_whole_file(spec: DataSpec) -> Split:
    """Every row of the file a ``npz``/``csv`` spec names, as one split with no hold-out (to
    evaluate a checkpoint on a whole file), checked as training data is (NaN, labels, shapes).
    ``test_path``, ``standardize`` and the split fractions do not apply."""
    if isinstance(spec, NpzSpec):
        return _read_npz(spec.path, spec)
    if isinstance(spec, CsvSpec):
        return _read_csv(spec.path, spec)
    raise DataError(f"data '{spec.name}' is not a file source (npz or csv)")


def load_data(spec: DataSpec) -> DataBundle:
    """Load the data source ``spec`` describes."""
    bundle = DATASETS.get(spec.name).build(spec)
    assert isinstance(bundle, DataBundle)
    return bundle


from distill.data import fashion_mnist, wordnet  # noqa: E402, F401  (register "fashion-mnist", "wordnet")
from distill.data.cifar100 import load_cifar100  # noqa: E402, F401  (registers "cifar100"; it imports this)
