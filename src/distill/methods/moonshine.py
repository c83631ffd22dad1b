"""Moonshine: train a cheap-convolution student with attention transfer from its teacher.

Crowley, Gray & Storkey, "Moonshine: Distilling with Cheap Convolutions" (NeurIPS 2018); code
``BayesWatch/pytorch-moonshine``. The student is the teacher's architecture with cheap
convolutions (a ``cheap`` model, :mod:`distill.models.cheap`), so every group of the student has
a namesake in the teacher with the same output resolution. As in the official code, the student
is trained from scratch with cross-entropy plus attention transfer (Zagoruyko & Komodakis,
ICLR 2017) at the outputs of the network's n groups, β = 1000, and each group weighted by
``3β/n`` (``main.py``: ``adjusted_beta = (args.beta*3)/len(ints_student)``; with the paper's
three groups that is ``β · Σ_j``, as in ``szagoruyko/attention-transfer``'s ``cifar.py``)::

    L = CE(y, s(x)) + (3β/n) · Σ_{j=1..n} AT_j,   AT_j = 1/(B·N_ref) · Σ_b ‖q_S,b^j − q_T,b^j‖²

with ``q = Q/‖Q‖₂`` the normalized attention map and ``N_ref = 1024/7`` (``beta_scale:
size_free``, the default): each sample is pulled by ``3β/N_ref ≈ 20.5`` in total whatever the
map sizes — the official code's total pull on CIFAR WRN maps of 32², 16², 8² positions.
``beta_scale: raw`` divides by each map's own ``N_j`` instead of ``N_ref`` — the official code
exactly (:func:`distill.losses.attention_transfer_loss`; Hinton KD can be added with
``kd_weight``). The groups, unless ``layers`` names them, are the teacher's stages
(:func:`~distill.models.branches.model_stages`) holding convolutions whose outputs have a spatial
extent and the same shape in student and teacher, except the stem's stage (one whose only
convolution is the first the forward pass calls: the official WRN leaves the stem's output out,
``# activations.append(out)``) — ``layer1..3`` of a CIFAR ResNet, ``block1..3`` of a WRN,
``features.1..`` of a ``cnn1d``/``cnn2d``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from distill.errors import DistillError
from distill.losses.attention import AttentionScale
from distill.methods.base import Method, MethodSpec
from distill.methods.kd import FeaturePairSpec, KDSpec, KnowledgeDistillation
from distill.methods.registry import METHODS, MethodContext
from distill.models.branches import model_stages
from distill.models.taps import FeatureTaps, first_convolution


class MoonshineSpec(MethodSpec):
    """``moonshine``: CE + attention transfer (3β/n per group) at the n matched group outputs
    (+ optional KD); ``beta_scale`` ``size_free`` (default) or ``raw`` (the official code)."""

    name: Literal["moonshine"] = "moonshine"
    beta: float = Field(default=1000.0, gt=0.0)
    beta_scale: AttentionScale = "size_free"
    layers: list[str] = Field(default_factory=list)
    kd_weight: float = Field(default=0.0, ge=0.0)
    temperature: float = Field(default=4.0, gt=0.0)

    uses_teacher: ClassVar[bool] = True


def matched_blocks(student: nn.Module, teacher: nn.Module, example_inputs: torch.Tensor) -> list[str]:
    """Stages of ``teacher`` with convolutions whose namesakes in ``student`` give spatial outputs
    of the same shape, except the stem's stage (whose only convolution is the first one called)."""
    stages = model_stages(teacher, example_inputs)
    student_names = {name for name, _ in student.named_modules()}
    convolutions = (nn.Conv1d, nn.Conv2d)
    stem_name = first_convolution(teacher, example_inputs)
    stem = teacher.get_submodule(stem_name) if stem_name is not None else None

    def holds_more_than_the_stem(name: str) -> bool:
        convs = [m for m in teacher.get_submodule(name).modules() if isinstance(m, convolutions)]
        return bool(convs) and convs != [stem]

    shared = [name for name in stages if name in student_names and holds_more_than_the_stem(name)]
    outputs = []
    for model in (student, teacher):
        taps = FeatureTaps(model, shared, owner="moonshine")
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(example_inputs)
        model.train(was_training)
        outputs.append(dict(taps.features))
        taps.remove()
    return [
        name
        for name in shared
        if outputs[0][name].dim() >= 3 and outputs[0][name].shape == outputs[1][name].shape
    ]


@METHODS.register_factory(
    "moonshine", "Moonshine: cheap-convolution student, attention transfer at matched blocks"
)
def build_moonshine(spec: MoonshineSpec, context: MethodContext) -> Method:
    teacher = context.require_teacher("moonshine")
    layers = spec.layers or matched_blocks(context.student, teacher, context.example_inputs[:2])
    if not layers:
        raise DistillError(
            f"{context.owner}.layers: the student and the teacher share no block (other than the stem) "
            "with spatial outputs of the same shape; make the student a 'cheap' version of the teacher "
            "or name the layers"
        )
    weight = 3 * spec.beta / len(layers)  # the official code's adjusted_beta
    pairs = [
        FeaturePairSpec(
            student=name, teacher=name, loss="attention", weight=weight, beta_scale=spec.beta_scale
        )
        for name in layers
    ]
    terms = KDSpec(temperature=spec.temperature, kd_weight=spec.kd_weight, ce_weight=1.0, features=pairs)
    return KnowledgeDistillation(
        context.student,
        teacher,
        terms.located_terms(),
        context.example_inputs,
        context.num_classes,
        owner=context.owner,
    )
