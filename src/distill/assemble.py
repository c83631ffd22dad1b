"""The assembly point: specs in, ready objects out — data, models, a teacher, a teacher-output
cache, a method — for every application.

``distill run``, ``compare``, ``pareto``, ``search``, ``eval``, ``export`` and ``bench`` build
through these functions, and so can a new application: :func:`student_method` turns one student
of a recipe into a ready :class:`~distill.methods.Method` in one call; the
:class:`~distill.engine.Trainer` trains it. Nothing here writes a file: run directories belong
to the applications (:mod:`distill.runner`).

Layers: ``assemble`` and ``config`` (the recipe schema) sit above the engine and below the
applications; see ``docs/README.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from distill.config import Recipe, StudentSpec, TeacherSpec
from distill.data import DataBundle
from distill.data.pools import with_unlabeled_pool
from distill.engine import distributed
from distill.engine.artifacts import ModuleFileReader
from distill.engine.cache import CacheKey, TeacherOutputCache
from distill.engine.checkpoint import load_weights, read_metadata
from distill.engine.trainer import augment_plan, steps_per_epoch, training_draws
from distill.errors import CheckpointError, RecipeError
from distill.methods import Method, MethodContext, MethodSpec, TeacherOutputStore, build_method
from distill.methods.registry import Budget
from distill.models import ImportedModelSpec, ModelSpec, build_model, validate_model_spec
from distill.models.imported import refuse_untrusted_factories


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


def model_spec_from_json(payload: Any, checkpoint: Path, remedy: str | None = None) -> ModelSpec:
    """Rebuild the model spec stored in ``checkpoint``'s metadata (the ``.json`` beside it).

    Only registered models are rebuilt: a spec that names an imported factory (at any depth) is
    refused unless the user trusts it (see :mod:`distill.models.imported`); ``remedy`` names a
    further way to trust it than ``--trust-factory``.
    """
    source = str(Path(checkpoint).with_suffix(".json"))
    try:
        spec = validate_model_spec(payload)
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


def checkpoint_metadata(
    name: str, role: str, method: str, model_spec: ModelSpec, data: DataBundle, recipe: Recipe
) -> dict[str, Any]:
    """What a model's checkpoints record beside its weights: enough to rebuild the model
    (``eval``, ``export``, a teacher without ``teacher.model``) and to trust its data."""
    return {
        "name": name,
        "role": role,
        "method": method,
        "model": model_spec.model_dump(mode="json"),
        "imported": isinstance(model_spec, ImportedModelSpec),
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "recipe": recipe.name,
        "seed": recipe.seed,
        "data": data.name,
        "data_spec": recipe.data.model_dump(mode="json"),
        "data_fingerprint": data.fingerprint,
    }


def student_method(
    recipe: Recipe,
    index: int,
    data: DataBundle,
    teacher: nn.Module | None,
    device: torch.device,
    teacher_cache: TeacherOutputCache | None = None,
    trained: dict[str, nn.Module] | None = None,
) -> Method:
    """The ready method of ``recipe.students[index]``: its model built and seeded, on
    ``device``, with the teacher (and its output cache), the data it trains on
    (:func:`student_data_of`), its budget, and the students it builds on (``trained``)."""
    spec = recipe.students[index]
    owner = f"students[{index}]"
    model = instantiate(spec.model, data, owner, recipe.seed)
    train = recipe.train_of(spec)
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
        seed=recipe.seed,
        data=data,
        trained_students=dict(trained or {}),
        module_reader=ModuleFileReader(),
        budget=Budget(
            train.epochs,
            train.batch_size,
            steps_per_epoch(len(data.train), train.batch_size, distributed.world_size()),
            train.optimizer.lr,
        ),
    )
    return build_method(spec.method, context)


def method_for(
    spec: MethodSpec,
    student: nn.Module,
    teacher: nn.Module | None,
    data: DataBundle,
    teacher_cache: TeacherOutputStore | None = None,
) -> Method:
    """The method ``spec`` names around models built elsewhere (a benchmark's, a test's): the
    context holds only the models, the data's shape and the cache — methods that build further
    models or need a budget are assembled by :func:`student_method`."""
    context = MethodContext(
        student, teacher, data.train.inputs[:8], data.num_classes, teacher_cache=teacher_cache
    )
    return build_method(spec, context)


def teacher_cache(
    recipe: Recipe, spec: StudentSpec, data: DataBundle, teacher: nn.Module | None, device: torch.device
) -> TeacherOutputCache | None:
    """Open (or create) the teacher-output cache a student's recipe asks for (``None`` if it
    asks for none).

    Under data parallelism rank 0 creates the cache and fills every draw training will use
    before the other ranks open it, so that they only read it.
    """
    options = spec.teacher_cache
    temperature = spec.method.cacheable_temperature()
    if options is None or teacher is None or temperature is None:
        return None
    train = recipe.train_of(spec)
    key = CacheKey.for_training(
        teacher,
        data,
        train.augment,
        recipe.seed,
        train.epochs,
        temperature,
        options.top_k,
        options.precision,
        spec.method.cached_teacher_layers(),
    )
    if not distributed.is_initialized():
        return TeacherOutputCache(key, options.directory, options.batch_size, options.rest)

    def open_and_fill() -> TeacherOutputCache:
        cache = TeacherOutputCache(key, options.directory, options.batch_size, options.rest)
        if distributed.is_main_process():
            for draw in training_draws(train):
                if not cache.is_filled(draw):
                    plan = augment_plan(train.augment, data, recipe.seed, draw)
                    cache.fill(draw, teacher, data.train, plan, device, cache.batch_size)
        return cache

    return distributed.main_process_first(open_and_fill)
