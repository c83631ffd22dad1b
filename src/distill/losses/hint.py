"""FitNet hints: regress a student's intermediate feature onto the teacher's.

Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015, arXiv 1412.6550), Eq. 3:
``L_HT = ½ ‖u_h(x) − r(v_g(x); W_r)‖²`` where ``u_h`` is the teacher's hint layer, ``v_g`` the
student's guided layer and ``r`` a learned regressor (a convolution for conv features) that maps
the student's channels to the teacher's. As in the common implementations we average the squared
error over elements instead of summing it, so the weight does not depend on the feature size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fitnet_hint_loss(regressed_student: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the regressed student feature and the teacher's hint feature."""
    if regressed_student.shape != teacher_feature.shape:
        raise ValueError(
            f"fitnet_hint_loss: regressed student feature {tuple(regressed_student.shape)} "
            f"does not match teacher feature {tuple(teacher_feature.shape)}"
        )
    return F.mse_loss(regressed_student, teacher_feature.detach())


class HintRegressor(nn.Module):
    """The regressor ``r(·; W_r)`` of FitNets: maps student channels to teacher channels.

    ``(batch, C_s)`` features use a linear map; ``(batch, C_s, *spatial)`` features a 1×1
    convolution (1-D or 2-D) followed by batch norm, as in the usual CIFAR implementations.
    Spatial sizes must already agree.
    """

    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size) -> None:
        super().__init__()
        if len(student_shape) != len(teacher_shape):
            raise ValueError(
                f"HintRegressor: student feature {tuple(student_shape)} and teacher feature "
                f"{tuple(teacher_shape)} have different ranks"
            )
        if tuple(student_shape[2:]) != tuple(teacher_shape[2:]):
            raise ValueError(
                f"HintRegressor: spatial sizes differ, student {tuple(student_shape[2:])} vs "
                f"teacher {tuple(teacher_shape[2:])}; choose layers with the same resolution"
            )
        in_channels, out_channels = int(student_shape[1]), int(teacher_shape[1])
        rank = len(student_shape)
        if rank == 2:
            self.net: nn.Module = nn.Linear(in_channels, out_channels)
        elif rank == 3:
            self.net = nn.Sequential(
                nn.Conv1d(in_channels, out_channels, 1, bias=False), nn.BatchNorm1d(out_channels)
            )
        elif rank == 4:
            self.net = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
        else:
            raise ValueError(f"HintRegressor: unsupported feature rank {rank}")

    def forward(self, student_feature: torch.Tensor) -> torch.Tensor:
        return self.net(student_feature)
