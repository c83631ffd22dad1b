"""The ``wordnet`` data source (:mod:`distill.data.wordnet`): int64 token ids, supersense
labels, seed-stable splits, parts of speech."""

from __future__ import annotations

import pytest
import torch

from distill.data import load_data
from distill.data.wordnet import WordNetSpec, part_classes
from distill.errors import DataError
from distill.text.wordnet import LEXNAMES
from tests.text.fixtures import SYNSETS, vocabulary, write_minilm, write_tokenizer, write_wordnet


def spec(tmp_path, **fields):
    folder = write_wordnet(tmp_path / "wn", copies=4)
    tokenizer = write_tokenizer(tmp_path / "tok" / "tokenizer.json")
    return WordNetSpec(
        **{"path": folder, "tokenizer": tokenizer, "max_length": 12, "test_samples": 12, **fields}
    )


def test_token_ids_labels_and_splits(tmp_path):
    bundle = load_data(spec(tmp_path, val_fraction=0.1))
    total = 4 * len(SYNSETS)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == total
    assert len(bundle.test) == 12
    assert bundle.input_shape == (12,)
    assert bundle.train.inputs.dtype == torch.int64 and bundle.train.targets.dtype == torch.int64
    assert (bundle.train.inputs[:, 0] == 2).all()  # [CLS]
    assert bundle.num_classes == len(LEXNAMES)
    assert set(bundle.train.targets.tolist()) <= {5, 13, 38, 34, 0, 44, 2}


def test_splits_depend_on_split_seed_only(tmp_path):
    first = load_data(spec(tmp_path, train_samples=30))
    again = load_data(spec(tmp_path, train_samples=30))
    assert first.fingerprint == again.fingerprint
    other = load_data(spec(tmp_path, train_samples=30, split_seed=1))
    assert other.fingerprint != first.fingerprint
    assert len(first.train) + len(first.val) == 30


def test_parts_of_speech_are_renumbered(tmp_path):
    bundle = load_data(spec(tmp_path, parts=["verb"], test_samples=4))
    assert bundle.num_classes == sum(name.startswith("verb.") for name in LEXNAMES) == 15
    verbs = part_classes(["verb"])
    assert set(bundle.train.targets.tolist()) == {verbs.index(34), verbs.index(38)}


def test_default_tokenizer_is_minilms(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_MINILM", str(write_minilm(tmp_path / "tiny")))
    bundle = load_data(WordNetSpec(path=write_wordnet(tmp_path / "wn2", copies=2), test_samples=4))
    assert 0 < bundle.train.inputs.max() < len(vocabulary())


def test_too_many_samples_and_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"requested, but .* holds only 72"):
        load_data(spec(tmp_path, train_samples=100))
    with pytest.raises(DataError, match="apt-get install wordnet-base"):
        load_data(WordNetSpec(path=tmp_path / "nowhere"))
