"""``distill lm``: a small GPT teacher on WordNet glosses and students trained by next-token CE,
token-level KD, sequence-level KD and GKD, over seeds, with the board and its plot."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from distill.report.study import add_study_arguments, run_over_seeds, study_overrides


def add_lm_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    lm = commands.add_parser(
        "lm",
        parents=parents,
        help="language-model distillation: GPT students by CE, token KD, sequence KD and GKD",
    )
    add_study_arguments(
        lm,
        "lm",
        "--set gkd.beta=0.9 --set data.path=/usr/share/wordnet",
        methods_help="comma-separated methods: ce,token-kd,seq-kd,gkd",
        epochs_help="train every student N epochs",
    )


def command_lm(args: argparse.Namespace, console: Console) -> int:
    from distill.lmkd.board import board_markdown, write_board
    from distill.lmkd.recipes import load_lm_recipe
    from distill.lmkd.session import device_label, lm_device, run_seed

    overrides = study_overrides(args)
    recipe, path = load_lm_recipe(args.recipe, overrides)
    device = lm_device(recipe)  # a missing GPU is an error before anything is written
    output_dir = args.output_dir or Path("runs") / f"lm-{recipe.name}"
    seeds = [recipe.seed + offset for offset in range(args.seeds)]
    if not args.quiet:
        console.print(
            f"distilling a GPT with {', '.join(recipe.methods)} on [bold]{recipe.name}[/] from {path}, "
            f"{len(seeds)} seed(s), {device_label(device)}, {recipe.precision} → {output_dir}",
            highlight=False,
        )

    def epoch_line(name: str, record: dict[str, float]) -> None:
        if not args.quiet:
            console.print(
                f"  {name} epoch {int(record['epoch'])}: loss {record['loss']:.3f}, held-out perplexity "
                f"{record.get('perplexity', float('nan')):.2f}, {record['seconds']:.0f} s",
                highlight=False,
            )

    per_seed = run_over_seeds(
        seeds,
        output_dir,
        lambda seed, directory: run_seed(recipe, seed, directory, epoch_line),
        console,
        args.quiet,
    )
    rows = write_board(output_dir, recipe.name, seeds, per_seed)
    console.print(board_markdown(recipe.name, seeds, rows), highlight=False, markup=False)
    written = ["board.md", "board.json", "perplexity-vs-teacher-nll.png"]
    console.print(f"wrote {', '.join(str(output_dir / name) for name in written)}", highlight=False)
    return 0
