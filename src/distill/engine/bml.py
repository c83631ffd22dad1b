"""BML gradient synchronization as a ``DistributedDataParallel`` communication hook.

Executes :func:`distill.engine.bcube.bml_plan` with ``torch.distributed`` collectives: one
process group per BCube level (the dimensions of a device mesh of shape ``(n,)*(k+1)``; mesh
dimension ``k−l`` is level ``l``, so a level-0 group is ``n`` consecutive ranks), a
``reduce_scatter_single`` per slice at each aggregation step and an ``all_gather_single`` per
slice at each broadcast step. The ``k+1`` slices of a step are issued together (``async_op``) on
their ``k+1`` different level groups and waited for together, which is what lets BML keep every
NIC of a BCube server busy; on one machine (gloo over the loopback interface) it shows only the
schedule's overhead, never BCube's network benefit — see :mod:`distill.bench.comm`.

The hook averages (divides by the world size first, as PyTorch's ``allreduce_hook`` does) and
equals an all-reduce up to floating-point summation order. It runs a bucket's whole schedule
before it returns, so a bucket's synchronization does not overlap the rest of the backward pass
the way DDP's asynchronous all-reduce does; the buckets are still synchronized in DDP's order on
every rank, which keeps the collectives of each level group matched across ranks.
"""

# No ``from __future__ import annotations``: DDP checks the hook's annotations at run time
# (``bucket`` must be annotated ``dist.GradBucket`` itself, not a string).
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.nn.parallel import DistributedDataParallel

from distill.engine.bcube import BCube, Plan, bcube_of, bml_plan


@dataclass
class BMLState:
    """What the hook needs: the cube and one process group per level (index = level)."""

    cube: BCube
    level_groups: list[dist.ProcessGroup]

    @classmethod
    def create(cls, ports: int, device_type: str = "cpu") -> "BMLState":
        """Build the level groups of the BCube of ``ports``-port switches on the default
        process group (every rank must call this, in the same order). Raises ``ValueError``
        when the world size is not ``ports^(k+1)`` with ``k ≥ 1``."""
        cube = bcube_of(dist.get_world_size(), ports)
        mesh = init_device_mesh(device_type, (ports,) * cube.levels)
        groups = [mesh.get_group(cube.levels - 1 - level) for level in range(cube.levels)]
        return cls(cube, groups)


def bml_sum_(buffer: torch.Tensor, state: BMLState, plan: Plan | None = None) -> torch.Tensor:
    """Replace the flat ``buffer`` by its elementwise sum over all ranks, by BML's schedule
    (every rank calls it with a buffer of the same length and dtype); returns ``buffer``."""
    if buffer.ndim != 1:
        raise ValueError(f"BML synchronizes flat buffers, got shape {tuple(buffer.shape)}")
    plan = plan or bml_plan(state.cube, buffer.numel())
    levels = state.cube.levels
    padded = buffer.new_zeros(plan.padded_length)
    padded[: buffer.numel()] = buffer
    held = list(padded.chunk(levels))  # what each slice currently holds on this rank
    for step in plan.steps:
        outputs, works = [], []
        for transfer in step:
            output = buffer.new_empty(transfer.elements_out)
            group = state.level_groups[transfer.level]
            if transfer.phase == "reduce-scatter":
                work = dist.reduce_scatter_single(output, held[transfer.slice], group=group, async_op=True)
            else:
                work = dist.all_gather_single(output, held[transfer.slice], group=group, async_op=True)
            outputs.append(output)
            works.append(work)
        for work in works:
            if work is not None:
                work.wait()
        for transfer, output in zip(step, outputs, strict=True):
            held[transfer.slice] = output
    buffer.copy_(torch.cat(held)[: buffer.numel()])
    return buffer


def bml_hook(state: BMLState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: the bucket's gradients averaged over ranks by BML."""
    buffer = bucket.buffer()
    buffer.div_(state.cube.servers)
    bml_sum_(buffer, state)
    future: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    future.set_result(buffer)
    return future


def register_bml(module: DistributedDataParallel, ports: int, device_type: str = "cpu") -> "BMLState":
    """Make ``module`` synchronize its gradients with BML on BCube(``ports``, k)."""
    state = BMLState.create(ports, device_type)
    module.register_comm_hook(state, bml_hook)
    return state
