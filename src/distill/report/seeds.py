"""Aggregate finished runs (typically one recipe over several seeds) into mean ± std."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from rich.table import Table

from distill.errors import RunDirectoryError
from distill.files import read_json_object
from distill.report.study import mean_std


def read_summary(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise RunDirectoryError(f"{run_dir}: no summary.json (the run is missing or unfinished)")
    summary = read_json_object(path, "summary", RunDirectoryError)
    _check_summary(summary, path)
    return summary


#: the fields every row of ``results`` has, and their JSON types
_RESULT_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "role": (str,),
    "method": (str,),
    "test_accuracy": (int, float),
    "seconds": (int, float),
}


def _check_summary(summary: dict[str, Any], path: Path) -> None:
    """``summary`` must have the form a finished run writes: a ``recipe`` name and a
    ``results`` list of rows, each with the fields of :data:`_RESULT_FIELDS`."""
    if not isinstance(summary.get("recipe"), str):
        raise RunDirectoryError(f"{path}: corrupt summary: 'recipe' must be the recipe's name (a string)")
    results = summary.get("results")
    if "results" not in summary:
        raise RunDirectoryError(f"{path}: corrupt summary: no 'results' list of model results")
    if not isinstance(results, list):
        raise RunDirectoryError(
            f"{path}: corrupt summary: 'results' must be a list of model results, "
            f"got {type(results).__name__}"
        )
    for index, row in enumerate(results):
        if not isinstance(row, dict):
            raise RunDirectoryError(
                f"{path}: corrupt summary: results[{index}] must be an object, got {type(row).__name__}"
            )
        for field, kinds in _RESULT_FIELDS.items():
            if field not in row:
                raise RunDirectoryError(f"{path}: corrupt summary: results[{index}] has no '{field}'")
            value = row[field]
            if not isinstance(value, kinds) or isinstance(value, bool):
                wanted = "a string" if kinds == (str,) else "a number"
                raise RunDirectoryError(
                    f"{path}: corrupt summary: results[{index}].{field} must be {wanted}, got {value!r}"
                )


def aggregate_runs(run_dirs: list[Path]) -> dict[str, Any]:
    """Per model name: test accuracies of every run, their mean and sample standard deviation
    (0.0 in the JSON for a model of a single run, which has none; the table says "1 seed")."""
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
        entry["mean"], entry["std"] = mean_std(values)
        entry["runs"] = len(values)
    return {"recipes": sorted(recipes), "runs": [str(path) for path in run_dirs], "models": models}


def percent_spread(mean: float, std: float, runs: int) -> str:
    """``"91.20 ± 0.35"`` in percent; one run has no spread: ``"91.20 (1 seed)"``."""
    if runs < 2:
        return f"{100 * mean:.2f} (1 seed)"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def mean_and_std(entry: dict[str, Any]) -> str:
    """An aggregated model's accuracy as :func:`percent_spread` writes it."""
    return percent_spread(entry["mean"], entry["std"], entry["runs"])


def aggregate_table(aggregate: dict[str, Any]) -> Table:
    table = Table(title=f"{', '.join(aggregate['recipes'])} over {len(aggregate['runs'])} runs")
    for column in ("model", "method", "test acc (%) mean ± std", "per run", "median seconds"):
        table.add_column(column, no_wrap=True)
    for name, entry in aggregate["models"].items():
        table.add_row(
            name,
            entry["method"],
            mean_and_std(entry),
            " ".join(f"{100 * value:.1f}" for value in entry["test_accuracy"]),
            f"{statistics.median(entry['seconds']):.1f}",
        )
    return table
