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


def evaluate_checkpoint(checkpoint: Path, data: str | None, split: str = "test") -> dict[str, Any]:
    """Accuracy, loss and ECE of ``checkpoint`` on ``split`` of the data source ``data``."""
    from distill.data import load_data
    from distill.engine.checkpoint import load_weights, read_metadata
    from distill.engine.metrics import evaluate
    from distill.models import build_model

    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    metadata = read_metadata(checkpoint)
    if "model" not in metadata:
        raise CheckpointError(f"{checkpoint}: no metadata (.json beside it) naming the model")
    spec = model_spec_from_json(metadata["model"], checkpoint)
    bundle = load_data(data_spec_for(data, metadata, checkpoint))
    expected_shape = tuple(metadata.get("input_shape", bundle.input_shape))
    if bundle.input_shape != expected_shape:
        raise DataError(
            f"data '{bundle.name}' has inputs shaped {bundle.input_shape}, the checkpoint's "
            f"model expects {expected_shape}"
        )
    num_classes = int(metadata.get("num_classes", bundle.num_classes))
    if bundle.num_classes > num_classes:
        raise DataError(
            f"data '{bundle.name}' has {bundle.num_classes} classes, the checkpoint's model "
            f"predicts {num_classes}"
        )
    try:
        model = build_model(spec, expected_shape, num_classes)
    except (ValueError, TypeError) as error:
        raise DataError(
            f"the checkpoint's model '{spec.name}' cannot be built for data '{bundle.name}' "
            f"shaped {bundle.input_shape}: {error}"
        ) from None
    load_weights(checkpoint, model)
    chosen = {"test": bundle.test, "val": bundle.val, "train": bundle.train}[split]
    if chosen is None:
        raise DataError(f"data '{bundle.name}' has no {split} split")
    device = select_device("auto")
    metrics = evaluate(model.to(device), chosen, device)
    return {
        "checkpoint": str(checkpoint),
        "data": bundle.name,
        "split": split,
        "samples": len(chosen),
        **metrics,
    }
