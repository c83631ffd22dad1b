"""The fitness plot of ``distill search``: best and median fitness per generation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.report.plots import save_figure


def plot_search(
    generations: list[dict[str, Any]], references: dict[str, dict[str, Any]], path: Path, title: str
) -> None:
    """Best, median and best-so-far validation fitness per generation, with the proxy scores of
    the references (CE alone, KD) as horizontal lines."""
    save_figure(search_figure(generations, references, title), path)


def search_figure(
    generations: list[dict[str, Any]], references: dict[str, dict[str, Any]], title: str
) -> Any:
    """The figure of :func:`plot_search` (a ``matplotlib.figure.Figure``), unsaved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(6.4, 4.0))
    xs = [g["generation"] for g in generations]
    for key, label, style in (
        ("best", "best", "o-"),
        ("median", "median", "s--"),
        ("best_so_far", "best so far", "-"),
    ):
        points = [(x, g[key]) for x, g in zip(xs, generations, strict=True) if g[key] is not None]
        if points:
            axes.plot(*zip(*points, strict=True), style, label=label)
    for (name, reference), color in zip(sorted(references.items()), ("tab:red", "tab:gray"), strict=False):
        if reference.get("fitness") is not None:
            axes.axhline(reference["fitness"], color=color, linestyle=":", label=f"{name} (proxy)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # generations are whole numbers
    if xs:  # half a generation of margin: one generation is a single tick, not -0.04…0.04
        axes.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    axes.set_xlabel("generation")
    axes.set_ylabel("proxy validation accuracy (%)")
    axes.set_title(f"distill search — {title}")
    axes.legend(loc="lower right", fontsize="small")
    axes.grid(alpha=0.3)
    return figure
