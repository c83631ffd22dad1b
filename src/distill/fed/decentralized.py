"""Decentralized runs (``kind: decentralized``): gossip rounds into a run directory, a centrally
trained reference, rounds-to-target, and the degree plot.

Run directory: ``recipe.yaml``; ``metrics.jsonl`` (per evaluated round: mean and minimum device
test accuracy, links up, the degree per layer); ``checkpoint.pt`` after each round (every device's
weights, hypernetworks and their optimizers); ``summary.json`` (best and final mean accuracy, the
central reference, the round the mean first reached ``target_fraction`` of it); ``curves.png``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from distill.engine.checkpoint import atomic_torch_save
from distill.fed.loop import finished_summary, load_checkpoint
from distill.federated.gossip import Gossip, GossipRecipe, GossipRound
from distill.federated.local import accuracy, train_local
from distill.report.plots import save_figure
from distill.report.rundir import RunDirectory

FORMAT = "distill-gossip-checkpoint/1"
RECORD_MODEL = "devices"
#: the mean device accuracy must reach this fraction of the centrally trained model's
TARGET_FRACTION = 0.9


def central_accuracy(gossip: Gossip) -> float:
    """The same model trained on all devices' data in one place, for ``rounds`` epochs of the
    local schedule (the reference of rounds-to-target)."""
    recipe = gossip.recipe
    rows = torch.cat(gossip.shards)
    model = gossip.model
    model.load_state_dict(gossip.states[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        epochs = recipe.local.model_copy(update={"epochs": min(recipe.rounds * recipe.local.epochs, 50)})
        train_local(model, gossip.bundle.train.subset(rows), epochs, recipe.seed)
    return accuracy(model, gossip.bundle.test)


def run_gossip(
    recipe: GossipRecipe, path: Path, resume: bool, on_round: Callable[[GossipRound], None] | None = None
) -> dict[str, Any]:
    run = RunDirectory(path)
    run.open(recipe.model_dump(mode="json"), resume)
    try:
        stored = finished_summary(run)
        if stored is not None:
            return stored
        gossip = Gossip(recipe)
        reference = central_accuracy(gossip) if not (run.path / "central.pt").exists() else None
        if reference is not None:
            atomic_torch_save(run.path / "central.pt", {"accuracy": reference})
        else:
            reference = float(torch.load(run.path / "central.pt", weights_only=True)["accuracy"])
        start = 0
        checkpoint = run.path / "checkpoint.pt"
        payload = load_checkpoint(checkpoint, FORMAT, "decentralized")
        if payload is not None:
            gossip.restore(payload)
            start = int(payload["rounds"])
        run.keep_metrics_until(RECORD_MODEL, start)
        began = time.perf_counter()
        for round_index in range(start, recipe.rounds):
            record = gossip.run_round(round_index)
            run.append_metrics({"model": RECORD_MODEL, "epoch": round_index + 1, **record.to_json()})
            atomic_torch_save(checkpoint, {"format": FORMAT, "rounds": round_index + 1, **gossip.snapshot()})
            if on_round is not None:
                on_round(record)
        records = [r for r in run.read_metrics() if r.get("model") == RECORD_MODEL]
        summary = summarize(recipe, records, reference, time.perf_counter() - began)
        run.write_summary(summary)
        plot_gossip(records, run.path / "curves.png", f"{recipe.name}: {recipe.rule_name}")
        return summary
    finally:
        run.close()


def summarize(
    recipe: GossipRecipe, records: list[dict[str, Any]], reference: float, seconds: float
) -> dict[str, Any]:
    evaluated = [r for r in records if r["mean_accuracy"] is not None]
    target = TARGET_FRACTION * reference
    reached = next((r["round"] for r in evaluated if r["mean_accuracy"] >= target), None)
    return {
        "recipe": recipe.name,
        "algorithm": recipe.rule_name,
        "seed": recipe.seed,
        "rounds": records[-1]["round"],
        "central_accuracy": reference,
        "target_accuracy": target,
        "rounds_to_target": reached,
        "best_mean_accuracy": max(r["mean_accuracy"] for r in evaluated),
        "final_mean_accuracy": evaluated[-1]["mean_accuracy"],
        "final_min_accuracy": evaluated[-1]["min_accuracy"],
        "seconds_rounds": sum(r["seconds"] for r in records),
        "seconds_this_session": seconds,
    }


def plot_gossip(records: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (accuracy_axis, degree_axis) = plt.subplots(1, 2, figsize=(11, 4))
    evaluated = [r for r in records if r["mean_accuracy"] is not None]
    rounds = [r["round"] for r in evaluated]
    accuracy_axis.plot(rounds, [r["mean_accuracy"] for r in evaluated], label="mean over devices")
    accuracy_axis.plot(rounds, [r["min_accuracy"] for r in evaluated], label="worst device", linestyle="--")
    accuracy_axis.set(xlabel="round", ylabel="test accuracy (%)", title=title)
    accuracy_axis.legend()
    for layer in records[0]["degrees"]:
        degree_axis.plot([r["round"] for r in records], [r["degrees"][layer] for r in records], label=layer)
    degree_axis.set(xlabel="round", ylabel="WPM degree p (mean over devices)", title="degree per layer")
    degree_axis.legend()
    for axis in (accuracy_axis, degree_axis):
        axis.grid(alpha=0.3)
    save_figure(figure, path)


def gossip_board(folder: Path, results: list[dict[str, Any]], title: str) -> str:
    """``board.json`` and ``board.md``: per rule, rounds to target and accuracies over seeds."""
    import statistics
    from collections import defaultdict

    from distill.files import atomic_write_bytes, atomic_write_json

    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for summary in results:
        grouped[summary["algorithm"]].append(summary)

    def spread(values: list[float]) -> str:
        if len(values) < 2:
            return f"{values[0]:.2f} (1 seed)"
        return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"

    rows = []
    lines = [
        f"# {title}",
        "",
        "| rule | rounds to target (per seed) | best mean acc (%) | final mean acc (%) "
        "| final worst device (%) |",
        "|---|---|---|---|---|",
    ]
    for rule, summaries in grouped.items():
        reached = [s["rounds_to_target"] for s in summaries]
        best = [float(s["best_mean_accuracy"]) for s in summaries]
        final = [float(s["final_mean_accuracy"]) for s in summaries]
        worst = [float(s["final_min_accuracy"]) for s in summaries]
        row = {
            "rule": rule,
            "seeds": [s["seed"] for s in summaries],
            "rounds_to_target": reached,
            "best_mean_accuracy": [s["best_mean_accuracy"] for s in summaries],
            "final_mean_accuracy": [s["final_mean_accuracy"] for s in summaries],
            "final_min_accuracy": [s["final_min_accuracy"] for s in summaries],
        }
        rows.append(row)
        shown = ", ".join("—" if value is None else str(value) for value in reached)
        lines.append(f"| {rule} | {shown} | {spread(best)} | {spread(final)} | {spread(worst)} |")
    centrals = sorted({round(s["central_accuracy"], 2) for s in results})
    lines += [
        "",
        f"Target: {TARGET_FRACTION:.0%} of the centrally trained model's accuracy ({centrals} %); "
        "— = not reached.",
    ]
    text = "\n".join(lines) + "\n"
    atomic_write_json(folder / "board.json", {"title": title, "rows": rows, "runs": results})
    atomic_write_bytes(folder / "board.md", text.encode())
    return text
