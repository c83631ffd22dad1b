"""What the study commands (``perceive``, ``ground``, ``lm``, ``shift``) share: their common options,
a seed's run directory claimed for one recipe, its stored results, and mean ± std over seeds."""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from distill.errors import DistillError, RunDirectoryError
from distill.files import atomic_write_json, read_json_object

if TYPE_CHECKING:  # torch stays unimported until a study loads weights
    from rich.console import Console
    from torch import nn


def mean_std(values: list[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def claim_seed_directory(
    directory: Path, payload: dict[str, Any], what: str, refuse_foreign: bool = False
) -> None:
    """Make ``directory`` the home of one seed of a ``what`` run (e.g. "grounding") whose resolved
    recipe is ``payload``, kept as ``recipe.json``: a directory holding another recipe or seed is
    refused, and with ``refuse_foreign`` so is a non-empty one that holds no such run."""
    stored = directory / "recipe.json"
    if stored.exists():
        try:
            same = json.loads(stored.read_text()) == payload
        except (OSError, ValueError):
            same = False
        if not same:
            raise RunDirectoryError(
                f"{directory} holds a {what} run of a different recipe or seed; choose another "
                "--output-dir (nothing was overwritten)"
            )
    elif refuse_foreign and directory.exists() and any(directory.iterdir()):
        raise RunDirectoryError(
            f"{directory} is not empty and holds no recipe.json of a {what} run; choose another "
            "--output-dir (nothing was overwritten)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stored, payload)


def read_stored_object(path: Path, what: str) -> dict[str, Any]:
    """A run directory's JSON object (e.g. ``results.json``), ``{}`` if absent; an unreadable one
    is a clear error that says to remove it."""
    if not path.exists():
        return {}
    return read_json_object(path, f"{what} (remove it to retrain)", RunDirectoryError)


def add_study_arguments(
    parser: argparse.ArgumentParser,
    kind: str,
    set_example: str,
    methods_help: str = "comma-separated methods (default: the recipe's)",
    epochs_help: str = "train every model N epochs",
) -> None:
    """The options every study command takes: the recipe (a ``kind`` recipe file or built-in
    name), ``--set``, ``--methods``, ``--seeds``, ``--epochs`` (its own ``study_epochs`` dest: the
    generic ``--epochs`` of ``run``/``compare`` rewrites their recipes), ``--output-dir`` and
    ``--quiet``."""
    parser.add_argument(
        "recipe",
        nargs="?",
        default=None,
        help=f"a {kind} recipe .yaml or built-in name (default: quickstart)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help=f"override a recipe field, e.g. {set_example}",
    )
    parser.add_argument("--methods", default=None, help=methods_help)
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds (recipe seed, +1, ...)")
    parser.add_argument(
        "--epochs", dest="study_epochs", type=int, default=None, metavar="N", help=epochs_help
    )
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="output directory (re-running continues it)"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the report")


def study_overrides(args: argparse.Namespace, epochs_key: str | None = "train.epochs") -> list[str]:
    """``--set`` assignments with ``--epochs`` (as ``epochs_key``) and ``--methods`` put first;
    refuses a count of seeds or epochs below 1."""
    if args.seeds < 1:
        raise DistillError(f"--seeds must be a positive integer, got {args.seeds}")
    if args.study_epochs is not None and args.study_epochs < 1:
        raise DistillError(f"--epochs must be a positive integer, got {args.study_epochs}")
    overrides = list(args.overrides)
    if args.study_epochs is not None and epochs_key is not None:
        overrides.insert(0, f"{epochs_key}={args.study_epochs}")
    if args.methods is not None:
        methods = [name.strip() for name in args.methods.split(",") if name.strip()]
        overrides.insert(0, f"methods=[{', '.join(methods)}]")
    return overrides


ModuleT = TypeVar("ModuleT", bound="nn.Module")


def load_stored_weights(model: ModuleT, path: Path) -> ModuleT:
    """``model`` with the weights a study stored at ``path`` (safetensors), in eval mode; a
    truncated or foreign file is a clear error that says to remove it."""
    from safetensors.torch import load

    try:
        model.load_state_dict(load(path.read_bytes()))
    except Exception as error:  # a truncated or foreign file: say which
        raise RunDirectoryError(
            f"{path}: cannot load these weights ({error}); remove it to retrain"
        ) from None
    return model.eval()


def run_over_seeds(
    seeds: list[int],
    output_dir: Path,
    run_seed: Callable[[int, Path], dict[str, Any]],
    console: Console,
    quiet: bool,
) -> dict[int, dict[str, Any]]:
    """``run_seed(seed, output_dir / "seed-<seed>")`` for every seed, in order (each resumable on
    its own), announcing each directory unless ``quiet``; the results by seed."""
    per_seed = {}
    for seed in seeds:
        directory = output_dir / f"seed-{seed}"
        if not quiet:
            console.print(f"seed {seed}: {directory}", highlight=False)
        per_seed[seed] = run_seed(seed, directory)
    return per_seed
