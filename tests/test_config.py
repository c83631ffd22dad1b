import pytest

from distill.config import apply_override, load_recipe, validate_recipe
from distill.errors import RecipeError
from tests.conftest import tiny_recipe


def test_builtin_quickstart_is_valid_and_fills_defaults():
    recipe, path = load_recipe(None)
    assert path.name == "quickstart.yaml" and recipe.name == "quickstart"
    assert recipe.teacher is not None and len(recipe.students) == 2
    scratch, kd = recipe.students
    assert recipe.train_of(scratch) == recipe.train_of(kd)  # same budget for both students
    assert kd.method.name == "kd"


def test_model_train_section_overrides_defaults_key_by_key():
    recipe = validate_recipe(
        tiny_recipe(teacher={"model": {"name": "cnn1d"}, "train": {"epochs": 9, "optimizer": {"lr": 0.1}}})
    )
    teacher_train = recipe.train_of(recipe.teacher)
    assert teacher_train.epochs == 9 and teacher_train.optimizer.lr == 0.1
    assert teacher_train.optimizer.name == "adamw"  # kept from the top-level section
    assert teacher_train.batch_size == 64


def test_overrides_support_dots_and_indices():
    data = tiny_recipe()
    apply_override(data, "students[1].method.temperature=8")
    apply_override(data, "students.0.model.hidden=[4, 4]")
    apply_override(data, "train.augment.noise=0")
    recipe = validate_recipe(data)
    assert recipe.students[1].method.temperature == 8
    assert recipe.students[0].model.hidden == [4, 4]
    with pytest.raises(RecipeError, match=r"'students\[5\]' does not exist"):
        apply_override(data, "students[5].name=x")
    with pytest.raises(RecipeError, match=r"expected KEY\.PATH=VALUE"):
        apply_override(data, "seed")


def test_many_errors_are_reported_at_once_with_field_paths():
    data = tiny_recipe(seed="x")
    data["students"][0]["model"]["hidden"] = [-3]
    data["students"][1]["method"]["temperature"] = 0
    with pytest.raises(RecipeError) as caught:
        validate_recipe(data, "my.yaml")
    lines = str(caught.value).splitlines()
    assert "my.yaml: seed: must be an integer, got 'x'" in lines
    assert "my.yaml: students[0].model.hidden[0]: must be a positive integer, got -3" in lines
    assert "my.yaml: students[1].method.temperature: must be greater than 0.0, got 0" in lines


def test_imported_model_reference_is_accepted():
    data = tiny_recipe()
    data["students"][0]["model"] = {"name": "tests.models.test_models:make_linear", "kwargs": {}}
    recipe = validate_recipe(data)
    assert recipe.students[0].model.name.endswith(":make_linear")
