"""Where candidates train: local worker processes (Pebble) or a Ray cluster.

Candidates are independent, so a generation is scored concurrently. Both backends take a list
of payloads and return one :class:`Outcome` per payload, in order, whatever order they finish
in; a worker that crashes or passes the per-candidate ``timeout`` costs that candidate only
(its outcome says ``crashed`` or ``timeout``) and the search goes on.

- ``local``: a :class:`pebble.ProcessPool` of ``workers`` spawned processes. Pebble kills a task
  at its timeout and reports a dead worker per task, which ``concurrent.futures`` cannot.
- ``ray``: one Ray task per candidate (``ray`` is an optional extra). ``ray.init`` joins the
  cluster at ``address`` (or ``RAY_ADDRESS``), or starts a local instance with ``workers`` CPUs.
  A task past its timeout is cancelled with ``force=True`` (its worker is killed).

Each worker loads the data and the teacher once per search (:func:`distill.search.proxy.context_for`)
and uses ``threads`` torch threads, so the same seeded search gives the same fitnesses on
either backend.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from distill.errors import DistillError
from distill.search.proxy import ProxyTask, context_for, evaluate_payload


@dataclass(frozen=True)
class Outcome:
    """How one candidate's evaluation ended: ``ok`` (with ``result``), ``failed`` (it trained
    but diverged, or raised), ``crashed`` (its worker died) or ``timeout``."""

    status: str
    result: dict[str, Any] | None = None
    error: str | None = None


class Backend(Protocol):
    def evaluate(self, payloads: list[dict[str, Any]], task: ProxyTask | None = None) -> list[Outcome]:
        """One outcome per payload, in order; ``task`` replaces the backend's own (e.g. the
        full-budget re-ranking)."""
        ...

    def close(self) -> None: ...


def _worker_start(task: ProxyTask) -> None:
    context_for(task)  # load data and teacher once, before the first candidate


def _outcome_of(result: dict[str, Any]) -> Outcome:
    if result.get("status") == "ok":
        return Outcome("ok", result)
    return Outcome("failed", result, result.get("error"))


class LocalBackend:
    """``workers`` spawned local processes; each candidate is killed after ``timeout`` seconds.
    ``function(task, payload)`` scores one candidate (:func:`~distill.search.proxy.evaluate_payload`)."""

    def __init__(
        self,
        task: ProxyTask,
        workers: int,
        timeout: float,
        function: Callable[[ProxyTask, dict[str, Any]], dict[str, Any]] = evaluate_payload,
    ) -> None:
        from pebble import ProcessPool

        self.task = task
        self.function = function
        self.timeout = timeout
        self.pool = ProcessPool(
            max_workers=workers,
            initializer=_worker_start if function is evaluate_payload else None,
            initargs=(task,),
            context=multiprocessing.get_context("spawn"),
        )

    def evaluate(self, payloads: list[dict[str, Any]], task: ProxyTask | None = None) -> list[Outcome]:
        from pebble import ProcessExpired

        futures = [
            self.pool.schedule(self.function, args=(task or self.task, payload), timeout=self.timeout)
            for payload in payloads
        ]
        outcomes = []
        for future in futures:
            try:
                outcomes.append(_outcome_of(future.result()))
            except FutureTimeout:
                outcomes.append(Outcome("timeout", error=f"no result within {self.timeout:g} s"))
            except ProcessExpired as error:
                outcomes.append(Outcome("crashed", error=f"worker died ({error})"))
            except Exception as error:  # raised inside the candidate's training
                outcomes.append(Outcome("failed", error=f"{type(error).__name__}: {error}"))
        return outcomes

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


class RayBackend:
    """One Ray task per candidate on the cluster at ``address`` (a local one when ``None``)."""

    def __init__(self, task: ProxyTask, workers: int, timeout: float, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise DistillError(
                "--backend ray needs Ray: pip install 'distill[search]' (or pip install ray)"
            ) from None
        self.ray = ray
        self.task = task
        self.timeout = timeout
        self.started_here = not ray.is_initialized()
        if self.started_here:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None and not os.environ.get("RAY_ADDRESS"):
                options["num_cpus"] = workers  # a local instance; a cluster has its own CPUs
            ray.init(address=address, **options)
        self.remote = ray.remote(num_cpus=1, max_retries=0)(evaluate_payload)
        self.task_ref = ray.put(task)

    def evaluate(self, payloads: list[dict[str, Any]], task: ProxyTask | None = None) -> list[Outcome]:
        ray = self.ray
        task_ref = self.task_ref if task is None else ray.put(task)
        refs = [self.remote.remote(task_ref, payload) for payload in payloads]
        started = {ref: time.monotonic() for ref in refs}
        pending = list(refs)
        done: dict[Any, Outcome] = {}
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in ready:
                done[ref] = self._collect(ref)
            now = time.monotonic()
            for ref in [ref for ref in pending if now - started[ref] > self.timeout]:
                ray.cancel(ref, force=True)
                done[ref] = Outcome("timeout", error=f"no result within {self.timeout:g} s")
                pending.remove(ref)
        return [done[ref] for ref in refs]

    def _collect(self, ref: Any) -> Outcome:
        ray = self.ray
        try:
            return _outcome_of(ray.get(ref))
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as error:
            return Outcome("crashed", error=f"worker died ({type(error).__name__})")
        except ray.exceptions.RayTaskError as error:
            return Outcome("failed", error=str(error).splitlines()[0])

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


class InlineBackend:
    """Candidates trained one after another in this process (``--workers 0``; for debugging)."""

    def __init__(self, task: ProxyTask) -> None:
        self.task = task

    def evaluate(self, payloads: list[dict[str, Any]], task: ProxyTask | None = None) -> list[Outcome]:
        threads = torch.get_num_threads()  # a worker's thread count, for this process's turn only
        outcomes = []
        try:
            for payload in payloads:
                try:
                    outcomes.append(_outcome_of(evaluate_payload(task or self.task, payload)))
                except Exception as error:  # as in a worker: the candidate fails, not the search
                    outcomes.append(Outcome("failed", error=f"{type(error).__name__}: {error}"))
        finally:
            torch.set_num_threads(threads)
        return outcomes

    def close(self) -> None:
        """Nothing to release."""


def open_backend(name: str, task: ProxyTask, workers: int, timeout: float, address: str | None) -> Backend:
    """The backend ``name`` (``local`` or ``ray``); ``workers == 0`` runs locally in-process."""
    if name == "ray":
        return RayBackend(task, max(1, workers), timeout, address)
    if workers == 0:
        return InlineBackend(task)
    return LocalBackend(task, workers, timeout)
