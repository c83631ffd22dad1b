"""``distill lm``: a small GPT teacher on WordNet glosses and students trained by next-token CE,
token-level KD, sequence-level KD and GKD, over seeds, with the board and its plot."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from distill.errors import DistillError


def add_lm_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    lm = commands.add_parser(
        "lm",
        parents=parents,
        help="language-model distillation: GPT students by CE, token KD, sequence KD and GKD",
    )
    lm.add_argument(
        "recipe", nargs="?", default=None, help="an lm recipe .yaml or built-in name (default: quickstart)"
    )
    lm.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a recipe field, e.g. --set gkd.beta=0.9 --set data.path=/usr/share/wordnet",
    )
    lm.add_argument("--methods", default=None, help="comma-separated methods: ce,token-kd,seq-kd,gkd")
    lm.add_argument("--seeds", type=int, default=1, help="number of seeds (recipe seed, +1, ...)")
    lm.add_argument(  # its own dest: the generic --epochs of `run`/`compare` rewrites their recipes
        "--epochs", dest="lm_epochs", type=int, default=None, metavar="N", help="train every student N epochs"
    )
    lm.add_argument("--output-dir", type=Path, default=None, help="board directory (re-running continues it)")
    lm.add_argument("--quiet", action="store_true", help="print only the board")


def command_lm(args: argparse.Namespace, console: Console) -> int:
    from distill.lmkd.board import board_markdown, write_board
    from distill.lmkd.recipes import load_lm_recipe
    from distill.lmkd.session import run_seed

    if args.seeds < 1:
        raise DistillError(f"--seeds must be a positive integer, got {args.seeds}")
    overrides = list(args.overrides)
    if args.lm_epochs is not None:
        overrides.insert(0, f"train.epochs={args.lm_epochs}")
    if args.methods is not None:
        methods = [name.strip() for name in args.methods.split(",") if name.strip()]
        overrides.insert(0, f"methods=[{', '.join(methods)}]")
    recipe, path = load_lm_recipe(args.recipe, overrides)
    output_dir = args.output_dir or Path("runs") / f"lm-{recipe.name}"
    seeds = [recipe.seed + offset for offset in range(args.seeds)]
    if not args.quiet:
        console.print(
            f"distilling a GPT with {', '.join(recipe.methods)} on [bold]{recipe.name}[/] from {path}, "
            f"{len(seeds)} seed(s) → {output_dir}",
            highlight=False,
        )

    def epoch_line(name: str, record: dict[str, float]) -> None:
        if not args.quiet:
            console.print(
                f"  {name} epoch {int(record['epoch'])}: loss {record['loss']:.3f}, held-out perplexity "
                f"{record.get('perplexity', float('nan')):.2f}, {record['seconds']:.0f} s",
                highlight=False,
            )

    per_seed = {}
    for seed in seeds:
        if not args.quiet:
            console.print(f"seed {seed}: {output_dir / f'seed-{seed}'}", highlight=False)
        per_seed[seed] = run_seed(recipe, seed, output_dir / f"seed-{seed}", epoch_line)
    rows = write_board(output_dir, recipe.name, seeds, per_seed)
    console.print(board_markdown(recipe.name, seeds, rows), highlight=False, markup=False)
    written = ["board.md", "board.json", "perplexity-vs-teacher-nll.png"]
    console.print(f"wrote {', '.join(str(output_dir / name) for name in written)}", highlight=False)
    return 0
