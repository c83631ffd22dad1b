"""Multi-process data parallelism on ``torch.distributed``: launch detection and collectives.

A run is distributed when ``torchrun`` (``python -m torch.distributed.run``) started it with
more than one process: torchrun sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` (and the
rendezvous address) in every process's environment. :func:`process_group` then initializes
the default process group once — ``gloo`` on the CPU, ``nccl`` on CUDA, where each process
takes the GPU ``cuda:LOCAL_RANK`` — and destroys it when the run ends.

Every helper below is also correct in a plain single process (no process group): collectives
return their input, :func:`barrier` returns at once and :func:`is_main_process` is true. The
only state is the one ``torch.distributed`` holds itself.

Conventions of the package under data parallelism: rank 0 (the *main process*) alone writes
files and prints; every rank holds identical weights and produces identical epoch records.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a torchrun launch."""

    world_size: int
    rank: int
    local_rank: int


def detect_launch(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The torchrun launch this process belongs to, or ``None`` for a plain single process.

    A launch with ``WORLD_SIZE=1`` counts as a single process: no process group is needed.
    """
    environ = os.environ if environ is None else environ
    if not all(key in environ for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK")):
        return None
    launch = Launch(int(environ["WORLD_SIZE"]), int(environ["RANK"]), int(environ["LOCAL_RANK"]))
    return launch if launch.world_size > 1 else None


def is_initialized() -> bool:
    """Whether the default process group exists (training is data-parallel)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """The number of processes in the default process group (1 without one)."""
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's rank: from the process group once initialized, else the ``RANK`` that
    torchrun set (so that it is known before initialization), else 0."""
    if is_initialized():
        return dist.get_rank()
    launch = detect_launch()
    return 0 if launch is None else launch.rank


def is_main_process() -> bool:
    """Whether this process is rank 0, the one that writes files and prints."""
    return rank() == 0


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Initialize the default process group for the body if torchrun launched this process.

    Yields the device this process trains on: ``cuda:LOCAL_RANK`` when ``device`` is a CUDA
    device and the run is distributed, else ``device`` unchanged. The backend is ``nccl`` on
    CUDA and ``gloo`` otherwise. A group that already exists (created by the caller) is used
    as it is and left alive; one created here is destroyed on exit, error or not.
    """
    launch = detect_launch()
    if launch is None and not is_initialized():
        yield device
        return
    if launch is not None and device.type == "cuda":
        device = torch.device("cuda", launch.local_rank)
        torch.cuda.set_device(device)
    if is_initialized():
        yield device
        return
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (returns at once without a process group)."""
    if not is_initialized():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """The elementwise mean of ``values`` over all processes (a new tensor; ``values`` itself
    without a process group). Every process receives bit-identical results."""
    if not is_initialized():
        return values
    reduced = values.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / dist.get_world_size()


def all_reduce_max(value: float, device: torch.device) -> float:
    """The largest ``value`` over all processes (``value`` itself without a process group).

    ``device`` is where the collective's tensor lives (a CUDA device under ``nccl``)."""
    if not is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def broadcast_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (e.g. batch-norm running statistics) into every process's
    ``module``, so that evaluation and checkpoints agree across ranks."""
    if not is_initialized():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def broadcast_object(value: T) -> T:
    """Rank 0's ``value`` (any picklable object) on every process."""
    if not is_initialized():
        return value
    holder: list[Any] = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def _shareable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a ``RuntimeError`` carrying its text."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"on rank 0: {type(error).__name__}: {error}")
    return error


def _run_on_main(function: Callable[[], T], share_value: bool) -> T | None:
    """Call ``function`` on rank 0 and broadcast whether it succeeded (and, if ``share_value``,
    what it returned); every rank raises rank 0's exception if it failed."""
    outcome: tuple[bool, Any] = (True, None)
    if is_main_process():
        try:
            value = function()
        except Exception as error:
            broadcast_object((False, _shareable(error)))
            raise
        outcome = (True, value if share_value else None)
        broadcast_object(outcome)
        return value
    succeeded, payload = broadcast_object(outcome)
    if not succeeded:
        raise payload
    return payload


def on_main_process(function: Callable[[], T]) -> T:
    """Call ``function`` on rank 0 only and give every process its outcome: the value it
    returned (pickled and broadcast), or the exception it raised (raised on every rank).

    Use it for decisions that touch the file system (create a run directory, check one), so
    that other ranks never race rank 0 and all of them fail, or go on, together.
    """
    if not is_initialized():
        return function()
    return _run_on_main(function, share_value=True)  # type: ignore[return-value]


def main_process_first(function: Callable[[], T]) -> T:
    """Call ``function`` on rank 0, then, once it has succeeded, on every other process.

    For work whose first call fills a shared cache on disk (generated data, teacher outputs):
    the other ranks find it filled. If rank 0 fails, every rank raises its exception. Each
    process returns its own call's value (nothing is pickled).
    """
    if not is_initialized():
        return function()
    if is_main_process():
        return _run_on_main(function, share_value=False)  # type: ignore[return-value]
    _run_on_main(function, share_value=False)  # waits for rank 0; raises its error
    return function()
