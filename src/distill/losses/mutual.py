"""Deep Mutual Learning: each peer of a cohort learns from the labels and from the other peers.

Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning" (CVPR 2018). For two peers (Sec. 3.1) the
loss of network Θ₁ is ``L_C1 + D_KL(p₂ ‖ p₁)``; for a cohort of K peers (Sec. 3.2) the mimicry
term is averaged over the other peers::

    L_Θk = L_Ck + 1/(K−1) · Σ_{l≠k} D_KL(p_l ‖ p_k)

The other peers' predictions are targets: no gradient flows into them from peer k's loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def mutual_learning_loss(
    peer_logits: Sequence[torch.Tensor], targets: torch.Tensor, index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cross-entropy, mean KL mimicry)`` of peer ``index`` in a cohort, batch-averaged.

    Args:
        peer_logits: K ≥ 2 tensors ``(batch, classes)``, one per peer.
        targets: ``(batch,)`` class ids.
        index: which peer's loss to compute.
    """
    if len(peer_logits) < 2:
        raise ValueError(f"mutual_learning_loss needs a cohort of at least 2 peers, got {len(peer_logits)}")
    if not 0 <= index < len(peer_logits):
        raise ValueError(f"mutual_learning_loss: peer index {index} outside a cohort of {len(peer_logits)}")
    shapes = {tuple(logits.shape) for logits in peer_logits}
    if len(shapes) != 1:
        raise ValueError(f"mutual_learning_loss: peers disagree on (batch, classes): {sorted(shapes)}")
    own_log_probs = F.log_softmax(peer_logits[index], dim=1)
    cross_entropy = F.nll_loss(own_log_probs, targets)
    mimicry = torch.zeros((), device=own_log_probs.device)
    for other, logits in enumerate(peer_logits):
        if other != index:
            other_log_probs = F.log_softmax(logits.detach(), dim=1)
            mimicry = mimicry + F.kl_div(
                own_log_probs, other_log_probs, reduction="batchmean", log_target=True
            )
    return cross_entropy, mimicry / (len(peer_logits) - 1)
