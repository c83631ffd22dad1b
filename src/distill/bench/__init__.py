"""``distill bench``: speed and cache-fidelity measurements, side by side in one run.

Benchmarks are not tests: they report medians of interleaved repeats as JSON and a markdown
table, and assert nothing about time.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from distill.files import atomic_write_bytes, atomic_write_json


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
    }


#: Seconds each variant is timed for at least, in all its rounds, per scale.
MIN_SECONDS = {"tiny": 0.0, "quick": 0.5, "full": 2.0}


def run_bench(
    scale: str = "full", repeats: int | None = None, on_progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Time every task and measure top-k cache fidelity; returns the JSON document.

    ``scale``: ``full``, ``quick`` (under about 2 minutes) or ``tiny`` (for tests).
    ``on_progress``: called with a one-line summary as each task and each cache comparison ends.
    """
    from distill.bench.cache_accuracy import compare_top_k
    from distill.bench.tasks import bench_tasks
    from distill.bench.timing import time_task

    repeats = repeats or {"tiny": 1, "quick": 3, "full": 7}[scale]
    min_seconds = MIN_SECONDS[scale]
    started = time.perf_counter()
    report = on_progress or (lambda line: None)
    tasks: dict[str, Any] = {}
    todo = bench_tasks(scale)
    for number, task in enumerate(todo, 1):
        begun = time.perf_counter()
        tasks[task.name] = timed = time_task(task, repeats, min_seconds)
        report(
            f"task {number}/{len(todo)} {task.name}: scratch {timed['scratch_epoch_s']:.3f} s/epoch, "
            f"KD cached {timed['kd_cached_over_scratch']:.2f}× scratch, "
            f"KD live {timed['kd_live_over_scratch']:.2f}× scratch "
            f"({timed['repeats']} rounds, {time.perf_counter() - begun:.1f} s)"
        )
    comparisons = []
    for temperature in (4.0, 1.0):
        begun = time.perf_counter()
        comparison = compare_top_k(scale, temperature)
        comparisons.append(comparison)
        top = next(key for key in comparison["bytes_per_sample"] if key != "full")
        report(
            f"top-k cache at T = {temperature:g}: full logits {100 * comparison['full_mean']:.2f}% "
            f"vs {top} {100 * comparison[f'{top}_mean']:.2f}% ({time.perf_counter() - begun:.1f} s)"
        )
    cache = {
        "bytes_per_sample": comparisons[0]["bytes_per_sample"],
        "bytes_ratio": comparisons[0]["bytes_ratio"],
        "top_k_vs_full": comparisons,
    }
    return {
        "tasks": tasks,
        "cache": cache,
        "machine": machine_info(),
        "scale": scale,
        "seconds": time.perf_counter() - started,
    }


def markdown_report(result: dict[str, Any]) -> str:
    """The bench result as markdown tables."""
    lines = [
        "| task | scratch s/epoch | KD live | KD cached | plain loop | cached/scratch "
        "| cached − scratch per step | live/plain loop | augmented: cached/scratch "
        "| scratch, unfused optimizer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, task in result["tasks"].items():
        lines.append(
            f"| {name} | {task['scratch_epoch_s']:.3f} | {task['kd_live_epoch_s']:.3f} "
            f"| {task['kd_cached_epoch_s']:.3f} | {task['plain_loop_epoch_s']:.3f} "
            f"| {task['kd_cached_over_scratch']:.2f}× | {task['kd_cached_extra_ms_per_step']:+.2f} ms "
            f"| {task['kd_live_over_plain_loop']:.2f}× "
            f"| {task['kd_cached_augmented_over_scratch_augmented']:.2f}× "
            f"| {task['scratch_unfused_optimizer_over_scratch']:.2f}× |"
        )
    hinted = {name: task for name, task in result["tasks"].items() if "kd_hint_cached_epoch_s" in task}
    if hinted:
        lines += [
            "",
            "| task | FitNet hint (student ← teacher) | KD + hint live s/epoch | KD + hint cached "
            "| live/scratch | cached/scratch |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for name, task in hinted.items():
            student_layer, teacher_layer = task["hint_layers"]
            lines.append(
                f"| {name} | {student_layer} ← {teacher_layer} | {task['kd_hint_live_epoch_s']:.3f} "
                f"| {task['kd_hint_cached_epoch_s']:.3f} | {task['kd_hint_live_over_scratch']:.2f}× "
                f"| {task['kd_hint_cached_over_scratch']:.2f}× |"
            )
    cache = result["cache"]
    lines.append("")
    for comparison in cache["top_k_vs_full"]:
        top = next(key for key in comparison["bytes_per_sample"] if key != "full")
        lines.append(
            f"Top-k cache at T = {comparison['temperature']:g} ({comparison['task']}, "
            f"{comparison['epochs']} epochs, seeds {comparison['seeds']}): full logits "
            f"{100 * comparison['full_mean']:.2f}% vs {top} {100 * comparison[f'{top}_mean']:.2f}% "
            f"({comparison['difference_points']:+.2f} points; rest as one bin "
            f"{comparison['bin_difference_points']:+.2f}) at {comparison['bytes_per_sample'][top]} "
            f"vs {comparison['bytes_per_sample']['full']} bytes per sample "
            f"({comparison['bytes_ratio']:.2f}×)."
        )
    lines += [
        "",
        "Medians of interleaved repeats ("
        + ", ".join(f"{name}: {task['repeats']}" for name, task in result["tasks"].items())
        + "); "
        f"{result['machine']['cpu_count']} CPUs, torch {result['machine']['torch']}, "
        f"{result['machine']['torch_threads']} threads.",
    ]
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], output_dir: Path) -> tuple[Path, Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = output_dir / "bench.json", output_dir / "bench.md"
    atomic_write_json(json_path, result)
    atomic_write_bytes(markdown_path, markdown_report(result).encode())
    return json_path, markdown_path


__all__ = ["machine_info", "markdown_report", "run_bench", "write_report"]
