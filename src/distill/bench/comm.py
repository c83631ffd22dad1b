"""An analytic model of gradient-synchronization time (GST) and network cost — a model, not a
measurement.

One machine cannot show what BML (Wang et al., NeurIPS 2018) gains on a BCube network, so this
module prices each algorithm's per-stage traffic under the α–β (Hockney) cost model the paper's
analysis rests on. Assumptions, stated once:

* every link has bandwidth ``B`` in each direction (full duplex) and every message a start-up
  latency ``α``; switches are non-blocking; a server's NICs work concurrently, one NIC's
  messages one after another;
* a *stage* ends when its busiest NIC is done, so it lasts
  ``messages_on_that_NIC·α + bytes_on_that_NIC / B``, and GST is the sum over stages;
* the gradient is ``G`` bytes on every one of the ``N`` servers; computation is not modelled.

The algorithms and their stages:

* **PS on a Fat-Tree** (the paper's baseline): a parameter-server shard on every server, each
  holding ``1/N`` of the model (the sharded, co-located deployment — the fastest PS, since no
  server's NIC carries more than its share). Push: every server sends ``G/N`` to each of the
  other ``N−1`` shards; pull: the same back. Two stages of ``N−1`` messages, ``(N−1)/N·G`` each.
* **Ring all-reduce on a Fat-Tree**: ``2(N−1)`` stages of one ``G/N`` message (a reduce-scatter
  then an all-gather around the ring).
* **BML on BCube(n, k)**: the stages of :func:`distill.engine.bcube.bml_plan` — the same plan the
  ``torch.distributed`` hook executes — ``2(k+1)`` steps in which each of the ``k+1`` NICs of a
  server carries one slice's transfer of ``n−1`` messages.

Switches: BCube(n, k) uses ``(k+1)·n^k`` switches of ``n`` ports; a three-layer Fat-Tree of
``n``-port switches hosts ``n³/4`` servers on ``5n²/4`` switches, i.e. ``5/n`` switches per
server, and we price a Fat-Tree for ``N`` servers at ``5N/n`` (its per-server rate).

With ``L = k+1`` levels the bandwidth terms give ``GST_BML / GST_PS = 1/L`` and the switch
counts ``L/5``: the paper's "1/k of the GST with k/5 of the switches" when ``k`` counts the
levels (the NICs per server). Under Guo et al.'s indexing used here — BCube(n, k) has ``k+1``
levels — the same claims read ``1/(k+1)`` and ``(k+1)/5``; :func:`paper_claims` reports both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from distill.engine.bcube import BCube, bml_plan

#: The gradient sizes of the tables, in parameters (float32 gradients: 4 bytes each).
#: VGG-19 for ImageNet (Simonyan & Zisserman 2015); resnet8x4 as ``distill`` builds it for
#: 100 classes (the CIFAR-100 student of the KD literature).
GRADIENTS = {"VGG-19 (ImageNet)": 143_667_240, "resnet8x4 (CIFAR-100)": 1_233_540}


@dataclass(frozen=True)
class Network:
    """Link bandwidth in gigabits per second and per-message latency in microseconds."""

    bandwidth_gbps: float = 10.0
    latency_us: float = 5.0

    def __post_init__(self) -> None:
        if not self.bandwidth_gbps > 0:
            raise ValueError(f"bandwidth must be positive, got {self.bandwidth_gbps} Gbit/s")
        if not self.latency_us >= 0:
            raise ValueError(f"latency cannot be negative, got {self.latency_us} µs")

    def seconds(self, messages: int, num_bytes: float) -> float:
        """One NIC's time to send ``messages`` messages carrying ``num_bytes`` in all."""
        return messages * self.latency_us * 1e-6 + num_bytes * 8 / (self.bandwidth_gbps * 1e9)


@dataclass(frozen=True)
class Stage:
    """The busiest NIC of one stage: how many messages and bytes it sends; ``nics``: how many
    of a server's NICs carry that load at once in the stage."""

    messages: int
    num_bytes: float
    nics: int = 1


@dataclass(frozen=True)
class Estimate:
    """One algorithm's modelled GST on ``servers`` servers, with its switch count."""

    algorithm: str
    topology: str
    servers: int
    switches: float
    stages: int
    bytes_per_server: float
    seconds: float
    #: BCube levels (NICs per server) for BML; 0 on a Fat-Tree
    levels: int = 0


def _estimate(
    algorithm: str,
    topology: str,
    servers: int,
    switches: float,
    stages: list[Stage],
    network: Network,
    levels: int = 0,
) -> Estimate:
    seconds = sum(network.seconds(stage.messages, stage.num_bytes) for stage in stages)
    sent = sum(stage.num_bytes * stage.nics for stage in stages)
    return Estimate(algorithm, topology, servers, switches, len(stages), sent, seconds, levels)


def fat_tree_switches(servers: int, ports: int) -> float:
    """Switches of a three-layer Fat-Tree of ``ports``-port switches, per server ``5/ports``."""
    return 5 * servers / ports


def parameter_server(gradient_bytes: float, servers: int, network: Network, ports: int = 48) -> Estimate:
    """Sharded, co-located PS on a Fat-Tree of ``ports``-port switches: push, then pull."""
    _check_servers(servers)
    share = gradient_bytes / servers
    stages = [Stage(servers - 1, (servers - 1) * share)] * 2
    return _estimate("ps", "fat-tree", servers, fat_tree_switches(servers, ports), stages, network)


def ring_all_reduce(gradient_bytes: float, servers: int, network: Network, ports: int = 48) -> Estimate:
    """Ring all-reduce on a Fat-Tree: ``2(N−1)`` neighbour exchanges of ``G/N``."""
    _check_servers(servers)
    stages = [Stage(1, gradient_bytes / servers)] * (2 * (servers - 1))
    return _estimate("ring", "fat-tree", servers, fat_tree_switches(servers, ports), stages, network)


def bml(gradient_elements: int, bytes_per_element: int, cube: BCube, network: Network) -> Estimate:
    """BML on ``cube``, priced from the hook's own plan (padding included)."""
    plan = bml_plan(cube, gradient_elements)
    stages = [
        Stage(cube.ports - 1, busiest * bytes_per_element, cube.levels)
        for busiest in plan.busiest_nic_per_step()
    ]
    topology = f"bcube({cube.ports},{cube.k})"
    return _estimate("bml", topology, cube.servers, cube.switches, stages, network, cube.levels)


def _check_servers(servers: int) -> None:
    if servers < 2:
        raise ValueError(f"synchronization needs at least 2 servers, got {servers}")


def compare(
    gradient_elements: int, cube: BCube, network: Network, bytes_per_element: int = 4
) -> dict[str, Estimate]:
    """PS and ring on a Fat-Tree of the cube's switches, and BML on the cube, for the same
    servers."""
    size = gradient_elements * bytes_per_element
    return {
        "ps": parameter_server(size, cube.servers, network, cube.ports),
        "ring": ring_all_reduce(size, cube.servers, network, cube.ports),
        "bml": bml(gradient_elements, bytes_per_element, cube, network),
    }


def paper_claims(cube: BCube) -> dict[str, float]:
    """The two ratios the paper states, from the bandwidth terms of the model (α = 0) for a
    large gradient, beside the closed forms in both indexings of ``k``."""
    estimates = compare(10**9, cube, Network(latency_us=0.0))
    return {
        "gst_bml_over_ps": estimates["bml"].seconds / estimates["ps"].seconds,
        "switches_bml_over_fat_tree": estimates["bml"].switches / estimates["ps"].switches,
        "one_over_levels": 1 / cube.levels,
        "levels_over_five": cube.levels / 5,
    }


def sweep(
    gradient_elements: int,
    network: Network,
    levels: tuple[int, ...] = (2, 3, 4),
    max_servers: int = 4096,
    bytes_per_element: int = 4,
) -> list[Estimate]:
    """GST against server count: BML on every BCube(n, L−1) up to ``max_servers`` for each ``L``
    in ``levels``, and PS and ring on Fat-Trees of the same servers and ports."""
    estimates: list[Estimate] = []
    for count in levels:
        ports = 2
        while ports**count <= max_servers:
            estimates.extend(
                compare(gradient_elements, BCube(ports, count), network, bytes_per_element).values()
            )
            ports += 1
    return estimates


def table_rows(gradients: dict[str, int], cubes: list[BCube], network: Network) -> list[dict[str, object]]:
    """One row per (gradient, cube, algorithm), ready for JSON and the markdown table."""
    rows: list[dict[str, object]] = []
    for name, elements in gradients.items():
        for cube in cubes:
            estimates = compare(elements, cube, network)
            for algorithm, estimate in estimates.items():
                rows.append(
                    {
                        "gradient": name,
                        "parameters": elements,
                        "servers": cube.servers,
                        "cube": f"BCube({cube.ports},{cube.k})",
                        "algorithm": algorithm,
                        "topology": estimate.topology,
                        "switches": math.ceil(estimate.switches),
                        "stages": estimate.stages,
                        "bytes_per_server": estimate.bytes_per_server,
                        "gst_ms": 1e3 * estimate.seconds,
                        "over_ps": estimate.seconds / estimates["ps"].seconds,
                    }
                )
    return rows
