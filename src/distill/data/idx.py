"""Reading IDX files, the format of MNIST and Fashion-MNIST: every fault becomes a :class:`DataError`.

An IDX file is a big-endian header followed by the raw array: a 4-byte magic number
``0x00 0x00 <type> <ndim>``, then ``ndim`` 4-byte sizes, then ``prod(sizes)`` elements. distill
reads two kinds, both of unsigned bytes:

* images, magic ``0x00000803``: ``n × rows × cols`` pixels (``*-images-idx3-ubyte``);
* labels, magic ``0x00000801``: ``n`` class ids (``*-labels-idx1-ubyte``).

A file may be plain or gzip-compressed (``.gz``, as distributed); compression is recognised
by the file's first bytes, so a ``.gz`` file a browser already unpacked still reads. A wrong
magic number, a file shorter or longer than its header says, an image/label count mismatch, a
label out of range or an unreadable file is refused with a one-line message naming the file
and what was expected.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np

from distill.errors import DataError

#: magic number of an IDX file of uint8 images, ``n × rows × cols``
IMAGES_MAGIC = 0x00000803
#: magic number of an IDX file of uint8 labels, ``n``
LABELS_MAGIC = 0x00000801

GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 22  # read in 4 MiB pieces: a header that lies about its size never allocates it

_WHAT = {
    IMAGES_MAGIC: "an IDX image file (magic 0x00000803: uint8 images, n×rows×cols)",
    LABELS_MAGIC: "an IDX label file (magic 0x00000801: uint8 labels, n)",
}


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def _read_at_most(handle: _Readable, limit: int) -> bytearray:
    """Up to ``limit`` bytes (fewer at the end of the file), read in bounded pieces; a
    ``bytearray``, so the arrays made from it are writable."""
    pieces: list[bytes] = []
    remaining = limit
    while remaining > 0:
        piece = handle.read(min(remaining, _CHUNK))
        if not piece:
            break
        pieces.append(piece)
        remaining -= len(piece)
    return bytearray().join(pieces)


def _read_contents(handle: _Readable, path: Path, magic: int) -> tuple[tuple[int, ...], bytearray]:
    """The sizes the header of ``handle`` declares, and at most one byte more data than they need."""
    ndim = magic & 0xFF
    expected = _WHAT[magic]
    header = _read_at_most(handle, 4 + 4 * ndim)
    if len(header) < 4:
        raise DataError(f"{path}: {len(header)} bytes, too short to be {expected}")
    found = int.from_bytes(header[:4], "big")
    if found != magic:
        other = f" ({_WHAT[found]})" if found in _WHAT else ""
        raise DataError(f"{path}: magic number 0x{found:08x}{other}; expected {expected}")
    if len(header) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated header ({len(header)} bytes); expected {expected}")
    dims = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return dims, _read_at_most(handle, math.prod(dims) + 1)  # one byte more shows trailing data


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of the IDX file ``path``, whose magic number must be ``magic``."""
    path = Path(path)
    expected = _WHAT[magic]
    try:
        with path.open("rb") as raw:
            compressed = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
            raw.seek(0)
            if compressed:
                with gzip.GzipFile(fileobj=raw, mode="rb") as unpacked:
                    dims, body = _read_contents(unpacked, path, magic)
            else:
                dims, body = _read_contents(raw, path, magic)
    except gzip.BadGzipFile as error:
        raise DataError(f"{path}: not a valid gzip file ({error}); expected {expected}") from None
    except (EOFError, zlib.error) as error:
        reason = "the compressed stream ends early" if isinstance(error, EOFError) else str(error)
        raise DataError(f"{path}: damaged gzip file ({reason}); expected {expected}") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from None
    size = math.prod(dims)
    if len(body) != size:
        state = "truncated" if len(body) < size else "longer than its header says"
        shown = f"{len(body)}" if len(body) <= size else f"more than {size}"
        raise DataError(
            f"{path}: {state}: the header declares {'×'.join(map(str, dims))} = {size} bytes of data, "
            f"the file holds {shown}; expected {expected}"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def read_idx_images(path: Path) -> np.ndarray:
    """The images of the IDX file ``path`` (plain or ``.gz``): uint8, ``(n, rows, cols)``."""
    return _read_idx(Path(path), IMAGES_MAGIC)


def read_idx_labels(path: Path, num_classes: int | None = 10) -> np.ndarray:
    """The labels of the IDX file ``path`` (plain or ``.gz``): uint8, ``(n,)``; each must lie in
    ``0..num_classes-1`` (not checked when ``num_classes`` is ``None``)."""
    labels = _read_idx(Path(path), LABELS_MAGIC)
    if num_classes is not None and labels.size:
        bad = np.flatnonzero(labels >= num_classes)
        if bad.size:
            first = int(bad[0])
            raise DataError(
                f"{path}: label {int(labels[first])} at index {first} is out of range "
                f"({bad.size} out-of-range labels in all); expected class ids 0..{num_classes - 1}"
            )
    return labels


def read_idx_pair(
    images_path: Path, labels_path: Path, num_classes: int | None = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, rows, cols)`` and labels ``(n,)`` (both uint8) from a pair of IDX files,
    which must hold as many labels as images."""
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path, num_classes)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{labels_path}: {labels.shape[0]} labels but {images_path} holds {images.shape[0]} "
            "images; expected one label per image"
        )
    return images, labels
