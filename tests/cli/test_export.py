import json

import numpy as np
import onnxruntime
import pytest
import torch

from distill.cli import main
from distill.engine.checkpoint import save_checkpoint
from distill.models import build_model
from distill.models.resnet import ResNetSpec
from tests.conftest import tiny_recipe


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    import yaml

    root = tmp_path_factory.mktemp("export")
    recipe = tiny_recipe(train={"epochs": 1, "batch_size": 64})
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--output-dir", str(root / "run"), "--quiet"]) == 0
    return root / "run"


@pytest.mark.parametrize("member", ["teacher", "kd"])
def test_export_writes_an_onnx_graph_that_matches_pytorch(trained_run, tmp_path, capsys, member):
    output = tmp_path / f"{member}.onnx"
    checkpoint = trained_run / member / "last.safetensors"
    capsys.readouterr()
    assert main(["export", str(checkpoint), "--check", "--output", str(output), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parity_max_abs_diff"] <= 1e-4 and report["parity_argmax_agreement"] == 1.0
    assert "mnist1d test inputs" in report["parity_inputs"]
    assert output.stat().st_size == report["onnx_bytes"]
    assert set(report["latency"]) == {
        "onnxruntime_batch1_ms",
        "onnxruntime_batch64_ms",
        "pytorch_batch1_ms",
        "pytorch_batch64_ms",
    }
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).standard_normal((5, 1, 40)).astype(np.float32)  # any batch size
    assert session.run(None, {"inputs": batch})[0].shape == (5, 10)


def test_export_of_a_resnet_checkpoint_without_data(tmp_path, capsys):
    model = build_model(ResNetSpec(depth=8, width=1), (3, 16, 16), 7)
    checkpoint = tmp_path / "resnet.safetensors"
    metadata = {"model": ResNetSpec(depth=8, width=1).model_dump(mode="json"), "input_shape": [3, 16, 16]}
    save_checkpoint(checkpoint, model.eval(), {**metadata, "num_classes": 7})
    assert main(["export", str(checkpoint), "--check", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parity_inputs"] == "64 standard-normal inputs" and report["parity_max_abs_diff"] <= 1e-4
    assert (tmp_path / "resnet.onnx").exists()


def test_export_errors_are_clear_and_write_nothing(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    model = torch.nn.Linear(40, 10)
    bare = tmp_path / "bare.safetensors"
    save_checkpoint(bare, model, {})
    assert main(["export", str(bare)]) == 2
    assert "lacks model, input_shape, num_classes" in capsys.readouterr().err
    from tests.cli.unexportable import build, build_svd

    # traced with a value frozen into the graph: exports, but --check catches the difference
    drifting = tmp_path / "drifting.safetensors"
    spec = {"name": "tests.cli.unexportable:build", "kwargs": {}}
    save_checkpoint(drifting, build(), {"model": spec, "input_shape": [1, 40], "num_classes": 10})
    trust = [
        "--trust-factory",
        "tests.cli.unexportable:build",
        "--trust-factory",
        "tests.cli.unexportable:build_svd",
    ]
    assert main(["export", str(drifting), "--check", *trust]) == 2
    assert "differs from PyTorch by up to" in capsys.readouterr().err
    assert not (tmp_path / "drifting.onnx").exists()
    # an operator without an ONNX counterpart
    svd = tmp_path / "svd.safetensors"
    spec = {"name": "tests.cli.unexportable:build_svd", "kwargs": {}}
    save_checkpoint(svd, build_svd(), {"model": spec, "input_shape": [1, 40], "num_classes": 10})
    assert main(["export", str(svd), *trust]) == 2
    message = capsys.readouterr().err
    assert "svd.safetensors" in message and "cannot be exported to ONNX" in message
    assert not (tmp_path / "svd.onnx").exists()


def test_export_never_replaces_a_file_silently(trained_run, tmp_path, capsys):
    checkpoint = trained_run / "scratch" / "last.safetensors"
    output = tmp_path / "model.onnx"
    output.write_bytes(b"keep me")
    assert main(["export", str(checkpoint), "--output", str(output)]) == 2
    assert f"{output} exists; pass --overwrite to replace it" in " ".join(capsys.readouterr().err.split())
    assert output.read_bytes() == b"keep me"
    assert main(["export", str(checkpoint), "--output", str(output), "--overwrite", "--json"]) == 0
    assert output.read_bytes()[:4] != b"keep"


def test_export_to_an_unwritable_place_is_a_clear_error(trained_run, tmp_path, capsys):
    checkpoint = trained_run / "scratch" / "last.safetensors"
    (tmp_path / "file").write_text("a regular file")
    assert main(["export", str(checkpoint), "--output", str(tmp_path / "file" / "model.onnx")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"cannot create {tmp_path / 'file'}: a part of the path is a regular file, not a folder" in err
    assert "Traceback" not in err
