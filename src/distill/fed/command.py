"""``distill fed``: one federated run, or a board of algorithms × seeds."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from distill.errors import DistillError

if TYPE_CHECKING:  # imported where used: `distill --help` does not load torch
    from distill.federated.gossip import GossipRecipe, GossipRound
    from distill.federated.server import RoundRecord
    from distill.federated.spec import FedRecipe

#: as :data:`distill.federated.spec.ALGORITHMS` (a test keeps them equal), without importing torch
ALGORITHM_NAMES = "fedavg,feddf,takfl,takfl-noreg"


def add_fed_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    fed = commands.add_parser(
        "fed",
        parents=parents,
        help="federated distillation across device prototypes on Flower (FedAvg, FedDF, TAKFL)",
    )
    fed.add_argument(
        "recipe",
        nargs="?",
        default=None,
        help="a federated recipe .yaml or built-in name (default: quickstart)",
    )
    fed.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a recipe field, e.g. --set rounds=3 --set prototypes[0].clients=4",
    )
    fed.add_argument("--rounds", type=int, default=None, metavar="N", help="run N rounds (a quick try)")
    fed.add_argument(
        "--algorithms",
        default=None,
        help=f"comma-separated algorithms to compare over --seeds ({ALGORITHM_NAMES}); writes a board",
    )
    fed.add_argument("--seeds", type=int, default=1, help="seeds for --algorithms (recipe seed, +1, ...)")
    fed.add_argument("--output-dir", type=Path, default=None, help="run (or board) directory")
    fed.add_argument("--resume", action="store_true", help="continue an interrupted run from its last round")
    fed.add_argument(
        "--engine",
        choices=["simulation", "inprocess"],
        default="simulation",
        help="simulation: Flower's simulation runtime, a virtual node per client (default); "
        "inprocess: every client in this process, no Flower (debugging)",
    )
    fed.add_argument("--verbose", action="store_true", help="show Flower's and Ray's own logs")
    fed.add_argument("--quiet", action="store_true", help="print only the results")


def _round_line(record: RoundRecord, rounds: int) -> str:
    parts = []
    for entry in record.prototypes:
        text = f"{entry.name} {entry.averaged_accuracy:5.1f}→{entry.merged_accuracy:5.1f}"
        if entry.lambdas is not None:
            text += " λ[" + " ".join(f"{value:.2f}" for value in entry.lambdas) + "]"
        if entry.missing:
            text += f" (missing {len(entry.missing)})"
        parts.append(text)
    return f"round {record.round}/{rounds}  " + "  ".join(parts) + f"  {record.seconds:.1f} s"


def _load(args: argparse.Namespace) -> tuple[FedRecipe | GossipRecipe, Path]:
    from distill.fed.recipes import load_fed_recipe

    overrides = list(args.overrides)
    if args.rounds is not None:
        if args.rounds < 1:
            raise DistillError(f"--rounds: must be a positive integer, got {args.rounds}")
        overrides.insert(0, f"rounds={args.rounds}")
    return load_fed_recipe(args.recipe, overrides)


def command_fed(args: argparse.Namespace, console: Console) -> int:
    from distill.fed.session import run_federation

    logger = logging.getLogger("distill")
    if not logger.handlers:
        from rich.logging import RichHandler

        logger.addHandler(RichHandler(console=Console(stderr=True), show_time=False, show_path=False))
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    recipe, path = _load(args)
    from distill.federated.gossip import GossipRecipe

    if isinstance(recipe, GossipRecipe):
        return _decentralized(args, recipe, path, console)
    if args.algorithms is not None:
        return _board(args, recipe, console)
    if args.seeds != 1:
        raise DistillError("--seeds: give --algorithms too (one run uses the recipe's seed)")
    run_dir = args.output_dir or _default_dir(recipe, args.resume)
    if not args.quiet:
        console.print(
            f"federated recipe [bold]{recipe.name}[/] ({recipe.algorithm}, {recipe.rounds} rounds) "
            f"from {path} → {run_dir}",
            highlight=False,
        )

    def show(record: RoundRecord) -> None:
        if not args.quiet:
            console.print(_round_line(record, recipe.rounds), highlight=False, markup=False)

    summary = run_federation(recipe, run_dir, args.resume, args.engine, show, args.verbose)
    _print_summary(summary, console)
    console.print(f"run directory: {run_dir}", highlight=False)
    return 0


def _default_dir(recipe: FedRecipe, resume: bool) -> Path:
    return _default_dir_named(f"{recipe.name}-{recipe.algorithm}", resume)


def _print_summary(summary: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    table = Table(title=f"{summary['recipe']}: {summary['algorithm']}, seed {summary['seed']}")
    for column in ("prototype", "model", "test acc (%)", "before distillation", "sent MB", "received MB"):
        table.add_column(column)
    for name, entry in summary["prototypes"].items():
        table.add_row(
            name,
            entry["model"],
            f"{entry['final_accuracy']:.2f}",
            f"{entry['final_averaged_accuracy']:.2f}",
            f"{entry['bytes_sent'] / 1e6:.2f}",
            f"{entry['bytes_received'] / 1e6:.2f}",
        )
    console.print(table)


def _board(args: argparse.Namespace, recipe: FedRecipe, console: Console) -> int:
    from distill.fed.board import board_markdown, write_board
    from distill.fed.loop import round_records
    from distill.fed.session import run_federation
    from distill.federated.spec import ALGORITHMS, FedRecipe
    from distill.report.rundir import RunDirectory

    algorithms = [name.strip() for name in args.algorithms.split(",") if name.strip()]
    unknown = [name for name in algorithms if name not in ALGORITHMS]
    if unknown or not algorithms:
        raise DistillError(
            f"--algorithms: unknown {unknown or 'empty list'}; choose from {', '.join(ALGORITHMS)}"
        )
    if args.seeds < 1:
        raise DistillError(f"--seeds: must be a positive integer, got {args.seeds}")
    folder = args.output_dir or Path("runs") / f"{recipe.name}-board"
    results: list[dict[str, Any]] = []
    curves: dict[str, list[list[dict[str, Any]]]] = {}
    for algorithm in algorithms:
        for offset in range(args.seeds):
            variant = recipe.model_copy(update={"algorithm": algorithm, "seed": recipe.seed + offset})
            variant = FedRecipe.model_validate(variant.model_dump())
            run_dir = folder / f"{algorithm}-seed{variant.seed}"
            resume = (run_dir / "recipe.yaml").exists()
            if not args.quiet:
                console.print(f"{algorithm}, seed {variant.seed} → {run_dir}", highlight=False)
            began = time.perf_counter()

            def show(record: RoundRecord, rounds: int = variant.rounds) -> None:
                if not args.quiet:
                    console.print("  " + _round_line(record, rounds), highlight=False, markup=False)

            summary = run_federation(variant, run_dir, resume, args.engine, show, args.verbose)
            summary["wall_seconds"] = time.perf_counter() - began
            results.append(summary)
            curves.setdefault(algorithm, []).append(round_records(RunDirectory(run_dir)))
    title = f"{recipe.name}: per-prototype test accuracy"
    rows = write_board(folder, results, curves, title)
    console.print(board_markdown(rows, title), markup=False, highlight=False)
    console.print(f"board: {folder / 'board.md'}", highlight=False)
    return 0


def _rule_variant(recipe: GossipRecipe, name: str) -> GossipRecipe:
    """``linear``, ``power-P`` or ``hyperprism`` applied to ``recipe``."""
    from distill.federated.gossip import GossipRecipe

    aggregation = recipe.aggregation.model_dump()
    if name in ("linear", "hyperprism"):
        aggregation["rule"] = name
    elif name.startswith("power-"):
        try:
            aggregation.update(rule="power", degree=float(name.removeprefix("power-")))
        except ValueError:
            raise DistillError(f"--algorithms: '{name}' is not power-<degree> (e.g. power-3)") from None
    else:
        raise DistillError(
            f"--algorithms: unknown aggregation rule '{name}'; a decentralized recipe takes linear, "
            "power-<degree> (e.g. power-3) and hyperprism"
        )
    data = {**recipe.model_dump(), "aggregation": aggregation}
    from pydantic import ValidationError

    try:
        return GossipRecipe.model_validate(data)
    except ValidationError as error:
        raise DistillError(f"--algorithms {name}: {error.errors()[0]['msg']}") from None


def _decentralized(args: argparse.Namespace, recipe: GossipRecipe, path: Path, console: Console) -> int:
    """A gossip run, or (``--algorithms``) a board of aggregation rules over seeds."""
    from distill.fed.decentralized import gossip_board, run_gossip

    def show(record: GossipRound) -> None:
        if args.quiet or record.mean_accuracy is None or record.min_accuracy is None:
            return
        degrees = " ".join(f"{layer}:{degree:.2f}" for layer, degree in record.degrees.items())
        console.print(
            f"round {record.round}/{recipe.rounds}  mean {record.mean_accuracy:5.1f}  worst "
            f"{record.min_accuracy:5.1f}  links {record.links_up}  p[{degrees}]  {record.seconds:.1f} s",
            highlight=False,
            markup=False,
        )

    if args.algorithms is None:
        if args.seeds != 1:
            raise DistillError("--seeds: give --algorithms too (one run uses the recipe's seed)")
        run_dir = args.output_dir or _default_dir_named(f"{recipe.name}-{recipe.rule_name}", args.resume)
        if not args.quiet:
            console.print(
                f"decentralized recipe [bold]{recipe.name}[/] ({recipe.rule_name}) from {path} → {run_dir}"
            )
        summary = run_gossip(recipe, run_dir, args.resume, show)
        reached = summary["rounds_to_target"] or "not reached"
        console.print(
            f"best mean accuracy {summary['best_mean_accuracy']:.2f} %, "
            f"central {summary['central_accuracy']:.2f} %, "
            f"rounds to {summary['target_accuracy']:.2f} %: {reached}",
            highlight=False,
        )
        console.print(f"run directory: {run_dir}", highlight=False)
        return 0
    if args.seeds < 1:
        raise DistillError(f"--seeds: must be a positive integer, got {args.seeds}")
    names = [name.strip() for name in args.algorithms.split(",") if name.strip()]
    variants = [_rule_variant(recipe, name) for name in names]  # all checked before any run
    folder = args.output_dir or Path("runs") / f"{recipe.name}-board"
    results = []
    for variant in variants:
        for offset in range(args.seeds):
            seeded = variant.model_copy(update={"seed": recipe.seed + offset})
            run_dir = folder / f"{seeded.rule_name}-seed{seeded.seed}"
            if not args.quiet:
                console.print(f"{seeded.rule_name}, seed {seeded.seed} → {run_dir}", highlight=False)
            results.append(run_gossip(seeded, run_dir, (run_dir / "recipe.yaml").exists(), show))
    text = gossip_board(folder, results, f"{recipe.name}: decentralized aggregation rules")
    console.print(text, markup=False, highlight=False)
    console.print(f"board: {folder / 'board.md'}", highlight=False)
    return 0


def _default_dir_named(name: str, resume: bool) -> Path:
    from distill.report.rundir import default_run_dir, latest_run_dir

    return latest_run_dir(name) if resume else default_run_dir(name)
