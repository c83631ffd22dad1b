"""The leaderboard of a comparison: every reported model, mean ± std over seeds, as markdown,
JSON and a PNG chart (``leaderboard.md``, ``leaderboard.json``, ``leaderboard.png``); the
boards of a sweep over one recipe field (:class:`SweepBoard`), and of a tuned comparison
(:class:`TuneBoard`: each method at the value of one field its validation accuracy picks)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.files import atomic_write_bytes, atomic_write_json
from distill.report.plots import save_figure
from distill.report.seeds import percent_spread, read_summary
from distill.report.study import mean_std


@dataclass
class LeaderboardRow:
    """One reported model (e.g. ``kd``, ``dml/peer1``, ``one/ensemble``) over the seeds, with
    the validation accuracy of each seed's reported epoch where the data has a validation split
    (``None`` where it has none)."""

    name: str
    method: str
    role: str
    test_accuracy: list[float]
    params: int
    seconds: list[float]
    val_accuracy: list[float | None] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.test_accuracy)

    @property
    def val_mean(self) -> float | None:
        """Mean validation accuracy over the seeds; ``None`` unless every seed has one."""
        values = [value for value in self.val_accuracy if value is not None]
        if not values or len(values) != len(self.val_accuracy):
            return None
        return statistics.fmean(values)

    @property
    def val_std(self) -> float | None:
        values = [value for value in self.val_accuracy if value is not None]
        if self.val_mean is None:
            return None
        return mean_std(values)[1]

    @property
    def std(self) -> float:
        return mean_std(self.test_accuracy)[1]

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
            "val_accuracy_mean": self.val_mean,
            "val_accuracy_per_seed": self.val_accuracy,
            "params": self.params,
            "seconds_mean": statistics.fmean(self.seconds),
        }


@dataclass
class Leaderboard:
    """Rows in method order (teacher first), plus what was compared.

    A tuned board (:class:`TuneBoard`) also names the recipe field tuned (``tuned_key``), the
    values tried (``tuned_values``) and, per row, the value its row was taken at (``chosen``)."""

    recipe: str
    methods: tuple[str, ...]
    seeds: list[int]
    student: dict[str, Any]
    data: dict[str, Any]
    rows: list[LeaderboardRow] = field(default_factory=list)
    tuned_key: str | None = None
    tuned_values: list[str] = field(default_factory=list)
    chosen: dict[str, str] = field(default_factory=dict)
    #: published accuracies (%) by row name, with their ``source`` (a recipe's ``reference``)
    reference: dict[str, Any] | None = None

    @property
    def baseline(self) -> float | None:
        """Mean test accuracy of ``scratch`` (the student trained alone), when it was run."""
        return next((row.mean for row in self.rows if row.name == "scratch"), None)

    def as_json(self) -> dict[str, Any]:
        rows = [row.as_json(self.baseline) for row in self.rows]
        tuned: dict[str, Any] = {}
        if self.tuned_key is not None:
            for row in rows:
                row["tuned_value"] = self.chosen.get(row["name"])
            tuned = {"tuned": {"key": self.tuned_key, "values": self.tuned_values, "selected_on": "val"}}
        return {
            "recipe": self.recipe,
            "methods": list(self.methods),
            "seeds": self.seeds,
            "student": self.student,
            "data": self.data,
            **tuned,
            **({"reference": self.reference} if self.reference else {}),
            "rows": rows,
        }

    def markdown(self) -> str:
        baseline = self.baseline
        tuned = self.tuned_key is not None
        what = "Test accuracy of each run's reported epoch, mean ± sample std over seeds."
        header = "| model | method | test acc (%) | vs scratch (pts) | per seed | params | seconds |"
        rule = "|---|---|---:|---:|---|---:|---:|"
        if tuned:
            what = (
                f"Each method at the value of `{self.tuned_key}` (of {', '.join(self.tuned_values)}) "
                "whose runs have the best mean validation accuracy; test accuracy of those runs' "
                "reported epoch, mean ± sample std over seeds. The test split played no part in the "
                "choice (the full grid: `tune.md`)."
            )
            header = header.replace("| method |", f"| method | `{self.tuned_key}` | val acc (%) |", 1)
            rule = "|---|---|---:|---:|" + rule[len("|---|---|") :]
        published = (self.reference or {}).get("accuracy", {})
        if published:
            header = header.replace("| vs scratch (pts) |", "| published (%) | vs scratch (pts) |", 1)
            rule = rule.replace("|---:|---:|---|", "|---:|---:|---:|---|", 1)
            what += f" Published: {self.reference['source']}."  # type: ignore[index]
        lines = [
            f"# {self.recipe}: {', '.join(self.methods)} over seeds {', '.join(map(str, self.seeds))}",
            "",
            f"Student: `{self.student.get('name')}` {_spec_text(self.student)}; "
            f"data `{self.data.get('name')}`. {what}",
            "",
            header,
            rule,
        ]
        for row in self.rows:
            gain = "" if baseline is None or row.role == "teacher" else f"{100 * (row.mean - baseline):+.2f}"
            per_seed = " ".join(f"{100 * value:.1f}" for value in row.test_accuracy)
            chosen = ""
            if tuned:
                chosen = f"{self.chosen.get(row.name, '')} | {_val_spread(row)} | "
            paper = ""
            if published:
                paper = f"{published[row.name]:.2f} | " if row.name in published else "— | "
            lines.append(
                f"| {row.name} | {row.method} | {chosen}{row.spread} | {paper}{gain} | "
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


def _val_spread(row: LeaderboardRow) -> str:
    mean, std = row.val_mean, row.val_std
    if mean is None or std is None:
        return "—"
    return percent_spread(mean, std, len(row.val_accuracy))


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
            val = result.get("val_accuracy")
            row.val_accuracy.append(float(val) if isinstance(val, int | float) else None)
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


def model_group(name: str) -> str:
    """The student (or teacher) a reported model belongs to: ``dml/peer1`` → ``dml``."""
    return name.split("/", 1)[0]


@dataclass
class TuneBoard(SweepBoard):
    """One comparison repeated over the values of one recipe field, and the leaderboard of each
    method at its own value, chosen on the validation split.

    For each method (each student of the comparison, and the teacher), the value kept is the
    one whose runs give the method's first reported model — its primary model, e.g.
    ``dml/peer0`` — the best validation accuracy (of each seed's reported epoch) averaged over
    the seeds; a tie keeps the value listed first. All of the method's models are reported from
    that value's runs. Test accuracy is never read by the choice.
    """

    def groups(self) -> dict[str, list[str]]:
        """Model names by method (:func:`model_group`), in leaderboard order."""
        groups: dict[str, list[str]] = {}
        for model in self.models():
            groups.setdefault(model_group(model), []).append(model)
        return groups

    def choice(self, group: str) -> int:
        """The index of the value kept for ``group`` (see class doc); a value whose runs lack a
        validation accuracy is never chosen, and a group with none anywhere is an error."""
        primary = self.groups()[group][0]
        best, best_val = -1, -math.inf
        for index, board in enumerate(self.boards):
            row = self.cell(board, primary)
            val = None if row is None else row.val_mean
            if val is not None and val > best_val:
                best, best_val = index, val
        if best < 0:
            raise ValueError(f"{primary}: no validation accuracy to choose a value of {self.key} on")
        return best

    def choices(self) -> dict[str, str]:
        """The value kept, by method."""
        return {group: self.values[self.choice(group)] for group in self.groups()}

    def selected(self) -> Leaderboard:
        """The leaderboard of every method at its chosen value."""
        first = self.boards[0]
        rows, chosen = [], {}
        for group, models in self.groups().items():
            index = self.choice(group)
            for model in models:
                row = self.cell(self.boards[index], model)
                if row is not None:
                    rows.append(row)
                    chosen[model] = self.values[index]
        return Leaderboard(
            first.recipe,
            first.methods,
            first.seeds,
            first.student,
            first.data,
            rows,
            tuned_key=self.key,
            tuned_values=list(self.values),
            chosen=chosen,
        )

    def as_json(self) -> dict[str, Any]:
        def entry(board: Leaderboard, model: str) -> dict[str, Any] | None:
            row = self.cell(board, model)
            return None if row is None else row.as_json(board.baseline)

        return {
            "key": self.key,
            "values": self.values,
            "selected_on": "mean validation accuracy over seeds of each method's primary model",
            "methods": {
                group: {
                    "chosen": self.values[self.choice(group)],
                    "selected_by": models[0],
                    "val_accuracy_mean": [
                        None if (row := self.cell(board, models[0])) is None else row.val_mean
                        for board in self.boards
                    ],
                }
                for group, models in self.groups().items()
            },
            "models": {model: [entry(board, model) for board in self.boards] for model in self.models()},
        }

    def markdown(self) -> str:
        """The full grid — validation / test accuracy of every model at every value, the chosen
        value of each method in bold — then the leaderboard of the chosen rows."""
        first = self.boards[0]
        choices = {group: self.choice(group) for group in self.groups()}
        lines = [
            f"# {first.recipe}: `{self.key}` tuned on the validation split",
            "",
            f"Each cell: validation accuracy / test accuracy (%), mean over seeds "
            f"{', '.join(map(str, first.seeds))}. Each method keeps the value (**bold**) with the "
            "best validation accuracy of its primary model (its first row); the test column only "
            "reports.",
            "",
            "| model | " + " | ".join(f"{self.key}={value}" for value in self.values) + " |",
            "|---|" + "---:|" * len(self.values),
        ]
        for model in self.models():
            cells = []
            for index, board in enumerate(self.boards):
                row = self.cell(board, model)
                if row is None:
                    cells.append("")
                    continue
                val = "—" if row.val_mean is None else f"{100 * row.val_mean:.2f}"
                text = f"{val} / {100 * row.mean:.2f}"
                cells.append(f"**{text}**" if choices[model_group(model)] == index else text)
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n\n" + self.selected().markdown()

    def write(self, directory: Path) -> None:
        """``tune.json`` and ``tune.md`` (the grid) and the chosen rows' ``leaderboard.*``."""
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(directory / "tune.json", self.as_json())
        atomic_write_bytes(directory / "tune.md", self.markdown().encode())
        self.selected().write(directory)
