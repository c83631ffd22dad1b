"""CIFAR-style residual networks: ResNet (He et al. 2016, Sec. 4.2) and Wide ResNet.

``resnet`` with ``depth = 6n + 2`` has three stages of ``n`` basic blocks. ``width`` multiplies
the stage widths 16/32/64; the stem has ``min(16·width, 32)`` channels, so ``depth=8, width=4``
and ``depth=32, width=4`` give the resnet8x4 / resnet32x4 shapes used across the KD literature
(RepDistiller: stem 32, stages 64/128/256).

``wrn`` (Zagoruyko & Komodakis 2016, "Wide Residual Networks") with ``depth = 6n + 4`` uses
pre-activation blocks of widths 16k/32k/64k for widen factor ``k``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from torch import nn
from torch.nn import functional as F

from distill.models.registry import MODELS, ModelSpec
from distill.schema import Positive

#: Depths up to ResNet-1202's and beyond; width multipliers up to 1024.
Depth = Annotated[int, Field(le=2000), Positive]
Multiplier = Annotated[int, Field(le=1024), Positive]


class ResNetSpec(ModelSpec):
    name: Literal["resnet"] = "resnet"
    depth: Depth = 20
    width: Multiplier = 1

    @field_validator("depth")
    @classmethod
    def _depth_is_6n_plus_2(cls, depth: int) -> int:
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"must be 6n+2 with n ≥ 1 (8, 14, 20, 32, 56, 110, ...), got {depth}")
        return depth


class WRNSpec(ModelSpec):
    name: Literal["wrn"] = "wrn"
    depth: Depth = 16
    widen_factor: Multiplier = 2
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @field_validator("depth")
    @classmethod
    def _depth_is_6n_plus_4(cls, depth: int) -> int:
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"must be 6n+4 with n ≥ 1 (10, 16, 22, 28, 40, ...), got {depth}")
        return depth


def _require_image(kind: str, input_shape: tuple[int, ...]) -> int:
    if len(input_shape) != 3:
        raise ValueError(f"{kind} expects inputs shaped (channels, height, width), got {input_shape}")
    return input_shape[0]


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, inputs):
        out = F.relu(self.bn1(self.conv1(inputs)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(inputs))


class ResNet(nn.Module):
    """Modules: ``stem``, ``layer1``–``layer3`` (tap these for features), ``pool``, ``fc``."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, depth: int, width: int) -> None:
        super().__init__()
        in_channels = _require_image("resnet", input_shape)
        blocks_per_stage = (depth - 2) // 6
        stem_channels = min(16 * width, 32)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True),
        )
        channels = stem_channels
        stages = []
        for index, stage_width in enumerate((16 * width, 32 * width, 64 * width)):
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(BasicBlock(channels, stage_width, stride))
                channels = stage_width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, inputs):
        out = self.layer3(self.layer2(self.layer1(self.stem(inputs))))
        return self.fc(self.pool(out))


class WideBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, inputs):
        pre = F.relu(self.bn1(inputs))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        residual = inputs if self.shortcut is None else self.shortcut(pre)
        return out + residual


class WideResNet(nn.Module):
    """Modules: ``conv1``, ``block1``–``block3`` (tap these), ``bn``, ``pool``, ``fc``."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        depth: int,
        widen_factor: int,
        dropout: float,
    ) -> None:
        super().__init__()
        in_channels = _require_image("wrn", input_shape)
        blocks_per_stage = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        channels = 16
        stages = []
        for index, base in enumerate((16, 32, 64)):
            width = base * widen_factor
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(WideBlock(channels, width, stride, dropout))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(channels)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, inputs):
        out = self.block3(self.block2(self.block1(self.conv1(inputs))))
        return self.fc(self.pool(F.relu(self.bn(out))))


@MODELS.register_factory("resnet", "CIFAR-style ResNet, depth 6n+2 and width multiplier (resnet8x4: 8, 4)")
def build_resnet(spec: ResNetSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return ResNet(input_shape, num_classes, spec.depth, spec.width)


@MODELS.register_factory("wrn", "Wide ResNet, depth 6n+4 and widen factor (wrn-16-2: 16, 2)")
def build_wrn(spec: WRNSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return WideResNet(input_shape, num_classes, spec.depth, spec.widen_factor, spec.dropout)
