"""The results table printed at the end of a run."""

from __future__ import annotations

from typing import Any

from rich.console import Console, JustifyMethod
from rich.table import Table


def _unlabeled_accuracy(row: dict[str, Any]) -> float | None:
    """A model's accuracy on the unlabeled pool U (teacher and students of pool runs)."""
    extras = row.get("extras") or {}
    value = extras.get("unlabeled_accuracy", extras.get("student_unlabeled_accuracy"))
    return float(value) if value is not None else None


def results_table(summary: dict[str, Any]) -> Table:
    """One row per model; runs with an unlabeled pool add each model's accuracy on it."""
    table = Table(title=f"{summary['recipe']} — test accuracy of the reported epoch")
    pool = any(_unlabeled_accuracy(row) is not None for row in summary["results"])
    columns: list[tuple[str, JustifyMethod]] = [
        ("model", "left"),
        ("role", "left"),
        ("method", "left"),
        ("test acc (%)", "right"),
        ("params", "right"),
        ("epochs", "right"),
        ("seconds", "right"),
    ]
    if pool:
        columns.insert(4, ("U acc (%)", "right"))
    for column, justify in columns:
        table.add_column(column, justify=justify, no_wrap=True)
    for row in summary["results"]:
        cells = [
            row["name"],
            row["role"],
            row["method"],
            f"{100 * row['test_accuracy']:.2f}",
            f"{row['params']:,}",
            str(row["epochs"]),
            f"{row['seconds']:.1f}",
        ]
        if pool:
            unlabeled = _unlabeled_accuracy(row)
            cells.insert(4, "—" if unlabeled is None else f"{100 * unlabeled:.2f}")
        table.add_row(*cells)
    return table


def print_results(summary: dict[str, Any], console: Console) -> None:
    """The results table, then what a method reports besides accuracy (SLaM's α calibration)."""
    console.print(results_table(summary))
    for row in summary["results"]:
        error = (row.get("extras") or {}).get("alpha_calibration_error")
        if error is not None:
            console.print(
                f"{row['name']}: α(x)'s calibration error against the teacher's real correctness "
                f"on U: {error:.3f}",
                highlight=False,
            )
