"""``distill ground``: SimVG's token branch trained from the ground truth, with a fixed mix and with
DWBD (one- and two-stage) over seeds, with the board, the latency table and the plot of w."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from distill.report.study import add_study_arguments, run_over_seeds, study_overrides


def add_ground_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    ground = commands.add_parser(
        "ground",
        parents=parents,
        help="visual grounding: SimVG's DWBD (decoder branch → token branch) vs TB-GT and a fixed mix",
    )
    add_study_arguments(
        ground,
        "grounding",
        "--set train.epochs=4 --set examples.train=500",
        epochs_help="train every model N epochs (DWBD's stage 2 included; stage 1 keeps train.stage1_epochs)",
    )


def command_ground(args: argparse.Namespace, console: Console) -> int:
    import torch

    from distill.ground.board import board_markdown, write_board
    from distill.ground.recipes import load_ground_recipe
    from distill.ground.session import load_model, run_seed, shared_test_examples
    from distill.grounding.training import inference_latency

    overrides = study_overrides(args)
    recipe, path = load_ground_recipe(args.recipe, overrides)
    output_dir = args.output_dir or Path("runs") / f"ground-{recipe.name}"
    seeds = [recipe.seed + offset for offset in range(args.seeds)]
    if not args.quiet:
        console.print(
            f"grounding with {', '.join(recipe.methods)} on [bold]{recipe.name}[/] from {path}, "
            f"{len(seeds)} seed(s) → {output_dir}",
            highlight=False,
        )

    def epoch_line(name: str, record: dict[str, float]) -> None:
        if not args.quiet:
            console.print(
                f"  {name} epoch {int(record['epoch'])} (stage {int(record['stage'])}): "
                f"TB {100 * record['tb_acc']:.1f} %, DB {100 * record['db_acc']:.1f} %, "
                f"w {record['w']:.3f}, mean ω {record['omega']:.3f}, {record['seconds']:.0f} s",
                highlight=False,
            )

    per_seed = run_over_seeds(
        seeds,
        output_dir,
        lambda seed, directory: run_seed(recipe, seed, directory, epoch_line),
        console,
        args.quiet,
    )
    model = load_model(recipe, output_dir / f"seed-{seeds[0]}", recipe.methods[0])
    latency = {
        "threads": torch.get_num_threads(),
        "repeats": recipe.latency.repeats,
        "model": f"{recipe.methods[0]}, seed {seeds[0]}",
        "timings": inference_latency(
            model, shared_test_examples(recipe), tuple(recipe.latency.batch_sizes), recipe.latency.repeats
        ),
    }
    rows = write_board(output_dir, recipe.name, seeds, per_seed, latency)
    console.print(board_markdown(recipe.name, seeds, rows, latency), highlight=False, markup=False)
    written = ["board.md", "board.json", "weights.png"]
    console.print(f"wrote {', '.join(str(output_dir / name) for name in written)}", highlight=False)
    return 0
