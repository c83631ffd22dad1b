"""The language-model board: every model over seeds — held-out perplexity, the teacher's NLL per
token of the model's own samples (GKD's axis), parameters, training tokens per second and the
device and precision it trained in — as markdown and JSON, and the plot of perplexity against
teacher NLL."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from distill.files import atomic_write_bytes, atomic_write_json
from distill.report.plots import save_figure
from distill.report.study import mean_std

#: What each row trains on, for the table.
OBJECTIVES = {
    "teacher": "next-token CE (the teacher)",
    "ce": "next-token CE",
    "token-kd": "token-level KL(teacher ‖ student) on the glosses",
    "seq-kd": "CE on the teacher's completions",
    "gkd": "generalized JSD, on-policy fraction λ",
}


def _distinct(runs: list[dict[str, Any]], key: str, before: str) -> str:
    """The values of ``key`` over ``runs``, distinct, in order, joined; ``before``: the value of
    results written before the key existed (every such run trained on the CPU in float32)."""
    return ", ".join(dict.fromkeys(str(run.get(key, before)) for run in runs))


def board_rows(per_seed: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model, in the order of the first seed, aggregated over the seeds."""
    first = next(iter(per_seed.values()))
    rows = []
    for name in first:
        runs = [results[name] for results in per_seed.values() if name in results]
        ppl, ppl_std = mean_std([run["perplexity"] for run in runs])
        nll, nll_std = mean_std([run["teacher_nll"] for run in runs])
        rows.append(
            {
                "method": name,
                "objective": OBJECTIVES.get(name, name),
                "perplexity": ppl,
                "perplexity_std": ppl_std,
                "teacher_nll": nll,
                "teacher_nll_std": nll_std,
                "per_seed_perplexity": [round(run["perplexity"], 3) for run in runs],
                "per_seed_teacher_nll": [round(run["teacher_nll"], 4) for run in runs],
                "params": runs[0]["params"],
                "tokens_per_second": statistics.median(run["tokens_per_second"] for run in runs),
                "seconds": statistics.median(run["seconds"] for run in runs),
                "device": _distinct(runs, "device", "cpu"),
                "precision": _distinct(runs, "precision", "float32"),
            }
        )
    return rows


def _where(rows: list[dict[str, Any]]) -> str:
    precision = _distinct(rows, "precision", "float32")
    line = f"Trained on {_distinct(rows, 'device', 'cpu')} in {precision}"
    if "bfloat16" in precision:
        line += " (bfloat16: autocast forward passes, float32 weights and losses; evaluation in float32)"
    return line + "."


def board_markdown(name: str, seeds: list[int], rows: list[dict[str, Any]]) -> str:
    lines = [
        f"# {name}: language-model distillation over seeds {', '.join(map(str, seeds))}",
        "",
        "Held-out perplexity (lower is better) and the teacher's NLL per token of each model's own",
        "sampled completions of the held-out prompts (GKD's axis; lower: text the teacher finds",
        "likelier), mean ± std over seeds. Tokens/s: training target tokens per second of training",
        "(sampling, the top-k cache and the teacher's corpus included; median over seeds).",
        _where(rows),
        "",
        "| model | objective | params | perplexity | teacher NLL of samples | tokens/s | median s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['objective']} | {row['params']:,} "
            f"| {row['perplexity']:.2f} ± {row['perplexity_std']:.2f} "
            f"| {row['teacher_nll']:.3f} ± {row['teacher_nll_std']:.3f} "
            f"| {row['tokens_per_second']:,.0f} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot_perplexity_vs_teacher_nll(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Each model at (held-out perplexity, teacher NLL of its samples), error bars: std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axis = plt.subplots(figsize=(6.4, 4.6))
    for index, row in enumerate(rows):
        axis.errorbar(
            row["perplexity"],
            row["teacher_nll"],
            xerr=row["perplexity_std"],
            yerr=row["teacher_nll_std"],
            fmt="s" if row["method"] == "teacher" else "o",
            capsize=3,
        )
        axis.annotate(
            row["method"],
            (row["perplexity"], row["teacher_nll"]),
            textcoords="offset points",
            xytext=(5, 4 - 12 * (index % 3)),  # staggered: close points stay legible
        )
    axis.set(
        xscale="log",
        xlabel="held-out perplexity (log scale; lower is better)",
        ylabel="teacher NLL per token of samples (lower: likelier to the teacher)",
    )
    plain = matplotlib.ticker.ScalarFormatter()
    plain.set_scientific(False)
    axis.xaxis.set_major_formatter(plain)
    axis.xaxis.set_minor_formatter(plain)
    axis.grid(True, alpha=0.3)
    axis.set_title(title, fontsize=10)
    save_figure(figure, path)


def write_board(
    directory: Path, name: str, seeds: list[int], per_seed: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = board_rows(per_seed)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / "board.json", {"recipe": name, "seeds": seeds, "rows": rows})
    atomic_write_bytes(directory / "board.md", board_markdown(name, seeds, rows).encode())
    plot_perplexity_vs_teacher_nll(rows, directory / "perplexity-vs-teacher-nll.png", f"{name}: quality axes")
    return rows
