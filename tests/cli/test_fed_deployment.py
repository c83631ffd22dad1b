"""A real deployment on localhost: a SuperLink and one SuperNode per client as separate
processes, a run submitted with ``flwr run``. One node's storage is broken, so its client fails
every round: the federation goes on without its update, as the in-process run without it does."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from distill.fed.loop import load_round_checkpoint, round_records, run_rounds
from distill.federated.inprocess import InProcessTransport
from distill.federated.server import ClientRef
from distill.federated.spec import FedRecipe
from distill.report.rundir import RunDirectory
from tests.federated.conftest import TINY

APP = Path(__file__).resolve().parents[2] / "flower-app"
pytestmark = pytest.mark.skipif(shutil.which("flower-superlink") is None, reason="Flower is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {seconds} s")


def stop(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):  # SuperNodes first, the SuperLink last
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_deployed_federation_survives_a_failing_client(tmp_path):
    recipe_data = {**TINY, "rounds": 2, "timeout_s": 120}
    recipe_path = tmp_path / "fed.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe_data))
    run_dir = tmp_path / "deployed"
    home, cache = tmp_path / "flwr-home", tmp_path / "cache"
    home.mkdir()
    cache.mkdir()
    broken_cache = tmp_path / "not-a-directory"
    broken_cache.write_text("")  # the failing node cannot write its data cache here
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "DISTILL_CACHE": str(cache),
    }  # thread counts as this process has them: the server computes as the in-process run below
    link = free_port()
    connection = f'[superlink.local]\naddress = "127.0.0.1:{link}"\ninsecure = true\n'
    (home / "config.toml").write_text(f'[superlink]\ndefault = "local"\n\n{connection}')
    logs = tmp_path / "logs"
    logs.mkdir()
    processes: list[subprocess.Popen] = []

    def start(name: str, command: list[str], environment: dict[str, str]) -> None:
        with (logs / f"{name}.log").open("w") as log:
            processes.append(
                subprocess.Popen(
                    command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )

    started = time.monotonic()
    try:
        start(
            "superlink",
            [
                "flower-superlink",
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(link),
                "--isolation",
                "subprocess",
                "--disable-runtime-dependency-installation",
            ],
            env,
        )
        wait_for_port(link, 60)
        for partition in range(3):  # small: clients 0 and 1; large: client 0
            node_env = {**env, "DISTILL_CACHE": str(broken_cache)} if partition == 1 else env
            start(
                f"supernode{partition}",
                [
                    "flower-supernode",
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{link}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(free_port()),
                    "--node-config",
                    f"partition-id={partition} num-partitions=3",
                ],
                node_env,
            )
        submitted = subprocess.run(
            [
                "flwr",
                "run",
                str(APP),
                "local",
                "--stream",
                "--run-config",
                f"recipe='{recipe_path}' run-dir='{run_dir}'",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    finally:
        stop(processes)
    seconds = time.monotonic() - started
    print(f"deployment: {seconds:.1f} s from SuperLink start to the last round")

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["prototypes"]["small"]["missed_replies"] == 2
    deployed = round_records(RunDirectory(run_dir))
    for record in deployed:
        small, large = record["prototypes"]
        assert small["replied"] == [0] and small["missing"]["1"].startswith("failed:")
        assert large["replied"] == [0] and not large["missing"]

    # the same federation in one process, without client 1 of the small prototype
    recipe = FedRecipe.model_validate(recipe_data)
    local = RunDirectory(tmp_path / "local")
    local.open(recipe.model_dump(mode="json"), resume=False)
    run_rounds(recipe, local, InProcessTransport(recipe, unreachable=frozenset({ClientRef(0, 1)})))
    for there, here in zip(deployed, round_records(local), strict=True):
        for a, b in zip(there["prototypes"], here["prototypes"], strict=True):
            assert (a["averaged_accuracy"], a["merged_accuracy"], a["lambdas"]) == (
                b["averaged_accuracy"],
                b["merged_accuracy"],
                b["lambdas"],
            )
    mine, theirs = (
        load_round_checkpoint(local)["states"],
        load_round_checkpoint(RunDirectory(run_dir))["states"],
    )
    assert all(torch.equal(a[key], b[key]) for a, b in zip(mine, theirs, strict=True) for key in a)
