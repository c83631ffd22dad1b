"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), read from its four standard IDX files.

Fashion-MNIST is a drop-in replacement for MNIST: 28×28 grayscale images of Zalando clothing
articles in 10 classes (:data:`CLASS_NAMES`), 60 000 for training and 10 000 for testing. It is
not downloaded: distill reads the files from a folder — ``data.path``, else
``$DISTILL_FASHION_MNIST``, else ``/usr/share/datasets/fashion-mnist``, where Debian's
``dataset-fashion-mnist`` package puts them. The folder must hold ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each
plain or gzip-compressed (``.gz``, as distributed).

A recipe names it as ``data: {name: fashion-mnist}``; ``train_samples`` / ``test_samples``
take a class-stratified subset (seeded with ``split_seed``) for quick runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from distill.data.bundle import DataBundle, Split, validated_split
from distill.data.idx import read_idx_pair
from distill.data.sources import DATASETS, DataSpec, _finish
from distill.errors import DataError
from distill.schema import FilePath, SampleCount

#: The ten classes, by label id.
CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = (28, 28)

#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
DEFAULT_DIRECTORY = Path("/usr/share/datasets/fashion-mnist")
#: The environment variable that names the folder when the recipe does not.
ENVIRONMENT_VARIABLE = "DISTILL_FASHION_MNIST"

#: The standard file names (without ``.gz``) of each part: ``(images, labels)``.
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

HOW_TO_GET = (
    "get them with 'apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or download the four "
    "files from https://github.com/zalandoresearch/fashion-mnist and pass their folder as data.path"
)

#: second word of the subset's random seed, so train and test subsets are drawn independently
_STREAMS = {"train": 0, "test": 1}


class FashionMNISTSpec(DataSpec):
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 60 000 train / 10 000 test 28×28 grayscale
    clothing images in 10 classes, read from the standard IDX files, scaled to [0, 1], shaped
    ``(1, 28, 28)``.

    ``path``: the folder holding the four files (default: ``$DISTILL_FASHION_MNIST``, else
    ``/usr/share/datasets/fashion-mnist``). ``train_samples`` / ``test_samples``: keep only that
    many examples, drawn per class in proportion (seeded with ``split_seed``); the validation
    split is carved from the kept training examples.
    """

    name: Literal["fashion-mnist"] = "fashion-mnist"
    path: FilePath | None = None
    train_samples: SampleCount | None = None
    test_samples: SampleCount | None = None


def fashion_mnist_directory(path: Path | None = None) -> tuple[Path, str]:
    """The folder to read, and where that choice came from (for messages): ``path`` if given,
    else ``$DISTILL_FASHION_MNIST`` if set, else :data:`DEFAULT_DIRECTORY`."""
    if path is not None:
        return Path(path), "data.path"
    from_environment = os.environ.get(ENVIRONMENT_VARIABLE)
    if from_environment:
        return Path(from_environment), f"${ENVIRONMENT_VARIABLE}"
    return DEFAULT_DIRECTORY, "the default location"


def fashion_mnist_files(directory: Path, origin: str = "data.path") -> dict[str, tuple[Path, Path]]:
    """The ``(images, labels)`` files of each part (``train``, ``test``) in ``directory``, plain
    preferred over ``.gz``; a missing folder or file is a :class:`DataError` saying what was
    looked for where and how to get it."""
    if not directory.exists():
        raise DataError(
            f"fashion-mnist: folder {directory} ({origin}) does not exist; it should hold "
            f"train-images-idx3-ubyte[.gz] and the other three Fashion-MNIST files: {HOW_TO_GET}"
        )
    if not directory.is_dir():
        raise DataError(
            f"fashion-mnist: {directory} ({origin}) is not a folder; expected the folder holding "
            f"train-images-idx3-ubyte[.gz] and the other three Fashion-MNIST files: {HOW_TO_GET}"
        )
    found: dict[str, Path] = {}
    missing: list[str] = []
    for stem in (stem for pair in FILES.values() for stem in pair):
        for candidate in (directory / stem, directory / f"{stem}.gz"):
            if candidate.is_file():
                found[stem] = candidate
                break
        else:
            missing.append(f"{stem}[.gz]")
    if missing:
        raise DataError(
            f"fashion-mnist: {', '.join(missing)} not found in {directory} ({origin}): {HOW_TO_GET}"
        )
    return {part: (found[images], found[labels]) for part, (images, labels) in FILES.items()}


def read_fashion_mnist(
    directory: Path, origin: str = "data.path"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The raw parts of the data set in ``directory``: ``{"train": (images, labels), "test": …}``,
    images uint8 ``(n, 28, 28)``, labels uint8 ``(n,)`` in ``0..9``."""
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for part, (images_path, labels_path) in fashion_mnist_files(directory, origin).items():
        images, labels = read_idx_pair(images_path, labels_path, NUM_CLASSES)
        if images.shape[1:] != IMAGE_SIZE:
            rows, cols = images.shape[1:]
            raise DataError(
                f"{images_path}: images of {rows}×{cols} pixels; expected 28×28 Fashion-MNIST images"
            )
        parts[part] = images, labels
    return parts


def stratified_subset(labels: np.ndarray, count: int, seed: int | tuple[int, ...]) -> np.ndarray:
    """Sorted indices of ``count`` of ``labels``' examples, each class kept in proportion.

    Class ``c`` gets ``count × n_c / n`` examples, rounded down; the examples left over go to the
    classes with the largest remainders (ties: lower class id). Which examples of a class are kept
    is drawn at random with ``seed``. ``count`` must not exceed ``len(labels)``.
    """
    total = len(labels)
    if not 0 <= count <= total:
        raise ValueError(f"cannot take {count} of {total} examples")
    classes, per_class = np.unique(labels, return_counts=True)
    share = per_class.astype(np.int64) * count
    quota, remainder = share // total, share % total
    leftover = count - int(quota.sum())
    quota[np.argsort(-remainder, kind="stable")[:leftover]] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(labels == label), size=int(size), replace=False)
        for label, size in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def image_split(
    source_name: str,
    images: np.ndarray,
    labels: np.ndarray,
    keep: SampleCount | None,
    seed: int,
    part: str,
    source: Path,
) -> Split:
    """``part`` (``train`` or ``test``) of an image data set as a split: uint8 ``images`` of shape
    ``(N, C, H, W)`` scaled to [0, 1], keeping a class-stratified subset of ``keep`` of them
    (seeded by ``seed`` and the part) when ``keep`` is given. Errors name ``source_name`` and
    the ``source`` folder."""
    if keep is not None:
        if keep > len(labels):
            raise DataError(
                f"{source_name}: {part}_samples is {keep}, but {source} holds only {len(labels)} "
                f"{part} examples; expected at most {len(labels)}"
            )
        rows = stratified_subset(labels, keep, (seed, _STREAMS[part]))
        images, labels = images[rows], labels[rows]
    inputs = images.astype(np.float32)
    inputs /= 255.0
    return validated_split(inputs, labels, f"{source_name} {part} ({source})")


@DATASETS.register_factory(
    "fashion-mnist",
    "Fashion-MNIST 28×28 grayscale clothing images (60k train / 10k test, 10 classes) from IDX files",
)
def load_fashion_mnist(spec: FashionMNISTSpec) -> DataBundle:
    """Read Fashion-MNIST from the folder ``spec`` names and split it (:class:`FashionMNISTSpec`)."""
    directory, origin = fashion_mnist_directory(spec.path)
    parts = read_fashion_mnist(directory, origin)
    splits = {
        part: image_split("fashion-mnist", images[:, None], labels, keep, spec.split_seed, part, directory)
        for part, (images, labels), keep in (
            ("train", parts["train"], spec.train_samples),
            ("test", parts["test"], spec.test_samples),
        )
    }
    train, test = splits["train"], splits["test"]
    return _finish("fashion-mnist", train, test, spec, num_classes=NUM_CLASSES, source=str(directory))
