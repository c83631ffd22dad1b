"""CIFAR-100 (Krizhevsky 2009), read safely from the standard python-pickle batches.

CIFAR-100 holds 32×32 colour images in 100 fine classes (:data:`FINE_CLASS_NAMES`) grouped into
20 coarse superclasses (:data:`COARSE_CLASS_NAMES`): 50 000 for training, 10 000 for testing. It
is not downloaded: distill reads the "python version" (``cifar-100-python.tar.gz`` from
https://www.cs.toronto.edu/~kriz/cifar.html, extracted) from a folder — ``data.path``, else
``$DISTILL_CIFAR100``, else ``$DISTILL_CACHE/cifar-100-python`` (``~/.cache/distill/…`` when
``DISTILL_CACHE`` is unset), else ``./data/cifar-100-python``. ``data.path`` (and the variable)
may name the ``cifar-100-python`` folder itself or the folder it was extracted into.

A recipe names it as ``data: {name: cifar100}``; ``labels: coarse`` trains on the 20
superclasses instead of the 100 classes, and ``train_samples`` / ``test_samples`` take a
class-stratified subset (seeded with ``split_seed``) for quick runs. Images become float32
``(3, 32, 32)`` tensors scaled to [0, 1] (channels red, green, blue), as Fashion-MNIST's are.

**The files.** ``train`` and ``test`` are each a pickled dict (protocol 2, written by Python 2's
``cPickle``, so its strings load as ``bytes``) with ``data`` — a uint8 numpy array ``N × 3072``,
each row one image as 1024 red, then 1024 green, then 1024 blue values, each plane row-major —
``fine_labels`` (``N`` ints, 0–99), ``coarse_labels`` (``N`` ints, 0–19), ``filenames`` and
``batch_label``. The folder's ``meta`` file (the class names) is not read: the names are
:data:`FINE_CLASS_NAMES` and :data:`COARSE_CLASS_NAMES`.

**No code from files.** ``pickle.load`` runs whatever callables a file names, so a planted
``train`` file could run any command. distill unpickles with :class:`RestrictedUnpickler`, which
resolves only the globals a genuine batch names (:data:`ALLOWED_GLOBALS`: numpy's array
reconstruction under its numpy 1 and numpy 2 module names, ``numpy.ndarray`` and
``numpy.dtype``; also ``_codecs.encode`` and ``bytes``, with which Python 3 writes ``bytes`` at
protocol 2) and refuses every other one — ``os.system``, ``builtins.eval``, … — before anything
is called. Even the allowed names do not reach numpy: each resolves to a small stand-in here
(one a file cannot alter: setting state on it is refused) that records the array's shape, dtype
and raw bytes, and accepts only what numpy itself writes (``_reconstruct(ndarray, (0,), b'b')``,
plain numeric dtypes, state whose byte count matches its shape; ``_codecs.encode`` with
``latin1`` only, ``bytes()`` with no argument). The arrays are then built with
``numpy.frombuffer``, so no numpy code ever sees the file's state. (A batch re-pickled at
protocol 5, which names ``numpy._core.numeric._frombuffer``, is refused; protocols 2 to 4 are
read.)

Every fault is a one-line :class:`DataError` naming the file and what was expected: a missing
folder or file (with where to get the data), an unreadable, truncated or non-pickle file, a
refused global, a pickle that is not a dict or lacks ``data`` or the label list, ``data`` that
is not a uint8 ``N × 3072`` array, a label that is not an integer or is out of range, and a
label count that differs from the image count.
"""

from __future__ import annotations

import math
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from distill.data.bundle import DataBundle
from distill.data.fashion_mnist import image_split
from distill.data.sources import DATASETS, DataSpec, _finish, cache_dir
from distill.errors import DataError
from distill.schema import FilePath, SampleCount

#: The 100 fine classes, by label id (the order of ``meta``'s ``fine_label_names``).
FINE_CLASS_NAMES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle",
    "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon",
    "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail",
    "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
#: The 20 coarse superclasses, by label id (the order of ``meta``'s ``coarse_label_names``).
COARSE_CLASS_NAMES: tuple[str, ...] = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)  # fmt: skip
#: Number of classes of each labelling.
NUM_CLASSES: dict[str, int] = {"fine": len(FINE_CLASS_NAMES), "coarse": len(COARSE_CLASS_NAMES)}
#: The dict key of each labelling's label list.
LABEL_KEYS: dict[str, str] = {"fine": "fine_labels", "coarse": "coarse_labels"}
#: One image: (channels, rows, columns); a row of ``data`` holds their product, 3072 values.
IMAGE_SHAPE = (3, 32, 32)
PIXELS_PER_IMAGE = math.prod(IMAGE_SHAPE)

#: The folder ``cifar-100-python.tar.gz`` extracts to.
FOLDER_NAME = "cifar-100-python"
#: The environment variable that names the folder when the recipe does not.
ENVIRONMENT_VARIABLE = "DISTILL_CIFAR100"
#: The batch file of each part.
FILES: dict[str, str] = {"train": "train", "test": "test"}

HOW_TO_GET = (
    "download cifar-100-python.tar.gz (the python version) from https://www.cs.toronto.edu/~kriz/cifar.html, "
    f"extract it, and pass the {FOLDER_NAME} folder as data.path or set ${ENVIRONMENT_VARIABLE} "
    "(distill never downloads it)"
)
EXPECTED = "a CIFAR-100 python batch (a pickled dict with 'data', 'fine_labels' and 'coarse_labels')"
_DATA_EXPECTED = (
    f"expected uint8 images shaped (N, {PIXELS_PER_IMAGE}): 1024 red, 1024 green, 1024 blue values each"
)


class CIFAR100Spec(DataSpec):
    """CIFAR-100 (Krizhevsky 2009): 50 000 train / 10 000 test 32×32 colour images in 100 fine
    classes or 20 coarse superclasses, read from the python-pickle batches (no code from the
    files: :mod:`distill.data.cifar100`), scaled to [0, 1], shaped ``(3, 32, 32)``.

    ``path``: the ``cifar-100-python`` folder or the folder holding it (default:
    ``$DISTILL_CIFAR100``, else ``$DISTILL_CACHE/cifar-100-python``, else
    ``./data/cifar-100-python``). ``labels``: ``fine`` (100 classes) or ``coarse`` (20).
    ``train_samples`` / ``test_samples``: keep only that many examples, drawn per class in
    proportion (seeded with ``split_seed``); the validation split is carved from the kept
    training examples.
    """

    name: Literal["cifar100"] = "cifar100"
    path: FilePath | None = None
    labels: Literal["fine", "coarse"] = "fine"
    train_samples: SampleCount | None = None
    test_samples: SampleCount | None = None


# --------------------------------------------------------------------------- the folder


def default_directories() -> list[Path]:
    """The folders searched, in order, when neither ``data.path`` nor ``$DISTILL_CIFAR100`` is
    set: ``$DISTILL_CACHE/cifar-100-python`` (``~/.cache/distill/…``), ``./data/cifar-100-python``."""
    return [cache_dir() / FOLDER_NAME, Path.cwd() / "data" / FOLDER_NAME]


def _holding_the_files(folder: Path) -> Path:
    """``folder``, or its ``cifar-100-python`` subfolder when the batches are there instead."""
    if not any((folder / name).exists() for name in FILES.values()) and (folder / FOLDER_NAME).is_dir():
        return folder / FOLDER_NAME
    return folder


def cifar100_directory(path: Path | None = None) -> tuple[Path, str]:
    """The folder to read, and where that choice came from (for messages): ``path`` if given,
    else ``$DISTILL_CIFAR100`` if set (either may be the ``cifar-100-python`` folder or its
    parent), else the first of :func:`default_directories` that exists; none existing is a
    :class:`DataError` naming the folders searched and how to get the data."""
    if path is not None:
        return _holding_the_files(Path(path)), "data.path"
    from_environment = os.environ.get(ENVIRONMENT_VARIABLE)
    if from_environment:
        return _holding_the_files(Path(from_environment)), f"${ENVIRONMENT_VARIABLE}"
    searched = default_directories()
    for folder in searched:
        if folder.is_dir():
            return folder, "the default location"
    raise DataError(
        f"cifar100: no CIFAR-100 folder found: data.path and ${ENVIRONMENT_VARIABLE} are not set, and "
        f"neither {searched[0]} nor {searched[1]} exists: {HOW_TO_GET}"
    )


def cifar100_files(directory: Path, origin: str = "data.path") -> dict[str, Path]:
    """The batch file of each part (``train``, ``test``) in ``directory``; a missing folder or
    file is a :class:`DataError` saying what was looked for where and how to get it."""
    if not directory.exists():
        raise DataError(
            f"cifar100: folder {directory} ({origin}) does not exist; expected the {FOLDER_NAME} folder "
            f"(holding train and test) or the folder it is in: {HOW_TO_GET}"
        )
    if not directory.is_dir():
        archive = " (an archive: extract it first)" if directory.name.endswith((".tar.gz", ".tgz")) else ""
        raise DataError(
            f"cifar100: {directory} ({origin}) is not a folder{archive}; expected the {FOLDER_NAME} "
            f"folder (holding train and test) or the folder it is in: {HOW_TO_GET}"
        )
    missing = [name for name in FILES.values() if not (directory / name).is_file()]
    if missing:
        raise DataError(
            f"cifar100: {' and '.join(missing)} not found in {directory} ({origin}), nor a "
            f"{FOLDER_NAME} folder holding them: {HOW_TO_GET}"
        )
    return {part: directory / name for part, name in FILES.items()}


# --------------------------------------------------------------------------- the restricted unpickler


class _Malformed(Exception):
    """An allowed global used in a way numpy and Python never write (reported with the file's name)."""


class _StandIn:
    """What an allowed global resolves to: calls ``function`` (or, without one, is only ever an
    argument, as ``numpy.ndarray`` is). It has no attributes a pickle could set: ``BUILD`` on it
    is refused, so a file cannot change a stand-in for the files read after it."""

    __slots__ = ("_function", "_name")

    def __init__(self, name: str, function: Callable[..., object] | None = None) -> None:
        self._name = name
        self._function = function

    def __call__(self, *arguments: object) -> object:
        if self._function is None:
            raise _Malformed(f"{self._name} called")
        return self._function(*arguments)

    def __setstate__(self, state: object) -> None:
        raise _Malformed(f"state set on {self._name}")

    def __repr__(self) -> str:
        return self._name


_NDARRAY = _StandIn("numpy.ndarray")
_DTYPE_CODE = re.compile(r"(?:[uif][1248]|b1)")
_ByteOrder = Literal["<", ">", "|", "="]
_BYTE_ORDERS: dict[str, _ByteOrder] = {"<": "<", ">": ">", "|": "|", "=": "="}


def _text(value: object) -> str | None:
    """``value`` as text when it is a (Python 2) byte string or a string, else ``None``."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else None


class _DtypeRecord:
    """Stands in for a ``numpy.dtype``: the type code, and the byte order its state sets."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.byte_order: _ByteOrder = "="
        self._set = False

    def __setstate__(self, state: object) -> None:
        # numpy writes (version 3 or 4, byte order, subarray, names, fields, elsize, alignment, flags,
        # and with version 4 metadata)
        if self._set:
            raise _Malformed("a dtype's state is set twice")
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)):
            raise _Malformed(f"unexpected dtype state {_shown(state)}")
        order = _text(state[1])
        if order not in _BYTE_ORDERS or any(part is not None for part in state[2:5]):
            raise _Malformed(
                f"dtype {self.code} with byte order {_shown(state[1])} or fields: not a plain type"
            )
        self.byte_order, self._set = _BYTE_ORDERS[order], True

    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self.code).newbyteorder(self.byte_order)


class _ArrayRecord:
    """Stands in for a ``numpy.ndarray`` being unpickled: its state, checked, made an array later."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        # numpy writes (version 1, shape, dtype, is_fortran, raw bytes)
        if self.array is not None:
            raise _Malformed("an array's state is set twice")
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise _Malformed(f"unexpected array state of {_shown(type(state).__name__)}")
        _, shape, dtype_record, fortran, data = state
        if not (
            isinstance(shape, tuple)
            and len(shape) <= 32
            and all(type(size) is int and size >= 0 for size in shape)
        ):
            raise _Malformed(f"array shape {_shown(shape)}")
        if not isinstance(dtype_record, _DtypeRecord):
            raise _Malformed("an array without a plain numeric dtype (object arrays are refused)")
        if fortran not in (0, 1) or not isinstance(data, (bytes, bytearray)):
            raise _Malformed(f"array data of {type(data).__name__} (order flag {_shown(fortran)})")
        dtype = dtype_record.dtype()
        size = math.prod(shape) * dtype.itemsize
        if len(data) != size:
            raise _Malformed(
                f"an array of {'×'.join(map(str, shape))} {dtype.name} needs {size} bytes, the pickle "
                f"holds {len(data)}"
            )
        self.array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _reconstruct(subtype: object, shape: object, typecode: object) -> _ArrayRecord:
    """``numpy.core.multiarray._reconstruct`` as numpy pickles call it: an empty array to fill."""
    if subtype is not _NDARRAY or shape != (0,) or _text(typecode) != "b":
        raise _Malformed(f"_reconstruct{_shown((subtype, shape, typecode))}, not (ndarray, (0,), b'b')")
    return _ArrayRecord()


def _dtype(code: object, align: object, copy: object) -> _DtypeRecord:
    """``numpy.dtype`` as numpy pickles call it, for plain numeric types only."""
    text = _text(code)
    if text is None or not _DTYPE_CODE.fullmatch(text) or align not in (0, 1) or copy not in (0, 1):
        raise _Malformed(f"dtype{_shown((code, align, copy))}: only plain numeric types are read")
    return _DtypeRecord(text)


def _latin1_encode(text: object, encoding: object) -> bytes:
    """``_codecs.encode`` as Python 3 pickles ``bytes`` at protocol 2: ``encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Malformed(f"_codecs.encode with {type(text).__name__} and {_shown(encoding)}, not latin1")
    return text.encode("latin-1")


def _empty_bytes(*arguments: object) -> bytes:
    """``bytes`` as Python 3 pickles an empty ``bytes`` at protocol 2: ``bytes()``, nothing else."""
    if arguments:
        raise _Malformed(f"bytes called with {len(arguments)} arguments, not none")
    return b""


#: The only globals a CIFAR-100 batch may name, and the stand-in each resolves to. numpy 1
#: (and Python 2's numpy, which wrote the files) spells the module ``numpy.core.multiarray``,
#: numpy 2 ``numpy._core.multiarray``; ``_codecs.encode`` (and, for ``b""``, ``bytes``, which
#: protocol 2 spells ``__builtin__.bytes``) appear when Python 3 re-pickles ``bytes`` at protocol 2.
ALLOWED_GLOBALS: dict[tuple[str, str], _StandIn] = {
    ("numpy.core.multiarray", "_reconstruct"): _StandIn("_reconstruct", _reconstruct),
    ("numpy._core.multiarray", "_reconstruct"): _StandIn("_reconstruct", _reconstruct),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _StandIn("numpy.dtype", _dtype),
    ("_codecs", "encode"): _StandIn("_codecs.encode", _latin1_encode),
    ("__builtin__", "bytes"): _StandIn("bytes", _empty_bytes),
    ("builtins", "bytes"): _StandIn("bytes", _empty_bytes),
}


def _shown(value: object, limit: int = 80) -> str:
    """``value`` for a one-line message: printable and short."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` (to stand-ins, never to numpy or
    anything else) and refuses every other global with a :class:`DataError` naming the file
    and the global: no callable a file names is ever looked up, let alone called."""

    def __init__(self, file: IO[bytes], path: Path) -> None:
        super().__init__(file, encoding="bytes")  # Python 2 strings load as bytes, as numpy needs
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            hint = (
                " (the protocol-5 array form: re-pickle it at protocol 2 to 4)"
                if name == "_frombuffer"
                else ""
            )
            raise DataError(
                f"{self.path}: refused to load: the pickle names the global {_shown(f'{module}.{name}')}"
                f"{hint}, which a genuine CIFAR-100 batch never names (it may name only numpy's array "
                "reconstruction); nothing in the file was run"
            )
        return allowed


# --------------------------------------------------------------------------- reading a batch


def _unpickle(path: Path) -> object:
    """What the pickle file ``path`` holds, loaded with :class:`RestrictedUnpickler`."""
    try:
        with path.open("rb") as handle:
            try:
                loaded = RestrictedUnpickler(handle, path).load()
            except DataError:
                raise
            except _Malformed as error:
                raise DataError(f"{path}: malformed pickle ({error}); expected {EXPECTED}") from None
            except MemoryError:
                raise DataError(
                    f"{path}: the pickle declares more data than fits in memory; expected {EXPECTED}"
                ) from None
            except (EOFError, pickle.UnpicklingError) as error:
                reason = str(error) or type(error).__name__
                state = "truncated" if isinstance(error, EOFError) or "truncated" in reason else "damaged"
                raise DataError(
                    f"{path}: {state} or not a pickle ({_shown(reason)}); expected {EXPECTED}"
                ) from None
            except Exception as error:  # anything else the unpickler or a stand-in raises on bad input
                reason = f"{type(error).__name__}: {error}"
                raise DataError(f"{path}: damaged pickle ({_shown(reason)}); expected {EXPECTED}") from None
            if handle.read(1):
                raise DataError(f"{path}: data after the end of the pickle; expected {EXPECTED} alone")
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from None
    return loaded


def _entries(loaded: object, path: Path) -> dict[str, object]:
    """The batch dict with its keys as text (Python 2 wrote them as byte strings)."""
    if not isinstance(loaded, dict):
        raise DataError(
            f"{path}: the pickle holds a {type(loaded).__name__}, not a dict; expected {EXPECTED}"
        )
    entries: dict[str, object] = {}
    for key, value in loaded.items():
        text = _text(key)
        entries[text if text is not None else repr(key)] = (
            value.array if isinstance(value, _ArrayRecord) else value
        )
    return entries


def _entry(entries: dict[str, object], key: str, path: Path) -> object:
    if key not in entries:
        found = ", ".join(sorted(_shown(name, 40) for name in entries)[:10]) or "none"
        raise DataError(f"{path}: no '{key}' entry (it has: {found}); expected {EXPECTED}")
    return entries[key]


def _images(value: object, path: Path) -> np.ndarray:
    """``data`` as uint8 images ``(n, 3, 32, 32)``: each row's three 1024-value planes, row-major."""
    if not isinstance(value, np.ndarray):
        raise DataError(f"{path}: 'data' is a {type(value).__name__}, not a numpy array; {_DATA_EXPECTED}")
    if value.dtype != np.uint8 or value.ndim != 2 or value.shape[1] != PIXELS_PER_IMAGE:
        raise DataError(f"{path}: 'data' is a {value.dtype} array shaped {value.shape}; {_DATA_EXPECTED}")
    if value.shape[0] == 0:
        raise DataError(f"{path}: 'data' holds no images; {_DATA_EXPECTED}")
    return value.reshape(value.shape[0], *IMAGE_SHAPE)


def _labels(value: object, key: str, num_classes: int, path: Path) -> np.ndarray:
    """The label list ``key`` as int64 class ids, each in ``0..num_classes-1``."""
    expected = f"expected a list of integer class ids 0..{num_classes - 1}"
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "iu":
            raise DataError(f"{path}: '{key}' is a {value.dtype} array shaped {value.shape}; {expected}")
        values = [int(label) for label in value]
    elif isinstance(value, list):
        wrong = next((index for index, label in enumerate(value) if type(label) is not int), None)
        if wrong is not None:
            raise DataError(
                f"{path}: '{key}' holds a {type(value[wrong]).__name__} at index {wrong}; {expected}"
            )
        values = value
    else:
        raise DataError(f"{path}: '{key}' is a {type(value).__name__}; {expected}")
    bad = [index for index, label in enumerate(values) if not 0 <= label < num_classes]
    if bad:
        kind = key.removesuffix("_labels")
        raise DataError(
            f"{path}: {kind} label {_shown(values[bad[0]])} at index {bad[0]} is out of range "
            f"({len(bad)} out-of-range labels in all); expected class ids 0..{num_classes - 1}"
        )
    return np.array(values, dtype=np.int64)


def read_cifar100_batch(
    path: Path, labels: Literal["fine", "coarse"] = "fine"
) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of one CIFAR-100 batch file (``train`` or ``test``), read without
    running code from it: images uint8 ``(n, 3, 32, 32)`` (red, green, blue planes; read-only, a
    view of the file's bytes), labels int64 ``(n,)`` in ``0..99`` (``fine``) or ``0..19`` (``coarse``)."""
    path = Path(path)
    entries = _entries(_unpickle(path), path)
    key = LABEL_KEYS[labels]
    images = _images(_entry(entries, "data", path), path)
    targets = _labels(_entry(entries, key, path), key, NUM_CLASSES[labels], path)
    if len(targets) != len(images):
        raise DataError(
            f"{path}: {len(targets)} {labels} labels but {len(images)} images in 'data'; "
            "expected one label per image"
        )
    return images, targets


def read_cifar100(
    directory: Path, origin: str = "data.path", labels: Literal["fine", "coarse"] = "fine"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The raw parts of the data set in ``directory``: ``{"train": (images, labels), "test": …}``
    (:func:`read_cifar100_batch`)."""
    return {
        part: read_cifar100_batch(path, labels) for part, path in cifar100_files(directory, origin).items()
    }


# --------------------------------------------------------------------------- the data source


@DATASETS.register_factory(
    "cifar100",
    "CIFAR-100 32×32 colour images (50k train / 10k test, 100 or 20 classes) from the python pickles",
)
def load_cifar100(spec: CIFAR100Spec) -> DataBundle:
    """Read CIFAR-100 from the folder ``spec`` names and split it (:class:`CIFAR100Spec`)."""
    directory, origin = cifar100_directory(spec.path)
    parts = read_cifar100(directory, origin, spec.labels)
    train = image_split("cifar100", *parts["train"], spec.train_samples, spec.split_seed, "train", directory)
    test = image_split("cifar100", *parts["test"], spec.test_samples, spec.split_seed, "test", directory)
    return _finish("cifar100", train, test, spec, num_classes=NUM_CLASSES[spec.labels], source=str(directory))
