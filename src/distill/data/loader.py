"""Batches from in-memory splits: one index permutation per epoch, no per-sample collation."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from distill.data.bundle import Split


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, reproducible seed for (run seed, epoch, stream) — resume replays it exactly."""
    return (seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**63 - 1)


def shard_permutation(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s share of the epoch permutation ``order``: ``padded[rank::world_size]``.

    ``order`` is first padded by wrapping around (repeating its first entries) to the next
    multiple of ``world_size``, so every rank gets ``ceil(len(order) / world_size)`` samples and
    takes the same number of steps; every sample is seen at least once per epoch, and at most
    ``world_size − 1`` entries are repeats. With one process the shard is ``order`` itself.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
    if world_size == 1:
        return order
    per_rank = -(-len(order) // world_size)
    padding = per_rank * world_size - len(order)
    if padding:
        repeats = -(-padding // len(order))
        order = torch.cat([order, order.repeat(repeats)[:padding]])
    return order[rank::world_size]


def train_batches(
    split: Split,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Shuffled ``(inputs, targets, sample_indices)`` batches of this rank's shard of ``split``
    on ``device`` (one process: the whole epoch permutation drawn from ``generator``)."""
    order = shard_permutation(torch.randperm(len(split), generator=generator), rank, world_size)
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        yield (
            split.inputs[indices].to(device, non_blocking=True),
            split.targets[indices].to(device, non_blocking=True),
            indices,
        )


def eval_batches(
    split: Split, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(inputs, targets)`` batches of ``split`` in order."""
    for start in range(0, len(split), batch_size):
        yield (
            split.inputs[start : start + batch_size].to(device, non_blocking=True),
            split.targets[start : start + batch_size].to(device, non_blocking=True),
        )
