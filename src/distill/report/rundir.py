"""Run directories: the resolved recipe, metrics, checkpoints, summary and plots of one run.

Layout::

    RUN/recipe.yaml        the resolved recipe (defaults filled in, overrides applied)
    RUN/metrics.jsonl      one JSON line per epoch per model
    RUN/<model>/last.*     checkpoints (safetensors + JSON metadata), best.* when selecting
    RUN/<model>/result.json  written when that model has finished
    RUN/<model>/<member>/    the same for each further model a method reports (DML peers, ...)
    RUN/summary.json       written when the whole run has finished
    RUN/curves.png         learning curves

Under data parallelism (``torchrun``) only rank 0 writes: the writing methods return at once
on other ranks, and :meth:`RunDirectory.open` is decided by rank 0 alone, its outcome shared.

While a run or a resume writes the directory it holds ``RUN/.lock`` (see
:class:`~distill.files.DirectoryLock`): a second ``--resume`` of a live run is refused instead
of interleaving its records with the first one's. Opening also removes the temporaries that
interrupted atomic writes left behind, and a resume drops a last ``metrics.jsonl`` line that an
interruption cut short.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import yaml

from distill.engine import distributed
from distill.errors import DistillError, RunDirectoryError
from distill.files import (
    DirectoryLock,
    atomic_write_bytes,
    atomic_write_json,
    make_directory,
    remove_stale_temporaries,
    storage_error,
)

LOG = logging.getLogger("distill")


def default_run_dir(recipe_name: str, root: Path = Path("runs")) -> Path:
    """``runs/<recipe>-<YYYYmmdd-HHMMSS>`` (a new directory for every run)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = root / f"{recipe_name}-{stamp}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = root / f"{recipe_name}-{stamp}-{suffix}"
    return candidate


def latest_run_dir(recipe_name: str, root: Path = Path("runs")) -> Path:
    """The most recently started run of ``recipe_name`` under ``root`` (for ``--resume``)."""
    candidates = sorted(
        (path for path in root.glob(f"{recipe_name}-*") if (path / "recipe.yaml").exists()),
        key=lambda path: path.stat().st_mtime,
    )
    if not candidates:
        raise RunDirectoryError(
            f"--resume: no earlier run of '{recipe_name}' under {root}/; pass --output-dir"
        )
    return candidates[-1]


def recipe_differences(there: Any, now: Any, limit: int = 3) -> list[str]:
    """Where two resolved recipes differ, first differences first: ``"train.epochs (3 there, 4
    now)"``; at most ``limit`` entries, then ``"... N more"``."""
    found: list[str] = []
    _collect_differences(there, now, "", found)
    if not found:
        return ["(an unreadable difference)"]
    if len(found) > limit:
        return [*found[:limit], f"and {len(found) - limit} more"]
    return found


def _collect_differences(there: Any, now: Any, path: str, found: list[str]) -> None:
    if isinstance(there, dict) and isinstance(now, dict):
        for key in [*there, *(key for key in now if key not in there)]:
            child = f"{path}.{key}" if path else str(key)
            _collect_differences(there.get(key, _ABSENT), now.get(key, _ABSENT), child, found)
    elif isinstance(there, list) and isinstance(now, list) and len(there) == len(now):
        for index, (old, new) in enumerate(zip(there, now, strict=True)):
            _collect_differences(old, new, f"{path}[{index}]", found)
    elif there != now:
        found.append(f"{path or '(the whole recipe)'} ({_shown(there)} there, {_shown(now)} now)")


_ABSENT = object()


def _shown(value: Any) -> str:
    if value is _ABSENT:
        return "absent"
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else f"{text[:57]}..."


class RunDirectory:
    """Owns the files of one run; refuses to overwrite a run unless asked to resume it.

    Every process of a data-parallel run may hold one; only rank 0's writes anything.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = DirectoryLock(self.path)

    @property
    def recipe_path(self) -> Path:
        return self.path / "recipe.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def model_dir(self, model_name: str) -> Path:
        return self.path / model_name

    def open(self, resolved_recipe: dict[str, Any], resume: bool) -> None:
        """Create the directory for a new run, or check that ``resume`` continues the same one.

        Under data parallelism rank 0 checks and creates; every rank gets its outcome (returns,
        or raises the same :class:`~distill.errors.RunDirectoryError`), so no rank sees the
        directory half-made and all of them stop together.
        """
        distributed.on_main_process(lambda: self._open(resolved_recipe, resume))

    def _open(self, resolved_recipe: dict[str, Any], resume: bool) -> None:
        if resume and not self.recipe_path.exists():
            raise RunDirectoryError(f"--resume: {self.path} holds no run to resume")
        if not resume and not self.recipe_path.exists() and self._holds_other_files():
            raise RunDirectoryError(f"{self.path} exists and is not empty; choose another --output-dir")
        make_directory(self.path)
        self.lock.acquire("run")
        try:
            self._check_or_create(resolved_recipe, resume)
        except BaseException:
            self.lock.release()
            raise

    def _check_or_create(self, resolved_recipe: dict[str, Any], resume: bool) -> None:
        """Under the lock: refuse to overwrite, check a resume continues the same recipe, tidy
        what an interruption left, or write the new run's recipe."""
        if self.recipe_path.exists():
            if not resume:
                if self.summary_path.exists():
                    raise RunDirectoryError(
                        f"{self.path} already holds a finished run; choose another --output-dir "
                        "(nothing was overwritten)"
                    )
                raise RunDirectoryError(
                    f"{self.path} already holds an unfinished run; pass --resume to continue it "
                    "or choose another --output-dir (nothing was overwritten)"
                )
            if not self.holds_recipe(resolved_recipe):
                where = ", ".join(recipe_differences(self._stored_recipe(), self._as_stored(resolved_recipe)))
                raise RunDirectoryError(
                    f"--resume: the recipe differs from the one in {self.recipe_path} at {where}; a "
                    "resumed run must use the same recipe and overrides"
                )
            for path in remove_stale_temporaries(self.path):
                LOG.info("removed %s, left by an interrupted write", path)
            self._drop_cut_metrics_line()
            return
        text = yaml.safe_dump(resolved_recipe, sort_keys=False)
        atomic_write_bytes(self.recipe_path, text.encode())

    def _holds_other_files(self) -> bool:
        """Whether the directory exists with anything in it but a lock file."""
        return self.path.is_dir() and any(p.name != DirectoryLock.NAME for p in self.path.iterdir())

    def close(self) -> None:
        """Release the run's lock (the run, or this process's part of it, has ended)."""
        self.lock.release()

    def holds_recipe(self, resolved_recipe: dict[str, Any]) -> bool:
        """Whether the directory's ``recipe.yaml`` is ``resolved_recipe`` (``False`` if absent).

        A recipe written before a field was added to the schema lacks that field; it is validated
        again (filling the field's default) before it is called different.
        """
        if not self.recipe_path.exists():
            return False
        stored, wanted = self._stored_recipe(), self._as_stored(resolved_recipe)
        if stored == wanted:
            return True
        from distill.config import validate_recipe  # here: `distill summarize` reads runs without torch

        try:
            current = validate_recipe(stored, str(self.recipe_path)).model_dump(mode="json")
        except DistillError:
            return False
        return bool(self._as_stored(current) == wanted)

    def _stored_recipe(self) -> Any:
        return yaml.safe_load(self.recipe_path.read_text())

    @staticmethod
    def _as_stored(resolved_recipe: dict[str, Any]) -> Any:
        """``resolved_recipe`` as ``recipe.yaml`` would hold it (YAML round trip)."""
        return yaml.safe_load(yaml.safe_dump(resolved_recipe, sort_keys=False))

    # ---------------------------------------------------------------- metrics
    def read_metrics(self) -> list[dict[str, Any]]:
        """The epoch records; a last line that an interruption cut short is left out, a damaged
        line before it is an error naming the line."""
        records, _ = self._read_metrics()
        return records

    def _read_metrics(self) -> tuple[list[dict[str, Any]], bool]:
        """The records, and whether the last line was cut short (and left out)."""
        if not self.metrics_path.exists():
            return [], False
        try:
            lines = self.metrics_path.read_bytes().decode().splitlines()
        except UnicodeDecodeError:
            raise RunDirectoryError(f"{self.metrics_path}: not UTF-8 text; the file is damaged") from None
        except OSError as error:
            raise storage_error(error, "read", self.metrics_path) from None
        records: list[dict[str, Any]] = []
        for number, line in enumerate(lines, start=1):
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):
                    return records, True
                raise RunDirectoryError(
                    f"{self.metrics_path}: line {number} is not a JSON record; the file is damaged"
                ) from None
            if not isinstance(record, dict) or not {"model", "epoch"} <= set(record):
                raise RunDirectoryError(
                    f"{self.metrics_path}: line {number} is not an epoch record (a JSON object "
                    "with 'model' and 'epoch')"
                )
            records.append(record)
        return records, False

    def _drop_cut_metrics_line(self) -> None:
        """Rewrite ``metrics.jsonl`` without a last line an interruption cut short."""
        records, cut = self._read_metrics()
        if cut:
            LOG.info("%s: dropped a last line cut short by an interruption", self.metrics_path)
            self._write_metrics(records)

    def _write_metrics(self, records: list[dict[str, Any]]) -> None:
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(r) + "\n" for r in records).encode())

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one epoch record to ``metrics.jsonl`` (rank 0 only)."""
        if not distributed.is_main_process():
            return
        try:
            with self.metrics_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as error:
            raise storage_error(error, "write", self.metrics_path) from None

    def keep_metrics_until(self, model_name: str, epoch: int) -> None:
        """Forget the records after ``epoch`` of ``model_name`` and of its evaluated members
        (``model_name/...``), written before an interruption; rank 0 only."""
        if not distributed.is_main_process():
            return

        def belongs(name: str) -> bool:
            return name == model_name or name.startswith(f"{model_name}/")

        records = [
            record
            for record in self.read_metrics()
            if not belongs(record["model"]) or record["epoch"] <= epoch
        ]
        self._write_metrics(records)

    # ---------------------------------------------------------------- results
    def result_path(self, model_name: str) -> Path:
        return self.model_dir(model_name) / "result.json"

    def read_result(self, model_name: str) -> dict[str, Any] | None:
        path = self.result_path(model_name)
        return json.loads(path.read_text()) if path.exists() else None

    def write_result(self, model_name: str, result: dict[str, Any]) -> None:
        """Write ``<model>/result.json`` (rank 0 only)."""
        if distributed.is_main_process():
            atomic_write_json(self.result_path(model_name), result)

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        """Write ``RUN/<name>`` (rank 0 only)."""
        if distributed.is_main_process():
            atomic_write_json(self.path / name, payload)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write ``summary.json`` (rank 0 only)."""
        if distributed.is_main_process():
            atomic_write_json(self.summary_path, summary)
