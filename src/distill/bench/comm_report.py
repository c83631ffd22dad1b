"""``distill bench comm``: the GST model's tables and plot, and the measured overhead on this
machine, as ``comm.json``, ``comm.md`` and ``comm.png``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.bench import machine_info
from distill.bench.comm import GRADIENTS, Network, paper_claims, sweep, table_rows
from distill.engine.bcube import BCube
from distill.files import atomic_write_bytes, atomic_write_json
from distill.report.plots import save_figure

#: The tables' networks: the paper's 9-server testbed, BCube(3,1), and a 1,000-server
#: extrapolation, BCube(10,2) — plus BCube(32,1) with 1,024 servers, the two-level choice.
TABLE_CUBES = (BCube(3, 2), BCube(10, 3), BCube(32, 2))

#: (processes, switch ports) of the measured layouts: BCube(2,1) and BCube(3,1).
MEASURED = ((4, 2), (9, 3))


def run_comm(
    network: Network,
    measure: bool = True,
    repeats: int = 20,
    layouts: tuple[tuple[int, int], ...] = MEASURED,
    max_servers: int = 4096,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The model's tables and sweep for ``network``, and (``measure``) the wall time of one
    synchronization in real gloo processes for each ``(processes, ports)`` layout."""
    report = on_progress or (lambda line: None)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "kind": "model",
        "network": {"bandwidth_gbps": network.bandwidth_gbps, "latency_us": network.latency_us},
        "claims": {f"BCube({cube.ports},{cube.k})": paper_claims(cube) for cube in TABLE_CUBES},
        "table": table_rows(GRADIENTS, list(TABLE_CUBES), network),
        "sweep": {
            name: [vars(estimate) for estimate in sweep(elements, network, max_servers=max_servers)]
            for name, elements in GRADIENTS.items()
        },
        "measured": [],
        "machine": machine_info(),
    }
    if measure:
        from distill.bench.comm_measure import measure_sync

        for world, ports in layouts:
            begun = time.perf_counter()
            timing = measure_sync(world, ports, repeats)
            result["measured"].append(timing)
            report(
                f"{world} processes, {timing['cube']}: all-reduce {timing['all_reduce_ms']:.1f} ms, "
                f"BML {timing['bml_ms']:.1f} ms ({timing['bml_over_all_reduce']:.2f}×; "
                f"{time.perf_counter() - begun:.1f} s)"
            )
    result["seconds"] = time.perf_counter() - started
    return result


def comm_markdown(result: dict[str, Any]) -> str:
    network = result["network"]
    lines = [
        "## Gradient-synchronization time: the analytic model (not a measurement)",
        "",
        f"α–β model, {network['bandwidth_gbps']:g} Gbit/s links, {network['latency_us']:g} µs per "
        "message, float32 gradients; PS is sharded and co-located on a Fat-Tree, ring all-reduce on "
        "the same Fat-Tree, BML on the BCube of the same servers and switch ports "
        "(see `distill.bench.comm`).",
        "",
        "| gradient | servers | network | algorithm | switches | stages | MB sent per server "
        "| GST ms | × PS |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["table"]:
        network_name = row["cube"] if row["algorithm"] == "bml" else "Fat-Tree"
        lines.append(
            f"| {row['gradient']} | {row['servers']} | {network_name} | {row['algorithm']} "
            f"| {row['switches']} | {row['stages']} | {row['bytes_per_server'] / 1e6:.1f} "
            f"| {row['gst_ms']:.2f} | {row['over_ps']:.3f} |"
        )
    lines += [
        "",
        "The paper's claims from the model's bandwidth terms (α = 0, a 1-G-element gradient): "
        "GST(BML)/GST(PS) and switches(BCube)/switches(Fat-Tree), against 1/L and L/5 for L = k+1 "
        "levels:",
        "",
        "| network | GST ratio | 1/L | switch ratio | L/5 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, claim in result["claims"].items():
        lines.append(
            f"| {name} | {claim['gst_bml_over_ps']:.4f} | {claim['one_over_levels']:.4f} "
            f"| {claim['switches_bml_over_fat_tree']:.3f} | {claim['levels_over_five']:.3f} |"
        )
    if result["measured"]:
        lines += [
            "",
            "## Measured on this machine: one synchronization, gloo over loopback",
            "",
            "All processes share this machine's CPUs; this is BML's schedule overhead against one "
            "all-reduce, not BCube's network benefit.",
            "",
            "| processes | layout | elements | all-reduce ms | BML ms | BML / all-reduce | max \\|Δ\\| "
            "| repeats |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for timing in result["measured"]:
            lines.append(
                f"| {timing['processes']} | {timing['cube']} | {timing['elements']} "
                f"| {timing['all_reduce_ms']:.1f} | {timing['bml_ms']:.1f} "
                f"| {timing['bml_over_all_reduce']:.2f}× | {timing['max_abs_difference']:.1e} "
                f"| {timing['repeats']} |"
            )
        machine = result["machine"]
        lines += [
            "",
            f"Medians; {machine['cpu_count']} CPUs, torch {machine['torch']}, one thread per process.",
        ]
    return "\n".join(lines) + "\n"


def plot_sweep(result: dict[str, Any], path: Path) -> None:
    """GST against server count, one panel per gradient: PS and ring on Fat-Trees, BML on
    BCubes of 2, 3 and 4 levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = result["sweep"]
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for axis, (name, estimates) in zip(axes[0], panels.items(), strict=True):
        for algorithm, label, style in [
            ("ps", "PS (Fat-Tree)", "-"),
            ("ring", "ring all-reduce (Fat-Tree)", "--"),
        ]:
            points = sorted({(e["servers"], e["seconds"]) for e in estimates if e["algorithm"] == algorithm})
            axis.plot([s for s, _ in points], [1e3 * t for _, t in points], style, label=label)
        bml = [e for e in estimates if e["algorithm"] == "bml"]
        for levels in sorted({e["levels"] for e in bml}):
            points = sorted((e["servers"], e["seconds"]) for e in bml if e["levels"] == levels)
            axis.plot(
                [s for s, _ in points],
                [1e3 * t for _, t in points],
                "o-",
                markersize=3,
                label=f"BML, BCube(n,{levels - 1}) ({levels} NICs)",
            )
        axis.set(xscale="log", yscale="log", xlabel="servers", ylabel="modelled GST (ms)", title=name)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    network = result["network"]
    figure.suptitle(
        f"Analytic model, not a measurement: {network['bandwidth_gbps']:g} Gbit/s, "
        f"{network['latency_us']:g} µs per message"
    )
    save_figure(figure, path)


def write_comm_report(result: dict[str, Any], output_dir: Path) -> list[Path]:
    """Write ``comm.json``, ``comm.md`` and ``comm.png`` into ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [output_dir / "comm.json", output_dir / "comm.md", output_dir / "comm.png"]
    atomic_write_json(paths[0], result)
    atomic_write_bytes(paths[1], comm_markdown(result).encode())
    plot_sweep(result, paths[2])
    return paths
