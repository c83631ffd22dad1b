"""Run a validated recipe: load data, obtain the teacher, train each student, report.

This is the one place that turns a :class:`~distill.config.Recipe` into objects and files:
recipe → data → models → method → :class:`~distill.engine.Trainer` → run directory.

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

from distill.config import Recipe, StudentSpec, TeacherSpec
from distill.data import DataBundle, load_data
from distill.data.pools import with_unlabeled_pool
from distill.engine import distributed
from distill.engine.cache import CacheKey, TeacherOutputCache
from distill.engine.checkpoint import load_weights, read_metadata
from distill.engine.metrics import evaluate
from distill.engine.trainer import (
    EpochRecord,
    Trainer,
    TrainSpec,
    augment_plan,
    member_name,
    steps_per_epoch,
    training_draws,
)
from distill.errors import CheckpointError, DistillError, RecipeError
from distill.methods import Method, MethodContext, build_method
from distill.methods.registry import Budget
from distill.methods.scratch import Scratch
from distill.models import ImportedModelSpec, ModelSpec, build_model, count_parameters
from distill.models.imported import refuse_untrusted_factories
from distill.report.plots import plot_learning_curves
from distill.report.rundir import RunDirectory
from distill.report.unlabeled import pool_truth, unlabeled_report

LOG = logging.getLogger("distill")
EpochCallback = Callable[[str, EpochRecord, int], None]


def select_device(choice: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise RecipeError("device: 'cuda' was requested but no CUDA device is available")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def student_data_of(spec: StudentSpec, data: DataBundle) -> DataBundle:
    """What a student trains on: L followed by the unlabeled pool for unlabeled-data methods."""
    return with_unlabeled_pool(data) if spec.method.uses_unlabeled else data


def pool_sizes(data: DataBundle) -> dict[str, Any]:
    """``{"pools": {...}}`` with the sizes of L, V and U when the data has pools."""
    if data.unlabeled is None:
        return {}
    validation = 0 if data.val is None else len(data.val)
    return {"pools": {"labeled": len(data.train), "validation": validation, "unlabeled": len(data.unlabeled)}}


def model_spec_from_json(payload: Any, checkpoint: Path, remedy: str | None = None) -> ModelSpec:
    """Rebuild the model spec stored in ``checkpoint``'s metadata (the ``.json`` beside it).

    Only registered models are rebuilt: a spec that names an imported factory (at any depth) is
    refused unless the user trusts it (see :mod:`distill.models.imported`); ``remedy`` names a
    further way to trust it than ``--trust-factory``.
    """
    from pydantic import TypeAdapter, ValidationError

    from distill.config import ModelField

    source = str(Path(checkpoint).with_suffix(".json"))
    try:
        spec = TypeAdapter(ModelField).validate_python(payload)
    except ValidationError as error:
        raise CheckpointError(f"{source}: the metadata holds an invalid model spec: {error}") from None
    refuse_untrusted_factories(spec, source, remedy)
    return spec


def instantiate(spec: ModelSpec, data: DataBundle, owner: str, seed: int) -> nn.Module:
    """Build ``spec`` for ``data`` and check it maps a batch to ``(batch, num_classes)`` logits.

    Initialization is seeded with ``seed``, so two students with the same spec start identical.
    """
    torch.manual_seed(seed)
    try:
        model = build_model(spec, data.input_shape, data.num_classes)
    except (ValueError, TypeError) as error:
        raise RecipeError(f"{owner}.model: cannot build '{spec.name}': {error}") from None
    example = data.train.inputs[:2]
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            logits = model(example)
            model.train(was_training)
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise RecipeError(
            f"{owner}.model: '{spec.name}' cannot take inputs shaped {data.input_shape} from "
            f"data '{data.name}' ({first_line})"
        ) from None
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, data.num_classes):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise RecipeError(
            f"{owner}.model: '{spec.name}' outputs {shape} for a batch of 2, but data "
            f"'{data.name}' has {data.num_classes} classes (expected (2, {data.num_classes}))"
        )
    return model


def load_teacher(spec: TeacherSpec, data: DataBundle, seed: int) -> nn.Module:
    """The teacher ``spec.checkpoint`` holds, in eval mode: its architecture from ``spec.model``
    or else from the checkpoint's metadata; a missing file or model is refused by name."""
    assert spec.checkpoint is not None
    if not spec.checkpoint.is_file():
        raise CheckpointError(f"teacher.checkpoint: file not found: {spec.checkpoint}")
    model_spec = spec.model
    if model_spec is None:
        metadata = read_metadata(spec.checkpoint)
        if "model" not in metadata:
            raise CheckpointError(
                f"teacher.checkpoint: {spec.checkpoint} has no metadata naming its model; "
                "add teacher.model to the recipe"
            )
        remedy = "add teacher.model to the recipe"
        model_spec = model_spec_from_json(metadata["model"], spec.checkpoint, remedy)
    model = instantiate(model_spec, data, "teacher", seed)
    try:
        load_weights(spec.checkpoint, model)
    except CheckpointError as error:
        raise CheckpointError(f"teacher.checkpoint: {error}") from None
    return model.eval()


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
        on_model_start: Callable[[str, int], None] | None = None,
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
            cache = self._teacher_cache(student, student_data, teacher_model, device)
            method = self._student_method(
                index, student, student_data, teacher_model, device, cache, trained_students
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
        loaded = None
        teacher = None
        if spec is not None and spec.checkpoint is not None:
            loaded = teacher = self._load_teacher(spec, data)
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
            self._student_method(index, student, student_data, stand_in, cpu, trained=earlier)
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

    def _load_teacher(self, spec: TeacherSpec, data: DataBundle) -> nn.Module:
        return load_teacher(spec, data, self.recipe.seed)

    # ------------------------------------------------------------------ students
    def _student_method(
        self,
        index: int,
        spec: StudentSpec,
        data: DataBundle,
        teacher: nn.Module | None,
        device: torch.device,
        teacher_cache: TeacherOutputCache | None = None,
        trained: dict[str, nn.Module] | None = None,
    ) -> Method:
        owner = f"students[{index}]"
        model = instantiate(spec.model, data, owner, self.recipe.seed)
        train = self.recipe.train_of(spec)
        context = MethodContext(
            student=model.to(device),
            teacher=teacher.to(device) if teacher is not None else None,
            example_inputs=data.train.inputs[:8].to(device),
            num_classes=data.num_classes,
            owner=f"{owner}.method",
            teacher_cache=teacher_cache,
            build_model=lambda model_spec, member, seed: instantiate(
                model_spec, data, f"{owner}.method.{member}", seed
            ).to(device),
            student_spec=spec.model,
            seed=self.recipe.seed,
            data=data,
            trained_students=dict(trained or {}),
            budget=Budget(
                train.epochs,
                train.batch_size,
                steps_per_epoch(len(data.train), train.batch_size, distributed.world_size()),
                train.optimizer.lr,
            ),
        )
        return build_method(spec.method, context)

    def _teacher_cache(
        self, spec: StudentSpec, data: DataBundle, teacher: nn.Module | None, device: torch.device
    ) -> TeacherOutputCache | None:
        """Open (or create) the teacher-output cache this student's recipe asks for.

        Under data parallelism rank 0 creates the cache and fills every draw training will use
        before the other ranks open it, so that they only read it.
        """
        options = spec.teacher_cache
        temperature = spec.method.cacheable_temperature()
        if options is None or teacher is None or temperature is None:
            return None
        train = self.recipe.train_of(spec)
        key = CacheKey.for_training(
            teacher,
            data,
            train.augment,
            self.recipe.seed,
            train.epochs,
            temperature,
            options.top_k,
            options.precision,
            spec.method.cached_teacher_layers(),
        )
        if not distributed.is_initialized():
            return TeacherOutputCache(key, options.directory, options.batch_size, options.rest)

        def open_cache() -> TeacherOutputCache:
            cache = TeacherOutputCache(key, options.directory, options.batch_size, options.rest)
            if distributed.is_main_process():
                self._fill_teacher_cache(cache, teacher, data, train, device)
            return cache

        return distributed.main_process_first(open_cache)

    def _fill_teacher_cache(
        self,
        cache: TeacherOutputCache,
        teacher: nn.Module,
        data: DataBundle,
        train: TrainSpec,
        device: torch.device,
    ) -> None:
        """Fill every draw of ``cache`` that training under ``train`` will read."""
        for draw in training_draws(train):
            if not cache.is_filled(draw):
                plan = augment_plan(train.augment, data, self.recipe.seed, draw)
                cache.fill(draw, teacher, data.train, plan, device, cache.batch_size)

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
        metadata = {
            "name": name,
            "role": role,
            "method": method_name,
            "model": model_spec.model_dump(mode="json"),
            "imported": isinstance(model_spec, ImportedModelSpec),
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "recipe": self.recipe.name,
            "seed": self.recipe.seed,
            "data": data.name,
            "data_spec": self.recipe.data.model_dump(mode="json"),
            "data_fingerprint": data.fingerprint,
        }
        members = {member_name(name, sub): model for sub, model in method.evaluated_models().items()}
        finished = [self.run.read_result(member) for member in members] if self.resume else [None]
        if all(result is not None for result in finished):
            for result, model in zip(finished, members.values(), strict=True):
                assert result is not None
                load_weights(Path(result["checkpoint"]), model)
            return [ModelResult(**result) for result in finished if result is not None]

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
        method.prepare(model_dir)  # e.g. meta-training a loss teacher: counted in the seconds
        prepare_seconds = time.perf_counter() - started
        if self.on_model_start is not None:
            self.on_model_start(name, train.epochs)
        fit = trainer.fit()
        if not fit.history:
            raise DistillError(f"{name}: no epoch was trained")
        which = trainer.selection
        results = []
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
        results[0].extras = method.finish(model_dir) if distributed.is_main_process() else None
        for result in results:
            self.run.write_result(result.name, result.as_json())
        resume_path = trainer.resume_path
        if distributed.is_main_process() and resume_path is not None and resume_path.exists():
            resume_path.unlink()  # the finished models' checkpoints and result.json files suffice
        return results
