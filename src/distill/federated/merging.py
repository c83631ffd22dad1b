"""TAKFL's task-vector coefficients λ_i: fixed, heuristic search, or tuned by gradient.

TAKFL (Morafah et al., NeurIPS 2024, Sec. 4.3, Eq. 5) merges student ``i``'s task vectors as
``θ_i ← θ_i + Σ_j λ_ij τ_ij`` with ``λ_i`` on the simplex. The official code
(``cv/src/benchmarks/main_fedhd.py``, ``--lambda_tuning``) offers three ways to pick ``λ_i``:

- ``fixed``: a given matrix (``--task_weights``);
- ``heuristic`` (used in every official run script): the uniform vector plus, for each exponent
  ``e ∈ {1, 5, 10}``, ``n_candidates`` draws of ``Beta(1, 100)^e`` per coordinate, **sorted
  ascending** and normalized; the candidate whose merged model scores best on a validation split
  of private data wins. The ascending sort gives the largest coefficient to the *last* prototype,
  which in the official scripts is always the largest model; here the sorted values are assigned
  explicitly in order of teacher capacity (parameter count), so the order of the recipe's
  prototypes does not matter;
- ``tune`` (``cv/src/utils/tune_lambda.py``): ``λ = softmax(a)`` and a scalar ``β`` multiplying the
  merged model's logits, trained with AdamW (lr 0.05, 5 epochs, batch 64) on cross-entropy over
  the validation split; ``a`` starts uniform in the first round and from ``log λ`` of the previous
  round after that. Only parameters are merged while tuning (as in the official wrapper); the
  buffers are the averaged model's, where the official code reuses whichever model it distilled
  last (an artifact of reusing one module).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from distill.data.bundle import Split
from distill.data.loader import train_batches
from distill.federated.averaging import StateDict, merge_task_vectors
from distill.federated.local import make_generator

#: The exponents the official heuristic raises its Beta(1, 100) draws to.
HEURISTIC_EXPONENTS = (1, 5, 10)


def heuristic_candidates(capacities: Sequence[int], per_exponent: int, seed: int) -> list[np.ndarray]:
    """The uniform vector, then ``per_exponent`` draws for each exponent in
    :data:`HEURISTIC_EXPONENTS`: sorted ascending, normalized, and laid out so the larger values
    go to teachers of larger ``capacities`` (ties keep the given order)."""
    count = len(capacities)
    if count < 1:
        raise ValueError("heuristic_candidates needs at least one teacher")
    rng = np.random.default_rng(seed)
    by_capacity = np.argsort(np.asarray(capacities), kind="stable")
    candidates = [np.full(count, 1.0 / count)]
    for exponent in HEURISTIC_EXPONENTS:
        for _ in range(per_exponent):
            values = np.sort(rng.beta(1.0, 100.0, size=count) ** exponent)
            values = values / values.sum()
            candidate = np.empty(count)
            candidate[by_capacity] = values
            candidates.append(candidate)
    return candidates


def select_candidate(
    base: Mapping[str, torch.Tensor],
    vectors: Sequence[Mapping[str, torch.Tensor]],
    candidates: Sequence[np.ndarray],
    score: Callable[[StateDict], float],
) -> tuple[np.ndarray, float]:
    """The candidate whose merged state scores highest (the first of equals), and its score."""
    best: tuple[np.ndarray, float] | None = None
    for candidate in candidates:
        value = score(merge_task_vectors(base, vectors, candidate.tolist()))
        if best is None or value > best[1]:
            best = (candidate, value)
    assert best is not None
    return best


def tune_coefficients(
    model: nn.Module,
    base: Mapping[str, torch.Tensor],
    vectors: Sequence[Mapping[str, torch.Tensor]],
    validation: Split,
    seed: int,
    start: Sequence[float] | None = None,
    epochs: int = 5,
    lr: float = 0.05,
    batch_size: int = 64,
) -> np.ndarray:
    """λ = softmax(a) fitted on ``validation`` by AdamW through the merged parameters."""
    if len(validation) == 0:
        raise ValueError("tune_coefficients: the validation split is empty")
    count = len(vectors)
    network = copy.deepcopy(model)
    network.load_state_dict(dict(base))
    device = next(network.parameters()).device
    names = [name for name, _ in network.named_parameters()]
    initial = (
        torch.full((count,), 1.0 / count)
        if start is None
        else torch.log(torch.tensor(start).clamp_min(1e-12))
    )
    raw = nn.Parameter(initial.float().to(device))
    scale = nn.Parameter(torch.ones(1, device=device))
    optimizer = torch.optim.AdamW([raw, scale], lr=lr, weight_decay=0.0)
    base_params = {name: base[name].detach().float().to(device) for name in names}
    directions = {
        name: torch.stack([vector[name].float() for vector in vectors]).to(device) for name in names
    }
    buffers = {name: tensor.clone() for name, tensor in network.named_buffers()}
    generator = make_generator(seed)
    network.train()
    for _ in range(epochs):
        for inputs, targets, _ in train_batches(validation, batch_size, generator, device):
            if len(targets) < 2:
                continue
            weights = torch.softmax(raw, dim=0)
            params = {
                name: base_params[name] + torch.tensordot(weights, directions[name], dims=1) for name in names
            }
            logits = functional_call(network, {**params, **buffers}, (inputs,))
            loss = F.cross_entropy(scale * logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return torch.softmax(raw.detach(), dim=0).cpu().double().numpy()
