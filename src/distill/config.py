"""Recipes: YAML files validated by pydantic before anything trains.

A recipe names its data, an optional teacher, and one or more students, each with a model, a
method and training options. ``train`` at the top level holds defaults that each model's own
``train`` section overrides key by key. Every error names the file and the field, e.g.
``my.yaml: students[0].model.hidden[1]: must be a positive integer, got -3``.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from distill.data.sources import DATASETS, DataSpec
from distill.engine.cache import TeacherCacheSpec
from distill.engine.trainer import TrainSpec
from distill.errors import RecipeError, unknown_name_message
from distill.methods import METHODS, MethodSpec
from distill.methods.scratch import ScratchSpec
from distill.models import ModelSpec, model_field
from distill.models.imported import IMPORTED_TAG
from distill.schema import FilePath, Section, Seed

BUILTIN_RECIPES = Path(__file__).parent / "recipes"


if TYPE_CHECKING:  # what the runtime-built unions below hold, for the type checker
    ModelField: TypeAlias = ModelSpec
    OptionalModelField: TypeAlias = ModelSpec | None
    DataField: TypeAlias = DataSpec
    MethodField: TypeAlias = MethodSpec
else:  # discriminated unions over every spec registered when this module is first imported
    ModelField = model_field()
    OptionalModelField = model_field(optional=True)
    DataField = DATASETS.union("dataset")
    MethodField = METHODS.union("method")

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
#: Names become file and folder names (run folders, checkpoints): keep them well within limits.
MAX_NAME_LENGTH = 64


class TeacherSpec(Section):
    """The teacher: a checkpoint to load, or a model to train first (or both: a model spec
    used to rebuild the checkpoint's architecture)."""

    name: str = Field(default="teacher", pattern=_NAME_PATTERN, max_length=MAX_NAME_LENGTH)
    model: OptionalModelField = None
    checkpoint: FilePath | None = None
    train: TrainSpec | None = None

    @model_validator(mode="after")
    def _model_or_checkpoint(self) -> TeacherSpec:
        if self.model is None and self.checkpoint is None:
            raise ValueError("give a 'model' to train, or a 'checkpoint' to load, or both")
        return self


class StudentSpec(Section):
    """One student: its model, the method that trains it, and its training options."""

    name: str = Field(pattern=_NAME_PATTERN, max_length=MAX_NAME_LENGTH)
    model: ModelField
    method: MethodField = Field(default_factory=ScratchSpec)
    train: TrainSpec | None = None
    teacher_cache: TeacherCacheSpec | None = None

    @model_validator(mode="after")
    def _cache_fits_method(self) -> StudentSpec:
        if self.teacher_cache is not None and self.method.cacheable_temperature() is None:
            raise ValueError(
                f"teacher_cache: method '{self.method.name}' cannot use a teacher-output cache "
                "(it needs no teacher, or it changes the teacher while training)"
            )
        if self.teacher_cache is not None and self.teacher_cache.top_k is not None:
            needing = self.method.terms_needing_full_distribution()
            if needing:
                raise ValueError(
                    f"teacher_cache.top_k: {', '.join(needing)} need(s) the teacher's whole class "
                    "distribution, which a top-k cache does not keep; drop top_k"
                )
        return self


class ReferenceSpec(Section):
    """Published test accuracies (%) the recipe's students are meant to be read against, by
    student name, and where they come from; ``distill compare`` prints them beside the
    measured ones."""

    source: str = Field(min_length=1)
    accuracy: dict[str, float] = Field(min_length=1)


class Recipe(Section):
    """A complete, validated recipe."""

    name: str = Field(pattern=_NAME_PATTERN, max_length=MAX_NAME_LENGTH)
    description: str = ""
    seed: Seed = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataField
    train: TrainSpec = Field(default_factory=TrainSpec)
    teacher: TeacherSpec | None = None
    students: list[StudentSpec] = Field(min_length=1)
    reference: ReferenceSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _merge_train_defaults(cls, data: Any) -> Any:
        """Each model's ``train`` overrides the top-level ``train`` key by key."""
        if not isinstance(data, dict) or not isinstance(data.get("train", {}), dict):
            return data
        defaults = data.get("train") or {}
        try:
            TrainSpec.model_validate(defaults)
        except ValidationError:
            return data  # reported once, at ``train``, instead of again under every model
        data = dict(data)
        members = [("teacher", data.get("teacher"))]
        members += [("student", student) for student in data.get("students") or []]
        merged_students = []
        for role, member in members:
            if isinstance(member, dict) and isinstance(member.get("train", {}), dict):
                member = dict(member)
                member["train"] = deep_merge(defaults, member.get("train") or {})
            if role == "teacher":
                data["teacher"] = member
            else:
                merged_students.append(member)
        if isinstance(data.get("students"), list):
            data["students"] = merged_students
        return data

    @field_validator("students")
    @classmethod
    def _unique_names(cls, students: list[StudentSpec]) -> list[StudentSpec]:
        seen: set[str] = set()
        for student in students:
            if student.name in seen:
                raise ValueError(f"student name '{student.name}' is used twice; names must be unique")
            seen.add(student.name)
        return students

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        names = {student.name for student in self.students}
        if self.reference is not None:
            known = names | ({self.teacher.name} if self.teacher is not None else set())
            unknown = sorted(set(self.reference.accuracy) - known)
            if unknown:
                raise ValueError(
                    f"reference.accuracy: {', '.join(unknown)} is not a student or the teacher of "
                    f"this recipe ({', '.join(sorted(known))})"
                )
        if self.teacher is not None and self.teacher.name in names:
            raise ValueError(f"teacher and a student are both named '{self.teacher.name}'")
        data_spec: DataSpec = self.data
        for position, student in enumerate(self.students):
            earlier = [other.name for other in self.students[:position]]
            for needed in student.method.depends_on():
                if needed not in earlier:
                    raise ValueError(
                        f"student '{student.name}': method '{student.method.name}' needs student "
                        f"'{needed}' trained before it; list it earlier in 'students'"
                    )
            if student.method.uses_teacher and self.teacher is None:
                raise ValueError(
                    f"student '{student.name}': method '{student.method.name}' needs a teacher; "
                    "add a 'teacher' section"
                )
            train = self.train_of(student)
            if student.method.uses_unlabeled:
                if data_spec.pools is None:
                    raise ValueError(
                        f"student '{student.name}': method '{student.method.name}' learns from "
                        "unlabeled examples; set data.pools (labeled, validation, unlabeled sizes)"
                    )
                if train.augment.mixup_alpha > 0:
                    raise ValueError(
                        f"student '{student.name}': method '{student.method.name}' cannot use mixup "
                        "(it mixes labels, and the unlabeled pool's are unknown); set "
                        "train.augment.mixup_alpha: 0"
                    )
            if student.method.needs_hard_labels and train.augment.mixup_alpha > 0:
                raise ValueError(  # the words of the methods' own check, now before anything trains
                    f"student '{student.name}': {student.method.name}: the learned loss needs hard "
                    "labels; set train.augment.mixup_alpha: 0"
                )
            if train.report == "best" and data_spec.val_fraction == 0 and data_spec.pools is None:
                raise ValueError(
                    f"student '{student.name}': train.report 'best' selects on the validation "
                    "split, but data.val_fraction is 0"
                )
        return self

    def train_of(self, member: StudentSpec | TeacherSpec) -> TrainSpec:
        """The effective training options of a teacher or student."""
        return member.train if member.train is not None else self.train


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, merging nested mappings key by key."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# --------------------------------------------------------------------------- loading


def builtin_recipe_names(folder: Path = BUILTIN_RECIPES) -> list[str]:
    """The names of the built-in recipes in ``folder`` (by default the training recipes)."""
    return sorted(path.stem for path in folder.glob("*.yaml"))


def resolve_named_recipe(reference: str | None, folder: Path, kind: str, default: str) -> Path:
    """A recipe file path, or the name of a built-in ``kind`` in ``folder`` (``default`` when
    ``reference`` is ``None``); an unknown name lists the built-in ones."""
    name = reference or default
    path = Path(name)
    if path.is_file():
        return path
    builtin = folder / f"{name}.yaml"
    if builtin.is_file():
        return builtin
    if path.suffix in (".yaml", ".yml") or "/" in name:
        raise RecipeError(f"recipe file not found: {name}")
    names = builtin_recipe_names(folder)
    raise RecipeError(unknown_name_message(kind, name, names) + " (or give a path to a .yaml file)")


SectionT = TypeVar("SectionT", bound=Section)


def load_section_recipe(
    reference: str | None,
    overrides: list[str] | None,
    folder: Path,
    kind: str,
    schema: type[SectionT],
) -> tuple[SectionT, Path]:
    """Read a recipe of another command's ``schema`` (a file, or a built-in name in ``folder``,
    ``quickstart`` by default), apply ``--set`` ``overrides`` and validate it; errors name the
    file, the field and the override at fault. Returns the recipe and its file."""
    path = resolve_named_recipe(reference, folder, kind, "quickstart")
    data: dict[str, Any] = read_recipe_file(path)
    applied = [(apply_override(data, assignment), assignment) for assignment in overrides or []]
    try:
        return schema.model_validate(data), path
    except ValidationError as error:
        raise RecipeError(format_validation_error(error, data, str(path), applied)) from None


def resolve_recipe_path(reference: str | None) -> Path:
    """A recipe file path, or the name of a built-in recipe (default: ``quickstart``)."""
    return resolve_named_recipe(reference, BUILTIN_RECIPES, "built-in recipe", "quickstart")


#: A recipe is a small text file; anything larger is something else given by mistake.
MAX_RECIPE_BYTES = 10 * 2**20

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping gives the same key twice (YAML would silently keep only the last)."""


class RecipeLoader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys, and reads ``1e-3`` as a number (as YAML 1.2 does;
    YAML 1.1 wants ``1.0e-3``, and a string would be refused by the strict number fields)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue  # merged (``<<``) keys may be overridden; unhashable keys fail below
            key = self.construct_object(key_node)
            try:
                earlier = first_line.get(key)
            except TypeError:
                continue
            if earlier is not None:
                raise DuplicateKeyError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key '{key}': already given on line {earlier} "
                    "(a key may appear only once; the second would silently replace the first)",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """``text`` parsed by :class:`RecipeLoader` (safe: plain data only)."""
    return yaml.load(text, Loader=RecipeLoader)  # a SafeLoader subclass: no arbitrary objects


def read_recipe_file(path: Path) -> dict[str, Any]:
    """Parse a YAML recipe into a mapping, with file and line in any error."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_RECIPE_BYTES + 1)
    except OSError as error:
        raise RecipeError(f"{path}: cannot read recipe ({error.strerror or error})") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(
            f"{path}: not a YAML recipe (larger than {MAX_RECIPE_BYTES // 2**20} MiB; "
            "a recipe is a small text file)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RecipeError(
            f"{path}: not a YAML recipe (not UTF-8 text: byte 0x{raw[error.start]:02x} at offset "
            f"{error.start})"
        ) from None
    try:
        data = parse_yaml(text)
    except yaml.reader.ReaderError as error:
        raise RecipeError(
            f"{path}: not a YAML recipe (not text: control character #x{error.character:04x} at "
            f"offset {error.position})"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise RecipeError(f"{path}:{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys, got {type(data).__name__}")
    return data


_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")

#: A ``--set`` that was applied: the key path it set, and the assignment as the user typed it.
Override = tuple[list[str | int], str]


def apply_override(data: dict[str, Any], assignment: str) -> list[str | int]:
    """Apply one ``--set key.path=value`` (``students[0].model.hidden=[64]``; YAML values).

    Returns the key path it set (so errors there can be blamed on the ``--set``)."""
    key_path, separator, raw_value = assignment.partition("=")
    if not separator or not key_path:
        raise RecipeError(f"--set {assignment}: expected KEY.PATH=VALUE")
    try:
        value = parse_yaml(raw_value)
    except DuplicateKeyError as error:
        raise RecipeError(f"--set {assignment}: {error.problem}") from None
    except yaml.YAMLError:
        value = raw_value
    tokens: list[str | int] = []
    for name, index in _PATH_TOKEN.findall(key_path):
        if index:
            tokens.append(int(index))
        elif name.isdigit():
            tokens.append(int(name))
        else:
            tokens.append(name)
    node: Any = data
    for position, token in enumerate(tokens):
        last = position == len(tokens) - 1
        where = format_location(tokens[: position + 1])
        if isinstance(token, int):
            if not isinstance(node, list) or not -len(node) <= token < len(node):
                raise RecipeError(f"--set {assignment}: '{where}' does not exist in the recipe")
        elif not isinstance(node, dict):
            raise RecipeError(f"--set {assignment}: '{format_location(tokens[:position])}' is not a mapping")
        if last:
            node[token] = value
        else:
            if isinstance(node, dict) and token not in node:
                node[token] = {}
            node = node[token]
    return tokens


def epochs_overrides(reference: str | None, epochs: int) -> list[str]:
    """``--set`` assignments that give every model of the recipe ``epochs`` epochs: the shared
    ``train.epochs`` and each teacher's or student's own ``train.epochs`` where it sets one
    (``--epochs N``, the one way to shrink a whole recipe)."""
    data = read_recipe_file(resolve_recipe_path(reference))
    assignments = [f"train.epochs={epochs}"]
    teacher = data.get("teacher")
    if isinstance(teacher, dict) and isinstance(teacher.get("train"), dict):
        assignments.append(f"teacher.train.epochs={epochs}")
    students = data.get("students")
    for index, student in enumerate(students if isinstance(students, list) else []):
        if isinstance(student, dict) and isinstance(student.get("train"), dict):
            assignments.append(f"students[{index}].train.epochs={epochs}")
    return assignments


def load_recipe(reference: str | None, overrides: list[str] | None = None) -> tuple[Recipe, Path]:
    """Read, override and validate a recipe; returns it with the file it came from."""
    path = resolve_recipe_path(reference)
    data = read_recipe_file(path)
    applied = [(apply_override(data, assignment), assignment) for assignment in overrides or []]
    return validate_recipe(data, str(path), applied), path


def validate_recipe(
    data: dict[str, Any], source: str = "recipe", overrides: list[Override] | None = None
) -> Recipe:
    """The validated recipe; errors name ``source``, or the ``--set`` in ``overrides`` that set
    the field at fault."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as error:
        raise RecipeError(format_validation_error(error, data, source, overrides)) from None


# --------------------------------------------------------------------------- error messages


def format_location(location: list[str | int] | tuple[str | int, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _user_location(location: tuple[str | int, ...], data: Any) -> list[str | int]:
    """Drop the union tags pydantic inserts (``model.mlp.hidden`` → ``model.hidden``)."""
    kept: list[str | int] = []
    node = data
    for part in location:
        if isinstance(node, dict) and part not in node and isinstance(part, str):
            name = node.get("name")
            if part == name or (part == IMPORTED_TAG and isinstance(name, str)):
                continue
            if part in ("function-after", "function-before", "function-plain"):
                continue
        kept.append(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return kept


def _describe(value: Any) -> str:
    if isinstance(value, str):
        if len(value) > 80:
            return f"'{value[:40]}…' ({len(value)} characters)"
        return f"'{value}'"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"  # as YAML writes it
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__}"
    return repr(value)


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    context = error.get("ctx") or {}
    got = error.get("input")
    if kind == "unknown_name":
        name = got.get("name") if isinstance(got, dict) else None
        if name is None:
            return f"needs a 'name' key; allowed: {context['allowed']}"
        return unknown_name_message(context["kind"], str(name), context["allowed"].split(", "))
    if kind == "missing":
        return "required field is missing"
    if kind in ("positive_int", "unknown_key"):
        return str(error["msg"])
    if kind == "finite_number":
        return f"must be a finite number, got {_describe(got)}"
    if kind == "string_too_long":
        return f"must be at most {context.get('max_length')} characters long, got {_describe(got)}"
    if kind == "too_long":
        return f"must have at most {context.get('max_length')} item(s), got {context.get('actual_length')}"
    bounds = {
        "greater_than": ("greater than", "gt"),
        "greater_than_equal": ("at least", "ge"),
        "less_than": ("less than", "lt"),
        "less_than_equal": ("at most", "le"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"must be {words} {context.get(key)}, got {_describe(got)}"
    kinds = {
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "float_type": "a number",
        "float_parsing": "a number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "string_type": "a string",
        "list_type": "a list",
        "model_type": "a mapping (key: value)",
        "model_attributes_type": "a mapping (key: value)",
        "dict_type": "a mapping (key: value)",
        "path_type": "a file path",
        "is_instance_of": "a file path",
    }
    if kind in kinds:
        return f"must be {kinds[kind]}, got {_describe(got)}"
    if kind == "literal_error":
        return f"must be one of {context.get('expected')}, got {_describe(got)}"
    if kind == "string_pattern_mismatch":
        return f"must be a simple name (letters, digits, '_', '.', '-'), got {_describe(got)}"
    if kind == "too_short":
        return f"must have at least {context.get('min_length')} item(s)"
    if kind in ("value_error", "assertion_error"):
        return str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{error['msg']}, got {_describe(got)}"


def _blamed_override(
    location: list[str | int], error: ErrorDetails, overrides: list[Override]
) -> tuple[str, bool] | None:
    """The ``--set`` that put the value at fault there (the last one at or above ``location``),
    and whether the fault lies below what it set; ``None`` when it comes from the file."""
    for path, assignment in reversed(overrides):
        if location[: len(path)] == path:
            return assignment, len(location) > len(path)
        # an unknown model/method name, or an unknown key, is reported at the enclosing section
        if location == path[:-1] and (
            (error["type"] == "unknown_name" and path[-1] == "name")
            or (error["type"] == "unknown_key" and (error.get("ctx") or {}).get("key") == path[-1])
        ):
            return assignment, False
    return None


def format_validation_error(
    error: ValidationError, data: Any, source: str, overrides: list[Override] | None = None
) -> str:
    """One line per problem: ``source: field.path: what is wrong``, or ``--set KEY=VALUE: what is
    wrong`` where an override in ``overrides`` set the value at fault."""
    lines = []
    seen = set()
    for item in error.errors():
        kept = _user_location(item["loc"], data)
        location = format_location(kept) or "(top level)"
        blamed = _blamed_override(kept, item, overrides or [])
        if blamed is None:
            line = f"{source}: {location}: {_message(item)}"
        elif blamed[1]:
            line = f"--set {blamed[0]}: {location}: {_message(item)}"
        else:
            line = f"--set {blamed[0]}: {_message(item)}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    if len(lines) > 12:
        lines = [*lines[:12], f"... and {len(lines) - 12} more problems"]
    return "\n".join(lines)
