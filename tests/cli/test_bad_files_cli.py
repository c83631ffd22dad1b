"""Bad files end to end: data, checkpoint metadata and run summaries that are not what they claim
to be give one clear message naming the file and exit status 2; a damaged teacher-output cache is
rebuilt. Never a traceback."""

import json
import logging

import numpy as np
import pytest

from distill.cli import main
from distill.engine import save_checkpoint
from distill.models import build_model
from distill.models.cnn import CNN1dSpec
from tests.conftest import tiny_recipe


def run_cli(*args):
    return main([str(arg) for arg in args])


def error_of(capsys):
    """stderr of the last command, whitespace normalized; it never holds a traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return " ".join(err.split())


# --------------------------------------------------------------------------- data files


def object_npz(folder):
    path = folder / "objects.npz"
    np.savez(path, x=np.array([[1.0, 2.0]] * 20, dtype=object), y=np.arange(20) % 2)
    return {"name": "npz", "path": str(path)}, f"{path}: array 'x' holds Python objects (dtype=object); "


def bare_npy(folder):
    path = folder / "single.npy"
    np.save(path, np.zeros((20, 4)))
    return {"name": "npz", "path": str(path)}, (
        f"{path}: a single NumPy array (.npy), not an .npz archive; expected an .npz archive holding "
        "arrays 'x' (inputs) and 'y' (labels)"
    )


def truncated_npz(folder):
    whole = folder / "whole.npz"
    np.savez(whole, x=np.zeros((20, 4)), y=np.arange(20) % 2)
    path = folder / "half.npz"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return {
        "name": "npz",
        "path": str(path),
    }, f"{path}: not a readable .npz file: truncated or damaged archive"


def random_npz(folder):
    path = folder / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(400))
    return {"name": "npz", "path": str(path)}, (
        f"{path}: not a readable .npz file: it is not a zip archive of NumPy arrays"
    )


def binary_csv(folder):
    path = folder / "table.csv"
    path.write_bytes(np.random.default_rng(0).bytes(400))
    return {"name": "csv", "path": str(path)}, f"{path}: not a UTF-8 text CSV file (byte "


def checkpoint_as_csv(folder):
    path = folder / "weights.csv"
    save_checkpoint(path, build_model(CNN1dSpec(channels=[4]), (1, 40), 10), {})
    return {"name": "csv", "path": str(path)}, f"{path}: not a UTF-8 text CSV file ("


def one_class_npz(folder):
    path = folder / "one.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((40, 4)), y=np.full(40, 2))
    return {"name": "npz", "path": str(path)}, (
        f"{path}: every training label is 2; a classification data set needs at least 2 classes"
    )


DATA_CASES = {
    "object arrays": object_npz,
    "bare .npy": bare_npy,
    "truncated .npz": truncated_npz,
    "random bytes .npz": random_npz,
    "binary CSV": binary_csv,
    "safetensors file as CSV": checkpoint_as_csv,
    "one class": one_class_npz,
}


@pytest.mark.parametrize("case", list(DATA_CASES), ids=list(DATA_CASES))
def test_bad_data_file_gets_one_message_and_status_2(case, tmp_path, write_recipe, capsys):
    data, expected = DATA_CASES[case](tmp_path)
    path = write_recipe(tiny_recipe(data=data))
    assert run_cli("run", path, "--output-dir", tmp_path / "run", "--quiet") == 2
    assert expected in error_of(capsys)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_bad_data_file_given_to_eval(tmp_path, capsys):
    checkpoint = tmp_path / "model.safetensors"
    spec = CNN1dSpec(channels=[4])
    save_checkpoint(checkpoint, build_model(spec, (1, 40), 10), {"model": spec.model_dump()})
    data, expected = truncated_npz(tmp_path)
    assert run_cli("eval", checkpoint, "--data", data["path"]) == 2
    assert expected in error_of(capsys)


# --------------------------------------------------------------------------- checkpoint metadata


def teacher_with_metadata(folder, content: bytes):
    spec = CNN1dSpec(channels=[16, 16])
    path = folder / "teacher.safetensors"
    save_checkpoint(path, build_model(spec, (1, 40), 10), {"model": spec.model_dump()})
    path.with_suffix(".json").write_bytes(content)
    return path


METADATA_CASES = {
    "not utf-8": (
        b'{"model": "\xff"}',
        "corrupt checkpoint metadata (not UTF-8 text: byte 11); expected a JSON object",
    ),
    "a list": (
        b'[{"model": {"name": "cnn1d"}}]',
        "corrupt checkpoint metadata: expected a JSON object, got list",
    ),
}


@pytest.mark.parametrize("case", list(METADATA_CASES), ids=list(METADATA_CASES))
def test_bad_checkpoint_metadata_in_eval(case, tmp_path, capsys):
    content, expected = METADATA_CASES[case]
    path = teacher_with_metadata(tmp_path, content)
    assert run_cli("eval", path) == 2
    assert f"{path.with_suffix('.json')}: {expected}" in error_of(capsys)


@pytest.mark.parametrize("case", list(METADATA_CASES), ids=list(METADATA_CASES))
def test_bad_checkpoint_metadata_of_a_teacher(case, tmp_path, write_recipe, capsys):
    content, expected = METADATA_CASES[case]
    path = teacher_with_metadata(tmp_path, content)
    recipe = write_recipe(tiny_recipe(teacher={"checkpoint": str(path)}))
    assert run_cli("run", recipe, "--output-dir", tmp_path / "run", "--quiet") == 2
    assert f"{path.with_suffix('.json')}: {expected}" in error_of(capsys)


# --------------------------------------------------------------------------- run summaries

ROW = {"name": "kd", "role": "student", "method": "kd", "test_accuracy": 0.5, "seconds": 1.0}

SUMMARY_CASES = {
    "random bytes": (
        b"\x89PNG" + np.random.default_rng(0).bytes(200),
        "corrupt summary (not UTF-8 text: byte 0)",
    ),
    "invalid JSON": (
        b'{"recipe": "tiny", "results": [',
        "corrupt summary (Expecting value: line 1 column 32",
    ),
    "a list": (b"[1, 2]", "corrupt summary: expected a JSON object, got list"),
    "no results": (
        json.dumps({"recipe": "tiny"}).encode(),
        "corrupt summary: no 'results' list of model results",
    ),
    "results an object": (
        json.dumps({"recipe": "tiny", "results": ROW}).encode(),
        "corrupt summary: 'results' must be a list of model results, got dict",
    ),
    "a row not an object": (
        json.dumps({"recipe": "tiny", "results": [ROW, 3]}).encode(),
        "corrupt summary: results[1] must be an object, got int",
    ),
    "a row without accuracy": (
        json.dumps({"recipe": "tiny", "results": [{**ROW, "test_accuracy": None}]}).encode(),
        "corrupt summary: results[0].test_accuracy must be a number, got None",
    ),
    "a row without a name": (
        json.dumps({"recipe": "tiny", "results": [{k: v for k, v in ROW.items() if k != "name"}]}).encode(),
        "corrupt summary: results[0] has no 'name'",
    ),
    "no recipe": (
        json.dumps({"results": [ROW]}).encode(),
        "corrupt summary: 'recipe' must be the recipe's name (a string)",
    ),
}


@pytest.mark.parametrize("case", list(SUMMARY_CASES), ids=list(SUMMARY_CASES))
def test_summarize_a_damaged_summary(case, tmp_path, capsys):
    content, expected = SUMMARY_CASES[case]
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder, text in ((good, json.dumps({"recipe": "tiny", "results": [ROW]}).encode()), (bad, content)):
        folder.mkdir()
        (folder / "summary.json").write_bytes(text)
    assert run_cli("summarize", good, bad) == 2
    assert f"{bad / 'summary.json'}: {expected}" in error_of(capsys)


def test_summarize_a_valid_summary_still_works(tmp_path, capsys):
    for seed, accuracy in ((1, 0.5), (2, 0.7)):
        folder = tmp_path / f"seed-{seed}"
        folder.mkdir()
        summary = {"recipe": "tiny", "seed": seed, "results": [{**ROW, "test_accuracy": accuracy}]}
        (folder / "summary.json").write_text(json.dumps(summary))
    assert run_cli("summarize", tmp_path / "seed-1", tmp_path / "seed-2", "--json") == 0
    aggregate = json.loads(capsys.readouterr().out)
    assert aggregate["models"]["kd"]["mean"] == pytest.approx(0.6)


# --------------------------------------------------------------------------- teacher-output cache


CACHE_DAMAGES = {
    "not utf-8": "has unreadable metadata ('utf-8' codec can't decode byte 0xff in position 0",
    "a list": "has damaged metadata (meta.json must be a JSON object, got list); rebuilding it",
    "no checksums": "has damaged metadata (meta.json has no 'checksums' object); rebuilding it",
}


@pytest.mark.slow
def test_a_run_rebuilds_a_cache_whose_meta_json_is_damaged(tmp_path, write_recipe, monkeypatch, caplog):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    recipe = tiny_recipe()
    recipe["train"]["epochs"] = 1
    recipe["students"] = [dict(recipe["students"][1], teacher_cache={})]
    path = write_recipe(recipe)
    assert run_cli("run", path, "--output-dir", tmp_path / "first", "--quiet") == 0
    (meta,) = (tmp_path / "cache" / "teacher-outputs").glob("*/meta.json")
    key = json.loads(meta.read_text())["key"]
    damages = {
        "not utf-8": b"\xff\xfe" + meta.read_bytes()[2:],
        "a list": json.dumps([{"key": key, "checksums": {}}]).encode(),
        "no checksums": json.dumps({"key": key}).encode(),  # the right key: the cache is reused
    }
    for index, (damage, expected) in enumerate(CACHE_DAMAGES.items()):
        meta.write_bytes(damages[damage])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="distill"):
            assert run_cli("run", path, "--output-dir", tmp_path / f"run-{index}", "--quiet") == 0
        assert f"teacher cache {meta.parent} {expected}" in caplog.text
        assert json.loads(meta.read_text())["key"] == key
        assert isinstance(json.loads(meta.read_text())["checksums"]["0"], int)  # rebuilt and filled
