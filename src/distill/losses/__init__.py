"""Loss terms: plain functions of tensors (and small modules where they have parameters).

``LOSSES`` names every loss family for ``distill list``. The learned loss families of
:mod:`distill.teaching` (L2T-DLF, L2T-DLN) register themselves there, beside their definitions.
"""

from collections.abc import Callable

import torch

from distill.losses.attention import attention_map, attention_transfer_loss
from distill.losses.distiller import distiller_loss
from distill.losses.hint import HintRegressor, fitnet_hint_loss
from distill.losses.kd import (
    kd_loss,
    kd_loss_from_log_probs,
    kd_loss_from_probs,
    kd_loss_top_k,
    scalar,
    soft_cross_entropy,
    weighted,
)
from distill.losses.mutual import mimicry_loss, mutual_learning_loss
from distill.losses.slam import slam_loss, slam_mix
from distill.registry import Registry

#: A loss term; a few (e.g. ``mutual``) return several terms as a tuple.
LossFunction = Callable[..., torch.Tensor | tuple[torch.Tensor, ...]]

#: Every named loss term, with the sentence ``distill list`` prints.
LOSSES: Registry[LossFunction] = Registry("loss")
LOSSES.register("kd", "Hinton KD: T²·KL between temperature-softened outputs (Hinton et al. 2015)")(kd_loss)
LOSSES.register("hint", "FitNet hint: MSE after a learned regressor (Romero et al. 2015)")(fitnet_hint_loss)
LOSSES.register("attention", "attention transfer: normalized activation maps (Zagoruyko & Komodakis 2017)")(
    attention_transfer_loss
)

LOSSES.register("mutual", "deep mutual learning: CE + mean KL from the other peers (Zhang et al. 2018)")(
    mutual_learning_loss
)

LOSSES.register(
    "slam", "student-label mixing: CE of teacher labels vs the mixed student (Kontonis et al. 2023)"
)(slam_loss)

LOSSES.register(
    "distiller", "a KD-Zero distiller: Σ w·d(T(student), T(teacher)) over knowledge inputs (Li et al. 2023)"
)(distiller_loss)

#: The losses that compare a pair of tapped intermediate features.
FEATURE_LOSS_NAMES = ("hint", "attention")

__all__ = [
    "FEATURE_LOSS_NAMES",
    "LOSSES",
    "HintRegressor",
    "attention_map",
    "attention_transfer_loss",
    "fitnet_hint_loss",
    "kd_loss",
    "kd_loss_from_log_probs",
    "kd_loss_from_probs",
    "kd_loss_top_k",
    "mimicry_loss",
    "mutual_learning_loss",
    "scalar",
    "slam_loss",
    "slam_mix",
    "soft_cross_entropy",
    "weighted",
]
