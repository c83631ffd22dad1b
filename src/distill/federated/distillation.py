"""Server-side distillation on the public set: FedDF's one target, TAKFL's separate tasks.

FedDF (Lin et al., NeurIPS 2020, "Ensemble Distillation for Robust Model Fusion", Alg. 1): every
student is fine-tuned towards the *average logits of all received client models* on unlabeled
public data. TAKFL (Morafah et al., NeurIPS 2024, Sec. 4.1-4.2, Eq. 3-4) instead distills each
prototype's ensemble into each student as a *separate task* and adds self-regularization towards
the student's own averaged model:

``L_ij = T²·KL(σ(z_j/T) ‖ σ(f/T)) + γ_i·T_s²·KL(σ(s_i/T_s) ‖ σ(f/T_s))``

with ``z_j`` the mean raw logits of prototype ``j``'s sampled clients' local models, ``s_i`` the
logits of student ``i``'s averaged model, ``T = 3`` and ``T_s = 20`` (official code: ``distill_T``
in ``run.sh`` and the hard-coded ``T_self``), KL with ``batchmean`` reduction and Adam.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from distill.data.bundle import Split
from distill.data.loader import train_batches
from distill.federated.local import make_generator
from distill.federated.spec import DistillSpec
from distill.losses.kd import kd_loss


def ensemble_logits(client_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """The mean of raw logits over clients (``[clients] × (n, classes)`` → ``(n, classes)``)."""
    if not client_logits:
        raise ValueError("ensemble_logits needs at least one client's logits")
    shapes = {tuple(logits.shape) for logits in client_logits}
    if len(shapes) != 1:
        raise ValueError(f"client logits differ in shape: {sorted(shapes)}")
    return torch.stack([logits.float() for logits in client_logits]).mean(dim=0)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    settings: DistillSpec,
    self_logits: torch.Tensor | None = None,
    self_weight: float = 0.0,
) -> torch.Tensor:
    """TAKFL's ``L_ij`` (FedDF's loss when ``self_weight = 0``)."""
    loss = kd_loss(student_logits, teacher_logits, settings.temperature)
    if self_weight > 0:
        if self_logits is None:
            raise ValueError("self-regularization needs the student's own logits")
        loss = loss + self_weight * kd_loss(student_logits, self_logits, settings.self_temperature)
    return loss


def distill_into(
    model: nn.Module,
    public_inputs: torch.Tensor,
    teacher_logits: torch.Tensor,
    settings: DistillSpec,
    seed: int,
    self_logits: torch.Tensor | None = None,
    self_weight: float = 0.0,
) -> float:
    """Fine-tune ``model`` in place on the public set towards ``teacher_logits``; the mean loss.

    The public set's labels are never used: batches carry row indices into the precomputed
    teacher (and self) logits. ``seed`` fixes the batch order.
    """
    if len(public_inputs) != len(teacher_logits):
        raise ValueError(
            f"{len(public_inputs)} public examples but {len(teacher_logits)} rows of teacher logits"
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    rows = Split(public_inputs, torch.arange(len(public_inputs)))
    generator = make_generator(seed)
    device = next(model.parameters()).device
    model.train()
    losses = []
    for _ in range(settings.epochs):
        for inputs, _, indices in train_batches(rows, settings.batch_size, generator, device):
            if len(indices) < 2:
                continue  # BatchNorm cannot normalize a batch of one
            optimizer.zero_grad(set_to_none=True)
            own = self_logits[indices].to(device) if self_logits is not None else None
            loss = distillation_loss(
                model(inputs), teacher_logits[indices].to(device), settings, own, self_weight
            )
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    return sum(losses) / max(len(losses), 1)
