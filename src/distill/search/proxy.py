"""KD-Zero's proxy evaluation: a short training on a subset, fitness from the validation split.

A :class:`ProxyTask` is everything a worker process needs to score candidates (it is sent once
per worker and is plain, picklable data). The worker loads the data, keeps a random
``fraction`` of the training split, and trains the student for ``train.epochs`` epochs with
cross-entropy plus the candidate distiller, under the recipe's augmentation. The test split
never enters a proxy run: the proxy bundle's test slot holds the validation split, and the
fitness is the validation accuracy (%) after the last proxy epoch (ties go to the lower
validation cross-entropy). KD-Zero's abstract names "sharpness and representation gap" as its
fitness, and the group's released searcher (Auto-DAS) scores a mix of representation gap and
validation cross-entropy; we score what the user finally selects on, validation accuracy, and
log the validation loss beside it (``docs/methods/kd-zero.md``).

Teacher outputs come from a :class:`TeacherTable`: the teacher's logits and tapped features for
every (augmentation draw, training sample) of the proxy, computed once per worker and reused by
every candidate it trains, so a proxy run costs about what training the student alone costs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.assemble import instantiate, load_teacher
from distill.config import validate_recipe
from distill.data import load_data
from distill.data.augment import planned_batches
from distill.data.bundle import DataBundle, Split
from distill.engine.trainer import Trainer, TrainSpec
from distill.errors import DistillError
from distill.losses.distiller import Distiller
from distill.methods.base import Batch, EpochStart, FrozenTeacher, Method, TeacherOutput
from distill.methods.distiller import DistillerMethod, FeatureKnowledgeSpec
from distill.methods.scratch import Scratch
from distill.models.imported import trust_factories


@dataclass(frozen=True)
class ProxyTask:
    """What every worker needs, as JSON-able data: the recipe (data, student, seed), the
    teacher checkpoint, the proxy training spec and subset fraction, the feature pairs and the
    cross-entropy weight, how many threads a worker may use, and the model factories the user
    trusts the teacher checkpoint's metadata to name (``--trust-factory``; not part of the
    digest: it changes what may load, not what is computed)."""

    recipe: dict[str, Any]
    teacher_checkpoint: str
    train: dict[str, Any]
    fraction: float
    features: list[dict[str, Any]] = field(default_factory=list)
    ce_weight: float = 1.0
    threads: int = 1
    trusted_factories: list[str] = field(default_factory=list)

    def digest(self) -> str:
        identity = {key: value for key, value in self.__dict__.items() if key != "trusted_factories"}
        text = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def proxy_bundle(data: DataBundle, fraction: float, seed: int) -> DataBundle:
    """A seeded random ``fraction`` of ``data.train``; validation as is, and in the test slot."""
    if data.val is None:
        raise DistillError(
            "distill search: the data has no validation split, and fitness is never taken from the "
            "test set; set data.val_fraction (e.g. 0.1) in the recipe"
        )
    count = max(1, round(fraction * len(data.train)))
    rows = (
        torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    )
    return DataBundle(f"{data.name}[proxy]", data.train.subset(rows), data.val, data.val, data.num_classes)


class TeacherTable:
    """Teacher logits and tapped features per (draw, training sample), filled per draw on first
    use, then looked up by the batch's draw and indices (the live teacher for other inputs).
    Draws are kept for every later candidate of the worker, the least recently used dropped
    beyond ``max_bytes``."""

    def __init__(
        self, teacher: FrozenTeacher, train: Split, batch_size: int = 512, max_bytes: int = 512 * 2**20
    ) -> None:
        self.live = teacher
        self.train = train
        self.batch_size = batch_size
        self.max_bytes = max_bytes
        self.draws: OrderedDict[int, TeacherOutput] = OrderedDict()

    def prepare(self, epoch: EpochStart) -> None:
        if epoch.draw in self.draws:
            self.draws.move_to_end(epoch.draw)
            return
        parts: list[TeacherOutput] = []
        train = self.train
        for _, inputs in planned_batches(
            train.inputs, train.targets, epoch.plan, self.batch_size, epoch.device
        ):
            parts.append(self.live(inputs))
        assert parts[0].logits is not None
        self.draws[epoch.draw] = TeacherOutput(
            torch.cat([part.logits for part in parts if part.logits is not None]),
            {name: torch.cat([part.features[name] for part in parts]) for name in parts[0].features},
        )
        while len(self.draws) > 1 and self.stored_bytes() > self.max_bytes:
            self.draws.popitem(last=False)  # the least recently used draw

    def stored_bytes(self) -> int:
        """Bytes held for all stored draws."""
        total = 0
        for output in self.draws.values():
            tensors = [output.logits, *output.features.values()]
            total += sum(t.numel() * t.element_size() for t in tensors if t is not None)
        return total

    def __call__(self, inputs: torch.Tensor, batch: Batch | None = None) -> TeacherOutput:
        if batch is None or batch.draw not in self.draws:
            return self.live(inputs)
        stored = self.draws[batch.draw]
        assert stored.logits is not None
        rows = batch.indices.to(stored.logits.device)
        return TeacherOutput(
            stored.logits[rows], {name: value[rows] for name, value in stored.features.items()}
        )


class ProxyContext:
    """A worker's loaded state for one :class:`ProxyTask`: data, teacher table, specs.

    Proxy runs train on the CPU, ``task.threads`` threads per worker (many small runs side by
    side); the final ``distill run`` of the result uses the recipe's device."""

    def __init__(self, task: ProxyTask) -> None:
        self.task = task
        self.recipe = validate_recipe(task.recipe, "search recipe")
        self.seed = self.recipe.seed
        data = load_data(self.recipe.data)
        self.data = proxy_bundle(data, task.fraction, self.seed)
        self.train = TrainSpec.model_validate(task.train)
        self.features = [FeatureKnowledgeSpec.model_validate(pair) for pair in task.features]
        assert self.recipe.teacher is not None
        trust_factories(task.trusted_factories)  # a worker process starts with no trust of its own
        spec = self.recipe.teacher.model_copy(update={"checkpoint": Path(task.teacher_checkpoint)})
        teacher = load_teacher(spec, data, self.seed)
        self.teacher = TeacherTable(
            FrozenTeacher(teacher, [pair.teacher for pair in self.features]), self.data.train
        )

    def student(self) -> nn.Module:
        return instantiate(self.recipe.students[0].model, self.data, "student", self.seed)

    def method(self, distiller: Distiller | None, ce_weight: float) -> Method:
        """CE alone (``None``) or CE + ``distiller``, on a fresh, seeded student."""
        student = self.student()
        if distiller is None:
            return Scratch(student)
        torch.manual_seed(self.seed)
        return DistillerMethod(
            student,
            self.teacher,
            distiller,
            ce_weight,
            self.features,
            self.data.train.inputs[:8],
            "candidate",
        )

    def evaluate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Train one candidate (``{"distiller": {...} | None, "ce_weight": w}``) and score it."""
        torch.set_num_threads(self.task.threads)
        started = time.perf_counter()
        distiller = None if payload.get("distiller") is None else Distiller.from_dict(payload["distiller"])
        method = self.method(distiller, float(payload.get("ce_weight", self.task.ce_weight)))
        trainer = Trainer(
            method, self.data, self.train, seed=self.seed, device=torch.device("cpu"), model_name="c"
        )
        try:
            fit = trainer.fit()
        except DistillError as error:  # diverged
            return {"status": "failed", "error": str(error), "seconds": time.perf_counter() - started}
        last = fit.history[-1]
        return {
            "status": "ok",
            "fitness": round(100.0 * last["val_accuracy"], 4),
            "val_loss": round(last["val_loss"], 6),
            "train_loss": round(last["train_loss"], 6),
            "seconds": round(time.perf_counter() - started, 3),
        }


_CONTEXTS: dict[str, ProxyContext] = {}


def context_for(task: ProxyTask) -> ProxyContext:
    """The worker's :class:`ProxyContext` for ``task``, loaded once per process."""
    key = task.digest()
    if key not in _CONTEXTS:
        _CONTEXTS.clear()
        _CONTEXTS[key] = ProxyContext(task)
    return _CONTEXTS[key]


def evaluate_payload(task: ProxyTask, payload: dict[str, Any]) -> dict[str, Any]:
    """Worker entry point: score one candidate (loads the context on the first call)."""
    return context_for(task).evaluate(payload)
