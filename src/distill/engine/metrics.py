"""Evaluation metrics: top-1 accuracy, cross-entropy and expected calibration error."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from distill.data.bundle import Split
from distill.data.loader import eval_batches


def expected_calibration_error(
    probabilities: torch.Tensor, targets: torch.Tensor, num_bins: int = 15
) -> float:
    """ECE (Guo et al. 2017, Eq. 3): ``Σ_b |B_b|/n · |acc(B_b) − conf(B_b)|`` over equal-width
    confidence bins."""
    confidence, predictions = probabilities.max(dim=1)
    correct = predictions.eq(targets).float()
    edges = torch.linspace(0, 1, num_bins + 1, device=probabilities.device)
    error = torch.zeros((), device=probabilities.device)
    for low, high in itertools.pairwise(edges):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            gap = (correct[in_bin].mean() - confidence[in_bin].mean()).abs()
            error += in_bin.float().mean() * gap
    return float(error)


def evaluate(
    model: nn.Module, split: Split, device: torch.device, batch_size: int = 1024
) -> dict[str, float]:
    """``{"accuracy", "loss", "ece"}`` of ``model`` on ``split`` (accuracy as a fraction)."""
    was_training = model.training
    model.eval()
    logits_list, targets_list = [], []
    with torch.inference_mode():
        for inputs, targets in eval_batches(split, batch_size, device):
            logits_list.append(model(inputs).float())
            targets_list.append(targets)
    model.train(was_training)
    logits = torch.cat(logits_list)
    targets = torch.cat(targets_list)
    return {
        "accuracy": float(logits.argmax(dim=1).eq(targets).float().mean()),
        "loss": float(F.cross_entropy(logits, targets)),
        "ece": expected_calibration_error(logits.softmax(dim=1), targets),
    }
