"""Side-by-side epoch timing: every variant of a task, interleaved, medians of repeats."""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from distill.assemble import method_for
from distill.bench.reference import make_reference_loader, reference_kd_epoch
from distill.bench.tasks import BenchTask
from distill.data.augment import AugmentSpec
from distill.engine.cache import CacheKey, TeacherOutputCache
from distill.engine.optim import OptimizerSpec
from distill.engine.trainer import Trainer, TrainSpec, steps_per_epoch
from distill.methods.kd import FeaturePairSpec, KDSpec
from distill.methods.scratch import ScratchSpec
from distill.models import build_model

TEMPERATURE = 4.0
KD = KDSpec(temperature=TEMPERATURE, kd_weight=0.9, ce_weight=0.1)
DEVICE = torch.device("cpu")
BUDGET_EPOCHS = 1000  # the schedule's horizon; the bench runs only a few of these epochs
MAX_ROUNDS = 200


def _trainer(
    task: BenchTask,
    student: torch.nn.Module,
    teacher,
    augment: AugmentSpec,
    cache=None,
    fused_optimizer: bool = True,
    kd: KDSpec = KD,
):
    """One epoch at a time of KD (given a teacher) or of scratch training (teacher ``None``)."""
    spec = kd if teacher is not None else ScratchSpec()
    train = TrainSpec(
        epochs=BUDGET_EPOCHS,
        batch_size=task.batch_size,
        augment=augment,
        optimizer=OptimizerSpec(lr=1e-3, fused=fused_optimizer),
    )
    trainer = Trainer(
        method_for(spec, student, teacher, task.data, cache),
        task.data,
        train,
        seed=0,
        device=DEVICE,
        model_name=task.name,
    )
    epoch = iter(range(10**6))
    return lambda: trainer.train_epoch(next(epoch))


def _cache(task: BenchTask, teacher, augment: AugmentSpec, root: Path, kd: KDSpec = KD) -> TeacherOutputCache:
    key = CacheKey.for_training(
        teacher,
        task.data,
        augment,
        0,
        BUDGET_EPOCHS,
        TEMPERATURE,
        None,
        "float16",
        kd.cached_teacher_layers(),
    )
    return TeacherOutputCache(key, root)


def _hint_kd(task: BenchTask) -> KDSpec | None:
    """KD plus a FitNet hint between the task's paired layers (``None``: the task has none)."""
    if task.hint is None:
        return None
    student_layer, teacher_layer = task.hint
    return KD.model_copy(update={"features": [FeaturePairSpec(student=student_layer, teacher=teacher_layer)]})


def _plain_loop(task: BenchTask, student, teacher) -> Callable[[], Any]:
    loader = make_reference_loader(task.data.train.inputs, task.data.train.targets, task.batch_size, seed=0)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=1e-4)
    return lambda: reference_kd_epoch(teacher, student, loader, optimizer, TEMPERATURE, 0.9, 0.1, DEVICE)


def time_task(task: BenchTask, repeats: int, min_seconds: float = 0.0) -> dict[str, Any]:
    """Median seconds per training epoch of each variant, timed in interleaved rounds: at least
    ``repeats`` rounds, and as many more (up to ``MAX_ROUNDS``) as it takes to time every
    variant for ``min_seconds`` in total."""
    torch.manual_seed(0)
    teacher = build_model(task.teacher, task.data.input_shape, task.data.num_classes).eval()
    torch.manual_seed(1)
    student = build_model(task.student, task.data.input_shape, task.data.num_classes)
    fresh = lambda: copy.deepcopy(student)  # noqa: E731  (same initialization for every variant)
    plain = AugmentSpec()
    with tempfile.TemporaryDirectory(prefix="distill-bench-") as root:
        variants: dict[str, Callable[[], Any]] = {
            "scratch_epoch_s": _trainer(task, fresh(), None, plain),
            "kd_live_epoch_s": _trainer(task, fresh(), copy.deepcopy(teacher), plain),
            "kd_cached_epoch_s": _trainer(
                task, fresh(), copy.deepcopy(teacher), plain, _cache(task, teacher, plain, Path(root))
            ),
            "plain_loop_epoch_s": _plain_loop(task, fresh(), copy.deepcopy(teacher)),
            # what the fused optimizer step saves: scratch with PyTorch's per-parameter loop
            "scratch_unfused_optimizer_epoch_s": _trainer(task, fresh(), None, plain, fused_optimizer=False),
            "scratch_augmented_epoch_s": _trainer(task, fresh(), None, task.augment),
            "kd_live_augmented_epoch_s": _trainer(task, fresh(), copy.deepcopy(teacher), task.augment),
            "kd_cached_augmented_epoch_s": _trainer(
                task,
                fresh(),
                copy.deepcopy(teacher),
                task.augment,
                _cache(task, teacher, task.augment, Path(root)),
            ),
        }
        hint = _hint_kd(task)
        if hint is not None:  # feature KD: the teacher's tapped layer live, or from the cache
            variants["kd_hint_live_epoch_s"] = _trainer(task, fresh(), copy.deepcopy(teacher), plain, kd=hint)
            variants["kd_hint_cached_epoch_s"] = _trainer(
                task,
                fresh(),
                copy.deepcopy(teacher),
                plain,
                _cache(task, teacher, plain, Path(root), hint),
                kd=hint,
            )
        fill_seconds = {}
        for name, run_epoch in variants.items():  # warm-up; fills the caches' single draw
            started = time.perf_counter()
            run_epoch()
            fill_seconds[name] = time.perf_counter() - started
        samples: dict[str, list[float]] = {name: [] for name in variants}
        rounds = 0
        # at least `repeats` rounds, and more for short epochs, until every variant has been
        # timed for `min_seconds` in all (a 40 ms epoch's median needs dozens of samples)
        while rounds < repeats or (
            rounds < MAX_ROUNDS and min(sum(values) for values in samples.values()) < min_seconds
        ):
            for name, run_epoch in variants.items():
                started = time.perf_counter()
                run_epoch()
                samples[name].append(time.perf_counter() - started)
            rounds += 1
    result: dict[str, Any] = {name: statistics.median(values) for name, values in samples.items()}
    result["teacher"] = task.teacher.model_dump()
    result["student"] = task.student.model_dump()
    result["samples_per_epoch"] = len(task.data.train)
    result["batch_size"] = task.batch_size
    result["repeats"] = rounds
    result["first_cached_epoch_s"] = fill_seconds["kd_cached_epoch_s"]
    scratch = result["scratch_epoch_s"]
    result["kd_cached_over_scratch"] = result["kd_cached_epoch_s"] / scratch
    steps = steps_per_epoch(len(task.data.train), task.batch_size)
    result["steps_per_epoch"] = steps
    # the cached KD step's cost over a scratch step: its loss kernels and the cache lookup
    result["kd_cached_extra_ms_per_step"] = 1000 * (result["kd_cached_epoch_s"] - scratch) / steps
    result["scratch_unfused_optimizer_over_scratch"] = result["scratch_unfused_optimizer_epoch_s"] / scratch
    result["kd_live_over_scratch"] = result["kd_live_epoch_s"] / scratch
    result["kd_live_over_plain_loop"] = result["kd_live_epoch_s"] / result["plain_loop_epoch_s"]
    result["kd_cached_augmented_over_scratch_augmented"] = (
        result["kd_cached_augmented_epoch_s"] / result["scratch_augmented_epoch_s"]
    )
    if hint is not None:
        result["hint_layers"] = list(task.hint or ())
        result["kd_hint_cached_over_scratch"] = result["kd_hint_cached_epoch_s"] / scratch
        result["kd_hint_live_over_scratch"] = result["kd_hint_live_epoch_s"] / scratch
    result["raw_seconds"] = samples
    return result
