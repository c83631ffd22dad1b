"""The weighted power mean as all-reduces, in real gloo processes, against a gathered reference."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from distill.engine.mirror_reduce import MirrorAverager, power_mean_all_reduce
from distill.federated.mirror import power_mean


def _worker(rank: int, world: int, init_file: str, degree: float, results: dict) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        generator = torch.Generator().manual_seed(rank)
        tensor = torch.randn(5, 7, generator=generator, dtype=torch.float64) * 40  # |x|^20 would overflow
        weight = float(rank + 1)
        gathered = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(gathered, tensor)
        reference = power_mean(
            torch.stack(gathered), torch.arange(1.0, world + 1, dtype=torch.float64), degree
        )
        power_mean_all_reduce(tensor, weight, degree)
        error = float((tensor - reference).abs().max())

        torch.manual_seed(100 + rank)  # local SGD: different weights on every rank, then averaged
        model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        averager = MirrorAverager(model, degree, period=2, weight=1.0)
        synced = [averager.after_step(), averager.after_step()]
        flat = torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()])
        everyone = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(everyone, flat)
        spread = float(max((other - flat).abs().max() for other in everyone))
        results[rank] = (error, synced, spread)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("world", "degree"), [(4, 1.0), (4, 3.0), (3, 20.0)])
def test_all_reduce_power_mean_matches_the_gathered_reference(tmp_path, world, degree):
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), degree, results), nprocs=world, join=True)
    for rank in range(world):
        error, synced, spread = results[rank]
        assert error < 1e-9, f"rank {rank}: {error}"
        assert synced == [False, True]  # averages on every second step
        assert spread == 0.0  # after averaging every rank holds the same weights
