"""Plots of a federated run, and the board that compares algorithms across seeds."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from distill.files import atomic_write_bytes, atomic_write_json
from distill.report.plots import save_figure
from distill.report.seeds import percent_spread
from distill.report.study import mean_std


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rounds(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Test accuracy per round per prototype: the merged model (solid) and the plain per-prototype
    average (dashed)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    names = [entry["name"] for entry in records[0]["prototypes"]]
    rounds = [record["round"] for record in records]
    for index, name in enumerate(names):
        merged = [record["prototypes"][index]["merged_accuracy"] for record in records]
        averaged = [record["prototypes"][index]["averaged_accuracy"] for record in records]
        line = axis.plot(rounds, merged, marker="o", markersize=3, label=f"{name}")[0]
        axis.plot(rounds, averaged, linestyle="--", color=line.get_color(), alpha=0.6)
    axis.set(xlabel="round", ylabel="test accuracy (%)", title=f"{title} (dashed: before distillation)")
    axis.grid(alpha=0.3)
    axis.legend()
    save_figure(figure, path)


def plot_board(curves: dict[str, list[list[dict[str, Any]]]], path: Path, title: str) -> None:
    """One panel per prototype: mean merged accuracy per round over seeds, one line per algorithm."""
    plt = _pyplot()
    first = next(iter(curves.values()))[0]
    names = [entry["name"] for entry in first[0]["prototypes"]]
    figure, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    for index, name in enumerate(names):
        axis = axes[0][index]
        for algorithm, runs in curves.items():
            length = min(len(records) for records in runs)
            means = [
                statistics.fmean(records[step]["prototypes"][index]["merged_accuracy"] for records in runs)
                for step in range(length)
            ]
            axis.plot(range(1, length + 1), means, marker="o", markersize=3, label=algorithm)
        axis.set(xlabel="round", ylabel="test accuracy (%)", title=f"{title}: {name}")
        axis.grid(alpha=0.3)
    axes[0][0].legend()
    save_figure(figure, path)


def board_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per algorithm: per prototype, the final merged accuracy's mean and std over seeds."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for summary in results:
        grouped[summary["algorithm"]].append(summary)
    rows = []
    for algorithm, summaries in grouped.items():
        row: dict[str, Any] = {"algorithm": algorithm, "seeds": sorted(s["seed"] for s in summaries)}
        for name in summaries[0]["prototypes"]:
            finals = [s["prototypes"][name]["final_accuracy"] for s in summaries]
            mean, std = mean_std(finals)
            row[name] = {
                "mean": mean,
                "std": std,
                "runs": len(finals),
                "per_seed": finals,
            }
        row["median_seconds"] = statistics.median(s["seconds_rounds"] for s in summaries)
        rows.append(row)
    return rows


def board_markdown(rows: list[dict[str, Any]], title: str) -> str:
    names = [key for key in rows[0] if key not in ("algorithm", "seeds", "median_seconds")]
    header = ["algorithm", *[f"{name} acc (%)" for name in names], "median s/run"]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["algorithm"]]
        cells += [percent_spread(row[n]["mean"] / 100, row[n]["std"] / 100, row[n]["runs"]) for n in names]
        cells.append(f"{row['median_seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({seed for row in rows for seed in row["seeds"]})
    lines += ["", f"Final test accuracy after the last round; mean ± std over seeds {seeds}."]
    return "\n".join(lines) + "\n"


def write_board(
    folder: Path, results: list[dict[str, Any]], curves: dict[str, list[list[dict[str, Any]]]], title: str
) -> list[dict[str, Any]]:
    """``board.json``, ``board.md`` and ``board.png`` in ``folder``; returns the rows."""
    rows = board_rows(results)
    atomic_write_json(folder / "board.json", {"title": title, "rows": rows, "runs": results})
    atomic_write_bytes(folder / "board.md", board_markdown(rows, title).encode())
    plot_board(curves, folder / "board.png", title)
    return rows
