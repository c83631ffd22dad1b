"""BCube(n, k) and BML's synchronization schedule over it, as plain data (no process group).

BCube (Guo et al., SIGCOMM 2009) connects ``N = n^(k+1)`` servers with ``k+1`` levels of
``n``-port switches; every server has ``k+1`` NICs, one per level. A server's address is its
``k+1`` base-``n`` digits; a level-``l`` switch joins the ``n`` servers whose addresses differ
only in digit ``l``, so each level has ``n^k`` switches and the network ``(k+1)·n^k``.

BML (Wang et al., "BML: A High-performance, Low-cost Gradient Synchronization Algorithm for DML
Training", NeurIPS 2018) sums the gradients of all servers in two phases: an *aggregation*
phase that reduce-scatters down the levels — after the stage at level ``l`` a server holds the
sum over its level-``l`` group of a ``1/n`` share of what it held before — and a *broadcast*
phase that all-gathers the ``1/N`` shares back up the levels in reverse order. To keep all
``k+1`` NICs busy at once the gradient is cut into ``k+1`` slices, and slice ``i`` takes the
levels in the rotated order ``i, i+1, …, i+k (mod k+1)``: at every stage the ``k+1`` slices
use ``k+1`` different levels, hence different NICs and switches. The result is an all-reduce.

:func:`bml_plan` states this schedule as data — which slice uses which level at which step, how
many elements go in and out, and how many each server sends on that level's NIC. The
``torch.distributed`` hook (:mod:`distill.engine.bml`) executes the plan and the network cost
model (:mod:`distill.bench.comm`) prices it, so the two cannot disagree about the traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Phase = Literal["reduce-scatter", "all-gather"]


@dataclass(frozen=True)
class BCube:
    """BCube(``ports``, ``levels − 1``): ``ports^levels`` servers, ``levels`` NICs each."""

    ports: int
    levels: int

    def __post_init__(self) -> None:
        if self.ports < 2:
            raise ValueError(f"a BCube switch needs at least 2 ports, got {self.ports}")
        if self.levels < 1:
            raise ValueError(f"a BCube needs at least 1 level, got {self.levels}")

    @property
    def k(self) -> int:
        """The BCube order ``k`` of BCube(n, k): one less than the number of levels."""
        return self.levels - 1

    @property
    def servers(self) -> int:
        return self.ports**self.levels

    @property
    def switches(self) -> int:
        """``(k+1)·n^k`` switches of ``n`` ports."""
        return self.levels * self.ports ** (self.levels - 1)

    def address(self, server: int) -> tuple[int, ...]:
        """The base-``n`` digits of ``server``, digit 0 (the level-0 position) first."""
        if not 0 <= server < self.servers:
            raise ValueError(f"server {server} is outside BCube({self.ports},{self.k}) of {self.servers}")
        return tuple((server // self.ports**level) % self.ports for level in range(self.levels))

    def level_group(self, server: int, level: int) -> list[int]:
        """The servers on ``server``'s level-``level`` switch (itself included), by digit ``level``."""
        stride = self.ports**level
        base = server - self.address(server)[level] * stride
        return [base + digit * stride for digit in range(self.ports)]


def bcube_of(world_size: int, ports: int) -> BCube:
    """The BCube of ``ports``-port switches with ``world_size`` servers, or a ``ValueError``
    naming the world sizes that fit (``ports^(k+1)`` for ``k ≥ 1``) when there is none."""
    if ports < 2:
        raise ValueError(f"BML needs switches of at least 2 ports, got {ports}")
    levels, servers = 0, 1
    while servers < world_size:
        levels, servers = levels + 1, servers * ports
    if servers != world_size or levels < 2:
        fitting = ", ".join(str(ports**levels) for levels in range(2, 6))
        raise ValueError(
            f"BML on BCube({ports}, k) needs {ports}^(k+1) processes with k ≥ 1 "
            f"({fitting}, …); this run has {world_size}"
        )
    return BCube(ports, levels)


@dataclass(frozen=True)
class Transfer:
    """One slice's collective at one step of the plan, on one level's switches.

    ``elements_in``/``elements_out``: the slice's length on each server before and after the
    collective. ``elements_sent``: how many elements each server sends on its level-``level``
    NIC — ``(n−1)/n`` of the longer of the two — and as many arrive on it.
    """

    phase: Phase
    step: int
    slice: int
    level: int
    elements_in: int
    elements_out: int
    elements_sent: int


@dataclass(frozen=True)
class Plan:
    """BML's schedule for a flat buffer of ``length`` elements on ``cube``.

    The buffer is zero-padded to ``padded_length`` (a multiple of ``levels × servers``) and cut
    into ``levels`` equal slices; ``steps[s]`` holds the ``levels`` transfers that run at once at
    step ``s`` — ``levels`` reduce-scatter steps, then ``levels`` all-gather steps.
    """

    cube: BCube
    length: int
    padded_length: int
    steps: tuple[tuple[Transfer, ...], ...]

    def elements_sent_per_server(self) -> int:
        """Elements one server sends over all its NICs in the whole synchronization."""
        return sum(transfer.elements_sent for step in self.steps for transfer in step)

    def busiest_nic_per_step(self) -> list[int]:
        """For each step, the most elements any one NIC of a server sends (the step's length
        on links of equal bandwidth)."""
        return [max(transfer.elements_sent for transfer in step) for step in self.steps]


def level_order(cube: BCube, slice_index: int) -> list[int]:
    """The aggregation order of levels for slice ``slice_index``: ``i, i+1, …`` mod ``levels``."""
    return [(slice_index + offset) % cube.levels for offset in range(cube.levels)]


def bml_plan(cube: BCube, length: int) -> Plan:
    """The BML schedule of a ``length``-element buffer on ``cube`` (see the module docstring)."""
    if length < 0:
        raise ValueError(f"a buffer cannot have {length} elements")
    quantum = cube.levels * cube.servers
    padded = -(-length // quantum) * quantum
    per_slice = padded // cube.levels
    n = cube.ports
    steps: list[tuple[Transfer, ...]] = []
    for step in range(cube.levels):  # aggregation: each step divides a slice's share by n
        held = per_slice // n**step
        steps.append(
            tuple(
                Transfer(
                    "reduce-scatter",
                    step,
                    index,
                    level_order(cube, index)[step],
                    held,
                    held // n,
                    held - held // n,
                )
                for index in range(cube.levels)
            )
        )
    for back in range(cube.levels):  # broadcast: the levels again, in reverse order
        held = per_slice // n ** (cube.levels - back)
        steps.append(
            tuple(
                Transfer(
                    "all-gather",
                    cube.levels + back,
                    index,
                    level_order(cube, index)[cube.levels - 1 - back],
                    held,
                    held * n,
                    held * n - held,
                )
                for index in range(cube.levels)
            )
        )
    return Plan(cube, length, padded, tuple(steps))
