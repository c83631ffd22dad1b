"""Run a validated recipe: load data, obtain the teacher, train each student, report.

recipe → data → models → method (built by :mod:`distill.assemble`) →
:class:`~distill.engine.Trainer` → run directory (written here).

Launched by ``torchrun`` with several processes, every process runs the same recipe
data-parallel (see :mod:`distill.engine.distributed`): the runner owns the process group for
the duration of :meth:`RecipeRunner.execute`, rank 0 alone writes the run directory, and every
rank ends with the same weights and results.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.assemble import (
    checkpoint_metadata,
    instantiate,
    load_teacher,
    select_device,
    student_data_of,
    student_method,
    teacher_cache,
)
from distill.config import Recipe, StudentSpec, TeacherSpec
from distill.data import DataBundle, load_data
from distill.engine import distributed
from distill.engine.artifacts import RunArtifacts
from distill.engine.checkpoint import load_weights, read_metadata
from distill.engine.metrics import evaluate
from distill.engine.trainer import (
    EpochRecord,
    Trainer,
    TrainSpec,
    member_name,
)
from distill.errors import DistillError
from distill.methods import Method
from distill.methods.scratch import Scratch
from distill.models import ModelSpec, count_parameters
from distill.report.plots import plot_learning_curves
from distill.report.rundir import RunDirectory
from distill.report.teaching import plot_method_tables
from distill.report.unlabeled import pool_truth, unlabeled_report

LOG = logging.getLogger("distill")
EpochCallback = Callable[[str, EpochRecord, int], None]


def pool_sizes(data: DataBundle) -> dict[str, Any]:
    """``{"pools": {...}}`` with the sizes of L, V and U when the data has pools."""
    if data.unlabeled is None:
        return {}
    validation = 0 if data.val is None else len(data.val)
    return {"pools": {"labeled": len(data.train), "validation": validation, "unlabeled": len(data.unlabeled)}}


@dataclass
class ModelResult:
    """One row of ``summary.json``."""

    name: str
    role: str
    method: str
    test_accuracy: float
    params: int
    epochs: int
    seconds: float
    reported_epoch: int | None = None
    selection: str = "last"
    val_accuracy: float | None = None
    checkpoint: str | None = None
    extras: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _refuse_augmenting_token_ids(recipe: Recipe, data: DataBundle) -> None:
    """Integer inputs (token ids, e.g. ``wordnet``) cannot be mixed, shifted or noised: a model
    that trains on them must not ask for input augmentation."""
    if data.train.inputs.is_floating_point():
        return
    trained: list[tuple[str, StudentSpec | TeacherSpec]] = []
    if recipe.teacher is not None and recipe.teacher.checkpoint is None:
        trained.append(("teacher", recipe.teacher))
    trained += [(f"students[{i}]", student) for i, student in enumerate(recipe.students)]
    for owner, member in trained:
        if recipe.train_of(member).augment.enabled:
            raise DistillError(
                f"{owner}: train.augment: data '{data.name}' holds integer inputs (token ids), which "
                "input augmentation (mixup, shift, noise, flip, crop) cannot transform; turn it off"
            )


class RecipeRunner:
    """Runs every model of a recipe in order, writing into ``run_dir``.

    ``resume=True`` continues an interrupted run: finished models are reused, an interrupted
    one continues from its last completed epoch.

    Under ``torchrun`` every process constructs and executes a runner; they all use rank 0's
    ``run_dir`` (which matters when it was derived from the clock).
    """

    def __init__(
        self,
        recipe: Recipe,
        run_dir: Path,
        resume: bool = False,
        on_epoch_end: EpochCallback | None = None,
        on_model_start: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.recipe = recipe
        self.run = RunDirectory(run_dir)
        self.resume = resume
        self.on_epoch_end = on_epoch_end
        self.on_model_start = on_model_start

    def execute(self) -> dict[str, Any]:
        """Run the recipe and return the summary (also written to ``summary.json``)."""
        with distributed.process_group(select_device(self.recipe.device)) as device:
            try:
                return self._execute(device)
            finally:
                self.run.close()

    def _execute(self, device: torch.device) -> dict[str, Any]:
        recipe = self.recipe
        self.run = RunDirectory(distributed.broadcast_object(self.run.path))
        data = distributed.main_process_first(lambda: load_data(recipe.data))  # may fill a cache
        loaded_teacher = self._preflight(data)
        self.run.open(recipe.model_dump(mode="json"), self.resume)
        if data.pool_rows is not None:
            self.run.write_json("pools.json", {"source": data.name, "rows": data.pool_rows})
        results: list[ModelResult] = []
        teacher_model = None
        if recipe.teacher is not None:
            teacher_model, teacher_result = self._teacher(recipe.teacher, loaded_teacher, data, device)
            pool = pool_truth(data)
            if pool is not None:
                teacher_result.extras = {
                    "unlabeled_accuracy": evaluate(teacher_model, pool, device)["accuracy"]
                }
            results.append(teacher_result)
        trained_students: dict[str, nn.Module] = {}
        for index, student in enumerate(recipe.students):
            student_data = student_data_of(student, data)
            cache = teacher_cache(recipe, student, student_data, teacher_model, device)
            method = student_method(
                recipe, index, student_data, teacher_model, device, cache, trained_students
            )
            trained = self._train(
                student.name,
                "student",
                student.method.name,
                method,
                student.model,
                student_data,
                device,
                self.recipe.train_of(student),
            )
            if student.method.uses_unlabeled and trained[0].extras is None:
                trained[0].extras = unlabeled_report(method, method.primary_model(), student_data, device)
                self.run.write_result(trained[0].name, trained[0].as_json())
            results.extend(trained)
            trained_students[student.name] = method.primary_model()
            if cache is not None:
                LOG.info(
                    "%s: teacher cache %s — %d draw(s) computed, %d batch lookups",
                    student.name,
                    cache.path,
                    cache.fills,
                    cache.hits,
                )
        summary = {
            "recipe": recipe.name,
            "seed": recipe.seed,
            "data": {"name": data.name, "fingerprint": data.fingerprint, **pool_sizes(data)},
            "device": str(device),
            "world_size": distributed.world_size(),
            "results": [result.as_json() for result in results],
        }
        self.run.write_summary(summary)
        if distributed.is_main_process():
            plot_learning_curves(self.run.read_metrics(), self.run.path / "curves.png", recipe.name)
        return summary

    def _preflight(self, data: DataBundle) -> nn.Module | None:
        """Build every model and method once, before any file is written or any epoch runs,
        so that a mistake in the last student is reported before the teacher trains.

        Returns the teacher loaded from its checkpoint, if the recipe names one.
        """
        spec = self.recipe.teacher
        _refuse_augmenting_token_ids(self.recipe, data)
        loaded = None
        teacher = None
        if spec is not None and spec.checkpoint is not None:
            loaded = teacher = load_teacher(spec, data, self.recipe.seed)
        elif spec is not None:
            assert spec.model is not None
            teacher = instantiate(spec.model, data, "teacher", self.recipe.seed)
        cpu = torch.device("cpu")
        for index, student in enumerate(self.recipe.students):
            stand_in = copy.deepcopy(teacher) if teacher is not None else None
            student_data = student_data_of(student, data)
            earlier = {  # untrained stand-ins for the students a method builds on
                other.name: instantiate(other.model, data, f"students[{position}]", self.recipe.seed)
                for position, other in enumerate(self.recipe.students[:index])
                if other.name in student.method.depends_on()
            }
            student_method(self.recipe, index, student_data, stand_in, cpu, trained=earlier)
        return loaded

    # ------------------------------------------------------------------ teacher
    def _teacher(
        self,
        spec: TeacherSpec,
        loaded: nn.Module | None,
        data: DataBundle,
        device: torch.device,
    ) -> tuple[nn.Module, ModelResult]:
        if loaded is not None:
            assert spec.checkpoint is not None
            loaded.to(device).eval()
            result = ModelResult(
                spec.name,
                "teacher",
                "checkpoint",
                evaluate(loaded, data.test, device)["accuracy"],
                count_parameters(loaded),
                int(read_metadata(spec.checkpoint).get("epoch", 0)),
                0.0,
                checkpoint=str(spec.checkpoint),
                selection="checkpoint",
            )
            return loaded, result
        assert spec.model is not None
        model = instantiate(spec.model, data, "teacher", self.recipe.seed)
        [result] = self._train(
            spec.name,
            "teacher",
            "scratch",
            Scratch(model),
            spec.model,
            data,
            device,
            self.recipe.train_of(spec),
        )
        return model.eval(), result

    # ------------------------------------------------------------------ shared
    def _train(
        self,
        name: str,
        role: str,
        method_name: str,
        method: Method,
        model_spec: ModelSpec,
        data: DataBundle,
        device: torch.device,
        train: TrainSpec,
    ) -> list[ModelResult]:
        """Train ``method`` (or reuse its finished results when resuming); one result per
        evaluated model (see :meth:`~distill.methods.Method.evaluated_models`)."""
        model_dir = self.run.model_dir(name)
        metadata = checkpoint_metadata(name, role, method_name, model_spec, data, self.recipe)
        members = {member_name(name, sub): model for sub, model in method.evaluated_models().items()}
        finished = [self.run.read_result(member) for member in members] if self.resume else [None]
        if all(stored is not None for stored in finished):
            for stored, model in zip(finished, members.values(), strict=True):
                assert stored is not None
                load_weights(Path(stored["checkpoint"]), model)
            return [ModelResult(**stored) for stored in finished if stored is not None]

        def record_epoch(record: EpochRecord) -> None:
            self.run.append_metrics(record)
            if self.on_epoch_end is not None:
                self.on_epoch_end(name, record, train.epochs)

        trainer = Trainer(
            method,
            data,
            train,
            seed=self.recipe.seed,
            device=device,
            model_name=name,
            model_dir=model_dir,
            checkpoint_metadata=metadata,
            on_epoch_end=record_epoch,
        )
        if self.resume and trainer.load_resume():
            self.run.keep_metrics_until(name, trainer.state.epoch)
        else:
            self.run.keep_metrics_until(name, 0)
        started = time.perf_counter()
        method.prepare(RunArtifacts(model_dir))  # e.g. meta-training a loss teacher: counted in the seconds
        prepare_seconds = time.perf_counter() - started
        if self.on_model_start is not None:
            self.on_model_start(name, train.epochs, trainer.state.epoch)
        fit = trainer.fit()
        if not fit.history:
            raise DistillError(f"{name}: no epoch was trained")
        which = trainer.selection
        results: list[ModelResult] = []
        for member, model in members.items():
            reported = fit.reported_by_model[member]
            directory = trainer.checkpoint_dirs[member]
            assert directory is not None
            checkpoint = directory / f"{which}.safetensors"
            if which == "best":  # the evaluated model must hold the reported epoch's weights
                load_weights(checkpoint, model)
            result = ModelResult(
                name=member,
                role=role,
                method=method_name,
                test_accuracy=reported["test_accuracy"],
                params=count_parameters(model),
                epochs=train.epochs,
                seconds=round(fit.seconds + prepare_seconds, 3),
                reported_epoch=reported["epoch"],
                selection=which,
                val_accuracy=reported.get("val_accuracy"),
                checkpoint=str(checkpoint),
            )
            results.append(result)
        results[0].extras = method.finish(RunArtifacts(model_dir)) if distributed.is_main_process() else None
        if distributed.is_main_process():
            plot_method_tables(model_dir, method_name)  # e.g. the loss a loss teacher wrote
        for result in results:
            self.run.write_result(result.name, result.as_json())
        resume_path = trainer.resume_path
        if distributed.is_main_process() and resume_path is not None and resume_path.exists():
            resume_path.unlink()  # the finished models' checkpoints and result.json files suffice
        return results
