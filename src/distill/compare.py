"""``distill compare``: several methods on the same data, student, teacher and budget, over seeds.

From one recipe (the quickstart by default) a *comparison recipe* is made per seed: the recipe's
data, teacher and first student's model, with one student per method, named after the method.
A method that one of the recipe's students already uses keeps that student's method options
(e.g. the quickstart's ``kd`` at T = 1), training options and teacher cache; any other method
runs with its defaults and the first student's training options. Each seed is an ordinary run
directory, ``DIR/seed-<seed>``, so an interrupted comparison continues where it stopped and
finished seeds are not run again. The leaderboard aggregates every reported model (DML peers,
ONE branches and ensemble each have a row) over the seeds: :mod:`distill.report.leaderboard`.

``--sweep KEY=V1,V2`` repeats the comparison for each value of a recipe field and reports them
all; ``--tune KEY=V1,V2`` repeats it the same way (the same folders, ``DIR/KEY=VALUE/``) and
reports each method at the value its validation accuracy picks (:func:`run_tune`), so that
methods whose best settings differ — a learned loss and cross-entropy at their own learning
rates — are compared each at its best, with the test split kept out of the choice.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from distill.config import Recipe, load_recipe, validate_recipe
from distill.errors import RecipeError, RunDirectoryError, unknown_name_message
from distill.methods import METHODS, MethodSpec
from distill.report.leaderboard import Leaderboard, SweepBoard, TuneBoard, build_leaderboard
from distill.report.rundir import RunDirectory
from distill.runner import EpochCallback, RecipeRunner

DEFAULT_METHODS = ("scratch", "kd", "dml", "one", "skd")


@dataclass(frozen=True)
class Comparison:
    """What ``distill compare`` runs: ``methods`` on ``recipe``'s task for seeds
    ``recipe.seed``, ``recipe.seed + 1``, ... (``seeds`` of them), written under ``output_dir``."""

    recipe: Recipe
    methods: tuple[str, ...]
    seeds: int
    output_dir: Path

    def seed_values(self) -> list[int]:
        return [self.recipe.seed + offset for offset in range(self.seeds)]

    def run_dir(self, seed: int) -> Path:
        return self.output_dir / f"seed-{seed}"


#: ``--methods students``: the recipe's own students, each as the recipe configures it.
RECIPE_STUDENTS = "students"


def parse_methods(text: str, student_names: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``"scratch,kd"`` → ``("scratch", "kd")``: method names, or names of the recipe's students
    (``student_names``; ``students`` stands for all of them); unknown or repeated names are
    errors."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if names == (RECIPE_STUDENTS,):
        names = student_names
    if not names:
        raise RecipeError("--methods: give at least one method, e.g. --methods scratch,kd")
    allowed = sorted({*METHODS.names(), *student_names})
    for name in names:
        if name not in allowed:
            raise RecipeError("--methods: " + unknown_name_message("method", name, allowed))
    if len(set(names)) != len(names):
        raise RecipeError(f"--methods: a method is listed twice: {','.join(names)}")
    return names


def comparison_recipe(recipe: Recipe, methods: tuple[str, ...], seed: int) -> Recipe:
    """The recipe of one seed of a comparison (see module doc)."""
    base = recipe.students[0]
    payload = recipe.model_dump(mode="json")
    students = []
    uses_teacher = False
    for method in methods:
        own = next((student for student in recipe.students if student.name == method), None)
        if own is not None:  # one of the recipe's students, exactly as the recipe has it
            student_payload = own.model_dump(mode="json")
            student_payload["train"] = recipe.train_of(own).model_dump(mode="json")
            students.append(student_payload)
            uses_teacher = uses_teacher or own.method.uses_teacher
            continue
        # every METHODS entry is configured by a MethodSpec subclass (the registry types it as `type`)
        uses_teacher = uses_teacher or cast("type[MethodSpec]", METHODS.get(method).spec).uses_teacher
        template = next((student for student in recipe.students if student.method.name == method), None)
        student: dict[str, Any] = {
            "name": method,
            "model": base.model.model_dump(mode="json"),
            "method": template.method.model_dump(mode="json") if template else {"name": method},
            "train": recipe.train_of(template or base).model_dump(mode="json"),
        }
        if template is not None and template.teacher_cache is not None:
            student["teacher_cache"] = template.teacher_cache.model_dump(mode="json")
        students.append(student)
    payload.update(seed=seed, students=students, name=f"{recipe.name}-compare")
    if not uses_teacher:
        payload["teacher"] = None
    if payload.get("reference") is not None:  # keep the published numbers of the rows compared
        rows = {*methods, *([payload["teacher"]["name"]] if payload.get("teacher") else [])}
        published = payload["reference"]["accuracy"]
        accuracy = {name: value for name, value in published.items() if name in rows}
        payload["reference"] = dict(payload["reference"], accuracy=accuracy) if accuracy else None
    return validate_recipe(payload, f"compare ({recipe.name}, methods {','.join(methods)})")


def run_comparison(
    comparison: Comparison,
    on_epoch_end: EpochCallback | None = None,
    on_model_start: Callable[[str, int, int], None] | None = None,
    on_seed_start: Callable[[int, Path, bool], None] | None = None,
) -> Leaderboard:
    """Run (or continue) every seed, then write and return the leaderboard."""
    run_dirs = []
    for seed in comparison.seed_values():
        recipe = comparison_recipe(comparison.recipe, comparison.methods, seed)
        run_dir = comparison.run_dir(seed)
        run_or_reuse(recipe, run_dir, on_epoch_end, on_model_start, on_seed_start)
        run_dirs.append(run_dir)
    leaderboard = build_leaderboard(
        run_dirs, comparison.recipe.name, comparison.methods, comparison.recipe.students[0].model
    )
    if recipe.reference is not None:  # the published numbers of the rows compared
        leaderboard.reference = recipe.reference.model_dump(mode="json")
    leaderboard.write(comparison.output_dir)
    return leaderboard


def run_or_reuse(
    recipe: Recipe,
    run_dir: Path,
    on_epoch_end: EpochCallback | None = None,
    on_model_start: Callable[[str, int, int], None] | None = None,
    on_seed_start: Callable[[int, Path, bool], None] | None = None,
) -> None:
    """Run ``recipe`` into ``run_dir``, continue it if it was interrupted, or reuse it finished."""
    finished = _check_existing(run_dir, recipe)
    if on_seed_start is not None:
        on_seed_start(recipe.seed, run_dir, finished)
    if not finished:
        resume = (run_dir / "recipe.yaml").exists()
        RecipeRunner(recipe, run_dir, resume, on_epoch_end, on_model_start).execute()


def _check_existing(run_dir: Path, recipe: Recipe) -> bool:
    """Whether ``run_dir`` holds this seed finished; refuses a directory made for another
    comparison (different recipe, methods or seed) instead of mixing results."""
    directory = RunDirectory(run_dir)
    if not directory.recipe_path.exists():
        return False
    if not directory.holds_recipe(recipe.model_dump(mode="json")):
        raise RunDirectoryError(
            f"{run_dir} holds a comparison of a different recipe, method list or budget; choose "
            "another --output-dir (nothing was overwritten)"
        )
    return directory.summary_path.exists()


def parse_sweep(text: str, option: str = "--sweep") -> tuple[str, list[str]]:
    """``"data.pools.labeled=250,500,1000"`` → ``("data.pools.labeled", ["250", "500", "1000"])``;
    errors name ``option`` (``--sweep`` or ``--tune``)."""
    key, separator, values = text.partition("=")
    choices = [value.strip() for value in values.split(",") if value.strip()]
    if not separator or not key.strip() or len(choices) < 2:
        raise RecipeError(f"{option}: expected KEY.PATH=V1,V2[,...] with at least two values, got '{text}'")
    if len(set(choices)) != len(choices):
        raise RecipeError(f"{option}: a value is listed twice: {','.join(choices)}")
    return key.strip(), choices


def parse_tune(text: str) -> tuple[str, list[str]]:
    """``"train.optimizer.lr=0.01,0.1"`` → ``("train.optimizer.lr", ["0.01", "0.1"])``."""
    return parse_sweep(text, "--tune")


_FOLDER_SAFE = re.compile(r"[A-Za-z0-9_.,=+\[\]-]")


def sweep_folder_name(key: str, value: str) -> str:
    """The folder of one swept value: ``KEY=VALUE`` when that is a plain file name, else the
    same with every other character replaced by ``_`` and a hash of the value appended (so
    ``../x`` or ``a/b`` never leave ``--output-dir``, and distinct values stay distinct)."""
    name = f"{key}={value}"
    if all(_FOLDER_SAFE.match(char) for char in name) and len(name) <= 100:
        return name
    readable = "".join(char if _FOLDER_SAFE.match(char) else "_" for char in name)[:80]
    return f"{readable}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def run_sweep(
    reference: str | None,
    overrides: list[str],
    sweep: tuple[str, list[str]],
    methods: tuple[str, ...],
    seeds: int,
    output_dir: Path,
    on_epoch_end: EpochCallback | None = None,
    on_model_start: Callable[[str, int, int], None] | None = None,
    on_seed_start: Callable[[int, Path, bool], None] | None = None,
) -> SweepBoard:
    """One comparison per value of a recipe field (``DIR/KEY=VALUE/``, see
    :func:`sweep_folder_name`), then ``sweep.md``,
    ``sweep.json`` and ``sweep.png`` in ``output_dir``. Every recipe is validated first."""
    key, values = sweep
    recipes = value_recipes(reference, overrides, key, values, "--sweep")
    boards = run_value_comparisons(
        recipes, key, values, methods, seeds, output_dir, on_epoch_end, on_model_start, on_seed_start
    )
    board = SweepBoard(key, values, boards)
    board.write(output_dir)
    return board


def value_recipes(
    reference: str | None, overrides: list[str], key: str, values: list[str], option: str
) -> list[Recipe]:
    """The recipe with ``KEY=VALUE`` set, for each value; a value the recipe refuses is an error
    naming ``option`` (``--sweep`` or ``--tune``), before anything runs."""
    recipes = []
    for value in values:
        assignment = f"{key}={value}"
        try:
            recipes.append(load_recipe(reference, [*overrides, assignment])[0])
        except RecipeError as error:
            message = str(error).replace(f"--set {assignment}", f"{option} {assignment}")
            if f"{option} {assignment}" not in message:
                message = f"{option} {assignment}: {message}"
            raise RecipeError(message) from None
    return recipes


def run_value_comparisons(
    recipes: list[Recipe],
    key: str,
    values: list[str],
    methods: tuple[str, ...],
    seeds: int,
    output_dir: Path,
    on_epoch_end: EpochCallback | None = None,
    on_model_start: Callable[[str, int, int], None] | None = None,
    on_seed_start: Callable[[int, Path, bool], None] | None = None,
) -> list[Leaderboard]:
    """Run (or reuse) the comparison of each value's recipe in ``DIR/KEY=VALUE/``."""
    boards = []
    for value, recipe in zip(values, recipes, strict=True):
        comparison = Comparison(recipe, methods, seeds, output_dir / sweep_folder_name(key, value))
        boards.append(run_comparison(comparison, on_epoch_end, on_model_start, on_seed_start))
    return boards


def run_tune(
    reference: str | None,
    overrides: list[str],
    tune: tuple[str, list[str]],
    methods: tuple[str, ...],
    seeds: int,
    output_dir: Path,
    on_epoch_end: EpochCallback | None = None,
    on_model_start: Callable[[str, int, int], None] | None = None,
    on_seed_start: Callable[[int, Path, bool], None] | None = None,
) -> TuneBoard:
    """``distill compare --tune KEY=V1,V2,...``: the comparison for every value of a recipe
    field (``DIR/KEY=VALUE/``, as :func:`run_sweep`, so finished seeds are reused), then each
    method at the value whose runs give its primary model the best mean validation accuracy
    over the seeds (:class:`~distill.report.leaderboard.TuneBoard`): ``leaderboard.md/.json/.png``
    of the chosen rows, and the full grid in ``tune.md`` and ``tune.json`` in ``output_dir``.

    Refused before anything runs: a value the recipe refuses, data without a validation split
    (the choice is made on it, never on the test split), and a field that does not reach the
    compared methods (every value would make the same comparison)."""
    key, values = tune
    recipes = value_recipes(reference, overrides, key, values, "--tune")
    for value, recipe in zip(values, recipes, strict=True):
        data = recipe.data
        if getattr(data, "pools", None) is None and getattr(data, "val_fraction", 0.0) <= 0:
            raise RecipeError(
                f"--tune {key}={value}: the choice is made on the validation split and this data has "
                "none; set data.val_fraction > 0"
            )
    compared = {
        json.dumps(comparison_recipe(recipe, methods, recipe.seed).model_dump(mode="json"), sort_keys=True)
        for recipe in recipes
    }
    if len(compared) == 1:
        raise RecipeError(
            f"--tune {key}: every value gives the same comparison; the field does not reach the "
            f"compared methods ({','.join(methods)})"
        )
    boards = run_value_comparisons(
        recipes, key, values, methods, seeds, output_dir, on_epoch_end, on_model_start, on_seed_start
    )
    board = TuneBoard(key, values, boards)
    for group in board.groups():
        try:
            board.choice(group)
        except ValueError as error:
            raise RunDirectoryError(f"--tune: {error}") from None
    board.write(output_dir)
    return board
