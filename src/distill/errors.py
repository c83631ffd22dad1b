"""Errors that reach the user as one clear message and exit status 2, never as a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DistillError(Exception):
    """Base class of every error caused by the user's input (recipe, data, checkpoint, CLI).

    The CLI prints ``str(error)`` and exits with status 2; library callers can catch it.
    """


class RecipeError(DistillError):
    """A recipe field holds a value that cannot be used; the message names file and field."""


class DataError(DistillError):
    """A data source (built-in or a user file) is missing, malformed or inconsistent."""


class CheckpointError(DistillError):
    """A checkpoint is missing, unreadable, or does not fit the model it is loaded into."""


class RunDirectoryError(DistillError):
    """The run directory would be overwritten, is in use, or cannot be resumed."""


class StorageError(DistillError):
    """The operating system refused a read or write: a read-only or full disk, a missing
    permission, a path through a regular file, a name too long. ``errno`` keeps the reason."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


def unknown_name_message(kind: str, name: str, allowed: Iterable[str]) -> str:
    """Message for an unknown registry name, listing allowed names and a close match if any."""
    allowed = sorted(allowed)
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown {kind} '{name}'{hint}; allowed: {', '.join(allowed)}"
