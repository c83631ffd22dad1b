"""Export a trained checkpoint to ONNX, check it against PyTorch, and time it (``distill export``).

The checkpoint's metadata names its model, input shape and classes, so the model is rebuilt
exactly as it was trained and its weights loaded. The ONNX graph takes ``inputs`` with a dynamic
batch dimension and returns ``logits``. ``check`` runs the exported graph in ONNX Runtime (CPU)
on sample inputs — the checkpoint's own test data when it can be loaded, else standard-normal
inputs — and compares with PyTorch (the largest absolute difference of the logits is reported;
above ``tolerance`` the export is refused). Latency is the median over repeated runs at batch
sizes 1 and 64, for ONNX Runtime and for PyTorch eager, on this machine's CPU.
"""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distill.engine.checkpoint import load_weights, read_metadata
from distill.errors import CheckpointError, DistillError
from distill.files import atomic_write_bytes
from distill.models import count_parameters

ONNX_OPSET = 17


class ExportError(DistillError):
    """A model that cannot be exported, or whose export does not match PyTorch."""


def model_from_checkpoint(checkpoint: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model a checkpoint holds, rebuilt from its metadata, weights loaded, in eval mode."""
    from distill.assemble import model_spec_from_json
    from distill.models import build_model

    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    metadata = read_metadata(checkpoint)
    meta_path = checkpoint.with_suffix(".json")
    if not meta_path.is_file():
        raise CheckpointError(
            f"{checkpoint}: has no metadata file ({meta_path}) beside it; was it written by distill?"
        )
    missing = [key for key in ("model", "input_shape", "num_classes") if key not in metadata]
    if missing:
        raise CheckpointError(f"{checkpoint}: its metadata (.json beside it) lacks {', '.join(missing)}")
    spec = model_spec_from_json(metadata["model"], checkpoint)
    model = build_model(spec, tuple(metadata["input_shape"]), int(metadata["num_classes"]))
    load_weights(checkpoint, model)
    return model.eval(), metadata


def _sample_inputs(checkpoint: Path, metadata: dict[str, Any], count: int) -> tuple[torch.Tensor, str]:
    """Up to ``count`` test inputs of the checkpoint's data, or random ones if it cannot load."""
    shape = tuple(metadata["input_shape"])
    if "data_spec" in metadata:
        try:
            from distill.data import load_data
            from distill.evaluation import data_spec_for

            bundle = load_data(data_spec_for(None, metadata, checkpoint))
            if tuple(bundle.input_shape) == shape:
                return bundle.test.inputs[:count], f"{bundle.name} test inputs"
        except DistillError:
            pass
    return torch.randn(count, *shape, generator=torch.Generator().manual_seed(0)), "standard-normal inputs"


def onnx_payload(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """``model`` (in eval mode) as a checked ONNX graph: input ``inputs`` with a dynamic batch,
    output ``logits``. Raises :class:`ExportError` with the exporter's reason."""
    import onnx

    buffer = io.BytesIO()
    try:
        with torch.no_grad():
            # torch types ``f`` as a path; the TorchScript exporter (dynamo=False) also takes a file object
            torch.onnx.export(
                model.eval(),
                (torch.zeros(2, *input_shape),),
                buffer,  # type: ignore[arg-type]
                dynamo=False,
                input_names=["inputs"],
                output_names=["logits"],
                dynamic_axes={"inputs": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=ONNX_OPSET,
            )
        onnx.checker.check_model(onnx.load_from_string(buffer.getvalue()))
    except Exception as error:  # the exporter raises many types; keep the first line of its reason
        text = str(error).strip()
        raise ExportError(
            f"cannot be exported to ONNX ({text.splitlines()[0] if text else type(error).__name__})"
        ) from None
    return buffer.getvalue()


def measure_latency(
    model: nn.Module, session: Any, input_shape: tuple[int, ...], repeats: int = 30
) -> dict[str, float]:
    """Median milliseconds per forward pass at batch 1 and 64: ONNX Runtime ``session`` and
    PyTorch eager ``model``, on random inputs."""
    latency: dict[str, float] = {}
    for batch in (1, 64):
        inputs = torch.randn(batch, *input_shape)
        array = inputs.numpy()
        latency[f"onnxruntime_batch{batch}_ms"] = 1e3 * _median_seconds(
            lambda array=array: session.run(["logits"], {"inputs": array}), repeats
        )
        with torch.inference_mode():
            seconds = _median_seconds(lambda inputs=inputs: model(inputs), repeats)
        latency[f"pytorch_batch{batch}_ms"] = 1e3 * seconds
    return latency


def onnx_session(payload: bytes) -> Any:
    """An ONNX Runtime CPU session over an ONNX graph."""
    import onnxruntime

    return onnxruntime.InferenceSession(payload, providers=["CPUExecutionProvider"])


def _median_seconds(run: Any, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def export_onnx(
    checkpoint: Path,
    output: Path | None = None,
    check: bool = True,
    tolerance: float = 1e-4,
    repeats: int = 30,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export ``checkpoint`` to ``output`` (default: beside it, ``.onnx``); returns a report with
    the file size, parity (when ``check``) and latencies. An existing ``output`` is replaced
    only when ``overwrite``."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ExportError('ONNX export needs the onnx extra: pip install -e ".[onnx]"') from None
    output = output or checkpoint.with_suffix(".onnx")
    if output.exists() and not overwrite:
        raise ExportError(f"{output} exists; pass --overwrite to replace it (nothing was written)")
    model, metadata = model_from_checkpoint(checkpoint)
    try:
        payload = onnx_payload(model, tuple(metadata["input_shape"]))
    except ExportError as error:
        name = metadata["model"].get("name")
        raise ExportError(f"{checkpoint}: model '{name}' {error}") from None
    session = onnx_session(payload)
    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "output": str(output),
        "model": metadata["model"].get("name"),
        "parameters": count_parameters(model),
        "onnx_bytes": len(payload),
        "opset": ONNX_OPSET,
    }
    if check:
        inputs, source = _sample_inputs(checkpoint, metadata, 64)
        with torch.no_grad():
            expected = model(inputs).numpy()
        produced = session.run(["logits"], {"inputs": inputs.numpy()})[0]
        difference = float(np.abs(produced - expected).max())
        report.update(
            parity_max_abs_diff=difference,
            parity_inputs=f"{len(inputs)} {source}",
            parity_argmax_agreement=float((produced.argmax(1) == expected.argmax(1)).mean()),
        )
        if not difference <= tolerance:
            raise ExportError(
                f"{checkpoint}: the ONNX graph differs from PyTorch by up to {difference:.3g} on "
                f"{len(inputs)} {source} (tolerance {tolerance}); nothing was written"
            )
    latency = measure_latency(model, session, tuple(metadata["input_shape"]), repeats)
    report["latency"] = latency
    atomic_write_bytes(output, payload)
    return report
