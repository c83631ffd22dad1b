"""``distill pareto``: what each cheap-convolution saving costs in accuracy (Moonshine).

From a recipe with a teacher model, every cheap-block setting (``G4``: grouped with 4 groups
+ pointwise; ``B2``: bottleneck ÷2; ``BG2x4``: bottleneck ÷2 with 4 groups) makes a ``cheap``
student of the teacher's architecture, trained twice per seed with the teacher's own budget:
with attention transfer from the teacher (``moonshine``) and from scratch. Each seed is one run
directory (``DIR/seed-<seed>``; finished seeds are reused, an interrupted one continues). Costs
are counted on freshly built models: parameters, multiply-accumulates, ONNX file size and ONNX
Runtime latency at batch 1 and 64 on this machine's CPU (medians). The report —
``pareto.md``, ``pareto.json``, ``pareto.png`` (accuracy against parameters and against
latency) — puts the teacher's architecture trained alone at the top, as the reference.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.compare import run_or_reuse
from distill.config import Recipe, validate_recipe
from distill.errors import RecipeError
from distill.files import atomic_write_bytes, atomic_write_json
from distill.report.plots import save_figure
from distill.report.seeds import read_summary
from distill.report.study import mean_std
from distill.runner import EpochCallback

DEFAULT_SETTINGS = "G2,G4,G8,B2,B4,BG2x4"


@dataclass(frozen=True)
class CheapSetting:
    """One cheap block: ``block`` G/B/BG with ``groups`` and ``bottleneck``."""

    block: str
    groups: int = 4
    bottleneck: int = 2

    @property
    def label(self) -> str:
        if self.block == "G":
            return f"G{self.groups}"
        if self.block == "B":
            return f"B{self.bottleneck}"
        return f"BG{self.bottleneck}x{self.groups}"

    def model(self, base: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": "cheap",
            "base": base,
            "block": self.block,
            "groups": self.groups,
            "bottleneck": self.bottleneck,
        }


def parse_settings(text: str) -> list[CheapSetting]:
    """``"G4,B2,BG2x4"`` → settings; every entry must look like G<g>, B<b> or BG<b>x<g>."""
    settings = []
    for token in (part.strip() for part in text.split(",") if part.strip()):
        if match := re.fullmatch(r"G(\d+)", token):
            settings.append(CheapSetting("G", groups=int(match[1])))
        elif match := re.fullmatch(r"B(\d+)", token):
            settings.append(CheapSetting("B", bottleneck=int(match[1])))
        elif match := re.fullmatch(r"BG(\d+)x(\d+)", token):
            settings.append(CheapSetting("BG", bottleneck=int(match[1]), groups=int(match[2])))
        else:
            raise RecipeError(
                f"--blocks: '{token}' is not G<groups>, B<bottleneck> or BG<bottleneck>x<groups>"
            )
    if not settings:
        raise RecipeError("--blocks: give at least one cheap block, e.g. --blocks G4,B2")
    if len({setting.label for setting in settings}) != len(settings):
        raise RecipeError(f"--blocks: a block is listed twice: {text}")
    return settings


def pareto_recipe(recipe: Recipe, settings: list[CheapSetting], seed: int) -> Recipe:
    """The recipe of one seed: the teacher, and an AT and a scratch student per setting."""
    if recipe.teacher is None or recipe.teacher.model is None:
        raise RecipeError(
            f"recipe '{recipe.name}': distill pareto needs a teacher with a 'model' to make cheap"
        )
    base = recipe.teacher.model.model_dump(mode="json")
    train = recipe.train_of(recipe.teacher).model_dump(mode="json")
    students = []
    for setting in settings:
        for method, suffix in (("moonshine", "at"), ("scratch", "scratch")):
            students.append(
                {
                    "name": f"{setting.label}-{suffix}",
                    "model": setting.model(base),
                    "method": {"name": method},
                    "train": train,
                }
            )
    payload = recipe.model_dump(mode="json")
    payload.update(seed=seed, students=students, name=f"{recipe.name}-pareto")
    return validate_recipe(payload, f"pareto ({recipe.name}, blocks {','.join(s.label for s in settings)})")


@dataclass
class ParetoPoint:
    """One architecture: its costs and its accuracies over the seeds."""

    label: str
    params: int
    macs: int
    onnx_bytes: int
    latency_ms: dict[str, float]
    distilled: list[float]
    scratch: list[float]

    def as_json(self) -> dict[str, Any]:
        def summary(values: list[float]) -> dict[str, Any] | None:
            if not values:
                return None
            mean, std = mean_std(values)
            return {"mean": mean, "std": std, "per_seed": values}

        return {
            "label": self.label,
            "params": self.params,
            "macs": self.macs,
            "onnx_bytes": self.onnx_bytes,
            "latency_ms": self.latency_ms,
            "test_accuracy_at": summary(self.distilled),
            "test_accuracy_scratch": summary(self.scratch),
        }


def _cost(
    spec: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> tuple[int, int, int, dict[str, float]]:
    from distill.export import measure_latency, onnx_payload, onnx_session
    from distill.models import build_model, count_parameters, validate_model_spec
    from distill.models.cost import count_macs

    model = build_model(validate_model_spec(spec), input_shape, num_classes).eval()
    payload = onnx_payload(model, input_shape)
    latency = measure_latency(model, onnx_session(payload), input_shape)
    return count_parameters(model), count_macs(model, input_shape), len(payload), latency


def run_pareto(
    recipe: Recipe,
    settings: list[CheapSetting],
    seeds: int,
    output_dir: Path,
    on_epoch_end: EpochCallback | None = None,
    on_model_start: Callable[[str, int, int], None] | None = None,
    on_seed_start: Callable[[int, Path, bool], None] | None = None,
) -> list[ParetoPoint]:
    """Train every seed (or reuse it), count the costs, write the report; returns its points."""
    from distill.data import load_data

    recipes = [pareto_recipe(recipe, settings, recipe.seed + offset) for offset in range(seeds)]
    summaries = []
    for seed_recipe in recipes:
        run_dir = output_dir / f"seed-{seed_recipe.seed}"
        run_or_reuse(seed_recipe, run_dir, on_epoch_end, on_model_start, on_seed_start)
        summaries.append(read_summary(run_dir))
    data = load_data(recipe.data)

    def accuracies(name: str) -> list[float]:
        return [
            row["test_accuracy"] for summary in summaries for row in summary["results"] if row["name"] == name
        ]

    assert recipe.teacher is not None and recipe.teacher.model is not None
    base = recipe.teacher.model.model_dump(mode="json")
    points = [
        ParetoPoint("teacher", *_cost(base, data.input_shape, data.num_classes), [], accuracies("teacher"))
    ]
    for setting in settings:
        cost = _cost(setting.model(base), data.input_shape, data.num_classes)
        points.append(
            ParetoPoint(
                setting.label,
                *cost,
                accuracies(f"{setting.label}-at"),
                accuracies(f"{setting.label}-scratch"),
            )
        )
    write_pareto(points, recipe.name, [r.seed for r in recipes], output_dir)
    return points


def pareto_markdown(points: list[ParetoPoint], recipe: str, seeds: list[int]) -> str:
    def cell(values: list[float]) -> str:
        if not values:
            return ""
        mean, std = mean_std(values)
        return f"{100 * mean:.2f} ± {100 * std:.2f}"

    lines = [
        f"# {recipe}: cheap students (Moonshine), seeds {', '.join(map(str, seeds))}",
        "",
        "Test accuracy (%) mean ± std; `teacher` is the full architecture trained alone. Latency: median "
        "ms per forward pass in ONNX Runtime on this CPU.",
        "",
        "| model | params | MACs | ONNX KiB | latency b1 (ms) | latency b64 (ms) | AT-distilled | scratch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for point in points:
        latency = point.latency_ms
        lines.append(
            f"| {point.label} | {point.params:,} | {point.macs:,} | {point.onnx_bytes / 1024:.1f} | "
            f"{latency['onnxruntime_batch1_ms']:.3f} | {latency['onnxruntime_batch64_ms']:.3f} | "
            f"{cell(point.distilled)} | {cell(point.scratch)} |"
        )
    return "\n".join(lines) + "\n"


def write_pareto(points: list[ParetoPoint], recipe: str, seeds: list[int], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        directory / "pareto.json", {"recipe": recipe, "seeds": seeds, "points": [p.as_json() for p in points]}
    )
    atomic_write_bytes(directory / "pareto.md", pareto_markdown(points, recipe, seeds).encode())
    _plot(points, recipe, directory / "pareto.png")


def _plot(points: list[ParetoPoint], recipe: str, path: Path) -> None:
    save_figure(pareto_figure(points, recipe), path)


def pareto_figure(points: list[ParetoPoint], recipe: str) -> Any:
    """Test accuracy against parameters and against latency (a ``matplotlib.figure.Figure``):
    every point labelled, the labels set off their markers (distilled and scratch points of one
    architecture share an x: the higher one is labelled above, the lower one below)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def label(axis: Any, text: str, x: float, y: float, above: bool, **style: Any) -> None:
        axis.annotate(
            text,
            (x, y),
            xytext=(0, 9 if above else -9),
            textcoords="offset points",
            ha="center",
            va="bottom" if above else "top",
            fontsize=8,
            **style,
        )

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, cost, name in (
        (axes[0], lambda p: p.params, "parameters"),
        (axes[1], lambda p: p.latency_ms["onnxruntime_batch1_ms"], "ONNX Runtime latency, batch 1 (ms)"),
    ):
        for point in points:
            x = cost(point)
            distilled = 100 * statistics.fmean(point.distilled) if point.distilled else None
            scratch = 100 * statistics.fmean(point.scratch) if point.scratch else None
            if point.label == "teacher":
                if scratch is not None:
                    axis.scatter([x], [scratch], marker="*", s=160, color="black")
                    label(axis, "teacher", x, scratch, True, fontweight="bold")
                continue
            distilled_higher = distilled is not None and (scratch is None or distilled >= scratch)
            if distilled is not None:
                axis.scatter([x], [distilled], color="#3b75af")
                label(axis, point.label, x, distilled, distilled_higher, color="#3b75af")
            if scratch is not None:
                axis.scatter([x], [scratch], facecolors="none", edgecolors="#c44e52")
                label(axis, f"{point.label} scratch", x, scratch, not distilled_higher, color="#c44e52")
        axis.set(xlabel=name, ylabel="test accuracy (%)", xscale="log")
        axis.margins(x=0.1, y=0.12)  # room for the labels above the highest and below the lowest point
        axis.grid(alpha=0.3)
    axes[0].scatter([], [], color="#3b75af", label="attention transfer")
    axes[0].scatter([], [], facecolors="none", edgecolors="#c44e52", label="scratch")
    axes[0].legend()
    figure.suptitle(f"{recipe}: cheap students")
    return figure
