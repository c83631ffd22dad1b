"""Files on disk: atomic writes, directory creation, stale temporaries and run locks.

Every file ``distill`` writes (recipes, metrics, summaries, checkpoints, resume state, caches'
metadata, generated data, plots) goes through :func:`atomic_file`: a reader sees the old file or
the new one, never half of one. The new file gets the mode the user's umask gives a new file
(``0o666 & ~umask``), and the directory entry is synced after the rename, so a power cut cannot
lose the rename of a file whose bytes were synced.

A fault of the operating system — a read-only or full disk, a missing permission, a path through
a regular file, a name too long — becomes a :class:`~distill.errors.StorageError` that names the
path and the reason, never a traceback.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from distill.errors import DistillError, RunDirectoryError, StorageError

try:  # POSIX; on other systems runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

#: What :func:`tempfile.NamedTemporaryFile` names a temporary of ``NAME`` with our prefix:
#: ``.NAME.`` and eight characters of ``[a-z0-9_]``.
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}$")


def storage_error(error: OSError, action: str, path: Path | str) -> StorageError:
    """``"cannot write PATH: No space left on device"``, with the errno kept for callers."""
    reason = error.strerror or str(error)
    if error.errno == errno.ENAMETOOLONG:
        reason += " (a file or folder name is longer than the file system allows)"
    elif error.errno in (errno.ENOTDIR, errno.EEXIST) and action in ("write", "create"):
        reason = "a part of the path is a regular file, not a folder"
    return StorageError(f"cannot {action} {path}: {reason}", error.errno)


@functools.cache
def new_file_mode() -> int:
    """The mode a new file gets under this process's umask (read once; ``os.umask`` can only be
    read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def make_directory(path: Path) -> None:
    """``mkdir -p path``, with an OS fault as a :class:`StorageError`."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise storage_error(error, "create", path) from None


def sync_directory(path: Path) -> None:
    """Flush ``path``'s directory entries (a rename in it) to disk, where the OS allows it."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems cannot sync a directory; the rename itself has happened
        pass
    finally:
        os.close(descriptor)


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A binary file to write; on success it is synced and renamed over ``path`` in one step,
    on error it is removed and ``path`` is left untouched."""
    path = Path(path)
    make_directory(path.parent)
    try:
        # entered just below; created here so that an OS fault creating it has its own message
        handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False)  # noqa: SIM115
    except OSError as error:
        raise storage_error(error, "write", path) from None
    with handle:
        try:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), new_file_mode())
            os.fsync(handle.fileno())
        except BaseException as error:
            handle.close()
            Path(handle.name).unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise storage_error(error, "write", path) from None
            raise
    try:
        os.replace(handle.name, path)
    except OSError as error:
        Path(handle.name).unlink(missing_ok=True)
        raise storage_error(error, "write", path) from None
    sync_directory(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_file(path) as handle:
        handle.write(data)


def atomic_write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2) + "\n").encode())


def read_json_object(path: Path, what: str, error: type[DistillError]) -> dict[str, Any]:
    """The JSON object stored in ``path``; a file that cannot be read, is not UTF-8 JSON, or
    holds anything but an object raises ``error`` naming the file and ``what`` it should hold
    (e.g. ``"checkpoint metadata"``)."""
    try:
        payload = json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as reason:
        raise error(f"{path}: cannot read {what} ({reason})") from None
    except UnicodeDecodeError as reason:
        raise error(
            f"{path}: corrupt {what} (not UTF-8 text: byte {reason.start}); expected a JSON object"
        ) from None
    except json.JSONDecodeError as reason:
        raise error(f"{path}: corrupt {what} ({reason})") from None
    if not isinstance(payload, dict):
        raise error(f"{path}: corrupt {what}: expected a JSON object, got {type(payload).__name__}")
    return payload


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporaries that interrupted atomic writes left under ``directory`` (at any
    depth) and return them. Call it only while no process writes there (under a run's lock)."""
    removed = []
    for path in Path(directory).rglob(".*"):
        if _TEMPORARY.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class DirectoryLock:
    """An exclusive lock on a directory, held while one process writes it.

    It is an ``flock`` on ``DIRECTORY/.lock`` (which records the holder's process id), so the
    operating system releases it when the holder exits, however it exits: a run killed with
    ``kill -9`` leaves no lock to clear by hand.
    """

    NAME = ".lock"

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / self.NAME
        self._descriptor: int | None = None

    def acquire(self, what: str, wait: bool = False) -> None:
        """Take the lock, or raise :class:`RunDirectoryError` naming the process that holds it;
        ``what`` names the directory's use in that message (e.g. "run"). With ``wait`` the call
        blocks until the holder lets go instead (for short critical sections, e.g. a cache fill)."""
        if fcntl is None:  # pragma: no cover
            return
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, new_file_mode())
        except OSError as error:
            raise storage_error(error, "write", self.path) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise RunDirectoryError(
                f"{self.path.parent} is in use: another distill process (pid {holder}) is writing "
                f"this {what}; wait for it to finish, or choose another --output-dir"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        self._descriptor = descriptor

    def release(self) -> None:
        """Let go of the lock (closing the descriptor releases the ``flock``)."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None
