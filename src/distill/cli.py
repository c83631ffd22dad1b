"""The ``distill`` command line: thin — it parses, calls the library, prints.

Every user error (:class:`~distill.errors.DistillError`) is printed as one message on stderr
with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from distill import __version__
from distill.errors import DistillError, StorageError
from distill.fed.command import add_fed_parser, command_fed
from distill.ground.command import add_ground_parser, command_ground
from distill.lmkd.command import add_lm_parser, command_lm
from distill.perceive.command import add_perceive_parser, command_perceive
from distill.shiftstudy.command import add_shift_parser, command_shift

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill",
        description="Teacher–student learning on PyTorch. Run `distill run` for the quickstart.",
    )
    parser.add_argument("--version", action="version", version=f"distill {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    plugins = argparse.ArgumentParser(add_help=False)
    plugins.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, so the models, datasets and methods it registers can be used",
    )
    plugins.add_argument(
        "--trust-factory",
        dest="trusted_factories",
        action="append",
        default=[],
        metavar="PACKAGE.MODULE:CALLABLE",
        help=(
            "let a checkpoint's metadata name this model factory (never imported otherwise; "
            "a recipe's own teacher.model needs no trust)"
        ),
    )

    run = commands.add_parser(
        "run", parents=[plugins], help="run a recipe (default: the built-in quickstart)"
    )
    run.add_argument(
        "recipe",
        nargs="?",
        default=None,
        help="a recipe .yaml file or a built-in recipe name (default: quickstart)",
    )
    run.add_argument("--output-dir", type=Path, default=None, help="run directory (default: runs/NAME-TIME)")
    add_overrides(run)
    run.add_argument("--resume", action="store_true", help="continue an interrupted run")
    run.add_argument("--quiet", action="store_true", help="print only the final table")

    export = commands.add_parser(
        "export", parents=[plugins], help="export a checkpoint to ONNX, check parity with PyTorch, time it"
    )
    export.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint written by distill")
    export.add_argument(
        "--format", choices=["onnx"], default="onnx", help="the file format to write (default: onnx)"
    )
    export.add_argument(
        "--output", type=Path, default=None, help="where to write (default: beside it, .onnx)"
    )
    export.add_argument(
        "--check",
        action="store_true",
        help="compare ONNX Runtime with PyTorch on sample inputs; refuse the export above --tolerance",
    )
    export.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |logit difference|")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    export.add_argument("--json", action="store_true", help="print the report as JSON")

    pareto = commands.add_parser(
        "pareto",
        parents=[plugins, seeded_runs("pareto", "the report")],
        help="Moonshine: cheap-convolution students of the teacher — accuracy vs params, MACs, latency",
    )
    pareto.add_argument(
        "--blocks",
        default="G2,G4,G8,B2,B4,BG2x4",
        help="cheap blocks G<groups>, B<bottleneck>, BG<bottleneck>x<groups> (default: G2,G4,G8,B2,B4,BG2x4)",
    )

    compare = commands.add_parser(
        "compare",
        parents=[plugins, seeded_runs("compare", "the leaderboard")],
        help="run several methods on the same student, data and budget over seeds; write a leaderboard",
    )
    compare.add_argument(
        "--methods",
        default="scratch,kd,dml,one,skd",
        help="comma-separated methods (default: scratch,kd,dml,one,skd)",
    )
    compare.add_argument(
        "--sweep",
        default=None,
        metavar="KEY.PATH=V1,V2,...",
        help="repeat the comparison for each value of a recipe field (e.g. data.pools.labeled=250,500,1000)",
    )
    compare.add_argument(
        "--tune",
        default=None,
        metavar="KEY.PATH=V1,V2,...",
        help="run the comparison for each value of a recipe field and report each method at the value "
        "with its best mean validation accuracy (e.g. train.optimizer.lr=0.01,0.03,0.1); "
        "the full grid goes to tune.md/.json",
    )

    search = commands.add_parser(
        "search",
        parents=[plugins],
        help="KD-Zero: evolve a distiller for the recipe's teacher–student pair (proxy runs in parallel)",
    )
    search.add_argument("recipe", nargs="?", default=None, help="a recipe (default: quickstart)")
    # unset options (None) take SearchSettings' defaults, named in the help texts
    search.add_argument("--generations", type=int, help="generations (default: 4)")
    search.add_argument("--population", type=int, help="candidates per generation (default: 8)")
    search.add_argument(
        "--budget",
        type=float,
        metavar="SECONDS",
        help="start no further generation after this many seconds (the first always runs)",
    )
    search.add_argument(
        "--backend",
        choices=["local", "ray"],
        help="local worker processes (default) or a Ray cluster",
    )
    search.add_argument(
        "--workers",
        type=int,
        help="parallel candidates (local processes or Ray CPUs; 0 = in this process; default: 2)",
    )
    search.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local one)")
    search.add_argument("--timeout", type=float, help="seconds per candidate before it is killed (600)")
    search.add_argument(
        "--proxy-epochs",
        type=int,
        help="epochs of a proxy run (default: a tenth of the student's, at least 2)",
    )
    search.add_argument("--proxy-fraction", type=float, help="share of the training split (0.5)")
    search.add_argument(
        "--rerank",
        type=int,
        metavar="K",
        help="train the K proxy-best candidates and KD with the full budget; keep the best on validation",
    )
    search.add_argument(
        "--ce-weight",
        type=float,
        help="weight of the cross-entropy next to each distiller (default: 1, KD-Zero's CE + distiller)",
    )
    search.add_argument(
        "--feature",
        dest="features",
        action="append",
        default=[],
        metavar="NAME=STUDENT_LAYER:TEACHER_LAYER",
        help="a feature pair distillers may use besides the logits (repeatable), e.g. f0=body.1:features.1",
    )
    search.add_argument(
        "--output-dir", type=Path, default=None, help="where the search goes (default: runs/NAME-search)"
    )
    add_overrides(search)
    search.add_argument("--quiet", action="store_true", help="print only the result")

    commands.add_parser(
        "list", parents=[plugins], help="list datasets, models, methods, losses and built-in recipes"
    )

    bench = commands.add_parser(
        "bench",
        help="time scratch, live-teacher KD, cached KD and a hand-written loop side by side; "
        "`bench comm`: BML vs PS vs ring gradient-synchronization model, and BML's measured overhead",
    )
    bench.add_argument(
        "suite",
        nargs="?",
        choices=("speed", "comm"),
        default="speed",
        help="speed (default): training speed and cache fidelity; comm: gradient synchronization",
    )
    sizes = bench.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="small sizes, under about 2 minutes")
    sizes.add_argument("--tiny", action="store_true", help="smallest sizes, for tests (numbers meaningless)")
    bench.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=(
            "timed epochs per variant, at least (short epochs are repeated until each variant "
            "is timed for 2 s in all; 0.5 s with --quick)"
        ),
    )
    bench.add_argument("--output-dir", type=Path, default=None, help="where bench.json/.md go")
    comm = bench.add_argument_group("comm", "options of `distill bench comm`")
    comm.add_argument("--bandwidth-gbps", type=float, default=10.0, help="link bandwidth (default 10)")
    comm.add_argument("--latency-us", type=float, default=5.0, help="per-message latency (default 5)")
    comm.add_argument("--model-only", action="store_true", help="only the analytic model; start no processes")

    summarize = commands.add_parser(
        "summarize", help="mean ± std of test accuracy over finished runs (e.g. several seeds)"
    )
    summarize.add_argument("runs", nargs="+", type=Path, help="run directories")
    summarize.add_argument("--json", action="store_true", help="print the aggregate as JSON")

    add_fed_parser(commands, [plugins])
    add_perceive_parser(commands, [plugins])
    add_ground_parser(commands, [plugins])
    add_lm_parser(commands, [plugins])
    add_shift_parser(commands, [plugins])

    evaluate = commands.add_parser("eval", parents=[plugins], help="evaluate a checkpoint on a data source")
    evaluate.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint written by distill")
    evaluate.add_argument(
        "--data",
        default=None,
        help="dataset name or .npz/.csv file (default: the data the checkpoint was trained on)",
    )
    evaluate.add_argument(
        "--split",
        choices=["test", "val", "train"],
        default=None,
        help=(
            "which split of a dataset (or, without --data, of the training data) to evaluate "
            "(default: test); a file given to --data is always evaluated whole"
        ),
    )
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    return parser


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """``--set KEY.PATH=VALUE`` (repeatable): override a recipe field before validation."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a recipe field, e.g. --set train.epochs=5 --set students[0].model.hidden=[64]",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        metavar="N",
        help="train every model (teacher and students) for N epochs: a quick try of any recipe "
        "(--set options given too are applied after it)",
    )


def seeded_runs(command: str, product: str) -> argparse.ArgumentParser:
    """The options of commands that run a recipe over several seeds into one directory."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "recipe", nargs="?", default=None, help="recipe .yaml or built-in name (default: quickstart)"
    )
    options.add_argument("--seeds", type=int, default=3, help="number of seeds (recipe seed, +1, ...)")
    options.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help=f"where the runs go (default: runs/NAME-{command}; re-running continues it)",
    )
    add_overrides(options)
    options.add_argument("--quiet", action="store_true", help=f"print only {product}")
    return options


def main(argv: list[str] | None = None) -> int:
    # as `python -m distill` does: modules in the working directory (--plugin, a recipe's
    # `package.module:callable` model) are importable; the console script would not see them
    with contextlib.suppress(OSError):
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
    parser = build_parser()
    args = parser.parse_args(argv)
    # not a terminal (CI logs, `| tee`): no wrapping or cropping of long lines and tables
    console = Console(
        stderr=False, soft_wrap=not sys.stdout.isatty(), width=None if sys.stdout.isatty() else 10**5
    )
    errors = Console(
        stderr=True, soft_wrap=not sys.stderr.isatty(), width=None if sys.stderr.isatty() else 10**5
    )
    if args.command is None:
        args = parser.parse_args(["run", *(argv if argv is not None else sys.argv[1:])])
    try:
        if getattr(args, "epochs", None) is not None:
            args.overrides = budget_overrides(args.recipe, args.epochs) + args.overrides
        if hasattr(args, "plugins"):
            import_plugins(args.plugins)
            if args.trusted_factories:
                from distill.models.imported import trust_factories

                trust_factories(args.trusted_factories)
        return COMMANDS[args.command](args, console)
    except DistillError as error:
        # Under torchrun every rank meets the same bad input (rank 0's run-directory decisions
        # are broadcast); one message is enough, and every rank still exits with status 2.
        if os.environ.get("RANK", "0") == "0":
            # escaped: a path like data/[raw]/x.npz is text, not markup
            errors.print(
                f"[bold red]error:[/] {escape(str(error))}", markup=True, highlight=False, soft_wrap=True
            )
        return EXIT_USER_ERROR
    except OSError as error:  # an OS fault no library layer named: still one line, still status 2
        where = f"{error.filename}: " if error.filename else ""
        message = f"error: {where}{error.strerror or error}"
        errors.print(message, markup=False, highlight=False, soft_wrap=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        given = list(argv if argv is not None else sys.argv[1:])
        errors.print(interrupted_hint(args.command, given), markup=False, highlight=False, soft_wrap=True)
        return 130


def interrupted_hint(command: str, given: list[str]) -> str:
    """What to type after Ctrl-C to continue ``command`` (run with the arguments ``given``)."""
    again = given if given[:1] == [command] else [command, *given]
    if command == "run" or (command == "fed" and "--algorithms" not in again):
        resume = again if "--resume" in again else [*again, "--resume"]
        return f"interrupted; continue with `{shlex.join(['distill', *resume])}`"
    line = shlex.join(["distill", *again])
    if command == "fed":
        return (
            f"interrupted; run the same command again to continue: `{line}` (finished runs are "
            "reused, an interrupted one resumes after its last finished round)"
        )
    if command in ("perceive", "ground", "lm"):
        return (
            f"interrupted; run the same command again to continue: `{line}` (finished models are "
            "reused; the interrupted one trains again)"
        )
    if command == "shift":
        return (
            f"interrupted; run the same command again to continue: `{line}` (the splits and finished "
            "seeds are reused, an interrupted seed resumes from its last completed epoch)"
        )
    if command in ("compare", "pareto"):
        return (
            f"interrupted; run the same command again to continue: `{line}` (finished seeds are "
            "reused, an interrupted one resumes from its last completed epoch)"
        )
    if command == "search":
        return (
            f"interrupted; run the same command again to continue: `{line}` (the teacher and the "
            "candidates already in its log.jsonl are not trained again)"
        )
    return "interrupted"


def budget_overrides(recipe: str | None, epochs: int) -> list[str]:
    """``--epochs N`` as the ``--set`` assignments it stands for (see
    :func:`distill.config.epochs_overrides`); N is checked here, by the option's name."""
    from distill.schema import MAX_EPOCHS

    if not 1 <= epochs <= MAX_EPOCHS:
        raise DistillError(f"--epochs: must be from 1 to {MAX_EPOCHS}, got {epochs}")
    from distill.config import epochs_overrides

    return epochs_overrides(recipe, epochs)


def import_plugins(modules: list[str]) -> None:
    """Import user modules that register models, datasets or methods. This happens before
    :mod:`distill.config` is imported, since the recipe schema is assembled from the registries
    at that import."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise DistillError(f"--plugin {module}: cannot import it ({error})") from None


def _log_to(console: Console, level: int) -> None:
    """Send the library's ``distill`` log records to ``console`` (stderr), once."""
    logger = logging.getLogger("distill")
    logger.setLevel(level)
    if not any(getattr(handler, "distill_cli", False) for handler in logger.handlers):
        handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
        handler.distill_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def command_run(args: argparse.Namespace, console: Console) -> int:
    from distill.config import load_recipe
    from distill.engine.distributed import is_main_process
    from distill.report import default_run_dir, latest_run_dir, print_results
    from distill.report.progress import RunProgress
    from distill.runner import RecipeRunner

    main_process = is_main_process()  # under torchrun, only rank 0 prints progress and results
    if not main_process:
        console = Console(quiet=True)
    _log_to(Console(stderr=True), logging.WARNING if args.quiet or not main_process else logging.INFO)
    recipe, path = load_recipe(args.recipe, args.overrides)
    if args.output_dir is not None:
        run_dir = args.output_dir
    elif args.resume:
        run_dir = latest_run_dir(recipe.name)
    else:
        run_dir = default_run_dir(recipe.name)
    if not args.quiet:
        console.print(f"recipe [bold]{recipe.name}[/] from {path} → {run_dir}", highlight=False)
    with RunProgress(console, enabled=not args.quiet) as progress:
        runner = RecipeRunner(
            recipe,
            run_dir,
            resume=args.resume,
            on_epoch_end=progress.epoch_end,
            on_model_start=progress.model_start,
        )
        try:
            summary = runner.execute()
        except StorageError as error:
            if not runner.run.recipe_path.exists():
                raise
            again = ["distill", "run", args.recipe or "quickstart", "--output-dir", str(run_dir), "--resume"]
            again += [part for item in args.overrides for part in ("--set", item)]
            raise StorageError(
                f"{error}\nevery completed epoch is kept in {run_dir}; once the cause is fixed "
                f"(e.g. space freed), continue with: {shlex.join(again)}",
                error.errno,
            ) from None
    print_results(summary, console)
    console.print(f"run directory: {run_dir}", highlight=False)
    return 0


def command_compare(args: argparse.Namespace, console: Console) -> int:
    from distill.compare import (
        Comparison,
        parse_methods,
        parse_sweep,
        parse_tune,
        run_comparison,
        run_sweep,
        run_tune,
    )
    from distill.config import load_recipe
    from distill.report.progress import RunProgress

    _log_to(Console(stderr=True), logging.WARNING if args.quiet else logging.INFO)
    if args.seeds < 1:
        raise DistillError(f"--seeds must be a positive integer, got {args.seeds}")
    if args.sweep and args.tune:
        raise DistillError(
            "--tune and --sweep cannot be combined: --sweep reports every value, --tune one value per "
            "method chosen on the validation split; run them as two commands"
        )
    sweep = parse_sweep(args.sweep) if args.sweep else None
    tune = parse_tune(args.tune) if args.tune else None
    recipe, path = load_recipe(args.recipe, args.overrides)
    methods = parse_methods(args.methods, tuple(student.name for student in recipe.students))
    suffix = f"-sweep-{sweep[0]}" if sweep else f"-tune-{tune[0]}" if tune else "-compare"
    output_dir = args.output_dir or Path("runs") / f"{recipe.name}{suffix}"
    comparison = Comparison(recipe, methods, args.seeds, output_dir)
    if not args.quiet:
        console.print(
            f"comparing {', '.join(methods)} on [bold]{recipe.name}[/] from {path}, "
            f"{args.seeds} seed(s) → {output_dir}",
            highlight=False,
        )

    def seed_start(seed: int, run_dir: Path, finished: bool) -> None:
        if not args.quiet:
            state = "finished, reused" if finished else "running"
            console.print(f"seed {seed}: {run_dir} ({state})", highlight=False)

    with RunProgress(console, enabled=not args.quiet) as progress:
        if sweep is not None:
            board = run_sweep(
                args.recipe,
                args.overrides,
                sweep,
                methods,
                args.seeds,
                output_dir,
                progress.epoch_end,
                progress.model_start,
                seed_start,
            )
            console.print(board.markdown(), highlight=False, markup=False)
            console.print(f"sweep: {output_dir}/sweep.md, .json, .png", highlight=False)
            return 0
        if tune is not None:
            tuned = run_tune(
                args.recipe,
                args.overrides,
                tune,
                methods,
                args.seeds,
                output_dir,
                progress.epoch_end,
                progress.model_start,
                seed_start,
            )
            console.print(tuned.selected().markdown(), highlight=False, markup=False)
            console.print(
                f"leaderboard: {output_dir}/leaderboard.md, .json, .png; every value: {output_dir}/tune.md, "
                ".json",
                highlight=False,
            )
            return 0
        leaderboard = run_comparison(comparison, progress.epoch_end, progress.model_start, seed_start)
    console.print(leaderboard.markdown(), highlight=False, markup=False)
    console.print(f"leaderboard: {output_dir}/leaderboard.md, .json, .png", highlight=False)
    return 0


def command_search(args: argparse.Namespace, console: Console) -> int:
    from pydantic import ValidationError

    from distill.config import load_recipe
    from distill.search.engine import DistillerSearch, GenerationReport, SearchSettings

    recipe, path = load_recipe(args.recipe, args.overrides)
    try:
        options = {name: getattr(args, name) for name in SEARCH_OPTIONS if getattr(args, name) is not None}
        # dicts that SearchSettings validates into FeatureKnowledgeSpec
        features: list[Any] = [parse_feature(text) for text in args.features]
        settings = SearchSettings(**options, features=features)
    except ValidationError as error:
        raise DistillError(
            search_option_errors(error, {**options, "features": features}, args.features)
        ) from None
    output_dir = args.output_dir or Path("runs") / f"{recipe.name}-search"
    if not args.quiet:
        console.print(
            f"searching distillers for [bold]{recipe.name}[/] from {path}: {settings.generations} "
            f"generations × {settings.population}, backend {settings.backend} → {output_dir}",
            highlight=False,
        )

    live = console.status("training the teacher, scoring the references, generation 1…")
    status = live if console.is_terminal and not args.quiet else None

    def report(generation: GenerationReport) -> None:
        if status is not None and generation.generation + 1 < generation.generations:
            status.update(f"generation {generation.generation + 2}/{generation.generations}: training…")
        if args.quiet:
            return
        best = "—" if generation.best is None else f"{generation.best:.2f}"
        median = "—" if generation.median is None else f"{generation.median:.2f}"
        console.print(
            f"generation {generation.generation + 1}/{generation.generations}: best {best}, median {median} "
            f"(val %), {generation.trained} trained, {generation.rejected} rejected, "
            f"{generation.per_minute:.1f} candidates/min",
            highlight=False,
        )

    with status if status is not None else contextlib.nullcontext():
        summary = DistillerSearch(recipe, settings, output_dir, report).run()
    best = summary["best"]
    if best["selected_by"] == "rerank":
        for row in summary["reranked"]:
            score = "failed" if row["fitness"] is None else f"{row['fitness']:.2f}"
            label = "KD (reference)" if row["reference"] else row["formula"]
            console.print(f"full budget, val {score}: {label}", highlight=False, markup=False)
    kd_note = "  (the KD reference: no candidate beat it at the full budget)"
    references = ", ".join(
        f"{name} {value['fitness']:.2f}"
        for name, value in summary["references"].items()
        if value["fitness"] is not None
    )
    console.print(
        f"best distiller ({'full-budget' if best['selected_by'] == 'rerank' else 'proxy'} val "
        f"{best['fitness']:.2f}%; proxy references: {references}):\n"
        f"  {ce_term(settings.ce_weight)}{best['formula']}"
        f"{kd_note if best['is_kd_reference'] else ''}\n"
        f"{summary['candidates']} candidates, {summary['trained']} trained, {summary['rejected_share']:.0%} "
        f"rejected, {summary['wall_seconds']:.0f} s\n"
        f"train it: distill run {output_dir}/best_recipe.yaml  "
        f"(log: {output_dir}/log.jsonl, plot: fitness.png)",
        highlight=False,
        markup=False,
    )
    return 0


def ce_term(weight: float) -> str:
    """How the cross-entropy beside every candidate distiller is written before its formula."""
    if weight == 0:
        return ""
    return "CE + " if weight == 1 else f"{weight:g}·CE + "


def search_option_errors(error: Any, data: dict[str, Any], features: list[str]) -> str:
    """The :class:`~distill.search.engine.SearchSettings` validation ``error`` of ``data`` (the
    options as validated), worded as the recipe's are but naming the options as typed
    (``features``: the ``--feature`` texts): ``--population: must be at least 2, got 0``."""
    from distill.config import format_validation_error

    lines = []
    for line in format_validation_error(error, data, "search").splitlines():
        if not line.startswith("search: "):
            lines.append(line)  # "... and N more problems"
            continue
        location, _, message = line.removeprefix("search: ").partition(": ")
        field = location.split(".")[0].split("[")[0]
        if field == "features" and "[" in location:
            index = int(location.split("[")[1].split("]")[0])
            rest = location.partition("]")[2].lstrip(".")
            option = f"--feature {features[index]}" + (f": {rest}" if rest else "")
        else:
            option = f"--{field.replace('_', '-')}"
        lines.append(f"{option}: {message}")
    return "\n".join(lines)


#: The ``distill search`` options that are :class:`~distill.search.engine.SearchSettings` fields.
SEARCH_OPTIONS = (
    "generations",
    "population",
    "budget",
    "backend",
    "workers",
    "address",
    "timeout",
    "proxy_epochs",
    "proxy_fraction",
    "ce_weight",
    "rerank",
)


def parse_feature(text: str) -> dict[str, str]:
    """``"f0=body.1:features.1"`` → ``{"name": "f0", "student": "body.1", "teacher": "features.1"}``."""
    name, _, layers = text.partition("=")
    student, _, teacher = layers.partition(":")
    if not (name and student and teacher):
        raise DistillError(f"--feature: expected NAME=STUDENT_LAYER:TEACHER_LAYER, got '{text}'")
    return {"name": name, "student": student, "teacher": teacher}


def command_export(args: argparse.Namespace, console: Console) -> int:
    from distill.export import export_onnx

    report = export_onnx(
        args.checkpoint, args.output, check=args.check, tolerance=args.tolerance, overwrite=args.overwrite
    )
    if args.json:
        console.print_json(json.dumps(report))
        return 0
    inputs = ", int64 token-id inputs" if report["input_dtype"] == "int64" else ""
    console.print(
        f"{report['output']}: {report['onnx_bytes'] / 1024:.1f} KiB, {report['parameters']:,} parameters"
        f"{inputs}",
        highlight=False,
    )
    if "parity_max_abs_diff" in report:
        console.print(
            f"parity with PyTorch on {report['parity_inputs']}: max |Δlogit| "
            f"{report['parity_max_abs_diff']:.2e}, "
            f"argmax agreement {100 * report['parity_argmax_agreement']:.1f}%",
            highlight=False,
        )
    latency = report["latency"]
    console.print(
        "median latency (ms) — ONNX Runtime: batch 1 {:.3f}, batch 64 {:.3f}; PyTorch: batch 1 {:.3f}, "
        "batch 64 {:.3f}".format(
            latency["onnxruntime_batch1_ms"],
            latency["onnxruntime_batch64_ms"],
            latency["pytorch_batch1_ms"],
            latency["pytorch_batch64_ms"],
        ),
        highlight=False,
    )
    return 0


def command_pareto(args: argparse.Namespace, console: Console) -> int:
    from distill.config import load_recipe
    from distill.pareto import pareto_markdown, parse_settings, run_pareto
    from distill.report.progress import RunProgress

    _log_to(Console(stderr=True), logging.WARNING if args.quiet else logging.INFO)
    if args.seeds < 1:
        raise DistillError(f"--seeds must be a positive integer, got {args.seeds}")
    settings = parse_settings(args.blocks)
    recipe, path = load_recipe(args.recipe, args.overrides)
    output_dir = args.output_dir or Path("runs") / f"{recipe.name}-pareto"
    if not args.quiet:
        console.print(
            f"cheap students ({', '.join(s.label for s in settings)}) of [bold]{recipe.name}[/]'s teacher "
            f"from {path}, {args.seeds} seed(s) → {output_dir}",
            highlight=False,
        )
    with RunProgress(console, enabled=not args.quiet) as progress:
        points = run_pareto(
            recipe, settings, args.seeds, output_dir, progress.epoch_end, progress.model_start
        )
    seeds = [recipe.seed + offset for offset in range(args.seeds)]
    console.print(pareto_markdown(points, recipe.name, seeds), highlight=False, markup=False)
    console.print(f"report: {output_dir}/pareto.md, .json, .png", highlight=False)
    return 0


def command_list(args: argparse.Namespace, console: Console) -> int:
    from rich.table import Table

    from distill.config import builtin_recipe_names
    from distill.data import DATASETS
    from distill.losses import LOSSES
    from distill.losses.distiller import DISTANCES, TRANSFORMS
    from distill.methods import METHODS
    from distill.methods.terms import TERMS
    from distill.models import MODELS
    from distill.registry import Registry

    registries: list[tuple[str, Registry[Any]]] = [
        ("datasets", DATASETS),
        ("models", MODELS),
        ("methods", METHODS),
        ("losses", LOSSES),
        ("loss terms (method kd's terms:)", TERMS),
        ("distiller transforms (distill search)", TRANSFORMS),
        ("distiller distances (distill search)", DISTANCES),
    ]
    for title, registry in registries:
        table = Table(title=title, show_header=False, title_justify="left")
        for entry in registry:
            table.add_row(entry.name, entry.description)
        console.print(table)
    console.print("recipes: " + ", ".join(builtin_recipe_names()))
    console.print("models can also be any factory: name: 'package.module:callable' with kwargs")
    return 0


def command_bench(args: argparse.Namespace, console: Console) -> int:
    import time

    from distill.bench import markdown_report, run_bench, write_report

    if args.repeats is not None and args.repeats < 1:
        raise DistillError(f"--repeats must be a positive integer, got {args.repeats}")
    if args.suite == "comm":
        return _bench_comm(args, console)
    output_dir = args.output_dir or Path("runs") / f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    scale = "quick" if args.quick else "tiny" if args.tiny else "full"
    console.print(f"benchmarking ({scale}) → {output_dir}", highlight=False)
    result = run_bench(scale, args.repeats, lambda line: console.print(line, highlight=False, markup=False))
    json_path, markdown_path = write_report(result, output_dir)
    console.print(markdown_report(result), highlight=False, markup=False)
    console.print(f"wrote {json_path} and {markdown_path}", highlight=False)
    return 0


def _bench_comm(args: argparse.Namespace, console: Console) -> int:
    import time

    from distill.bench.comm import Network
    from distill.bench.comm_report import MEASURED, comm_markdown, run_comm, write_comm_report

    try:
        network = Network(args.bandwidth_gbps, args.latency_us)
    except ValueError as error:
        raise DistillError(f"--bandwidth-gbps/--latency-us: {error}") from None
    output_dir = args.output_dir or Path("runs") / f"comm-{time.strftime('%Y%m%d-%H%M%S')}"
    repeats = args.repeats or (2 if args.tiny else 5 if args.quick else 20)
    layouts = MEASURED[:1] if args.tiny else MEASURED
    console.print(f"gradient-synchronization model and measurement → {output_dir}", highlight=False)
    result = run_comm(
        network,
        measure=not args.model_only,
        repeats=repeats,
        layouts=layouts,
        max_servers=256 if args.tiny else 4096,
        on_progress=lambda line: console.print(line, highlight=False, markup=False),
    )
    paths = write_comm_report(result, output_dir)
    console.print(comm_markdown(result), highlight=False, markup=False)
    console.print("wrote " + ", ".join(str(path) for path in paths), highlight=False)
    return 0


def command_summarize(args: argparse.Namespace, console: Console) -> int:
    from distill.report.seeds import aggregate_runs, aggregate_table

    aggregate = aggregate_runs(args.runs)
    if args.json:
        console.print_json(json.dumps(aggregate))
    else:
        console.print(aggregate_table(aggregate))
    return 0


def command_eval(args: argparse.Namespace, console: Console) -> int:
    from distill.evaluation import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.data, args.split)
    if args.json:
        console.print_json(json.dumps(metrics))
    else:
        _print_eval(metrics, console)
    return 0


def _print_eval(metrics: dict[str, Any], console: Console) -> None:
    samples = metrics["samples"]
    if metrics["source"] == "file":
        on = f"{metrics['data']} (all {samples} samples)"
    elif metrics["source"] == "trained-on":
        kind = "" if metrics["dataset"] == metrics["data"] else f"{metrics['dataset']} "
        on = (
            f"the {metrics['split']} split of the data it was trained on "
            f"({kind}{metrics['data']}, {samples} samples)"
        )
    else:
        on = f"the {metrics['split']} split of {metrics['data']} ({samples} samples)"
    console.print(
        f"{metrics['checkpoint']} on {on}: accuracy {100 * metrics['accuracy']:.2f}%, "
        f"loss {metrics['loss']:.4f}, ECE {metrics['ece']:.4f}",
        highlight=False,
        markup=False,
    )


#: Each subcommand's handler: ``handler(args, console) -> exit status``.
COMMANDS = {
    "run": command_run,
    "compare": command_compare,
    "export": command_export,
    "pareto": command_pareto,
    "search": command_search,
    "list": command_list,
    "eval": command_eval,
    "bench": command_bench,
    "summarize": command_summarize,
    "fed": command_fed,
    "perceive": command_perceive,
    "ground": command_ground,
    "lm": command_lm,
    "shift": command_shift,
}


if __name__ == "__main__":
    raise SystemExit(main())
