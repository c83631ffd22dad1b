"""Moonshine's cheap convolutions: a student made from the teacher's own architecture.

Crowley, Gray & Storkey, "Moonshine: Distilling with Cheap Convolutions" (NeurIPS 2018); code
``BayesWatch/pytorch-moonshine``, ``models/blocks.py``. The student keeps the teacher's structure
and replaces each full convolution ``conv(C_in → C_out, k)`` with a cheap block (Sec. 3, Fig. 1),
built as the official blocks are, with batch norm and ReLU between the convolutions:

- ``G(g)`` (``DConv``): ``convdw`` — a k-wide grouped convolution ``C_in → C_in`` with g groups
  (carrying the stride) — then ``bn``, ``relu``, and ``conv1x1``, a pointwise ``C_in → C_out``;
- ``B(b)`` (``ConvBottleneck``): ``conv1x1_down`` ``C_in → C_out/b``, ``bn1``, ``relu1``, ``conv``
  — the full k-wide kernel at width ``C_out/b`` — ``bn2``, ``relu2``, ``conv1x1_up`` back to
  ``C_out``;
- ``BG(b, g)`` (``AConvBottleneck``): ``B(b)`` with its middle convolution grouped (g groups).

g is the number of groups, as in the paper (a convolution "separated into g groups" costs 1/g of
its parameters; ``G(N)`` is depthwise) and in the code's ``DConvA<g>``/``A<g>B<b>`` blocks; the
code's ``DConvG<g>``/``G<g>B<b>`` name the group *size* instead (``groups = C/g``).

:func:`cheapen` replaces every eligible convolution in place of the original module, so module
names are kept and the student's blocks (``layer1``, ``layer2``, ...) pair with the teacher's
by name for attention transfer; inside a block the submodules carry the official names above.
Eligible: 1-D or 2-D convolutions with a kernel larger than 1, ungrouped, whose channels the
block can divide, except the first convolution the forward pass meets (the stem, which sees the
raw input; the paper keeps it too). Everything else is left and listed. Each block keeps the
original's stride, padding and dilation, so shapes are unchanged.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from distill.models.fields import validate_model_spec
from distill.models.registry import MODELS, ModelSpec
from distill.models.taps import first_convolution

LOG = logging.getLogger("distill")
Block = Literal["G", "B", "BG"]


def _conv(rank: int, *args: Any, **kwargs: Any) -> nn.Module:
    return (nn.Conv1d if rank == 1 else nn.Conv2d)(*args, **kwargs)


def _norm(rank: int, channels: int) -> nn.Module:
    return (nn.BatchNorm1d if rank == 1 else nn.BatchNorm2d)(channels)


def cheap_block(conv: nn.Conv1d | nn.Conv2d, block: Block, groups: int, bottleneck: int) -> nn.Sequential:
    """The cheap replacement of ``conv`` (same input/output channels, stride, padding, dilation),
    built like the official ``DConv`` (G) and ``ConvBottleneck``/``AConvBottleneck`` (B, BG)."""
    rank = 1 if isinstance(conv, nn.Conv1d) else 2
    c_in, c_out = conv.in_channels, conv.out_channels
    spatial = {
        "kernel_size": conv.kernel_size,
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "padding_mode": conv.padding_mode,
    }
    bias = conv.bias is not None
    if block == "G":
        return nn.Sequential(
            OrderedDict(
                convdw=_conv(rank, c_in, c_in, groups=groups, bias=False, **spatial),
                bn=_norm(rank, c_in),
                relu=nn.ReLU(inplace=True),
                conv1x1=_conv(rank, c_in, c_out, kernel_size=1, bias=bias),
            )
        )
    width = c_out // bottleneck
    middle_groups = groups if block == "BG" else 1
    return nn.Sequential(
        OrderedDict(
            conv1x1_down=_conv(rank, c_in, width, kernel_size=1, bias=False),
            bn1=_norm(rank, width),
            relu1=nn.ReLU(inplace=True),
            conv=_conv(rank, width, width, groups=middle_groups, bias=False, **spatial),
            bn2=_norm(rank, width),
            relu2=nn.ReLU(inplace=True),
            conv1x1_up=_conv(rank, width, c_out, kernel_size=1, bias=bias),
        )
    )


def _fits(conv: nn.Module, block: Block, groups: int, bottleneck: int) -> str | None:
    """Why ``conv`` cannot be cheapened (``None`` if it can)."""
    if not isinstance(conv, (nn.Conv1d, nn.Conv2d)):
        return "not a 1-D/2-D convolution"
    if max(conv.kernel_size) == 1:
        return "already pointwise"
    if conv.groups != 1:
        return "already grouped"
    if block == "G" and conv.in_channels % groups:
        return f"{conv.in_channels} input channels not divisible by {groups} groups"
    if block in ("B", "BG"):
        width = conv.out_channels // bottleneck
        if width < 1 or conv.out_channels % bottleneck:
            return f"{conv.out_channels} output channels not divisible by bottleneck {bottleneck}"
        if block == "BG" and width % groups:
            return f"bottleneck width {width} not divisible by {groups} groups"
    return None


@dataclass
class CheapenReport:
    """Which convolutions :func:`cheapen` replaced, and which it left and why."""

    replaced: list[str] = field(default_factory=list)
    left: dict[str, str] = field(default_factory=dict)


def cheapen(
    model: nn.Module,
    block: Block = "G",
    groups: int = 4,
    bottleneck: int = 2,
    example_inputs: torch.Tensor | None = None,
    keep: list[str] | None = None,
) -> tuple[nn.Module, CheapenReport]:
    """A copy of ``model`` with every eligible convolution replaced by a cheap ``block``.

    The copy gets fresh weights in the replaced blocks (the student is trained, not derived);
    the rest of its weights are copied. ``example_inputs`` find the stem (the first convolution
    called); without them the first convolution registered is taken. ``keep`` lists module
    names never to replace.
    """
    student = copy.deepcopy(model)
    convs = [name for name, module in student.named_modules() if isinstance(module, (nn.Conv1d, nn.Conv2d))]
    report = CheapenReport()
    if not convs:
        return student, report
    called = first_convolution(student, example_inputs) if example_inputs is not None else None
    stem = called or convs[0]
    for name in convs:
        module = student.get_submodule(name)
        reason = "the stem (sees the raw input)" if name == stem else None
        if name in (keep or []):
            reason = "kept on request"
        reason = reason or _fits(module, block, groups, bottleneck)
        if reason is not None:
            report.left[name] = reason
            continue
        parent_name, _, child = name.rpartition(".")
        parent = student.get_submodule(parent_name) if parent_name else student
        setattr(parent, child, cheap_block(module, block, groups, bottleneck))  # type: ignore[arg-type]
        report.replaced.append(name)
    return student, report


class CheapSpec(ModelSpec):
    """``cheap``: Moonshine's student — ``base`` (any model spec) with its convolutions replaced
    by ``block`` G(groups), B(bottleneck) or BG(bottleneck, groups)."""

    name: Literal["cheap"] = "cheap"
    base: Any
    block: Block = "G"
    groups: int = Field(default=4, ge=2, le=1024)
    bottleneck: int = Field(default=2, ge=2, le=1024)
    keep: list[str] = Field(default_factory=list)

    @field_validator("base")
    @classmethod
    def _base_model(cls, base: Any) -> ModelSpec:
        return validate_model_spec(base)


@MODELS.register_factory(
    "cheap", "Moonshine: a model with cheap grouped/bottleneck convolutions (base, block)"
)
def build_cheap(spec: CheapSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    from distill.models import build_model

    base = build_model(spec.base, input_shape, num_classes)
    student, report = cheapen(
        base, spec.block, spec.groups, spec.bottleneck, torch.zeros(2, *input_shape), spec.keep
    )
    if not report.replaced:
        reasons = "; ".join(f"{name}: {why}" for name, why in report.left.items()) or "it has none"
        raise ValueError(
            f"no convolution of '{spec.base.name}' can be made cheap with block {spec.block} ({reasons})"
        )
    LOG.debug(
        "cheap %s: replaced %d convolution(s); left %s", spec.base.name, len(report.replaced), report.left
    )
    return student
