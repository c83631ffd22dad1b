"""BML on BCube: the schedule as data, its algebra, and the DDP hook in real gloo processes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from distill.engine.bcube import BCube, bcube_of, bml_plan, level_order
from distill.engine.bml import BMLState, bml_sum_, register_bml

# ---------------------------------------------------------------------------- the cube and the plan


def test_bcube_counts_and_addresses():
    cube = BCube(3, 2)  # BCube(3,1): the paper's 9-server testbed
    assert (cube.k, cube.servers, cube.switches) == (1, 9, 6)
    assert cube.address(7) == (1, 2)  # 7 = 1 + 2·3
    assert cube.level_group(7, 0) == [6, 7, 8]  # differ only in digit 0
    assert cube.level_group(7, 1) == [1, 4, 7]  # differ only in digit 1
    assert BCube(2, 3).switches == 3 * 4  # (k+1)·n^k
    with pytest.raises(ValueError, match="outside"):
        cube.address(9)


def test_world_sizes_that_are_not_a_bcube_are_refused_with_the_sizes_that_fit():
    assert bcube_of(9, 3) == BCube(3, 2)
    assert bcube_of(8, 2) == BCube(2, 3)
    for world, ports in [(6, 2), (3, 3), (2, 2), (12, 3)]:
        with pytest.raises(ValueError, match=rf"BCube\({ports}, k\).*{ports**2}, {ports**3}.*has {world}"):
            bcube_of(world, ports)
    with pytest.raises(ValueError, match="at least 2 ports"):
        bcube_of(4, 1)


@pytest.mark.parametrize(("ports", "levels"), [(2, 2), (3, 2), (2, 3), (4, 3)])
def test_every_step_uses_each_level_once_and_every_slice_visits_every_level(ports, levels):
    """The property that makes the schedule BML's: the k+1 slices of a step run on k+1 different
    levels (so on different NICs), and each slice is aggregated over every level exactly once."""
    cube = BCube(ports, levels)
    plan = bml_plan(cube, 1001)
    assert len(plan.steps) == 2 * levels
    for step in plan.steps:
        assert sorted(transfer.level for transfer in step) == list(range(levels))
    for index in range(levels):
        down = [step[index].level for step in plan.steps[:levels]]
        up = [step[index].level for step in plan.steps[levels:]]
        assert down == level_order(cube, index) and up == down[::-1]


@given(ports=st.integers(2, 5), levels=st.integers(2, 4), length=st.integers(0, 5000))
@settings(max_examples=60, deadline=None)
def test_plan_lengths_and_traffic(ports, levels, length):
    cube = BCube(ports, levels)
    plan = bml_plan(cube, length)
    assert plan.padded_length >= length and plan.padded_length % (levels * cube.servers) == 0
    assert plan.padded_length - length < levels * cube.servers
    for step in plan.steps:
        for transfer in step:
            longer = max(transfer.elements_in, transfer.elements_out)
            assert transfer.elements_sent * ports == longer * (ports - 1)
    # each server sends 2·(N−1)/N of the (padded) buffer in all: the bandwidth-optimal volume
    assert plan.elements_sent_per_server() * cube.servers == 2 * (cube.servers - 1) * plan.padded_length


def _simulate(cube: BCube, buffers: list[np.ndarray]) -> list[np.ndarray]:
    """Run the plan on ``cube.servers`` in-memory servers with the collectives' semantics:
    reduce-scatter gives group member ``d`` (its digit at that level) the ``d``-th share of the
    group's sum; all-gather concatenates the members' pieces in digit order."""
    plan = bml_plan(cube, len(buffers[0]))
    held = []
    for buffer in buffers:
        padded = np.zeros(plan.padded_length)
        padded[: len(buffer)] = buffer
        held.append(np.split(padded, cube.levels))
    for step in plan.steps:
        after = [list(slices) for slices in held]
        for transfer in step:
            for server in range(cube.servers):
                group = cube.level_group(server, transfer.level)
                digit = cube.address(server)[transfer.level]
                pieces = [held[member][transfer.slice] for member in group]
                if transfer.phase == "reduce-scatter":
                    after[server][transfer.slice] = np.split(np.sum(pieces, axis=0), cube.ports)[digit]
                else:
                    after[server][transfer.slice] = np.concatenate(pieces)
        held = after
    return [np.concatenate(slices)[: len(buffers[0])] for slices in held]


@pytest.mark.parametrize(
    ("ports", "levels", "length"), [(2, 2, 7), (3, 2, 1), (2, 3, 1000), (3, 3, 55), (4, 2, 33)]
)
def test_the_plan_computes_the_sum_on_every_server(ports, levels, length):
    cube = BCube(ports, levels)
    rng = np.random.default_rng(ports * 10 + levels)
    buffers = [rng.normal(size=length) for _ in range(cube.servers)]
    for result in _simulate(cube, buffers):
        np.testing.assert_allclose(result, np.sum(buffers, axis=0), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------- real processes


def _worker(rank: int, world: int, ports: int, init_file: str, results: dict) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        state = BMLState.create(ports)
        sums = []
        for length in (1, 7, 1000, 12345):
            tensor = torch.randn(
                length, generator=torch.Generator().manual_seed(rank * 31 + length), dtype=torch.float64
            )
            reference = tensor.clone()
            dist.all_reduce(reference)
            bml_sum_(tensor, state)
            sums.append(float((tensor - reference).abs().max()))

        # DDP: the same model on every rank, different data; several small buckets
        def model() -> nn.Module:
            torch.manual_seed(0)
            return nn.Sequential(nn.Linear(13, 37), nn.ReLU(), nn.Linear(37, 11), nn.ReLU(), nn.Linear(11, 3))

        plain = DistributedDataParallel(model(), bucket_cap_mb=0.001, gradient_as_bucket_view=True)
        hooked = DistributedDataParallel(model(), bucket_cap_mb=0.001, gradient_as_bucket_view=True)
        register_bml(hooked, ports)
        generator = torch.Generator().manual_seed(100 + rank)
        inputs, targets = (
            torch.randn(8, 13, generator=generator),
            torch.randint(0, 3, (8,), generator=generator),
        )
        for ddp in (plain, hooked):
            nn.functional.cross_entropy(ddp(inputs), targets).backward()
        grads = float(
            max(
                (a.grad - b.grad).abs().max()
                for a, b in zip(plain.parameters(), hooked.parameters(), strict=True)
            )
        )
        scale = float(max(p.grad.abs().max() for p in plain.parameters()))
        results[rank] = (sums, grads, scale)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize(("world", "ports"), [(4, 2), (8, 2), (9, 3)])
def test_bml_equals_all_reduce_in_gloo_processes(tmp_path, world, ports):
    """BCube(2,1), BCube(2,2) and BCube(3,1): float64 sums equal all_reduce's to rounding, and
    DDP gradients through the hook equal the default all-reduce's (float32, several buckets)."""
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(world, ports, str(tmp_path / "init"), results), nprocs=world, join=True)
    for rank in range(world):
        sums, grads, scale = results[rank]
        assert max(sums) < 1e-12, f"rank {rank}: {sums}"
        assert scale > 1e-3 and grads <= 1e-6 * scale, f"rank {rank}: max |Δ| {grads} at scale {scale}"
