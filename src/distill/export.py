"""Export a trained checkpoint to ONNX, check it against PyTorch, and time it (``distill export``).

The checkpoint's metadata names its model, input shape and classes, so the model is rebuilt
exactly as it was trained and its weights loaded. The ONNX graph takes ``inputs`` with a dynamic
batch dimension and returns ``logits``. ``check`` runs the exported graph in ONNX Runtime (CPU)
on sample inputs — the checkpoint's own test data when it can be loaded, else random inputs —
and compares with PyTorch (the largest absolute difference of the logits is reported; above
``tolerance`` the export is refused). Latency is the median over repeated runs at batch sizes 1
and 64, for ONNX Runtime and for PyTorch eager, on this machine's CPU, on random inputs.

Inputs come in two kinds. Most models take float32 tensors: they are traced on zeros, and the
random inputs are standard normal. Text models (``text-transformer``, ``text-cnn``, ``minilm``,
rebuilt from the metadata's model spec; :func:`distill.text.nets.token_vocabulary`) take int64
token ids ``[batch, length]`` with pad id 0: the graph's input is int64, and they are traced,
checked and timed on token ids — the test split's when it loads, else random ids from their
vocabulary, right-padded after a random length (:func:`distill.text.tokenize.random_token_ids`).
A frozen ``minilm`` teacher is exported and timed without its memo of embeddings
(:func:`distill.text.nets.unmemoized`), which would answer repeated inputs from a cache and
cannot be traced.

The TorchScript exporter (``dynamo=False``) cannot convert the fused inference kernels that
``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` take in eval mode without gradients
(``aten::_transformer_encoder_layer_fwd``, ``aten::_native_multi_head_attention``), so the
export traces with that fast path off (:func:`torch.backends.mha.set_fastpath_enabled`): the
same function through its composite operators. The parity check compares the graph with the
eager model as it normally runs, fast path included.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distill.engine.checkpoint import load_weights, read_metadata
from distill.errors import CheckpointError, DistillError
from distill.files import atomic_write_bytes
from distill.models import count_parameters
from distill.text.nets import token_vocabulary, unmemoized
from distill.text.tokenize import random_token_ids

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


def random_inputs(model: nn.Module, input_shape: tuple[int, ...], count: int, seed: int = 0) -> torch.Tensor:
    """``count`` random inputs of the kind ``model`` takes: token ids from its vocabulary,
    right-padded (a text model), else standard normal; seeded."""
    generator = torch.Generator().manual_seed(seed)
    vocabulary = token_vocabulary(model)
    if vocabulary is None:
        return torch.randn(count, *input_shape, generator=generator)
    if len(input_shape) != 1:
        raise ExportError(f"a text model takes token ids shaped (length,) per example, got {input_shape}")
    return random_token_ids(count, input_shape[0], vocabulary, generator)


def _describe_random(model: nn.Module) -> str:
    vocabulary = token_vocabulary(model)
    if vocabulary is None:
        return "standard-normal inputs"
    return f"random token ids (vocabulary {vocabulary:,}, right-padded)"


def _sample_inputs(
    checkpoint: Path, metadata: dict[str, Any], count: int, model: nn.Module
) -> tuple[torch.Tensor, str]:
    """Up to ``count`` test inputs of the checkpoint's data, or random ones of the kind
    ``model`` takes if it cannot load (or holds inputs of the other kind)."""
    shape = tuple(metadata["input_shape"])
    if "data_spec" in metadata:
        try:
            from distill.data import load_data
            from distill.evaluation import data_spec_for

            bundle = load_data(data_spec_for(None, metadata, checkpoint))
            inputs = bundle.test.inputs[:count]
            tokens = token_vocabulary(model) is not None
            if tuple(bundle.input_shape) == shape and len(inputs) and inputs.is_floating_point() != tokens:
                return inputs, f"{bundle.name} test inputs"
        except DistillError:
            pass
    return random_inputs(model, shape, count), _describe_random(model)


@contextlib.contextmanager
def _composite_attention() -> Iterator[None]:
    """PyTorch's fused attention fast path off (restored after): what the TorchScript exporter
    can trace (module docstring)."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def onnx_payload(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """``model`` (in eval mode) as a checked ONNX graph: input ``inputs`` (float32, or int64
    token ids for a text model) with a dynamic batch, output ``logits``. Raises
    :class:`ExportError` with the exporter's reason."""
    import onnx

    if token_vocabulary(model) is None:
        example = torch.zeros(2, *input_shape)
    else:
        example = random_inputs(model, input_shape, 2)
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), _composite_attention(), warnings.catch_warnings():
            # PyTorch's own attention code checks shapes in Python: fixed in the trace, as they are
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module="torch.nn.functional")
            # torch types ``f`` as a path; the TorchScript exporter (dynamo=False) also takes a file object
            torch.onnx.export(
                unmemoized(model).eval(),
                (example,),
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
    PyTorch eager ``model`` (a frozen MiniLM without its memo), on random inputs of the kind
    ``model`` takes (:func:`random_inputs`)."""
    latency: dict[str, float] = {}
    timed = unmemoized(model)
    for batch in (1, 64):
        inputs = random_inputs(model, input_shape, batch, seed=batch)
        array = inputs.numpy()
        latency[f"onnxruntime_batch{batch}_ms"] = 1e3 * _median_seconds(
            lambda array=array: session.run(["logits"], {"inputs": array}), repeats
        )
        with torch.inference_mode():
            seconds = _median_seconds(lambda inputs=inputs: timed(inputs), repeats)
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
        "input_dtype": "int64" if token_vocabulary(model) is not None else "float32",
    }
    if check:
        inputs, source = _sample_inputs(checkpoint, metadata, 64, model)
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
