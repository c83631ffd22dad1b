"""Wall time of one gradient synchronization, BML against all-reduce, in real gloo processes.

What this measures on one machine: ``world`` processes on localhost synchronize the flat
gradient buffer of a real model (resnet8x4 by default, its gradients from one backward pass of
random CIFAR-shaped images) with ``torch.distributed.all_reduce`` and with BML's schedule
(:func:`distill.engine.bml.bml_sum_`), interleaved, ``repeats`` times each. Every process shares
the same CPUs and gloo moves the bytes over the loopback interface, so this is the *overhead* of
BML's ``2(k+1)`` stages of smaller collectives against one all-reduce — not BCube's network
benefit, which needs ``k+1`` NICs per server and is what :mod:`distill.bench.comm` models.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distill.engine.bcube import bcube_of
from distill.engine.bml import BMLState, bml_sum_
from distill.models import build_model
from distill.models.resnet import ResNetSpec


def model_gradients(depth: int = 8, width: int = 4, classes: int = 100, seed: int = 0) -> torch.Tensor:
    """The flat float32 gradient of a CIFAR-style ResNet after one backward pass (8 images)."""
    generator = torch.Generator().manual_seed(seed)
    model = build_model(ResNetSpec(depth=depth, width=width), (3, 32, 32), classes)
    images = torch.randn(8, 3, 32, 32, generator=generator)
    labels = torch.randint(0, classes, (8,), generator=generator)
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _slowest(seconds: float) -> float:
    """The longest of the ranks' times for the same synchronization."""
    value = torch.tensor([seconds], dtype=torch.float64)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value.item())


def _worker(rank: int, world: int, ports: int, repeats: int, init_file: str, results: Any) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        state = BMLState.create(ports)
        gradient = model_gradients(seed=rank)
        times: dict[str, list[float]] = {"all_reduce": [], "bml": []}
        outcome: dict[str, torch.Tensor] = {}
        for repeat in range(repeats + 1):  # the first round warms both paths up and is dropped
            order = ["all_reduce", "bml"] if repeat % 2 == 0 else ["bml", "all_reduce"]
            for name in order:
                buffer = gradient.clone()
                dist.barrier()
                started = time.perf_counter()
                buffer.div_(world)
                if name == "bml":
                    bml_sum_(buffer, state)
                else:
                    dist.all_reduce(buffer)
                elapsed = _slowest(time.perf_counter() - started)
                if repeat:
                    times[name].append(elapsed)
                outcome[name] = buffer
        if rank == 0:
            results["all_reduce_ms"] = 1e3 * statistics.median(times["all_reduce"])
            results["bml_ms"] = 1e3 * statistics.median(times["bml"])
            results["max_abs_difference"] = float((outcome["bml"] - outcome["all_reduce"]).abs().max())
            results["elements"] = gradient.numel()
    finally:
        dist.destroy_process_group()


def measure_sync(world: int, ports: int, repeats: int = 20) -> dict[str, Any]:
    """Medians of ``repeats`` interleaved synchronizations of resnet8x4's gradients in ``world``
    gloo processes on this machine (BML on BCube(``ports``, k))."""
    cube = bcube_of(world, ports)
    with tempfile.TemporaryDirectory(prefix="distill-comm-") as folder:
        manager = mp.Manager()
        results = manager.dict()
        mp.spawn(
            _worker,
            args=(world, ports, repeats, str(Path(folder) / "init"), results),
            nprocs=world,
            join=True,
        )
        measured = dict(results)
        manager.shutdown()
    return {
        "processes": world,
        "cube": f"BCube({cube.ports},{cube.k})",
        "repeats": repeats,
        "backend": "gloo",
        **measured,
        "bml_over_all_reduce": measured["bml_ms"] / measured["all_reduce_ms"],
    }
