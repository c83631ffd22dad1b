"""``distill perceive``: collaborative perception (DiscoGraph) — the early-fusion teacher, the
fusion baselines and the distilled student, over seeds, with the board and its pictures."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from distill.report.study import add_study_arguments, run_over_seeds, study_overrides


def add_perceive_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    perceive = commands.add_parser(
        "perceive",
        parents=parents,
        help="collaborative perception: DiscoGraph's distilled collaboration graph vs fusion baselines",
    )
    add_study_arguments(perceive, "perception", "--set train.epochs=4 --set world.agents=4")


def command_perceive(args: argparse.Namespace, console: Console) -> int:
    from distill.perceive.board import neighbour_trust, plot_edge_weights, write_board
    from distill.perceive.recipes import load_perceive_recipe
    from distill.perceive.session import load_model, run_seed, shared_test_scenes
    from distill.perception.training import plan_of

    overrides = study_overrides(args)
    recipe, path = load_perceive_recipe(args.recipe, overrides)
    output_dir = args.output_dir or Path("runs") / f"perceive-{recipe.name}"
    seeds = [recipe.seed + offset for offset in range(args.seeds)]
    if not args.quiet:
        console.print(
            f"perceiving with {', '.join(recipe.methods)} on [bold]{recipe.name}[/] from {path}, "
            f"{len(seeds)} seed(s) → {output_dir}",
            highlight=False,
        )

    def epoch_line(name: str, record: dict[str, float]) -> None:
        if not args.quiet:
            console.print(
                f"  {name} epoch {int(record['epoch'])}/{recipe.train.epochs}: "
                f"IoU {100 * record['iou']:.1f} %, occluded {100 * record['iou_occluded']:.1f} %, "
                f"{record['seconds']:.0f} s",
                highlight=False,
            )

    per_seed = run_over_seeds(
        seeds,
        output_dir,
        lambda seed, directory: run_seed(recipe, seed, directory, epoch_line),
        console,
        args.quiet,
    )
    graphs = [name for name in recipe.methods if plan_of(name).kind == "discograph"]
    trust: dict[str, list[tuple[float, float]]] = {}
    written = ["board.md", "board.json", "bandwidth.png"]
    if graphs:
        test_scenes = shared_test_scenes(recipe)
        for name in graphs:
            models = (load_model(recipe, output_dir / f"seed-{seed}", name) for seed in seeds)
            trust[name] = [neighbour_trust(model, test_scenes) for model in models]
        if "discograph" in graphs:
            student = load_model(recipe, output_dir / f"seed-{seeds[0]}", "discograph")
            plot_edge_weights(student, test_scenes, output_dir / "edge-weights.png")
            written.append("edge-weights.png")
    board = write_board(output_dir, recipe.name, seeds, per_seed, trust)
    console.print(board, highlight=False, markup=False)
    console.print(f"wrote {', '.join(str(output_dir / name) for name in written)}", highlight=False)
    return 0
