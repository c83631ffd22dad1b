"""CPU inference latency of text models on real token ids, and where the time goes.

``distill export`` times a text model on random token ids; these helpers time a model on rows
of a real split instead, and say where the time goes. :func:`median_latency` is the median wall
time of ``repeats`` forward passes (after ``warmup`` untimed ones) in eval mode under
``torch.inference_mode``; :func:`operator_shares` profiles one pass with ``torch.profiler`` and
groups the self CPU time by operator (``aten::addmm`` = the linear layers, ``aten::bmm`` /
``aten::_scaled_dot_product_*`` = attention, …). Nothing here prints.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

from distill.text.nets import unmemoized


def batch_of(ids: torch.Tensor, size: int) -> torch.Tensor:
    """The first ``size`` rows of ``ids``, repeated cyclically when there are fewer."""
    if len(ids) == 0:
        raise ValueError("no token ids to time the model on")
    repeats = -(-size // len(ids))
    return ids.repeat(repeats, 1)[:size]


def median_latency(model: nn.Module, ids: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of one forward pass of ``model`` on ``ids`` (eval mode, inference mode).
    A frozen MiniLM teacher's memo is bypassed: each pass runs the encoder."""
    timed = unmemoized(model)
    was_training = model.training
    model.eval()
    timed.eval()
    seconds = []
    try:
        with torch.inference_mode():
            for index in range(warmup + repeats):
                start = time.perf_counter()
                timed(ids)
                if index >= warmup:
                    seconds.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return statistics.median(seconds)


def latency_table(
    models: dict[str, nn.Module],
    ids: torch.Tensor,
    batch_sizes: Sequence[int] = (1, 64),
    repeats: int = 20,
) -> dict[str, dict[int, float]]:
    """``{model: {batch size: median milliseconds}}`` on batches of ``ids``' rows; models are
    timed in turn for each batch size."""
    table: dict[str, dict[int, float]] = {name: {} for name in models}
    for size in batch_sizes:
        batch = batch_of(ids, size)
        for name, model in models.items():
            table[name][size] = 1e3 * median_latency(model, batch, repeats)
    return table


def operator_shares(model: nn.Module, ids: torch.Tensor, top: int = 8) -> list[tuple[str, float]]:
    """The ``top`` operators by self CPU time in one forward pass on ``ids``, as
    ``(operator, share of the total)``; the rest is summed as ``other``."""
    from torch.profiler import ProfilerActivity, profile

    median_latency(model, ids, repeats=1, warmup=1)  # warm up (and bypass a memo) first
    timed = unmemoized(model)
    timed.eval()
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as profiler:
        timed(ids)
    totals: dict[str, float] = {}
    for event in profiler.key_averages():
        totals[event.key] = totals.get(event.key, 0.0) + float(event.self_cpu_time_total)
    everything = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    shares = [(name, value / everything) for name, value in ranked[:top]]
    rest = sum(value for _, value in ranked[top:])
    if rest:
        shares.append(("other", rest / everything))
    return shares
