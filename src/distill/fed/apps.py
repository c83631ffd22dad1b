"""The Flower components a deployment names (``flwr run`` reads them from ``flower-app/``).

``server_app`` reads the recipe and run directory from the run config::

    flwr run flower-app local --run-config "recipe='fed-tiny' run-dir='runs/fed-deploy'"

(``resume=true`` continues an interrupted run), and runs the same round loop as
``distill fed``. ``client_app`` is the node side (:mod:`distill.engine.flower.client`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distill.engine.flower.client import make_client_app
from distill.engine.flower.server import Connect, make_server_app
from distill.errors import DistillError
from distill.fed.loop import run_rounds
from distill.fed.recipes import load_fed_recipe
from distill.fed.session import finish_run, open_run
from distill.federated.spec import FedRecipe


def deployment_session(connect: Connect, run_config: Mapping[str, Any]) -> None:
    """Load ``run_config['recipe']``, open ``run_config['run-dir']`` and run every round."""
    if "recipe" not in run_config or "run-dir" not in run_config:
        raise DistillError("the run config needs 'recipe' and 'run-dir' (flwr run … --run-config)")
    recipe, _ = load_fed_recipe(str(run_config["recipe"]))
    if not isinstance(recipe, FedRecipe):
        raise DistillError(
            f"{run_config['recipe']}: a decentralized recipe runs with `distill fed`, not on a SuperLink"
        )
    run = open_run(recipe, Path(str(run_config["run-dir"])), bool(run_config.get("resume", False)))
    try:
        run_rounds(recipe, run, connect(recipe))
        finish_run(recipe, run)
    finally:
        run.close()


server_app = make_server_app(deployment_session)
client_app = make_client_app()
