"""What a client does with its private shard: local training, and logits for queries.

The official TAKFL code trains each sampled client for ``local_ep`` epochs from its prototype's
averaged weights with Adam (lr 1e-3 for images) and cross-entropy; so does :func:`train_local`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distill.data.bundle import Split
from distill.data.loader import train_batches
from distill.federated.spec import LocalSpec

#: Batch size for inference (logits, accuracy): large, since no gradients are kept.
INFERENCE_BATCH = 1024


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: every random stream here takes one explicitly."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def train_local(model: nn.Module, shard: Split, settings: LocalSpec, seed: int) -> float:
    """Train ``model`` in place on ``shard`` with cross-entropy (Adam or SGD); the mean batch loss.

    ``seed`` fixes the batch order, so a round replays exactly.
    """
    if len(shard) == 0:
        raise ValueError("train_local: the client's shard is empty")
    optimizer: torch.optim.Optimizer
    if settings.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    generator = make_generator(seed)
    device = next(model.parameters()).device
    batch_size = min(settings.batch_size, len(shard))
    model.train()
    losses = []
    for _ in range(settings.epochs):
        for inputs, targets, _ in train_batches(shard, batch_size, generator, device):
            if len(targets) < 2 and batch_size > 1:
                continue  # BatchNorm cannot normalize a batch of one; the official code drops it too
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    return sum(losses) / max(len(losses), 1)


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``model``'s raw logits for ``inputs`` in eval mode, on the CPU, in float32."""
    model.eval()
    device = next(model.parameters()).device
    outputs = [
        model(inputs[start : start + INFERENCE_BATCH].to(device)).float().cpu()
        for start in range(0, len(inputs), INFERENCE_BATCH)
    ]
    return torch.cat(outputs) if outputs else torch.empty(0)


def accuracy(model: nn.Module, split: Split) -> float:
    """Top-1 accuracy of ``model`` on ``split``, in percent."""
    if len(split) == 0:
        raise ValueError("accuracy: the split is empty")
    predictions = predict_logits(model, split.inputs).argmax(dim=1)
    return 100.0 * float((predictions == split.targets).float().mean())
