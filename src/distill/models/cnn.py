"""Small plain convolutional networks for 1-D signals and 2-D images."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import nn

from distill.models.registry import MODELS, ModelSpec
from distill.schema import Width


class CNN1dSpec(ModelSpec):
    """``cnn1d``: stacked Conv1d–BN–ReLU blocks (each with ``stride``), then a classifier head."""

    name: Literal["cnn1d"] = "cnn1d"
    channels: list[Width] = Field(default_factory=lambda: [32, 32, 32])
    kernel_size: Width = 5
    stride: Width = 2
    head: Literal["flatten", "avgpool"] = "flatten"


class CNN2dSpec(ModelSpec):
    """``cnn2d``: Conv2d–BN–ReLU–MaxPool blocks, global average pool, linear classifier."""

    name: Literal["cnn2d"] = "cnn2d"
    channels: list[Width] = Field(default_factory=lambda: [32, 64])
    kernel_size: Width = 3


def _signal_shape(input_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(input_shape) == 1:
        return 1, input_shape[0]
    if len(input_shape) == 2:
        return input_shape[0], input_shape[1]
    raise ValueError(f"cnn1d expects inputs shaped (length,) or (channels, length), got {input_shape}")


class CNN1d(nn.Module):
    """Conv1d network; modules ``features.<i>`` (one block each) and ``head``."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        channels: list[int],
        kernel_size: int,
        stride: int,
        head: str,
    ) -> None:
        super().__init__()
        in_channels, length = _signal_shape(input_shape)
        self.in_channels = in_channels
        blocks = []
        for width in channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv1d(in_channels, width, kernel_size, stride, kernel_size // 2, bias=False),
                    nn.BatchNorm1d(width),
                    nn.ReLU(inplace=True),
                )
            )
            in_channels = width
            length = (length + 2 * (kernel_size // 2) - kernel_size) // stride + 1
        self.features = nn.Sequential(*blocks)
        if head == "flatten":
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * length, num_classes))
        else:
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(in_channels, num_classes)
            )

    def forward(self, inputs):
        if inputs.ndim == 2:
            inputs = inputs.unsqueeze(1)
        return self.head(self.features(inputs))


class CNN2d(nn.Module):
    """Conv2d network; modules ``features.<i>`` (one block each), ``pool`` and ``head``."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, channels: list[int], kernel_size: int
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"cnn2d expects inputs shaped (channels, height, width), got {input_shape}")
        in_channels = input_shape[0]
        if min(input_shape[1:]) < 2 ** len(channels):
            raise ValueError(
                f"cnn2d: images {input_shape[1:]} are too small for {len(channels)} pooling blocks"
            )
        blocks = []
        for width in channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            in_channels = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(in_channels, num_classes)

    def forward(self, inputs):
        return self.head(self.pool(self.features(inputs)))


@MODELS.register_factory("cnn1d", "1-D convolutional network for signals such as MNIST-1D")
def build_cnn1d(spec: CNN1dSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return CNN1d(input_shape, num_classes, spec.channels, spec.kernel_size, spec.stride, spec.head)


@MODELS.register_factory("cnn2d", "small 2-D convolutional network for images")
def build_cnn2d(spec: CNN2dSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return CNN2d(input_shape, num_classes, spec.channels, spec.kernel_size)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``model``."""
    return sum(math.prod(p.shape) for p in model.parameters())
