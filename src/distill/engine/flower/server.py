"""The ``ServerApp`` factory: Flower calls ``main(grid, context)``; distill's round loop runs in it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from distill.engine.flower.transport import FlowerTransport
from distill.federated.server import Transport
from distill.federated.spec import FedRecipe

#: ``connect(recipe)`` gives the transport of this Flower run
Connect = Callable[[FedRecipe], Transport]
#: the application's session: given ``connect`` and the run config (``--run-config`` in a
#: deployment, empty in simulation), it loads the recipe and runs the rounds
Session = Callable[[Connect, Mapping[str, Any]], None]


def make_server_app(session: Session) -> ServerApp:
    """A ``ServerApp`` whose main runs ``session``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        session(lambda recipe: FlowerTransport.connect(grid, recipe), dict(context.run_config))

    return app
