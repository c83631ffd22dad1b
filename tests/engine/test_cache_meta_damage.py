"""Damaged metadata: a teacher cache's ``meta.json`` is rebuilt with a warning, a checkpoint's
metadata file is refused by name (CheckpointError) — neither crashes with a traceback."""

import json
import logging

import pytest
import torch

from distill.engine import read_metadata, save_checkpoint
from distill.engine.cache import TeacherOutputCache
from distill.errors import CheckpointError
from distill.models import build_model
from distill.models.mlp import MLPSpec
from tests.engine.test_cache import data, fill_all, make_key, teacher  # noqa: F401 (fixtures)


def damage_meta(meta_path, damage):
    meta = json.loads(meta_path.read_text())
    if damage == "not utf-8":
        meta_path.write_bytes(b"\xff\xfe" + meta_path.read_bytes()[2:])
    elif damage == "a list":
        meta_path.write_text(json.dumps([meta]))
    elif damage == "no checksums":
        del meta["checksums"]
        meta_path.write_text(json.dumps(meta))
    elif damage == "checksums a list":
        meta["checksums"] = list(meta["checksums"].values())
        meta_path.write_text(json.dumps(meta))
    elif damage == "checksum not a number":
        meta["checksums"]["0"] = "abc"
        meta_path.write_text(json.dumps(meta))
    elif damage == "no key":
        del meta["key"]
        meta_path.write_text(json.dumps(meta))


DAMAGES = {
    "not utf-8": "has unreadable metadata ('utf-8' codec can't decode byte 0xff in position 0",
    "a list": "has damaged metadata (meta.json must be a JSON object, got list); rebuilding it",
    "no checksums": "has damaged metadata (meta.json has no 'checksums' object); rebuilding it",
    "checksums a list": "has damaged metadata (meta.json has no 'checksums' object); rebuilding it",
    "checksum not a number": (
        "has damaged metadata (meta.json checksum of draw '0' is 'abc', expected a CRC32 integer)"
    ),
    "no key": "has damaged metadata (meta.json has no 'key' object); rebuilding it",
}


@pytest.mark.parametrize("damage", list(DAMAGES), ids=list(DAMAGES))
def test_damaged_meta_json_is_rebuilt_with_a_message(tmp_path, data, teacher, caplog, damage):  # noqa: F811
    cache = TeacherOutputCache(make_key(teacher, data), tmp_path)
    fill_all(cache, teacher, data)
    damage_meta(cache.meta_path, damage)
    with caplog.at_level(logging.WARNING, logger="distill"):
        rebuilt = TeacherOutputCache(make_key(teacher, data), tmp_path)
    assert f"teacher cache {cache.path} {DAMAGES[damage]}" in caplog.text
    assert not rebuilt.is_filled(0) and not rebuilt.is_filled(1)
    # the rebuilt cache is whole again: filled, then reopened without a warning
    fill_all(rebuilt, teacher, data)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="distill"):
        again = TeacherOutputCache(make_key(teacher, data), tmp_path)
    assert caplog.text == "" and again.is_filled(0) and again.is_filled(1)
    assert json.loads(cache.meta_path.read_text())["key"] == make_key(teacher, data).fields()


# --------------------------------------------------------------------------- checkpoint metadata


@pytest.fixture
def checkpoint(tmp_path):
    spec = MLPSpec(hidden=[4])
    path = tmp_path / "model.safetensors"
    torch.manual_seed(0)
    save_checkpoint(path, build_model(spec, (3,), 2), {"model": spec.model_dump()})
    return path


def test_checkpoint_metadata_that_is_not_utf8(checkpoint):
    meta_path = checkpoint.with_suffix(".json")
    meta_path.write_bytes(b'{"model": "\xff\xfe"}')
    expected = f"{meta_path}: corrupt checkpoint metadata (not UTF-8 text: byte 11); expected a JSON object"
    with pytest.raises(CheckpointError) as error:
        read_metadata(checkpoint)
    assert str(error.value) == expected


def test_checkpoint_metadata_that_is_a_list(checkpoint):
    meta_path = checkpoint.with_suffix(".json")
    meta_path.write_text('[{"model": {"name": "mlp"}}]')
    with pytest.raises(CheckpointError) as error:
        read_metadata(checkpoint)
    assert str(error.value) == f"{meta_path}: corrupt checkpoint metadata: expected a JSON object, got list"


def test_checkpoint_metadata_that_is_a_directory(checkpoint):
    meta_path = checkpoint.with_suffix(".json")
    meta_path.unlink()
    meta_path.mkdir()
    with pytest.raises(CheckpointError, match=r"model\.json: cannot read checkpoint metadata"):
        read_metadata(checkpoint)


def test_valid_checkpoint_metadata_still_reads(checkpoint):
    assert read_metadata(checkpoint)["model"]["hidden"] == [4]
