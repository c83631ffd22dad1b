"""The server's round loop: resume, run each round, record it, checkpoint it.

Run directory (a :class:`~distill.report.rundir.RunDirectory`)::

    RUN/recipe.yaml      the resolved recipe
    RUN/metrics.jsonl    one line per finished round (``model: federation``, ``epoch``: round)
    RUN/checkpoint.pt    after each round: every θ_i, λ history, the round (atomic)
    RUN/summary.json     when the last round has finished
    RUN/accuracy.png     accuracy per round per prototype (averaged and merged)

Randomness is derived from ``(seed, round, …)`` (see :mod:`distill.federated.server`), so the
checkpoint needs no generator states: a resumed run repeats the uninterrupted run exactly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from distill.engine.checkpoint import atomic_torch_save
from distill.errors import CheckpointError, RunDirectoryError
from distill.federated.server import Federation, RoundRecord, Transport
from distill.federated.spec import FedRecipe
from distill.files import read_json_object
from distill.report.rundir import RunDirectory

LOG = logging.getLogger("distill")
FORMAT = "distill-fed-checkpoint/1"
#: the ``model`` field of round records in ``metrics.jsonl``
RECORD_MODEL = "federation"


def checkpoint_path(run: RunDirectory) -> Path:
    return run.path / "checkpoint.pt"


def save_round_checkpoint(run: RunDirectory, finished_rounds: int, federation: Federation) -> None:
    payload = {"format": FORMAT, "rounds": finished_rounds, **federation.snapshot()}
    atomic_torch_save(checkpoint_path(run), payload)


def load_round_checkpoint(run: RunDirectory) -> dict[str, Any] | None:
    """The last federated checkpoint, or ``None`` if the run has finished no round yet."""
    return load_checkpoint(checkpoint_path(run), FORMAT, "federated")


def load_checkpoint(path: Path, expected: str, what: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` written in format ``expected``, or ``None`` if there is none.
    Loaded with ``weights_only``: tensors and plain containers only, never code."""
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable {what} checkpoint ({error})") from None
    if not isinstance(payload, dict) or payload.get("format") != expected:
        raise CheckpointError(f"{path}: not a distill {what} checkpoint (expected format {expected})")
    return payload


def finished_summary(run: RunDirectory) -> dict[str, Any] | None:
    """The summary of a run that has finished (``None`` while it has not)."""
    if not run.summary_path.exists():
        return None
    return read_json_object(run.summary_path, "run summary", RunDirectoryError)


def round_records(run: RunDirectory) -> list[dict[str, Any]]:
    return [record for record in run.read_metrics() if record.get("model") == RECORD_MODEL]


def run_rounds(
    recipe: FedRecipe,
    run: RunDirectory,
    transport: Transport,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> dict[str, Any]:
    """Run the rounds the checkpoint in ``run`` has not finished; returns the summary.

    ``run`` must be open (created, or checked for ``--resume``).
    """
    federation = Federation(recipe)
    snapshot = load_round_checkpoint(run)
    start = 0
    if snapshot is not None:
        federation.restore(snapshot)
        start = int(snapshot["rounds"])
        LOG.info("resuming %s after round %d of %d", run.path, start, recipe.rounds)
    run.keep_metrics_until(RECORD_MODEL, start)  # rounds recorded after the last checkpoint
    began = time.perf_counter()
    for round_index in range(start, recipe.rounds):
        record = federation.run_round(round_index, transport)
        run.append_metrics({"model": RECORD_MODEL, "epoch": round_index + 1, **record.to_json()})
        save_round_checkpoint(run, round_index + 1, federation)
        if on_round is not None:
            on_round(record)
    summary = summarize(recipe, round_records(run), time.perf_counter() - began)
    run.write_summary(summary)
    return summary


def summarize(recipe: FedRecipe, records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Final accuracies per prototype (averaged and merged model), traffic and time."""
    last = records[-1]
    prototypes = {}
    for index, prototype in enumerate(recipe.prototypes):
        mine = [record["prototypes"][index] for record in records]
        prototypes[prototype.name] = {
            "model": prototype.model.name,
            "final_accuracy": mine[-1]["merged_accuracy"],
            "final_averaged_accuracy": mine[-1]["averaged_accuracy"],
            "best_accuracy": max(entry["merged_accuracy"] for entry in mine),
            "bytes_sent": sum(entry["bytes_sent"] for entry in mine),
            "bytes_received": sum(entry["bytes_received"] for entry in mine),
            "missed_replies": sum(len(entry["missing"]) for entry in mine),
        }
    return {
        "recipe": recipe.name,
        "algorithm": recipe.algorithm,
        "seed": recipe.seed,
        "rounds": last["round"],
        "prototypes": prototypes,
        "seconds_this_session": seconds,
        "seconds_rounds": sum(record["seconds"] for record in records),
    }
