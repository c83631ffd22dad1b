import pytest
import torch

from distill.engine import load_weights, read_metadata, save_checkpoint
from distill.errors import CheckpointError
from distill.models import build_model
from distill.models.mlp import MLPSpec


def test_round_trip_restores_weights_and_metadata(tmp_path):
    model = build_model(MLPSpec(hidden=[8]), (4,), 3)
    path = tmp_path / "ckpt" / "last.safetensors"
    save_checkpoint(path, model, {"epoch": 3, "model": {"name": "mlp", "hidden": [8]}})
    other = build_model(MLPSpec(hidden=[8]), (4,), 3)
    load_weights(path, other)
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert read_metadata(path)["epoch"] == 3
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_corrupt_missing_and_mismatched_checkpoints(tmp_path):
    model = build_model(MLPSpec(hidden=[8]), (4,), 3)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_weights(tmp_path / "none.safetensors", model)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        load_weights(corrupt, model)
    path = tmp_path / "wide.safetensors"
    save_checkpoint(path, build_model(MLPSpec(hidden=[16]), (4,), 3), {})
    with pytest.raises(CheckpointError, match=r"tensor 'body.1.(weight|bias)' has shape \(16"):
        load_weights(path, model)
    path = tmp_path / "deep.safetensors"
    save_checkpoint(path, build_model(MLPSpec(hidden=[8, 8]), (4,), 3), {})
    with pytest.raises(CheckpointError, match="weights do not fit the model"):
        load_weights(path, model)
