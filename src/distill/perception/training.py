"""Training and evaluating the perception models: the fusion variants, the early-fusion teacher,
and DiscoGraph's student (segmentation loss plus the teacher's per-pixel channel KL).

Pure computation (no files, no printing): the ``distill perceive`` application calls
:func:`train_model` for each method and seed and writes what it returns. Every run is seeded: the
model's initialization, the order of the training scenes per epoch and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from distill.perception.discograph import (
    DiscoGraphTraining,
    bytes_per_frame,
    segmentation_loss,
)
from distill.perception.metrics import SegmentationCounts
from distill.perception.models import (
    EarlyFusionTeacher,
    IntermediateFusionStudent,
    LateFusion,
    PerceptionModel,
    TeacherInput,
)
from distill.perception.world import Scenes
from distill.schema import Section

#: The compared methods: how each ego fuses what the agents share, and whether the student
#: distils from the early-fusion teacher. ``discograph-c<k>`` compresses the shared map to k
#: channels (with KD). ``early`` is the teacher itself (it reads the world's rendered early-fusion
#: input); ``early-warped`` may be added: the same teacher on the agents' rasters warped into the
#: ego frame, to measure what resampling costs (it never teaches).
BASE_METHODS = ("early", "ego", "late", "mean", "max", "discograph-nokd", "discograph")


class PerceptionTrainSpec(Section):
    """How each model trains: Adam at ``lr`` for ``epochs`` passes over the training scenes in
    batches of ``batch_size`` scenes, per-pixel BCE with ``pos_weight`` on vehicle cells (they
    are a few percent of a raster). ``schedule``: ``cosine`` decays the rate to zero over the run
    (per step), ``constant`` keeps it; at a budget of minutes the constant rate's last-epoch
    IoU swings by points from one epoch to the next, which a decayed rate settles."""

    epochs: int = Field(default=12, ge=1, le=10_000)
    batch_size: int = Field(default=32, ge=1, le=4096)
    lr: float = Field(default=2e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    pos_weight: float = Field(default=4.0, gt=0.0)
    schedule: Literal["constant", "cosine"] = "cosine"


@dataclass(frozen=True)
class MethodPlan:
    """A method as a model to build and whether it distils from the teacher."""

    name: str
    kind: Literal["early", "none", "late", "mean", "max", "discograph"]
    distils: bool = False
    compress_channels: int | None = None
    teacher_input: TeacherInput = "rendered"

    def build(self, width: int) -> PerceptionModel:
        if self.kind == "early":
            return EarlyFusionTeacher(width=width, teacher_input=self.teacher_input)
        if self.kind == "late":
            return LateFusion(width=width)
        return IntermediateFusionStudent(self.kind, width=width, compress_channels=self.compress_channels)


def plan_of(name: str) -> MethodPlan:
    """The plan of a method name (see :data:`BASE_METHODS`); a ``ValueError`` names the known ones."""
    fixed = {
        "early": MethodPlan("early", "early"),
        "early-warped": MethodPlan("early-warped", "early", teacher_input="warped"),
        "ego": MethodPlan("ego", "none"),
        "late": MethodPlan("late", "late"),
        "mean": MethodPlan("mean", "mean"),
        "max": MethodPlan("max", "max"),
        "discograph-nokd": MethodPlan("discograph-nokd", "discograph"),
        "discograph": MethodPlan("discograph", "discograph", distils=True),
    }
    if name in fixed:
        return fixed[name]
    prefix = "discograph-c"
    if name.startswith(prefix) and name[len(prefix) :].isdigit():
        return MethodPlan(name, "discograph", distils=True, compress_channels=int(name[len(prefix) :]))
    known = ", ".join(BASE_METHODS)
    raise ValueError(f"unknown perception method {name!r}; known: {known}, early-warped, discograph-c<k>")


@dataclass
class Evaluation:
    """IoU of the vehicle masks over all cells and over the cells each ego did not see."""

    iou: float
    iou_occluded: float

    def as_dict(self) -> dict[str, float]:
        return {"iou": self.iou, "iou_occluded": self.iou_occluded}


@torch.no_grad()
def evaluate(model: PerceptionModel, scenes: Scenes, batch_size: int = 64) -> Evaluation:
    """Pooled IoU over every ego of every scene, and restricted to the ego's occluded cells
    (false positives there count too)."""
    model.eval()
    overall, occluded = SegmentationCounts(), SegmentationCounts()
    for batch in scenes.batches(batch_size):
        logits = model(batch.observations, batch.transforms, batch.fused_observations).logits
        overall.add(logits, batch.targets)
        occluded.add(logits, batch.targets, batch.occluded)
    return Evaluation(overall.iou, occluded.iou)


@dataclass
class TrainedModel:
    """A trained model with its per-epoch records, final evaluation and message size."""

    model: PerceptionModel
    history: list[dict[str, float]]
    evaluation: Evaluation
    bytes_per_frame: int
    seconds: float


def train_model(
    plan: MethodPlan,
    train: Scenes,
    test: Scenes,
    spec: PerceptionTrainSpec,
    seed: int,
    width: int,
    teacher: PerceptionModel | None = None,
    kd_weight: float = 1e5,
    kd_keys: Sequence[str] = ("fused", "dec1", "dec2"),
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainedModel:
    """Train ``plan``'s model on ``train`` (a DiscoGraph student against the frozen ``teacher``
    when the plan distils) and evaluate it on ``test`` after every epoch."""
    torch.manual_seed(seed)
    model = plan.build(width)
    objective: DiscoGraphTraining | None = None
    if plan.distils:
        if teacher is None:
            raise ValueError(f"{plan.name} distils from the early-fusion teacher; train it first")
        objective = DiscoGraphTraining(model, teacher, kd_weight, kd_keys, spec.pos_weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    steps_per_epoch = -(-len(train) // spec.batch_size)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.epochs * steps_per_epoch)
        if spec.schedule == "cosine"
        else None
    )
    order = torch.Generator().manual_seed(seed + 1)
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    for epoch in range(spec.epochs):
        model.train()
        sums: dict[str, float] = {}
        steps = 0
        for rows in torch.randperm(len(train), generator=order).split(spec.batch_size):
            batch = train.batch(rows)
            if objective is not None:
                terms = objective.loss(batch)
                loss = terms.pop("total")
            else:
                logits = model(batch.observations, batch.transforms, batch.fused_observations).logits
                loss = segmentation_loss(logits, batch.targets, spec.pos_weight)
                terms = {"seg": loss}
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            steps += 1
        evaluation = evaluate(model, test)
        record = {
            "epoch": epoch + 1,
            **{f"train_{k}": v / steps for k, v in sums.items()},
            **evaluation.as_dict(),
        }
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    side = train.observations.shape[-1]
    size = bytes_per_frame(model, side=side)["total_bytes"]
    return TrainedModel(model, history, evaluation, size, time.perf_counter() - started)
