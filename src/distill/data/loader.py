"""Batches from in-memory splits: one index permutation per epoch, no per-sample collation."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from distill.data.bundle import Split


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, reproducible seed for (run seed, epoch, stream) — resume replays it exactly."""
    return (seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**63 - 1)


def train_batches(
    split: Split,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Shuffled ``(inputs, targets, sample_indices)`` batches of ``split`` on ``device``."""
    order = torch.randperm(len(split), generator=generator)
    stop = len(split) - (len(split) % batch_size if drop_last else 0)
    for start in range(0, stop, batch_size):
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
