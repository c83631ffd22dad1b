"""Checkpoints: safetensors weights beside a JSON file of metadata, written atomically.

``NAME.safetensors`` holds the evaluated model's ``state_dict``; ``NAME.json`` holds what is
needed to rebuild and trust it (model spec, input shape, classes, epoch, metrics, data
fingerprint). Resume state (optimizer, schedule, history) is a separate ``resume.pt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from distill.errors import CheckpointError
from distill.files import atomic_file, atomic_write_bytes, atomic_write_json, read_json_object

FORMAT = "distill-checkpoint/1"


def atomic_torch_save(path: Path, payload: Any) -> None:
    """``torch.save`` to ``path`` atomically."""
    with atomic_file(path) as handle:
        torch.save(payload, handle)


def save_checkpoint(weights_path: Path, model: nn.Module, metadata: dict[str, Any]) -> None:
    """Save ``model``'s weights to ``weights_path`` (``.safetensors``) and metadata beside it."""
    # cloned: a model that shares modules (e.g. ONE's branches) holds one tensor under two names,
    # which safetensors refuses to store as shared memory
    state = {name: tensor.detach().cpu().clone().contiguous() for name, tensor in model.state_dict().items()}
    atomic_write_bytes(weights_path, save(state))
    atomic_write_json(weights_path.with_suffix(".json"), {"format": FORMAT, **metadata})


def read_metadata(weights_path: Path) -> dict[str, Any]:
    """The JSON metadata stored beside a checkpoint (``{}`` if there is none)."""
    meta_path = Path(weights_path).with_suffix(".json")
    if not meta_path.exists():
        return {}
    return read_json_object(meta_path, "checkpoint metadata", CheckpointError)


def load_weights(weights_path: Path, model: nn.Module) -> None:
    """Load a ``.safetensors`` file into ``model``; every mismatch becomes a clear error."""
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint not found: {weights_path}")
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights_path}: not a readable safetensors checkpoint ({error})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path}: weights do not fit the model; missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{weights_path}: tensor '{name}' has shape {tuple(tensor.shape)}, the model "
                f"expects {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state)
