"""Reading user ``.npz`` files: every way a file can fail to be one becomes a :class:`DataError`.

An ``.npz`` is the zip archive of ``.npy`` arrays that ``np.savez`` writes. A bare ``.npy``,
a truncated or damaged archive, random bytes, or an archive of object arrays (which only
unpickling could load; distill never unpickles a data file) are each refused with a message
naming the file, the array and what was expected.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distill.errors import DataError

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or an empty zip

#: what can escape from reading a damaged archive or one of its members
_DAMAGE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def read_npz(path: Path, keys: Sequence[str], expected: str) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the ``.npz`` archive ``path``, loaded without pickle.

    ``expected`` says what the archive should hold, for messages: e.g.
    ``"arrays 'x' (inputs) and 'y' (labels)"``.
    """
    try:
        with Path(path).open("rb") as handle:
            head = handle.read(len(NPY_MAGIC))
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from None
    if head.startswith(NPY_MAGIC):
        raise DataError(
            f"{path}: a single NumPy array (.npy), not an .npz archive; expected an .npz archive "
            f"holding {expected} (as np.savez writes)"
        )
    if not head.startswith(ZIP_MAGICS):
        raise DataError(
            f"{path}: not a readable .npz file: it is not a zip archive of NumPy arrays; "
            f"expected an .npz archive holding {expected} (as np.savez writes)"
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except _DAMAGE as error:
        raise DataError(f"{path}: not a readable .npz file: truncated or damaged archive ({error})") from None
    with archive:
        for key in keys:
            if key not in archive.files:
                held = ", ".join(archive.files) or "nothing"
                raise DataError(f"{path}: no array '{key}'; the file holds: {held}; expected {expected}")
        return {key: _member(archive, path, key) for key in keys}


def _member(archive: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    try:
        value = archive[key]
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise DataError(
                f"{path}: array '{key}' holds Python objects (dtype=object); object arrays are not "
                "loaded (that would mean unpickling, which can run code): save numeric arrays"
            ) from None
        raise DataError(f"{path}: array '{key}' is damaged or not a NumPy array ({error})") from None
    except _DAMAGE as error:
        raise DataError(f"{path}: array '{key}' is damaged or truncated ({error})") from None
    if not isinstance(value, np.ndarray):  # a zip member that is not an .npy file
        raise DataError(f"{path}: member '{key}' is not a NumPy array (.npy) file")
    return value
