"""The weighted power mean across processes, from SUM and MAX all-reduces only.

HyperPrism / AIMS aggregation (:mod:`distill.federated.mirror`) for multi-process training under
``torchrun``: every rank holds its own model (local SGD, no gradient all-reduce); after every
``period`` optimizer steps :class:`MirrorAverager` replaces each floating-point parameter and
buffer by its weighted power mean over the ranks,

``x̄ = φ_p⁻¹( Σ_r w_r·φ_p(x_r) / Σ_r w_r )``,  ``φ_p(x) = sign(x)·|x|^p``,

computed as a MAX all-reduce of ``|x|`` (the scale ``s`` of each coordinate: power means are
positively homogeneous and coordinate-wise, so the powers of ``x/s`` neither overflow nor
vanish), a SUM all-reduce of ``w_r·φ_p(x_r/s)`` and a SUM all-reduce of ``w_r``. Degree 1 is
model averaging (local SGD / FedAvg across processes).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from distill.federated.mirror import inverse_mirror_map, mirror_map

_TINY = torch.finfo(torch.float64).tiny


def power_mean_all_reduce(tensor: torch.Tensor, weight: float, degree: float) -> None:
    """Replace ``tensor`` (in place, on every rank) by its WPM over the ranks."""
    values = tensor.detach().to(torch.float64)
    scale = values.abs()  # per coordinate: the largest magnitude over the ranks
    dist.all_reduce(scale, op=dist.ReduceOp.MAX)
    scale = scale.clamp_min(_TINY)
    mirrored = weight * mirror_map(values / scale, degree)
    total = torch.tensor([weight], dtype=torch.float64, device=tensor.device)
    dist.all_reduce(mirrored, op=dist.ReduceOp.SUM)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    tensor.copy_((inverse_mirror_map(mirrored / total, degree) * scale).to(tensor.dtype))


class MirrorAverager:
    """Local SGD with periodic mirror-space averaging of ``module`` across all ranks.

    Call :meth:`after_step` after every optimizer step; every ``period``-th call averages (and
    returns ``True``). ``weight`` is this rank's weight (e.g. its number of samples).
    """

    def __init__(self, module: nn.Module, degree: float, period: int, weight: float = 1.0) -> None:
        if degree < 1:
            raise ValueError(f"the degree must be ≥ 1, got {degree}")
        if period < 1:
            raise ValueError(f"the period must be ≥ 1 step, got {period}")
        self.module, self.degree, self.period, self.weight = module, degree, period, weight
        self.steps = 0

    @torch.no_grad()
    def average(self) -> None:
        for tensor in [*self.module.parameters(), *self.module.buffers()]:
            if tensor.is_floating_point():
                power_mean_all_reduce(tensor.data, self.weight, self.degree)

    def after_step(self) -> bool:
        self.steps += 1
        if self.steps % self.period:
            return False
        self.average()
        return True
