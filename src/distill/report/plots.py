"""Learning-curve plots of a run's ``metrics.jsonl``."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from distill.files import atomic_file


def save_figure(figure: Any, path: Path, dpi: int = 110) -> None:
    """Lay out ``figure``, write it to ``path`` as PNG atomically, and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    with atomic_file(path) as handle:
        figure.savefig(handle, format="png", dpi=dpi)
    plt.close(figure)


def plot_learning_curves(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Validation/test accuracy and training loss per epoch for every model, as one PNG."""
    save_figure(learning_curves_figure(records, title), path)


def learning_curves_figure(records: list[dict[str, Any]], title: str) -> Any:
    """The figure of :func:`plot_learning_curves` (a ``matplotlib.figure.Figure``), unsaved."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_model[record["model"]].append(record)
    figure, (accuracy_axis, loss_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for model_name, rows in by_model.items():
        epochs = [row["epoch"] for row in rows]
        accuracy_key = "val_accuracy" if "val_accuracy" in rows[0] else "test_accuracy"
        line = accuracy_axis.plot(epochs, [100 * row[accuracy_key] for row in rows], label=f"{model_name}")[0]
        loss_axis.plot(epochs, [row["train_loss"] for row in rows], color=line.get_color())
    accuracy_axis.set(xlabel="epoch", ylabel="validation accuracy (%)", title=title)
    positive = all(record["train_loss"] > 0 for record in records)  # learned losses may be negative
    loss_axis.set(
        xlabel="epoch", ylabel="training loss (sum of terms)", yscale="log" if positive else "linear"
    )
    for axis in (accuracy_axis, loss_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # epochs are whole numbers
        axis.grid(alpha=0.3)
    accuracy_axis.legend()
    return figure
