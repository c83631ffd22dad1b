"""Aggregate finished runs (typically one recipe over several seeds) into mean ± std."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from rich.table import Table

from distill.errors import RunDirectoryError


def read_summary(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise RunDirectoryError(f"{run_dir}: no summary.json (the run is missing or unfinished)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RunDirectoryError(f"{path}: corrupt summary ({error})") from None


def aggregate_runs(run_dirs: list[Path]) -> dict[str, Any]:
    """Per model name: test accuracies of every run, their mean and sample standard deviation."""
    models: dict[str, dict[str, Any]] = {}
    recipes = set()
    for run_dir in run_dirs:
        summary = read_summary(run_dir)
        recipes.add(summary["recipe"])
        for row in summary["results"]:
            entry = models.setdefault(
                row["name"],
                {"role": row["role"], "method": row["method"], "test_accuracy": [], "seconds": []},
            )
            entry["test_accuracy"].append(row["test_accuracy"])
            entry["seconds"].append(row["seconds"])
    for entry in models.values():
        values = entry["test_accuracy"]
        entry["mean"] = statistics.fmean(values)
        entry["std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        entry["runs"] = len(values)
    return {"recipes": sorted(recipes), "runs": [str(path) for path in run_dirs], "models": models}


def aggregate_table(aggregate: dict[str, Any]) -> Table:
    table = Table(title=f"{', '.join(aggregate['recipes'])} over {len(aggregate['runs'])} runs")
    for column in ("model", "method", "test acc (%) mean ± std", "per run", "median seconds"):
        table.add_column(column, no_wrap=True)
    for name, entry in aggregate["models"].items():
        table.add_row(
            name,
            entry["method"],
            f"{100 * entry['mean']:.2f} ± {100 * entry['std']:.2f}",
            " ".join(f"{100 * value:.1f}" for value in entry["test_accuracy"]),
            f"{statistics.median(entry['seconds']):.1f}",
        )
    return table
