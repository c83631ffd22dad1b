"""Text models (:mod:`distill.text.nets`, zoo entries in :mod:`distill.models.text_models`):
shapes, padding invariance, the frozen MiniLM teacher's memo and head-only training."""

from __future__ import annotations

import pytest
import torch

from distill.models import build_model, validate_model_spec
from distill.models.taps import FeatureTaps
from distill.text.nets import TextCNN, TextTransformer, token_vocabulary, unmemoized
from tests.text.fixtures import vocabulary, write_minilm

IDS = torch.tensor([[2, 20, 21, 22, 23, 3, 0, 0], [2, 30, 31, 3, 0, 0, 0, 0], [2, 3, 0, 0, 0, 0, 0, 0]])


def padded(ids: torch.Tensor, extra: int) -> torch.Tensor:
    return torch.cat([ids, torch.zeros(len(ids), extra, dtype=ids.dtype)], dim=1)


def models(tmp_path, frozen=True):
    folder = write_minilm(tmp_path / "tiny")
    specs = [
        {"name": "text-transformer", "vocab_size": 64, "width": 16, "layers": 2, "heads": 2, "ffn": 32},
        {"name": "text-cnn", "vocab_size": 64, "width": 16, "channels": 8, "kernel_sizes": [2, 3, 5]},
        {"name": "minilm", "path": str(folder), "freeze_encoder": frozen},
    ]
    torch.manual_seed(0)
    return {spec["name"]: build_model(validate_model_spec(spec), (16,), 5) for spec in specs}


def test_shapes_and_padding_invariance(tmp_path):
    for name, model in models(tmp_path).items():
        model.eval()
        with torch.no_grad():
            logits = model(IDS)
            assert logits.shape == (3, 5), name
            assert torch.allclose(model(padded(IDS, 8)), logits, atol=1e-5), name
            assert torch.allclose(model(IDS[1:2, :4]), logits[1:2], atol=1e-5), name
            assert torch.allclose(model(IDS.float()), logits, atol=1e-6), name  # float ids are read as ids


def test_pool_taps_give_sentence_features(tmp_path):
    built = models(tmp_path)
    widths = {"text-transformer": ("pool", 16), "text-cnn": ("pool", 24), "minilm": ("embed", 32)}
    for name, (layer, width) in widths.items():
        taps = FeatureTaps(built[name], [layer])
        built[name].eval()
        with torch.no_grad():
            built[name](IDS)
        assert taps.features[layer].shape == (3, width), name
        taps.remove()


def test_text_models_take_only_token_sequences():
    with pytest.raises(ValueError, match=r"takes token ids shaped \(length,\)"):
        build_model(validate_model_spec({"name": "text-cnn"}), (1, 16), 5)
    with pytest.raises(ValueError, match="token ids shaped"):
        TextCNN(64, 5)(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="not divisible"):
        build_model(validate_model_spec({"name": "text-transformer", "width": 10, "heads": 4}), (16,), 5)


def test_transformer_truncates_beyond_its_positions():
    model = TextTransformer(64, 8, 5, width=16, heads=2, ffn=32).eval()
    with torch.no_grad():
        assert torch.allclose(model(padded(IDS, 4)), model(IDS), atol=1e-5)


def test_frozen_teacher_memoizes_and_trains_only_its_head(tmp_path):
    teacher = models(tmp_path)["minilm"]
    encoder_before = {k: v.clone() for k, v in teacher.embed.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in teacher.parameters() if p.requires_grad], lr=0.1)
    teacher.train()
    assert not teacher.embed.inner.training  # the frozen encoder never drops out
    with torch.inference_mode():
        teacher.eval()(IDS)  # memo entries made under inference mode, then used for training
    teacher.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(teacher(IDS), torch.tensor([0, 1, 2]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert teacher.embed.misses == 3 and teacher.embed.hits == 9
    for name, value in teacher.embed.state_dict().items():
        assert torch.equal(value, encoder_before[name]), name
    trainable = {name for name, p in teacher.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}
    teacher.load_state_dict(teacher.state_dict())  # loading weights forgets the memo
    teacher(IDS[:1])
    assert teacher.embed.misses == 4


def test_full_fine_tune_trains_the_encoder(tmp_path):
    teacher = models(tmp_path, frozen=False)["minilm"]
    assert all(p.requires_grad for p in teacher.parameters())
    teacher.train()
    torch.nn.functional.cross_entropy(teacher(IDS), torch.tensor([0, 1, 2])).backward()
    assert teacher.embed.bert.embeddings.word_embeddings.weight.grad is not None


def test_latency_helpers(tmp_path):
    from distill.text.latency import batch_of, latency_table, operator_shares

    built = models(tmp_path)
    assert batch_of(IDS, 7).shape == (7, 8)
    table = latency_table(built, IDS, batch_sizes=(1, 4), repeats=2)
    assert set(table) == set(built) and all(set(row) == {1, 4} for row in table.values())
    assert all(value > 0 for row in table.values() for value in row.values())
    assert built["minilm"].embed.misses == 0  # timing runs the encoder itself, not the memo
    shares = operator_shares(built["minilm"], IDS, top=3)
    assert len(shares) == 4 and abs(sum(share for _, share in shares) - 1.0) < 1e-6


def test_token_vocabulary_names_the_text_models_and_only_them(tmp_path):
    built = models(tmp_path)
    tiny_vocabulary = len(vocabulary())
    assert token_vocabulary(built["text-transformer"]) == 64
    assert token_vocabulary(built["text-cnn"]) == 64
    assert token_vocabulary(built["minilm"]) == tiny_vocabulary  # through the memo …
    assert token_vocabulary(unmemoized(built["minilm"])) == tiny_vocabulary  # … and without it
    assert token_vocabulary(models(tmp_path, frozen=False)["minilm"]) == tiny_vocabulary
    assert token_vocabulary(torch.nn.Linear(4, 2)) is None
    assert token_vocabulary(torch.nn.Sequential(torch.nn.Linear(4, 2))) is None

    class Declares(torch.nn.Module):
        token_vocabulary = 77

    class Flag(torch.nn.Module):
        token_vocabulary = True

    assert token_vocabulary(Declares()) == 77 and token_vocabulary(Flag()) is None


def test_unmemoized_is_the_same_computation_without_the_memo(tmp_path):
    teacher = models(tmp_path)["minilm"].eval()
    plain = unmemoized(teacher)
    with torch.no_grad():
        torch.testing.assert_close(plain(IDS), teacher(IDS), rtol=0, atol=1e-6)
    assert teacher.embed.misses == 3  # only the memoized call filled the memo
    assert plain[2] is teacher.head  # the weights are shared, not copied
    student = models(tmp_path)["text-cnn"]
    assert unmemoized(student) is student
