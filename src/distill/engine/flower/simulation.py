"""Flower's simulation runtime on this machine: one virtual SuperNode per client, on Ray."""

from __future__ import annotations

import logging
import os
from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp


def quiet_flower() -> None:
    """Keep Flower's and Ray's console logging to errors (distill reports the rounds itself)."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from flwr.supercore.logger import update_console_handler

    update_console_handler(level=logging.ERROR)


def simulate(
    server_app: ServerApp, client_app: ClientApp, nodes: int, cpus: int, verbose: bool = False
) -> None:
    """Run ``server_app`` against ``nodes`` virtual SuperNodes; each ``ClientApp`` call takes one
    of ``cpus`` CPUs (so up to ``cpus`` clients train at once)."""
    from flwr.simulation import run_simulation

    if not verbose:
        quiet_flower()
    backend: dict[str, Any] = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": cpus,
            "num_gpus": 0,
            "logging_level": "ERROR",
            "log_to_driver": verbose,
            "include_dashboard": False,
        },
    }
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=nodes,
        backend_config=backend,
        verbose_logging=verbose,
    )
