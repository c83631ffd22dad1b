"""One federated run from recipe to run directory, on Flower's simulation or in-process."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from distill.fed.board import plot_rounds
from distill.fed.loop import finished_summary, round_records, run_rounds
from distill.federated.server import RoundRecord
from distill.federated.setting import setting_for
from distill.federated.spec import FedRecipe
from distill.report.rundir import RunDirectory

Engine = Literal["simulation", "inprocess"]


def open_run(recipe: FedRecipe, path: Path, resume: bool) -> RunDirectory:
    """Create ``path`` for a new run, or check that ``resume`` continues the same recipe there."""
    run = RunDirectory(path)
    run.open(recipe.model_dump(mode="json"), resume)
    return run


def finish_run(recipe: FedRecipe, run: RunDirectory) -> None:
    records = round_records(run)
    if records:
        plot_rounds(records, run.path / "accuracy.png", f"{recipe.name}: {recipe.algorithm}")


def run_federation(
    recipe: FedRecipe,
    path: Path,
    resume: bool = False,
    engine: Engine = "simulation",
    on_round: Callable[[RoundRecord], None] | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run ``recipe`` into ``path``; returns the summary. Everything the recipe's data decides
    (shares, clients) is checked before the run directory is made."""
    setting_for(recipe)  # refuses a share too small for its clients, before anything starts
    run = open_run(recipe, path, resume)
    try:
        stored = finished_summary(run)
        if stored is not None:
            return stored
        summary: dict[str, Any]
        if engine == "inprocess":
            from distill.federated.inprocess import InProcessTransport

            summary = run_rounds(recipe, run, InProcessTransport(recipe), on_round)
        else:
            summary = _simulate(recipe, run, on_round, verbose)
        finish_run(recipe, run)
        return summary
    finally:
        run.close()


def _simulate(
    recipe: FedRecipe, run: RunDirectory, on_round: Callable[[RoundRecord], None] | None, verbose: bool
) -> dict[str, Any]:
    from distill.engine.flower import require_flower

    require_flower()
    from distill.engine.flower.client import make_client_app
    from distill.engine.flower.server import Connect, make_server_app
    from distill.engine.flower.simulation import simulate

    outcome: dict[str, Any] = {}

    def session(connect: Connect, _: Any) -> None:
        try:
            outcome["summary"] = run_rounds(recipe, run, connect(recipe), on_round)
        except BaseException as error:  # carried out of Flower's thread, raised below
            outcome["error"] = error

    nodes = sum(prototype.clients for prototype in recipe.prototypes)
    simulate(make_server_app(session), make_client_app(), nodes, os.cpu_count() or 1, verbose)
    if "error" in outcome:
        raise outcome["error"]
    if "summary" not in outcome:
        from distill.errors import DistillError

        raise DistillError("the Flower simulation ended before the federation finished (see its log above)")
    summary: dict[str, Any] = outcome["summary"]
    return summary
