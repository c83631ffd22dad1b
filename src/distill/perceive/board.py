"""The perception board: every method over seeds (IoU on all cells and on each ego's occluded
cells, bytes each agent sends per frame), the accuracy-against-bandwidth plot and a picture of
DiscoGraph's learned edge weights over one test scene."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from distill.files import atomic_write_bytes, atomic_write_json
from distill.perception.metrics import neighbour_weight_by_sight
from distill.perception.models import PerceptionModel
from distill.perception.world import Scenes
from distill.report.plots import save_figure
from distill.report.study import mean_std

#: What each row's communication is, for the table.
SHARES = {
    "early": "raw observations (teacher)",
    "early-warped": "raw rasters, warped (teacher variant)",
    "ego": "nothing",
    "late": "output maps",
    "mean": "feature maps, mean",
    "max": "feature maps, max",
    "discograph-nokd": "feature maps, learned edge weights",
    "discograph": "feature maps, learned edge weights + KD",
}


def board_rows(per_seed: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method, in the order of the first seed, aggregated over the seeds."""
    first = next(iter(per_seed.values()))
    rows = []
    for name in first:
        runs = [results[name] for results in per_seed.values() if name in results]
        iou, iou_std = mean_std([100 * run["iou"] for run in runs])
        occluded, occluded_std = mean_std([100 * run["iou_occluded"] for run in runs])
        rows.append(
            {
                "method": name,
                "shares": SHARES.get(name, "compressed feature maps + KD"),
                "iou": iou,
                "iou_std": iou_std,
                "iou_occluded": occluded,
                "iou_occluded_std": occluded_std,
                "per_seed": [round(100 * run["iou"], 2) for run in runs],
                "bytes_per_frame": runs[0]["bytes_per_frame"],
                "params": runs[0]["params"],
                "seconds": statistics.median(run["seconds"] for run in runs),
            }
        )
    return rows


def board_markdown(name: str, seeds: list[int], rows: list[dict[str, Any]]) -> str:
    lines = [
        f"# {name}: collaborative perception over seeds {', '.join(map(str, seeds))}",
        "",
        "Vehicle-mask IoU (%) on the shared test scenes, mean ± std over seeds: over every cell of every",
        "ego's raster, and over the cells the ego itself did not see (false positives there count).",
        "Bytes: what one agent sends per frame (float32).",
        "",
        "| method | shares | IoU all | IoU occluded | bytes/frame | params | median s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['shares']} | {row['iou']:.2f} ± {row['iou_std']:.2f} "
            f"| {row['iou_occluded']:.2f} ± {row['iou_occluded_std']:.2f} | {row['bytes_per_frame']:,} "
            f"| {row['params']:,} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot_bandwidth(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """IoU (all and occluded) against bytes per frame; nothing-shared plotted at 1 byte."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for axis, key, label in [
        (axes[0], "iou", "IoU, all cells"),
        (axes[1], "iou_occluded", "IoU, occluded cells"),
    ]:
        for row in rows:
            x = max(row["bytes_per_frame"], 1)
            axis.errorbar(x, row[key], yerr=row[f"{key}_std"], fmt="o", capsize=3)
            axis.annotate(row["method"], (x, row[key]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        axis.set(
            xscale="log", xlabel="bytes one agent sends per frame (log; 'ego' at 1)", ylabel=f"{label} (%)"
        )
        axis.grid(True, which="both", alpha=0.3)
    figure.suptitle(title)
    save_figure(figure, path)


@torch.no_grad()
def plot_edge_weights(model: PerceptionModel, scenes: Scenes, path: Path, scene: int = 0) -> None:
    """For each ego of one test scene: its observation, its targets with its occluded cells,
    the student's prediction, and the learned weight it gives each agent per pixel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = scenes.batch(torch.tensor([scene]))
    output = model.eval()(batch.observations, batch.transforms)
    if output.edge_weights is None:
        raise ValueError("only a DiscoGraph student has edge weights")
    agents = batch.observations.shape[1]
    columns = 3 + agents
    figure, axes = plt.subplots(agents, columns, figsize=(2.2 * columns, 2.3 * agents), squeeze=False)
    for ego in range(agents):
        observation = batch.observations[0, ego]
        seen = 0.35 * observation[1] + 0.65 * observation[0]
        target = batch.targets[0, ego, 0] + 0.3 * batch.occluded[0, ego, 0].float()
        prediction = torch.sigmoid(output.logits[0, ego, 0])
        panels = [(seen, "observation"), (target, "targets (+ occluded)"), (prediction, "prediction")]
        panels += [(output.edge_weights[0, ego, k, 0], f"weight on agent {k}") for k in range(agents)]
        for column, (image, label) in enumerate(panels):
            axis = axes[ego][column]
            axis.imshow(image.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(label if ego == 0 else "", fontsize=8)
        axes[ego][0].set_ylabel(f"ego {ego}", fontsize=9)
    figure.suptitle("DiscoGraph's edge weights (softmax over agents per pixel), one test scene", fontsize=10)
    save_figure(figure, path)


@torch.no_grad()
def neighbour_trust(model: PerceptionModel, scenes: Scenes, batch_size: int = 64) -> tuple[float, float]:
    """A DiscoGraph student's mean weight on the neighbours over the test scenes' collaboration
    pixels its ego did not see and those it saw (:func:`neighbour_weight_by_sight`)."""
    model.eval()
    weights = []
    for batch in scenes.batches(batch_size):
        output = model(batch.observations, batch.transforms)
        if output.edge_weights is None:
            raise ValueError("only a DiscoGraph student has edge weights")
        weights.append(output.edge_weights)
    return neighbour_weight_by_sight(torch.cat(weights), scenes.occluded)


def trust_rows(trust: dict[str, list[tuple[float, float]]]) -> list[dict[str, Any]]:
    """Per DiscoGraph method, mean ± std over seeds of its neighbour weight on unseen and seen
    collaboration pixels (``trust[method]`` holds one ``(unseen, seen)`` pair per seed)."""
    rows = []
    for method, pairs in trust.items():
        unseen, unseen_std = mean_std([pair[0] for pair in pairs])
        seen, seen_std = mean_std([pair[1] for pair in pairs])
        rows.append(
            {"method": method, "unseen": unseen, "unseen_std": unseen_std, "seen": seen, "seen_std": seen_std}
        )
    return rows


def trust_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "",
        "Edge weights: the weight an ego gives its neighbours (1 − its own), averaged over the test",
        "scenes' collaboration pixels it did not see at all and those it saw entirely.",
        "",
        "| method | on unseen pixels | on seen pixels |",
        "|---|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['unseen']:.3f} ± {row['unseen_std']:.3f} "
            f"| {row['seen']:.3f} ± {row['seen_std']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def write_board(
    directory: Path,
    name: str,
    seeds: list[int],
    per_seed: dict[int, dict[str, Any]],
    trust: dict[str, list[tuple[float, float]]] | None = None,
) -> str:
    """Write board.json, board.md (with the edge-weight table when ``trust`` is given) and
    bandwidth.png; returns board.md's text."""
    rows = board_rows(per_seed)
    edge_rows = trust_rows(trust or {})
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        directory / "board.json", {"recipe": name, "seeds": seeds, "rows": rows, "edge_weights": edge_rows}
    )
    text = board_markdown(name, seeds, rows) + (trust_markdown(edge_rows) if edge_rows else "")
    atomic_write_bytes(directory / "board.md", text.encode())
    plot_bandwidth(rows, directory / "bandwidth.png", f"{name}: accuracy against bandwidth")
    return text
