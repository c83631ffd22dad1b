"""Evaluate a saved checkpoint on a data source (``distill eval``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from distill.assemble import model_spec_from_json, select_device
from distill.errors import CheckpointError, DataError


def data_spec_for(reference: str | None, metadata: dict[str, Any], checkpoint: Path) -> Any:
    """The data spec ``reference`` names (a dataset name or an .npz/.csv file), or the one stored
    in the checkpoint's metadata when it is ``None``."""
    from distill.config import DataField, format_validation_error

    if reference is None:
        if "data_spec" not in metadata:
            raise CheckpointError(f"{checkpoint}: metadata names no data set; pass --data")
        payload: dict[str, Any] = metadata["data_spec"]
    elif reference.endswith(".npz"):
        payload = {"name": "npz", "path": reference}
    elif reference.endswith(".csv"):
        payload = {"name": "csv", "path": reference}
    else:
        payload = {"name": reference}
    try:
        return TypeAdapter(DataField).validate_python(payload)
    except ValidationError as error:
        raise DataError(format_validation_error(error, {"data": payload}, "--data")) from None


def is_file_reference(reference: str | None) -> bool:
    """Whether ``--data`` names a file (``.npz``/``.csv``) rather than a dataset."""
    return reference is not None and reference.endswith((".npz", ".csv"))


def describe_data(spec: Any) -> tuple[str, str]:
    """``(kind, what)`` of a data spec: ``("npz", "data/train.npz")`` for a file (with its test
    file, if it has one), ``("mnist1d", "mnist1d")`` for a dataset."""
    path = getattr(spec, "path", None)
    if path is None:
        return spec.name, spec.name
    test_path = getattr(spec, "test_path", None)
    return spec.name, f"{path}" + (f" + test file {test_path}" if test_path is not None else "")


def missing_metadata(checkpoint: Path, metadata: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """Why ``checkpoint``'s metadata cannot rebuild its model (``None`` if it can): no metadata
    file at all, or one that lacks some of ``keys``."""
    meta_path = checkpoint.with_suffix(".json")
    if not meta_path.is_file():
        return f"{checkpoint}: has no metadata file ({meta_path}) beside it; was it written by distill?"
    missing = [key for key in keys if key not in metadata]
    if missing:
        return f"{checkpoint}: its metadata ({meta_path}) lacks {', '.join(missing)}"
    return None


def evaluate_checkpoint(checkpoint: Path, data: str | None, split: str | None = None) -> dict[str, Any]:
    """Accuracy, loss and ECE of ``checkpoint``: on every row of ``data`` when it is a file
    (``.npz``/``.csv``, no hold-out), else on ``split`` (default ``test``) of the dataset ``data``
    names or, when ``data`` is ``None``, of the data the checkpoint was trained on.

    The result names the checkpoint, ``data`` (the file's path or the dataset's name),
    ``dataset`` (its kind: ``npz``, ``csv``, ``mnist1d``, ...), ``source`` (``file``,
    ``dataset`` or ``trained-on``), ``split`` (``all`` for a file) and ``samples``.
    """
    from distill.data import load_data
    from distill.data.sources import read_whole_file
    from distill.engine.checkpoint import load_weights, read_metadata
    from distill.engine.metrics import evaluate
    from distill.models import build_model

    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    metadata = read_metadata(checkpoint)
    problem = missing_metadata(checkpoint, metadata, ("model",))
    if problem is not None:
        raise CheckpointError(problem)
    whole_file = is_file_reference(data)
    if whole_file and split is not None:
        raise DataError(
            f"--split {split}: a file given to --data is evaluated whole (all its rows); --split "
            "applies to a dataset name, or without --data to the data the checkpoint was trained on"
        )
    spec = model_spec_from_json(metadata["model"], checkpoint)
    data_spec = data_spec_for(data, metadata, checkpoint)
    kind, what = describe_data(data_spec)
    if whole_file:
        chosen = read_whole_file(data_spec)
        input_shape = tuple(chosen.inputs.shape[1:])
        data_classes = int(chosen.targets.max()) + 1
        split = "all"
    else:
        split = split or "test"
        bundle = load_data(data_spec)
        selected = {"test": bundle.test, "val": bundle.val, "train": bundle.train}[split]
        if selected is None:
            raise DataError(f"data '{what}' has no {split} split")
        chosen = selected
        input_shape, data_classes = bundle.input_shape, bundle.num_classes
    expected_shape = tuple(metadata.get("input_shape", input_shape))
    if input_shape != expected_shape:
        raise DataError(
            f"data '{what}' has inputs shaped {input_shape}, the checkpoint's model expects {expected_shape}"
        )
    num_classes = int(metadata.get("num_classes", data_classes))
    if data_classes > num_classes:
        raise DataError(
            f"data '{what}' has {data_classes} classes, the checkpoint's model predicts {num_classes}"
        )
    try:
        model = build_model(spec, expected_shape, num_classes)
    except (ValueError, TypeError) as error:
        raise DataError(
            f"the checkpoint's model '{spec.name}' cannot be built for data '{what}' "
            f"shaped {input_shape}: {error}"
        ) from None
    load_weights(checkpoint, model)
    device = select_device("auto")
    metrics = evaluate(model.to(device), chosen, device)
    return {
        "checkpoint": str(checkpoint),
        "data": what,
        "dataset": kind,
        "source": "file" if whole_file else ("dataset" if data is not None else "trained-on"),
        "split": split,
        "samples": len(chosen),
        **metrics,
    }
