"""The grounding board: every method over seeds (TB and DB Acc@0.5 on the held-out expressions,
the final DWBD weight w), TB against DB inference latency, and the plot of w over training."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from distill.files import atomic_write_bytes, atomic_write_json
from distill.report.plots import save_figure
from distill.report.study import mean_std

#: What each method trains TB from, for the table.
TARGETS = {
    "tb-gt": "ground truth only (w = 0)",
    "fixed-mix": "GT and DB, fixed w = 0.5",
    "dwbd": "DWBD, one stage (w = mean ω)",
    "dwbd-2stage": "DWBD after DB alone, DB frozen",
}


def board_rows(per_seed: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method, in the order of the first seed, aggregated over the seeds."""
    first = next(iter(per_seed.values()))
    rows = []
    for name in first:
        runs = [results[name] for results in per_seed.values() if name in results]
        tb, tb_std = mean_std([100 * run["tb_acc"] for run in runs])
        db, db_std = mean_std([100 * run["db_acc"] for run in runs])
        w, w_std = mean_std([run["w_final"] for run in runs])
        omega, omega_std = mean_std([run["omega_final"] for run in runs])
        rows.append(
            {
                "method": name,
                "tb_learns_from": TARGETS.get(name, name),
                "tb_acc": tb,
                "tb_acc_std": tb_std,
                "db_acc": db,
                "db_acc_std": db_std,
                "tb_per_seed": [round(100 * run["tb_acc"], 2) for run in runs],
                "db_per_seed": [round(100 * run["db_acc"], 2) for run in runs],
                "tb_miou": statistics.fmean(100 * run["tb_miou"] for run in runs),
                "w_final": w,
                "w_final_std": w_std,
                "omega_final": omega,
                "omega_final_std": omega_std,
                "epochs": runs[0]["epochs"],
                "params": runs[0]["params"],
                "tb_params": runs[0]["tb_params"],
                "db_params": runs[0]["db_params"],
                "seconds": statistics.median(run["seconds"] for run in runs),
            }
        )
    return rows


def board_markdown(
    name: str, seeds: list[int], rows: list[dict[str, Any]], latency: dict[str, Any] | None = None
) -> str:
    lines = [
        f"# {name}: SimVG grounding, token branch (TB) vs decoder branch (DB), "
        f"seeds {', '.join(map(str, seeds))}",
        "",
        "Acc@0.5 (%): share of held-out expressions whose predicted box has IoU ≥ 0.5 with the truth,",
        "mean ± std over seeds. w: the weight DWBD gives DB in the last epoch (the batch mean of",
        "ω = DB score × IoU; tb-gt uses w = 0, fixed-mix 0.5, two-stage's stage 1 trains DB alone).",
        "Mean ω is DB's quality, reported for every method.",
        "",
        "| method | TB learns from | TB Acc@0.5 | DB Acc@0.5 | TB per seed | TB mIoU "
        "| final w | final mean ω | epochs | median s |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['tb_learns_from']} | {row['tb_acc']:.2f} ± {row['tb_acc_std']:.2f} "
            f"| {row['db_acc']:.2f} ± {row['db_acc_std']:.2f} "
            f"| {', '.join(f'{v:.1f}' for v in row['tb_per_seed'])} "
            f"| {row['tb_miou']:.1f} | {row['w_final']:.3f} | {row['omega_final']:.3f} | {row['epochs']} "
            f"| {row['seconds']:.0f} |"
        )
    if rows:
        row = rows[0]
        lines += [
            "",
            f"Parameters: {row['params']:,} in all; TB's own head {row['tb_params']:,}, DB's own decoder "
            f"and heads {row['db_params']:,}; the encoder is shared.",
        ]
    if latency:
        lines += [
            "",
            f"Inference latency on CPU ({latency['threads']} thread(s), {latency['model']}), "
            f"median of {latency['repeats']} calls, ms:",
            "",
            "| batch | TB (encoder + MLP) | DB (encoder + decoder) | DB / TB |",
            "|---:|---:|---:|---:|",
        ]
        for key, timing in latency["timings"].items():
            lines.append(
                f"| {key.removeprefix('batch')} | {timing['tb_ms']:.2f} | {timing['db_ms']:.2f} "
                f"| {timing['db_ms'] / timing['tb_ms']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot_weights(per_seed: dict[int, dict[str, Any]], path: Path, title: str) -> None:
    """Per method and seed: the w used (solid) and mean ω, DB's quality (dotted), per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(next(iter(per_seed.values())))
    figure, axes = plt.subplots(
        1, len(methods), figsize=(3.6 * len(methods), 3.4), sharey=True, squeeze=False
    )
    for axis, name in zip(axes[0], methods, strict=True):
        for index, (seed, results) in enumerate(per_seed.items()):
            if name not in results:
                continue
            run = results[name]
            epochs = range(1, len(run["w_curve"]) + 1)
            colour = f"C{index}"
            axis.plot(epochs, run["w_curve"], color=colour, label=f"w, seed {seed}")
            axis.plot(epochs, run["omega_curve"], color=colour, linestyle=":", label=f"mean ω, seed {seed}")
            if 2 in run["stages"]:
                axis.axvline(run["stages"].index(2) + 0.5, color="grey", linewidth=0.8)
        axis.set(title=name, xlabel="epoch", ylim=(-0.02, 1.02))
        axis.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("weight of DB's targets")
    axes[0][-1].legend(fontsize=7)
    figure.suptitle(title)
    save_figure(figure, path)


def write_board(
    directory: Path,
    name: str,
    seeds: list[int],
    per_seed: dict[int, dict[str, Any]],
    latency: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    rows = board_rows(per_seed)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        directory / "board.json", {"recipe": name, "seeds": seeds, "rows": rows, "latency": latency}
    )
    atomic_write_bytes(directory / "board.md", board_markdown(name, seeds, rows, latency).encode())
    plot_weights(
        per_seed, directory / "weights.png", f"{name}: DWBD weight w (solid) and DB quality mean ω (dotted)"
    )
    return rows
