"""The shift study's report: accuracy, KD gain and teacher agreement against FID.

Per split (rows in FID order) and model: the mean ± std over seeds of the test accuracy on the
split's shifted test set. Per method other than the reference (the compared student trained
from scratch, else the first method): its gain over the reference, paired by seed. Per method:
its argmax agreement with that seed's teacher. Per model, over the splits: the normalised area
under the accuracy–FID curve (the trapezoid rule over FID rescaled to [0, 1], so it reads as an
accuracy averaged over the FID range) and the least-squares slope against FID. Per gain: its
slope and Spearman's rank correlation with FID, which say whether the gain shrinks, holds or
grows with the shift.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from distill.files import atomic_write_bytes, atomic_write_json
from distill.report.study import mean_std

TEACHER = "teacher"


def normalised_area(fids: list[float], values: list[float]) -> float:
    """The area under ``values`` against FID rescaled to [0, 1] (trapezoid rule): the curve's
    average over the FID range, in the units of ``values``."""
    x = np.asarray(fids, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    span = x[-1] - x[0]
    if span <= 0:
        return float(y.mean())
    scaled = (x - x[0]) / span
    return float(np.sum((scaled[1:] - scaled[:-1]) * (y[1:] + y[:-1]) / 2))


def _slope(fids: list[float], values: list[float]) -> float:
    return float(np.polyfit(np.asarray(fids), np.asarray(values), 1)[0])


def build_report(
    name: str,
    splits: list[dict[str, Any]],
    per_split: list[dict[int, dict[str, Any]]],
    methods: list[str],
    reference: str,
    metric: str = "test accuracy",
) -> dict[str, Any]:
    """The report as JSON-ready data (``splits``: each kept split's record, in FID order;
    ``per_split``: :func:`distill.shiftstudy.session.run_split`'s results, in the same order;
    ``reference``: the method gains are measured against, one of ``methods``; ``metric``: what
    the scores are, for the report's text)."""
    models = [TEACHER, *methods]
    rows = []
    for split, results in zip(splits, per_split, strict=True):
        seeds = sorted(results)
        accuracy = {
            model: mean_std(
                [results[s]["teacher"] if model == TEACHER else results[s]["accuracy"][model] for s in seeds]
            )
            for model in models
        }
        gain = {
            method: mean_std(
                [results[s]["accuracy"][method] - results[s]["accuracy"][reference] for s in seeds]
            )
            for method in methods
            if method != reference
        }
        agreement = {method: mean_std([results[s]["agreement"][method] for s in seeds]) for method in methods}
        rows.append(
            {
                "split": split["index"],
                "kind": split.get("kind", "swap"),
                "fid": split["fid"],
                "train_samples": split["train_samples"],
                "test_samples": split.get("unseen_samples") or split["test_samples"],
                "seeds": seeds,
                "accuracy": accuracy,
                "gain": gain,
                "agreement": agreement,
            }
        )
    fids = [row["fid"] for row in rows]
    curves: dict[str, Any] = {}
    for model in models:
        means = [row["accuracy"][model][0] for row in rows]
        curves[model] = {"area": normalised_area(fids, means), "slope": _slope(fids, means)}
    gains: dict[str, Any] = {}
    for method in methods:
        if method == reference:
            continue
        means = [row["gain"][method][0] for row in rows]
        rho = spearmanr(fids, means).statistic if len(set(means)) > 1 else float("nan")
        gains[method] = {
            "area": normalised_area(fids, means),
            "slope": _slope(fids, means),
            "spearman": float(rho),
            "first": means[0],
            "last": means[-1],
        }
    return {
        "name": name,
        "metric": metric,
        "reference": reference,
        "models": models,
        "rows": rows,
        "curves": curves,
        "gains": gains,
    }


def _cell(value: tuple[float, float] | list[float], scale: float = 100.0, signed: bool = False) -> str:
    mean, std = value
    sign = "+" if signed else ""
    return f"{scale * mean:{sign}.2f} ± {scale * std:.2f}"


def _caption(report: dict[str, Any]) -> str:
    reference = report["reference"]
    if report.get("metric", "test accuracy") == "test accuracy":
        return (
            "Test accuracy (%) on each split's shifted test set, mean ± std over seeds; gain = method − "
            f"{reference} (points, paired by seed); agreement = argmax agreement with the teacher (%)."
        )
    return (
        f"{report['metric']} (%) of each model's embedding (the input of its last linear layer), "
        f"mean ± std over seeds; gain = method − {reference} (points, paired by seed); agreement = "
        "how often its nearest neighbour is the teacher's (%)."
    )


def report_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: accuracy, gain and agreement per split; areas and trends."""
    models, reference = report["models"], report["reference"]
    metric = report.get("metric", "test accuracy")
    gained = list(report["gains"])
    methods = [model for model in models if model != TEACHER]
    lines = [
        f"# Shift study: {report['name']}",
        "",
        _caption(report),
        "",
        "| split | FID | train / test | "
        + " | ".join(models)
        + "".join(f" | gain {m}" for m in gained)
        + "".join(f" | agree {m}" for m in methods)
        + " |",
        "|---|---:|---:|" + "---:|" * (len(models) + len(gained) + len(methods)),
    ]
    for row in report["rows"]:
        cells = [_cell(row["accuracy"][m]) for m in models]
        cells += [_cell(row["gain"][m], signed=True) for m in gained]
        cells += [_cell(row["agreement"][m]) for m in methods]
        label = f"{row['split']} (iid)" if row["kind"] == "iid" else str(row["split"])
        sizes = f"{row['train_samples']} / {row['test_samples']}"
        lines.append(f"| {label} | {row['fid']:.3g} | {sizes} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"| model | area under {metric}–FID (%) | slope (points per unit FID) |",
        "|---|---:|---:|",
    ]
    for model in models:
        curve = report["curves"][model]
        lines.append(f"| {model} | {100 * curve['area']:.2f} | {100 * curve['slope']:.3g} |")
    if gained:
        lines += [
            "",
            f"| gain over {reference} | lowest FID | highest FID | area | slope | Spearman ρ with FID |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for method, gain in report["gains"].items():
            lines.append(
                f"| {method} | {100 * gain['first']:+.2f} | {100 * gain['last']:+.2f} | "
                f"{100 * gain['area']:+.2f} | {100 * gain['slope']:.3g} | {gain['spearman']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Accuracy, gain and agreement against FID, one line per model with ± std bands."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fids = np.asarray([row["fid"] for row in rows])
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = [
        ("accuracy", report["models"], f"{report.get('metric', 'test accuracy')} (%)"),
        ("gain", list(report["gains"]), f"gain over {report['reference']} (points)"),
        ("agreement", [m for m in report["models"] if m != TEACHER], "agreement with teacher (%)"),
    ]
    for axis, (key, names, label) in zip(axes, panels, strict=True):
        for name in names:
            mean = np.asarray([100 * row[key][name][0] for row in rows])
            std = np.asarray([100 * row[key][name][1] for row in rows])
            axis.plot(fids, mean, marker="o", label=name)
            axis.fill_between(fids, mean - std, mean + std, alpha=0.15)
        if key == "gain":
            axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.set_xlabel("FID between train and test sub-populations")
        axis.set_ylabel(label)
        if names:
            axis.legend(fontsize=8)
    figure.suptitle(f"{report['name']}: distillation under distribution shift")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def write_report(directory: Path, report: dict[str, Any]) -> list[Path]:
    """``shift.json``, ``shift.md`` and ``shift.png`` in ``directory``; returns their paths."""
    paths = [directory / "shift.json", directory / "shift.md", directory / "shift.png"]
    atomic_write_json(paths[0], report)
    atomic_write_bytes(paths[1], report_markdown(report).encode())
    plot_report(report, paths[2])
    return paths
