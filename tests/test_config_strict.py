"""Strict recipe values: no strings or booleans as numbers, bounded counts, no duplicate keys,
no binary files, names that fit a file system, and ``--set`` errors blamed on the ``--set``."""

import copy
import struct

import pytest
import yaml

from distill.cli import main
from distill.config import BUILTIN_RECIPES, load_recipe, read_recipe_file, validate_recipe
from distill.errors import RecipeError
from tests.conftest import tiny_recipe


def set_at(recipe, path, value):
    node = recipe
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return recipe


def error_of(recipe, source="my.yaml"):
    with pytest.raises(RecipeError) as caught:
        validate_recipe(recipe, source)
    return str(caught.value)


def student(**fields):
    return {"name": "s", "model": {"name": "mlp", "hidden": [32]}, **fields}


REFUSED = {
    "string epochs": (["train", "epochs"], "2", "my.yaml: train.epochs: must be an integer, got '2'"),
    "bool batch size": (["train", "batch_size"], True, "train.batch_size: must be an integer, got true"),
    "float epochs": (["train", "epochs"], 2.0, "train.epochs: must be an integer, got 2.0"),
    "1e12 epochs (a float)": (
        ["train", "epochs"],
        1e12,
        "train.epochs: must be an integer, got 1000000000000.0",
    ),
    "huge int epochs": (
        ["train", "epochs"],
        10**12,
        "train.epochs: must be at most 100000, got 1000000000000",
    ),
    "string lr": (["train", "optimizer", "lr"], "1e-3", "train.optimizer.lr: must be a number, got '1e-3'"),
    "bool lr": (["train", "optimizer", "lr"], True, "train.optimizer.lr: must be a number, got true"),
    "infinite lr": (
        ["train", "optimizer", "lr"],
        float("inf"),
        "train.optimizer.lr: must be a finite number",
    ),
    "number as bool": (["train", "optimizer", "nesterov"], 1, "nesterov: must be true or false, got 1"),
    "string bool": (
        ["train", "augment", "flip"],
        "yes",
        "train.augment.flip: must be true or false, got 'yes'",
    ),
    "string seed": (["seed"], "7", "my.yaml: seed: must be an integer, got '7'"),
    "negative seed": (["seed"], -1, "my.yaml: seed: must be at least 0, got -1"),
    "huge seed": (["seed"], 2**40, "seed: must be at most 4294967295, got 1099511627776"),
    "huge data seed": (["data", "seed"], 2**33, "data.seed: must be at most 4294967295"),
    "string num_samples": (["data", "num_samples"], "600", "data.num_samples: must be an integer, got '600'"),
    "huge num_samples": (["data", "num_samples"], 10**10, "data.num_samples: must be at most 100000000"),
    "huge batch": (["train", "batch_size"], 10**7, "train.batch_size: must be at most 1000000, got 10000000"),
    "huge draws": (["train", "augment", "draws"], 10**6, "train.augment.draws: must be at most 100000"),
    "string shift": (["train", "augment", "shift"], "2", "train.augment.shift: must be an integer, got '2'"),
    "huge width": (
        ["students", 0, "model", "hidden"],
        [10**6],
        "students[0].model.hidden[0]: must be at most 65536, got 1000000",
    ),
    "string width": (
        ["students", 0, "model", "hidden"],
        ["32"],
        "students[0].model.hidden[0]: must be an integer, got '32'",
    ),
    "huge channels": (
        ["teacher", "model", "channels"],
        [2**20],
        "teacher.model.channels[0]: must be at most 65536",
    ),
    "string temperature": (
        ["students", 1, "method", "temperature"],
        "2",
        "students[1].method.temperature: must be a number, got '2'",
    ),
    "string warmup": (
        ["train", "schedule"],
        {"warmup_epochs": "1"},
        "warmup_epochs: must be an integer, got '1'",
    ),
    "number as path": (["teacher", "checkpoint"], 5, "teacher.checkpoint: must be a file path, got 5"),
    "long student name": (
        ["students", 0, "name"],
        "s" * 300,
        "students[0].name: must be at most 64 characters long, got 'ssss",
    ),
    "long teacher name": (["teacher", "name"], "t" * 65, "teacher.name: must be at most 64 characters long"),
    "long recipe name": (["name"], "r" * 65, "my.yaml: name: must be at most 64 characters long"),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_bad_values_are_refused_with_a_clear_message(case):
    path, value, expected = REFUSED[case]
    message = error_of(set_at(tiny_recipe(), path, value))
    assert expected in message, message


def test_long_values_are_shortened_in_the_message():
    message = error_of(set_at(tiny_recipe(), ["students", 0, "name"], "s" * 300))
    assert "(300 characters)" in message and "s" * 100 not in message


ACCEPTED = {
    "int lr": (["train", "optimizer", "lr"], 1, lambda r: r.train.optimizer.lr == 1.0),
    "float lr": (["train", "optimizer", "lr"], 0.001, lambda r: r.train.optimizer.lr == 0.001),
    "most epochs": (["train", "epochs"], 100_000, lambda r: r.train.epochs == 100_000),
    "largest seed": (["seed"], 2**32 - 1, lambda r: r.seed == 2**32 - 1),
    "64-character name": (["students", 0, "name"], "s" * 64, lambda r: r.students[0].name == "s" * 64),
    "checkpoint path string": (
        ["teacher", "checkpoint"],
        "teacher.safetensors",
        lambda r: str(r.teacher.checkpoint) == "teacher.safetensors",
    ),
}


@pytest.mark.parametrize("case", list(ACCEPTED), ids=list(ACCEPTED))
def test_good_values_still_validate(case):
    path, value, check = ACCEPTED[case]
    assert check(validate_recipe(set_at(tiny_recipe(), path, value)))


def test_other_sections_are_strict_and_bounded():
    def with_first(**fields):
        return {**tiny_recipe(), "students": [student(**fields)]}

    cases = [
        (
            with_first(model={"name": "resnet", "depth": 20002}),
            "students[0].model.depth: must be at most 2000",
        ),
        (with_first(model={"name": "cnn1d", "kernel_size": "5"}), "kernel_size: must be an integer, got '5'"),
        (with_first(method={"name": "dml", "peers": 1000}), "students[0].method.peers: must be at most 64"),
        (with_first(method={"name": "one", "rampup_epochs": 10**9}), "rampup_epochs: must be at most 100000"),
        (with_first(method={"name": "scratch", "label_smoothing": "0.1"}), "must be a number, got '0.1'"),
        (
            with_first(teacher_cache={"batch_size": "64"}),
            "teacher_cache.batch_size: must be an integer, got '64'",
        ),
        (
            {**tiny_recipe(), "data": {"name": "synthetic", "shape": [True]}},
            "data.shape[0]: must be an integer, got true",
        ),
        (
            {**tiny_recipe(), "data": {"name": "mnist1d", "pools": {"labeled": "100"}}},
            "data.pools.labeled: must be an integer, got '100'",
        ),
        (
            {**tiny_recipe(), "data": {"name": "npz", "path": "x.npz", "standardize": 0}},
            "data.standardize: must be true or false, got 0",
        ),
    ]
    for recipe, expected in cases:
        message = error_of(recipe)
        assert expected in message, message


def test_search_settings_are_strict_and_bounded():
    from pydantic import ValidationError

    from distill.search.engine import SearchSettings

    with pytest.raises(ValidationError, match="valid integer"):
        SearchSettings(generations="4")
    with pytest.raises(ValidationError, match="less than or equal to 100000"):
        SearchSettings(generations=10**9)
    assert SearchSettings(timeout=60).timeout == 60.0  # an int for a float is fine


@pytest.mark.parametrize("name", ["quickstart", "digits", "l2t-dlf", "l2t-dln", "unlabeled"])
def test_builtin_recipes_still_validate(name):
    recipe, path = load_recipe(name)
    assert path.parent == BUILTIN_RECIPES and recipe.name


def test_round_trip_through_json_still_validates():
    recipe = validate_recipe(
        {**tiny_recipe(), "teacher": {"checkpoint": "t.safetensors", "model": {"name": "mlp"}}}
    )
    again = validate_recipe(copy.deepcopy(recipe.model_dump(mode="json")))
    assert again == recipe


# --------------------------------------------------------------------------- YAML files


def test_exponent_floats_read_as_numbers(tmp_path):
    path = tmp_path / "r.yaml"
    text = yaml.safe_dump(tiny_recipe(), sort_keys=False).replace("lr: 0.005", "lr: 5e-3")
    assert "lr: 5e-3" in text
    path.write_text(text)
    assert read_recipe_file(path)["train"]["optimizer"]["lr"] == 0.005
    recipe, _ = load_recipe(str(path), ["train.optimizer.weight_decay=1E-4"])
    assert recipe.train.optimizer.lr == 0.005 and recipe.train.optimizer.weight_decay == 1e-4


def test_duplicate_keys_are_refused_with_file_key_and_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\ntrain:\n  epochs: 3\nseed: 1\ntrain:\n  epochs: 4\n")
    with pytest.raises(RecipeError) as caught:
        read_recipe_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: line 5, column 1: ")
    assert "duplicate key 'train': already given on line 2" in message


def test_nested_duplicate_keys_are_refused_but_merges_may_override(tmp_path):
    path = tmp_path / "nested.yaml"
    path.write_text("train:\n  epochs: 3\n  batch_size: 8\n  epochs: 4\n")
    with pytest.raises(
        RecipeError, match=r"line 4, column 3: .*duplicate key 'epochs': already given on line 2"
    ):
        read_recipe_file(path)
    merged = tmp_path / "merged.yaml"
    merged.write_text("base: &base {epochs: 3, batch_size: 8}\ntrain:\n  <<: *base\n  epochs: 4\n")
    assert read_recipe_file(merged)["train"] == {"epochs": 4, "batch_size": 8}


def test_yaml_loading_stays_safe(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(RecipeError, match="invalid YAML"):
        read_recipe_file(path)


def safetensors_bytes():
    header = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    return struct.pack("<Q", len(header)) + header + bytes(16)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            bytes([0x89, 0x50, 0x4E, 0x47, 0xFF, 0xFE, 0x00]),
            "not a YAML recipe (not UTF-8 text: byte 0x89 at offset 0)",
        ),
        (safetensors_bytes(), "not a YAML recipe (not text: control character #x0000"),
    ],
    ids=["random bytes", "safetensors"],
)
def test_binary_files_are_not_recipes(tmp_path, content, expected):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(content)
    with pytest.raises(RecipeError) as caught:
        read_recipe_file(path)
    assert str(caught.value).startswith(f"{path}: {expected}"), str(caught.value)


def test_huge_files_are_not_recipes(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * (11 * 2**20))
    with pytest.raises(RecipeError, match="not a YAML recipe \\(larger than 10 MiB"):
        read_recipe_file(path)


# --------------------------------------------------------------------------- --set


def write(tmp_path, recipe, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("train.epochs=ten", "--set train.epochs=ten: must be an integer, got 'ten'"),
        ("train.epochs='5'", "--set train.epochs='5': must be an integer, got '5'"),
        ("train.epochs=1000000000000", "--set train.epochs=1000000000000: must be at most 100000"),
        (
            "students[0].model.hidden=[-1]",
            "--set students[0].model.hidden=[-1]: students[0].model.hidden[0]: "
            "must be a positive integer, got -1",
        ),
        (
            "students.1.method.temperature=hot",
            "--set students.1.method.temperature=hot: must be a number, got 'hot'",
        ),
        (
            "students[0].model.name=mpl",
            "--set students[0].model.name=mpl: unknown model 'mpl' (did you mean 'mlp'?)",
        ),
        ("train.epoch=4", "--set train.epoch=4: unknown key 'epoch' (did you mean 'epochs'?)"),
        ("students[0].method={a: 1, a: 2}", "--set students[0].method={a: 1, a: 2}: duplicate key 'a'"),
    ],
)
def test_override_errors_name_the_override(tmp_path, assignment, expected):
    path = write(tmp_path, tiny_recipe())
    with pytest.raises(RecipeError) as caught:
        load_recipe(str(path), [assignment])
    message = str(caught.value)
    assert message.startswith(expected), message
    assert "recipe.yaml" not in message


def test_override_errors_and_file_errors_each_name_their_source(tmp_path):
    path = write(tmp_path, tiny_recipe(seed="3"))
    with pytest.raises(RecipeError) as caught:
        load_recipe(str(path), ["train.epochs=ten", "train.epochs=2", "train.batch_size=big"])
    lines = str(caught.value).splitlines()
    assert f"{path}: seed: must be an integer, got '3'" in lines
    assert "--set train.batch_size=big: must be an integer, got 'big'" in lines
    assert not any("epochs" in line for line in lines)  # the later --set replaced the bad value


def test_a_good_override_still_applies(tmp_path):
    path = write(tmp_path, tiny_recipe())
    recipe, _ = load_recipe(str(path), ["train.epochs=5", "students[0].model.hidden=[8, 8]"])
    assert recipe.train.epochs == 5 and recipe.students[0].model.hidden == [8, 8]


# --------------------------------------------------------------------------- through the CLI


def run_cli(tmp_path, capsys, path, *extra):
    status = main(["run", str(path), "--output-dir", str(tmp_path / "r"), "--quiet", *extra])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    return " ".join(err.split())


def test_cli_blames_the_override(tmp_path, capsys):
    path = write(tmp_path, tiny_recipe(), "quickstart.yaml")
    err = run_cli(tmp_path, capsys, path, "--set", "train.epochs=ten")
    assert "--set train.epochs=ten: must be an integer, got 'ten'" in err
    assert "quickstart.yaml" not in err


def test_cli_refuses_strings_for_numbers(tmp_path, capsys):
    path = write(tmp_path, tiny_recipe(train={"epochs": "2", "batch_size": True}))
    err = run_cli(tmp_path, capsys, path)
    assert f"{path}: train.epochs: must be an integer, got '2'" in err
    assert f"{path}: train.batch_size: must be an integer, got true" in err


def test_cli_refuses_duplicate_keys(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(), sort_keys=False) + "seed: 4\n")
    err = run_cli(tmp_path, capsys, path)
    assert f"{path}: line" in err and "duplicate key 'seed': already given on line" in err


def test_cli_refuses_a_binary_recipe(tmp_path, capsys):
    path = tmp_path / "teacher.safetensors"
    path.write_bytes(bytes(range(256)) * 4)
    err = run_cli(tmp_path, capsys, path)
    assert f"{path}: not a YAML recipe (not UTF-8 text" in err


def test_cli_refuses_a_name_too_long_for_a_folder(tmp_path, capsys):
    recipe = tiny_recipe()
    recipe["students"][0]["name"] = "s" * 300
    path = write(tmp_path, recipe)
    err = run_cli(tmp_path, capsys, path)
    assert "students[0].name: must be at most 64 characters long" in err
    assert not (tmp_path / "r").exists()
