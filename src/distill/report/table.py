"""The results table printed at the end of a run."""

from __future__ import annotations

from typing import Any

from rich.console import Console, JustifyMethod
from rich.table import Table


def results_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"{summary['recipe']} — test accuracy of the reported epoch")
    columns: list[tuple[str, JustifyMethod]] = [
        ("model", "left"),
        ("role", "left"),
        ("method", "left"),
        ("test acc (%)", "right"),
        ("params", "right"),
        ("epochs", "right"),
        ("seconds", "right"),
    ]
    for column, justify in columns:
        table.add_column(column, justify=justify, no_wrap=True)
    for row in summary["results"]:
        table.add_row(
            row["name"],
            row["role"],
            row["method"],
            f"{100 * row['test_accuracy']:.2f}",
            f"{row['params']:,}",
            str(row["epochs"]),
            f"{row['seconds']:.1f}",
        )
    return table


def print_results(summary: dict[str, Any], console: Console) -> None:
    console.print(results_table(summary))
