"""Plots of a learned loss: how a loss teacher's output changed over the student's training."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from distill.report.plots import save_figure


def plot_loss_parameters(
    table: list[dict[str, float]], meta_rows: list[dict[str, Any]], path: Path, title: str
) -> None:
    """One PNG: the teacher's meta-training (dev measure per teacher update, if any), then
    every series of ``table`` (rows keyed by ``epoch``) over the student's epochs, attention
    weights (``attention_*``) apart from the loss's summary values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [key for key in (table[0] if table else {}) if key != "epoch"]
    attention = [key for key in series if key.startswith("attention_")]
    summary = [key for key in series if key not in attention]
    panels = [
        panel
        for panel in ("meta", "attention", "summary")
        if {"meta": meta_rows, "attention": attention, "summary": summary}[panel]
    ]
    figure, axes = plt.subplots(
        1, max(1, len(panels)), figsize=(5.2 * max(1, len(panels)), 3.8), squeeze=False
    )
    epochs = [row["epoch"] for row in table]
    for axis, panel in zip(axes[0], panels, strict=False):
        if panel == "meta":
            updates = list(range(1, len(meta_rows) + 1))
            axis.plot(
                updates, [row["dev_measure"] for row in meta_rows], label="dev measure (loss of the teacher)"
            )
            if "dev_accuracy" in meta_rows[0]:
                axis.plot(updates, [row["dev_accuracy"] for row in meta_rows], label="dev accuracy")
            axis.set(xlabel="teacher update", title=f"{title}: meta-training")
        else:
            for key in attention if panel == "attention" else summary:
                values = [math.nan if row[key] is None else row[key] for row in table]
                axis.plot(epochs, values, label=key)
            axis.set(
                xlabel="student epoch",
                title="attention over loss parameters" if panel == "attention" else "the loss over training",
            )
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    save_figure(figure, path, dpi=100)


#: methods whose loss plot starts with the teacher's meta-training (their ``meta_history`` table)
META_TRAINING_PANEL = frozenset({"l2t-dlf"})


def plot_method_tables(directory: Path, method_name: str) -> None:
    """Draw the plots of the tables a method handed to its artifacts in ``directory`` (the
    student's folder): ``loss_parameters.png`` from ``loss_parameters.json``, after the
    ``meta_history.json`` of the methods in :data:`META_TRAINING_PANEL`. Nothing without
    ``loss_parameters.json``."""
    table_path = Path(directory) / "loss_parameters.json"
    if not table_path.is_file():
        return
    table = json.loads(table_path.read_text())
    meta_rows: list[dict[str, Any]] = []
    meta_path = Path(directory) / "meta_history.json"
    if method_name in META_TRAINING_PANEL and meta_path.is_file():
        meta_rows = json.loads(meta_path.read_text())
    plot_loss_parameters(table, meta_rows, Path(directory) / "loss_parameters.png", method_name)
