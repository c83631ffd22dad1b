"""What the study commands (``perceive``, ``ground``, ``lm``, ``shift``) share: a seed's run
directory claimed for one recipe, its stored results, and mean ± std over seeds."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from distill.errors import RunDirectoryError
from distill.files import atomic_write_json, read_json_object


def mean_std(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def claim_seed_directory(
    directory: Path, payload: dict[str, Any], what: str, refuse_foreign: bool = False
) -> None:
    """Make ``directory`` the home of one seed of a ``what`` run (e.g. "grounding") whose resolved
    recipe is ``payload``, kept as ``recipe.json``: a directory holding another recipe or seed is
    refused, and with ``refuse_foreign`` so is a non-empty one that holds no such run."""
    stored = directory / "recipe.json"
    if stored.exists():
        try:
            same = json.loads(stored.read_text()) == payload
        except (OSError, ValueError):
            same = False
        if not same:
            raise RunDirectoryError(
                f"{directory} holds a {what} run of a different recipe or seed; choose another "
                "--output-dir (nothing was overwritten)"
            )
    elif refuse_foreign and directory.exists() and any(directory.iterdir()):
        raise RunDirectoryError(
            f"{directory} is not empty and holds no recipe.json of a {what} run; choose another "
            "--output-dir (nothing was overwritten)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stored, payload)


def read_stored_object(path: Path, what: str) -> dict[str, Any]:
    """A run directory's JSON object (e.g. ``results.json``), ``{}`` if absent; an unreadable one
    is a clear error that says to remove it."""
    if not path.exists():
        return {}
    return read_json_object(path, f"{what} (remove it to retrain)", RunDirectoryError)
