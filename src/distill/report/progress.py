"""Progress display: a live bar on a terminal, plain log lines otherwise (CI logs, ``| tee``).

On a terminal each model gets a bar (epochs done, validation accuracy, time elapsed and an
estimate of the time remaining); after ``--resume`` it starts at the epochs already done.

When stdout is not a terminal, each model logs a line for its first and last epoch (and the
first epoch after a resume), and in between at most one line every :data:`LOG_INTERVAL` seconds
of wall time, so that a run of hundreds of short epochs stays readable::

    teacher epoch 1/60: train loss 2.12, val acc 41.3 %, 0.3 s
    teacher epoch 12/60: train loss 0.41, val acc 91.2 %, 3.1 s
    teacher epoch 60/60: train loss 0.12, val acc 95.0 %, test acc 94.6 %, 15.2 s

The seconds are the model's training time so far (including epochs trained before a resume).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: Seconds of wall time between two log lines of one model when stdout is not a terminal.
LOG_INTERVAL = 2.0


def epoch_line(name: str, record: dict[str, Any], epochs: int) -> str:
    """One epoch as a log line: ``teacher epoch 12/60: train loss 0.41, val acc 91.2 %, 3.1 s``;
    the last epoch adds the test accuracy."""
    parts = []
    if "train_loss" in record:
        parts.append(f"train loss {record['train_loss']:.3g}")
    if "val_accuracy" in record:
        parts.append(f"val acc {100 * record['val_accuracy']:.1f} %")
    if "test_accuracy" in record and ("val_accuracy" not in record or record["epoch"] == epochs):
        parts.append(f"test acc {100 * record['test_accuracy']:.1f} %")
    if "seconds" in record:
        parts.append(f"{record['seconds']:.1f} s")
    return f"{record.get('model', name)} epoch {record['epoch']}/{epochs}: " + ", ".join(parts)


class RunProgress:
    """Context manager receiving the runner's callbacks (``model_start``, ``epoch_end``)."""

    def __init__(
        self,
        console: Console,
        enabled: bool = True,
        log_interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.enabled = enabled
        self.live = enabled and console.is_terminal
        self.log_interval = log_interval
        self.clock = clock
        self._progress: Progress | None = None
        self._task: Any = None
        self._first_epoch: dict[str, int] = {}  # per runner model: the first epoch trained now
        self._logged: dict[str, float] = {}  # per evaluated model: when its last line was printed

    def __enter__(self) -> RunProgress:
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def model_start(self, name: str, epochs: int, done: int = 0) -> None:
        """``done``: the epochs already trained (a resumed model continues from there)."""
        self._first_epoch[name] = done + 1
        if self._progress is not None:
            self._task = self._progress.add_task(name, total=epochs, completed=done, status="")
        elif self.enabled and done:
            self.console.print(f"{name}: resuming after epoch {done}/{epochs}", highlight=False, markup=False)

    def epoch_end(self, name: str, record: dict[str, Any], epochs: int) -> None:
        accuracy = record.get("val_accuracy", record.get("test_accuracy", 0.0))
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=record["epoch"], status=f"val {100 * accuracy:.1f}%")
            return
        if not self.enabled:
            return
        model = record.get("model", name)
        now = self.clock()
        last = self._logged.get(model)
        due = (
            record["epoch"] in (self._first_epoch.get(name, 1), epochs)
            or last is None
            or now - last >= self.log_interval
        )
        if due:
            self._logged[model] = now
            self.console.print(epoch_line(name, record, epochs), highlight=False, markup=False)
