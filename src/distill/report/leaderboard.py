"""The leaderboard of a comparison: every reported model, mean ± std over seeds, as markdown,
JSON and a PNG chart (``leaderboard.md``, ``leaderboard.json``, ``leaderboard.png``)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.files import atomic_write_bytes, atomic_write_json
from distill.report.plots import save_figure
from distill.report.seeds import percent_spread, read_summary


@dataclass
class LeaderboardRow:
    """One reported model (e.g. ``kd``, ``dml/peer1``, ``one/ensemble``) over the seeds."""

    name: str
    method: str
    role: str
    test_accuracy: list[float]
    params: int
    seconds: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.test_accuracy)

    @property
    def std(self) -> float:
        return statistics.stdev(self.test_accuracy) if len(self.test_accuracy) > 1 else 0.0

    @property
    def spread(self) -> str:
        """Mean ± std in percent, or the one seed's value marked as such."""
        return percent_spread(self.mean, self.std, len(self.test_accuracy))

    def as_json(self, baseline: float | None) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "role": self.role,
            "test_accuracy_mean": self.mean,
            "test_accuracy_std": self.std,
            "test_accuracy_per_seed": self.test_accuracy,
            "gain_over_scratch": None if baseline is None else self.mean - baseline,
            "params": self.params,
            "seconds_mean": statistics.fmean(self.seconds),
        }


@dataclass
class Leaderboard:
    """Rows in method order (teacher first), plus what was compared."""

    recipe: str
    methods: tuple[str, ...]
    seeds: list[int]
    student: dict[str, Any]
    data: dict[str, Any]
    rows: list[LeaderboardRow] = field(default_factory=list)

    @property
    def baseline(self) -> float | None:
        """Mean test accuracy of ``scratch`` (the student trained alone), when it was run."""
        return next((row.mean for row in self.rows if row.name == "scratch"), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "methods": list(self.methods),
            "seeds": self.seeds,
            "student": self.student,
            "data": self.data,
            "rows": [row.as_json(self.baseline) for row in self.rows],
        }

    def markdown(self) -> str:
        baseline = self.baseline
        lines = [
            f"# {self.recipe}: {', '.join(self.methods)} over seeds {', '.join(map(str, self.seeds))}",
            "",
            f"Student: `{self.student.get('name')}` {_spec_text(self.student)}; "
            f"data `{self.data.get('name')}`. Test accuracy of each run's reported epoch, "
            "mean ± sample std over seeds.",
            "",
            "| model | method | test acc (%) | vs scratch (pts) | per seed | params | seconds |",
            "|---|---|---:|---:|---|---:|---:|",
        ]
        for row in self.rows:
            gain = "" if baseline is None or row.role == "teacher" else f"{100 * (row.mean - baseline):+.2f}"
            per_seed = " ".join(f"{100 * value:.1f}" for value in row.test_accuracy)
            lines.append(
                f"| {row.name} | {row.method} | {row.spread} | {gain} | "
                f"{per_seed} | {row.params:,} | {statistics.fmean(row.seconds):.1f} |"
            )
        return "\n".join(lines) + "\n"

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(directory / "leaderboard.json", self.as_json())
        atomic_write_bytes(directory / "leaderboard.md", self.markdown().encode())
        self.plot(directory / "leaderboard.png")

    def plot(self, path: Path) -> None:
        """Horizontal bars of mean test accuracy with ±std error bars; scratch as a line."""
        save_figure(self.figure(), path)

    def figure(self) -> Any:
        """The figure of :meth:`plot` (a ``matplotlib.figure.Figure``), unsaved. An accuracy
        axis that does not start at 0 says so: a break mark on it and "axis starts at X %"."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = list(reversed(self.rows))
        figure, axis = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
        positions = range(len(rows))
        colors = ["#999999" if row.role == "teacher" else "#3b75af" for row in rows]
        axis.barh(
            list(positions),
            [100 * row.mean for row in rows],
            xerr=[100 * row.std for row in rows],
            color=colors,
            capsize=3,
        )
        axis.set_yticks(list(positions), [row.name for row in rows])
        if self.baseline is not None:
            axis.axvline(100 * self.baseline, color="#c44e52", linestyle="--", label="scratch")
            axis.legend(loc="lower right")
        low = min(100 * (row.mean - row.std) for row in rows)
        start = max(0.0, 5 * math.floor((low - 5) / 5))  # a multiple of 5, at least 5 points below
        axis.set_xlim(start, 100)
        label = f"test accuracy (%), mean ± std over {len(self.seeds)} seed(s)"
        if start > 0:  # truncated, so bar lengths are not proportional: say so, and mark the break
            label += f"; axis starts at {start:g} %"
            axis.plot(
                [0, 0],
                [0, 1],
                transform=axis.transAxes,
                marker=[(-1, -1), (1, 1)],
                markersize=9,
                linestyle="none",
                color="black",
                clip_on=False,
            )
        axis.set(xlabel=label, title=self.recipe)
        axis.grid(axis="x", alpha=0.3)
        return figure


def _spec_text(spec: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in spec.items() if key != "name")


def build_leaderboard(
    run_dirs: list[Path], recipe: str, methods: tuple[str, ...], student: Any
) -> Leaderboard:
    """Aggregate the finished run directories of a comparison (one per seed)."""
    rows: dict[str, LeaderboardRow] = {}
    seeds, data = [], {}
    for run_dir in run_dirs:
        summary = read_summary(run_dir)
        seeds.append(summary["seed"])
        data = summary["data"]
        for result in summary["results"]:
            row = rows.setdefault(
                result["name"],
                LeaderboardRow(result["name"], result["method"], result["role"], [], result["params"], []),
            )
            row.test_accuracy.append(result["test_accuracy"])
            row.seconds.append(result["seconds"])
    return Leaderboard(recipe, methods, seeds, student.model_dump(mode="json"), data, list(rows.values()))


@dataclass
class SweepBoard:
    """Leaderboards of one comparison repeated over the values of one recipe field."""

    key: str
    values: list[str]
    boards: list[Leaderboard]

    def models(self) -> list[str]:
        names: dict[str, None] = {}
        for board in self.boards:
            names.update((row.name, None) for row in board.rows)
        return list(names)

    def cell(self, board: Leaderboard, model: str) -> LeaderboardRow | None:
        return next((row for row in board.rows if row.name == model), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "values": self.values,
            "models": {
                model: [
                    None if (row := self.cell(board, model)) is None else row.as_json(board.baseline)
                    for board in self.boards
                ]
                for model in self.models()
            },
        }

    def markdown(self) -> str:
        first = self.boards[0]
        lines = [
            f"# {first.recipe}: test accuracy (%) as `{self.key}` varies",
            "",
            f"Mean ± std over seeds {', '.join(map(str, first.seeds))}.",
            "",
            "| model | " + " | ".join(f"{self.key}={value}" for value in self.values) + " |",
            "|---|" + "---:|" * len(self.values),
        ]
        for model in self.models():
            cells = []
            for board in self.boards:
                row = self.cell(board, model)
                cells.append("" if row is None else row.spread)
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def write(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(directory / "sweep.json", self.as_json())
        atomic_write_bytes(directory / "sweep.md", self.markdown().encode())
        self.plot(directory / "sweep.png")

    def plot(self, path: Path) -> None:
        """Test accuracy of every model against the swept value, with ±std bars."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(7, 4.5))
        positions = list(range(len(self.values)))
        for model in self.models():
            rows = [self.cell(board, model) for board in self.boards]
            points = [(x, row) for x, row in zip(positions, rows, strict=True) if row is not None]
            style = "--" if any(row.role == "teacher" for _, row in points) else "-"
            axis.errorbar(
                [x for x, _ in points],
                [100 * row.mean for _, row in points],
                yerr=[100 * row.std for _, row in points],
                label=model,
                linestyle=style,
                marker="o",
                capsize=3,
            )
        axis.set_xticks(positions, self.values)
        axis.set(xlabel=self.key, ylabel="test accuracy (%)", title=self.boards[0].recipe)
        axis.grid(alpha=0.3)
        axis.legend()
        save_figure(figure, path)
