"""Training and evaluating the grounding model under each method of :mod:`distill.grounding.dwbd`.

Pure computation (no files, no printing): the ``distill ground`` application calls
:func:`train_model` for each method and seed and writes what it returns. A run is seeded: the
model's initialization and the order of the training examples per epoch.

Schedule: AdamW at ``lr`` with a cosine decay to zero over each stage (a two-stage run restarts
the schedule for stage 2, as SimVG's stage 2 is a fresh run loaded from the stage-1 weights) and
gradients clipped to norm ``clip_norm`` (SimVG's configs clip at 0.15). One-stage methods train
``epochs`` epochs; ``dwbd-2stage`` trains ``stage1_epochs`` epochs of DB alone and then ``epochs``
epochs of DWBD.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import Field

from distill.grounding.dwbd import MethodPlan, grounding_loss, set_decoder_frozen
from distill.grounding.metrics import GroundingCounts
from distill.grounding.models import GroundingModel, GroundingModelSpec
from distill.grounding.world import MAX_WORDS, VOCABULARY, Examples
from distill.schema import Section


class GroundingTrainSpec(Section):
    """How each model trains (see the module docstring); ``lambda_t``, ``lambda_d``: DWBD's term
    weights (SimVG ViT-B: 2 and 1); ``fixed_weight``: the ``fixed-mix`` baseline's w;
    ``per_sample_weighting``: weight the distillation box terms by ω too (off in the official
    balanced loss); ``freeze_decoder``: freeze DB in stage 2 of ``dwbd-2stage``; ``eos_coef``:
    DB's no-object class weight."""

    epochs: int = Field(default=30, ge=1, le=10_000)
    stage1_epochs: int = Field(default=15, ge=1, le=10_000)
    batch_size: int = Field(default=32, ge=1, le=4096)
    lr: float = Field(default=2e-3, gt=0.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    clip_norm: float = Field(default=0.15, gt=0.0)
    lambda_t: float = Field(default=2.0, ge=0.0)
    lambda_d: float = Field(default=1.0, ge=0.0)
    fixed_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    per_sample_weighting: bool = False
    freeze_decoder: bool = True
    eos_coef: float = Field(default=0.1, ge=0.0)


def build_model(spec: GroundingModelSpec, image_size: int) -> GroundingModel:
    """A fresh model for images of ``image_size`` and the world's vocabulary."""
    return GroundingModel(spec, image_size, len(VOCABULARY), MAX_WORDS)


@dataclass
class Evaluation:
    """Acc@0.5 and mean IoU of TB and of DB on a set of examples (fractions)."""

    tb_acc: float
    db_acc: float
    tb_miou: float
    db_miou: float

    def as_dict(self) -> dict[str, float]:
        return {
            "tb_acc": self.tb_acc,
            "db_acc": self.db_acc,
            "tb_miou": self.tb_miou,
            "db_miou": self.db_miou,
        }


@torch.no_grad()
def evaluate(model: GroundingModel, examples: Examples, batch_size: int = 256) -> Evaluation:
    """Both branches' Acc@IoU≥0.5 and mean IoU on ``examples``."""
    was_training = model.training
    model.eval()
    tb, db = GroundingCounts(), GroundingCounts()
    for start in range(0, len(examples), batch_size):
        rows = slice(start, start + batch_size)
        output = model(examples.images[rows], examples.tokens[rows])
        tb.add(output.tb_boxes, examples.boxes[rows])
        db.add(output.db_prediction(), examples.boxes[rows])
    model.train(was_training)
    return Evaluation(tb.accuracy, db.accuracy, tb.mean_iou, db.mean_iou)


@dataclass
class TrainedModel:
    """A trained model, its per-epoch records (``epoch``, ``stage``, mean train losses, ``w``,
    ``omega``, test accuracies, ``seconds``), its final evaluation and its training time."""

    model: GroundingModel
    history: list[dict[str, float]]
    evaluation: Evaluation
    seconds: float


def _cosine(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / max(steps, 1)))
    )


def stage_epochs(plan: MethodPlan, spec: GroundingTrainSpec) -> list[tuple[int, int]]:
    """``[(stage, epochs), ...]`` of ``plan``."""
    return [(1, spec.stage1_epochs), (2, spec.epochs)] if plan.two_stage else [(1, spec.epochs)]


def train_model(
    plan: MethodPlan,
    train: Examples,
    test: Examples,
    spec: GroundingTrainSpec,
    model_spec: GroundingModelSpec,
    seed: int,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainedModel:
    """Train a fresh model under ``plan`` on ``train`` and evaluate both branches on ``test``
    after every epoch."""
    torch.manual_seed(seed)
    model = build_model(model_spec, int(train.images.shape[-1]))
    order = torch.Generator().manual_seed(seed + 1)
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    epoch = 0
    evaluation = evaluate(model, test)
    for stage, epochs in stage_epochs(plan, spec):
        model.train()
        set_decoder_frozen(model, plan.two_stage and stage == 2 and spec.freeze_decoder)
        trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=spec.lr, weight_decay=spec.weight_decay)
        steps_per_epoch = math.ceil(len(train) / spec.batch_size)
        scheduler = _cosine(optimizer, epochs * steps_per_epoch)
        for _ in range(epochs):
            sums: dict[str, list[float]] = {}
            for rows in torch.randperm(len(train), generator=order).split(spec.batch_size):
                step = grounding_loss(
                    model,
                    train.images[rows],
                    train.tokens[rows],
                    train.boxes[rows],
                    plan,
                    stage,
                    spec.lambda_t,
                    spec.lambda_d,
                    spec.fixed_weight,
                    spec.per_sample_weighting,
                    spec.eos_coef,
                )
                optimizer.zero_grad(set_to_none=True)
                step.total.backward()
                torch.nn.utils.clip_grad_norm_(trainable, spec.clip_norm)
                optimizer.step()
                scheduler.step()
                for key, value in step.parts.items():
                    sums.setdefault(key, []).append(value)
            epoch += 1
            evaluation = evaluate(model, test)
            record: dict[str, float] = {
                "epoch": epoch,
                "stage": stage,
                **{
                    f"train_{key}": statistics.fmean(values)
                    for key, values in sums.items()
                    if key not in ("w", "omega")
                },
                "w": statistics.fmean(sums["w"]),
                "omega": statistics.fmean(sums["omega"]),
                **evaluation.as_dict(),
                "seconds": time.perf_counter() - started,
            }
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
    set_decoder_frozen(model, False)
    return TrainedModel(model.eval(), history, evaluation, time.perf_counter() - started)


@torch.inference_mode()
def inference_latency(
    model: GroundingModel, examples: Examples, batch_sizes: tuple[int, ...] = (1, 32), repeats: int = 30
) -> dict[str, dict[str, float]]:
    """Median wall time (milliseconds, after 3 warm-up calls) of TB's and DB's inference
    (:meth:`~distill.grounding.models.GroundingModel.predict_token` /
    ``predict_decoder``) per batch size, on the current device and thread count:
    ``{"batch1": {"tb_ms": …, "db_ms": …}, …}``."""
    model.eval()
    results: dict[str, dict[str, float]] = {}
    for batch in batch_sizes:
        rows = torch.arange(batch) % len(examples)
        images, tokens = examples.images[rows], examples.tokens[rows]
        timings: dict[str, float] = {}
        for key, predict in (("tb_ms", model.predict_token), ("db_ms", model.predict_decoder)):
            for _ in range(3):
                predict(images, tokens)
            samples = []
            for _ in range(repeats):
                begin = time.perf_counter()
                predict(images, tokens)
                samples.append(1000 * (time.perf_counter() - begin))
            timings[key] = statistics.median(samples)
        results[f"batch{batch}"] = timings
    return results
