"""Multi-layer perceptron over flattened inputs."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field
from torch import nn

from distill.models.registry import MODELS, ModelSpec
from distill.schema import Width


class MLPSpec(ModelSpec):
    """``mlp``: flatten, then ``hidden`` fully connected layers, then a linear classifier."""

    name: Literal["mlp"] = "mlp"
    hidden: list[Width] = Field(default_factory=lambda: [256, 256])
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    activation: Literal["relu", "gelu"] = "relu"


class MLP(nn.Module):
    """Flatten → [Linear → activation → dropout] × len(hidden) → Linear(num_classes).

    Modules are named ``body`` (a Sequential whose children can be tapped as ``body.0`` ...) and
    ``head``.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        hidden: list[int],
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.GELU() if activation == "gelu" else nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, inputs):
        return self.head(self.body(inputs))


@MODELS.register_factory("mlp", "multi-layer perceptron on flattened inputs (hidden, dropout, activation)")
def build_mlp(spec: MLPSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return MLP(input_shape, num_classes, spec.hidden, spec.dropout, spec.activation)
