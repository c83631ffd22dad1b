"""Conversions between torch state dicts / tensors and Flower records."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from flwr.app import Array, ArrayRecord

from distill.federated.averaging import StateDict


def state_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """A state dict as an ``ArrayRecord`` (one ``Array`` per entry, dtypes kept)."""
    return ArrayRecord({key: Array(value.detach().cpu().contiguous()) for key, value in state.items()})


def record_state(record: ArrayRecord) -> StateDict:
    """The state dict an ``ArrayRecord`` of :func:`state_record` holds."""
    return {key: torch.from_numpy(array.numpy().copy()) for key, array in record.items()}


def tensor_record(name: str, tensor: torch.Tensor) -> ArrayRecord:
    return ArrayRecord({name: Array(tensor.detach().cpu().contiguous())})


def record_tensor(record: ArrayRecord, name: str) -> torch.Tensor:
    return torch.from_numpy(record[name].numpy().copy())
