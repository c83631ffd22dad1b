"""``distill shift``: builds ooDML-style splits of rising FID from a recipe's data, trains the
teacher and each compared student on every split and seed, and reports accuracy, KD gain and
teacher agreement against FID."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from distill.report.study import add_study_arguments, study_overrides


def add_shift_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    shift = commands.add_parser(
        "shift",
        parents=parents,
        help="distillation under distribution shift: methods on splits of rising FID (ooDML)",
    )
    add_study_arguments(
        shift,
        "shift",
        "--set splits.count=6 (the base recipe: base_set)",
        methods_help="comma-separated students of the base recipe (default: the recipe's)",
    )
    shift.add_argument(
        "--splits", type=int, default=None, metavar="N", help="number of splits (splits.count)"
    )


def command_shift(args: argparse.Namespace, console: Console) -> int:
    from distill.shiftstudy.board import build_report, report_markdown, write_report
    from distill.shiftstudy.recipes import load_base_recipe, load_shift_recipe
    from distill.shiftstudy.session import build_splits, open_study, run_split

    overrides = study_overrides(args, epochs_key=None)  # --epochs applies to the base recipe
    if args.splits is not None:
        overrides.insert(0, f"splits.count={args.splits}")
    recipe, path = load_shift_recipe(args.recipe, overrides)
    base = load_base_recipe(recipe, path, args.study_epochs)
    output_dir = (args.output_dir or Path("runs") / f"shift-{recipe.name}").resolve()
    open_study(output_dir, recipe, base)
    if not args.quiet:
        console.print(
            f"shift study [bold]{recipe.name}[/] ({path}): {', '.join(recipe.methods)} and the "
            f"teacher of {base.name} on {recipe.splits.count} splits × {args.seeds} seed(s) → {output_dir}",
            highlight=False,
        )
    splits = build_splits(output_dir, recipe, base)

    def seed_line(seed: int, run_dir: Path, finished: bool) -> None:
        if not args.quiet:
            state = "finished, reused" if finished else "training"
            console.print(f"  seed {seed}: {run_dir} ({state})", highlight=False)

    per_split = []
    for record in splits:
        if not args.quiet:
            console.print(
                f"split {record.index}: FID {record.fid:.3g}, {record.train_samples} train / "
                f"{record.test_samples} test examples"
                + (f", {record.unseen_samples} of unseen classes" if record.unseen_path else ""),
                highlight=False,
            )
        per_split.append(
            run_split(output_dir, base, record, recipe.methods, args.seeds, on_seed_start=seed_line)
        )
    reference = next(
        (s.name for s in base.students if s.name in recipe.methods and s.method.name == "scratch"),
        recipe.methods[0],
    )
    report = build_report(
        recipe.name,
        [record.as_json() for record in splits],
        per_split,
        recipe.methods,
        reference,
        "Recall@1 on unseen classes" if recipe.splits.kind == "classes" else "test accuracy",
    )
    written = write_report(output_dir, report)
    console.print(report_markdown(report), highlight=False, markup=False)
    console.print(f"wrote {', '.join(str(path) for path in written)}", highlight=False)
    return 0
