"""Who holds which private examples: per-prototype class shares, then Dirichlet label skew.

TAKFL (Morafah et al., NeurIPS 2024, arXiv 2409.18461, Sec. 5 "Experimental setup"; official code
``cv/src/data/utils_data.py::get_partitions_customD``) gives device prototype ``i`` a disjoint share
``r_i`` of *every* class (e.g. 0.1 / 0.3 / 0.6) and splits that share over the prototype's clients
with the ``niid-labeldir`` scheme of NIID-Bench (Li et al., ICDE 2022): for each class, client
proportions ``p ~ Dir(β·1)``; a client already holding more than ``N / clients`` examples gets no
more; the draw is repeated until every client holds at least ``min_size`` examples.
"""

from __future__ import annotations

import numpy as np
import torch

from distill.errors import DataError

#: Dirichlet draws tried before a partition is declared impossible.
MAX_DRAWS = 1000


def class_shares(targets: torch.Tensor, shares: list[float], seed: int) -> list[torch.Tensor]:
    """Disjoint row indices, one tensor per share: ``⌊r·n_c⌋`` rows of every class ``c``.

    Rows are drawn from a seeded permutation of each class; the rows left over (when the shares
    sum below 1, and rounding) belong to nobody.
    """
    if any(share < 0 for share in shares) or sum(shares) > 1 + 1e-9:
        raise ValueError(f"class shares must be ≥ 0 and sum to at most 1, got {shares}")
    rng = np.random.default_rng(seed)
    labels = targets.numpy()
    parts: list[list[np.ndarray]] = [[] for _ in shares]
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for position, share in enumerate(shares):
            count = int(share * len(rows))
            parts[position].append(rows[start : start + count])
            start += count
    return [torch.from_numpy(np.sort(np.concatenate(part))).long() for part in parts]


def dirichlet_split(
    rows: torch.Tensor, targets: torch.Tensor, clients: int, beta: float, seed: int, min_size: int = 10
) -> list[torch.Tensor]:
    """Split ``rows`` over ``clients`` with per-class ``Dir(β)`` proportions (``niid-labeldir``).

    Smaller ``β`` gives each client fewer classes; ``β → ∞`` approaches an even split. Raises
    :class:`DataError` when no draw gives every client ``min_size`` examples.
    """
    if clients < 1:
        raise ValueError(f"clients must be ≥ 1, got {clients}")
    if beta <= 0:
        raise ValueError(f"the Dirichlet concentration β must be > 0, got {beta}")
    total = len(rows)
    if total < clients * min_size:
        raise DataError(
            f"{total} examples cannot give {clients} clients {min_size} examples each; "
            "give the prototype a larger data share or fewer clients"
        )
    if clients == 1:
        return [rows.clone()]
    rng = np.random.default_rng(seed)
    labels = targets[rows].numpy()
    row_array = rows.numpy()
    for _ in range(MAX_DRAWS):
        held: list[list[int]] = [[] for _ in range(clients)]
        for label in np.unique(labels):
            members = rng.permutation(row_array[labels == label])
            proportions = rng.dirichlet(np.full(clients, beta))
            open_clients = np.array([len(part) < total / clients for part in held], dtype=float)
            proportions = proportions * open_clients
            proportions = proportions / proportions.sum()
            cuts = (np.cumsum(proportions) * len(members)).astype(int)[:-1]
            for client, piece in enumerate(np.split(members, cuts)):
                held[client].extend(piece.tolist())
        if min(len(part) for part in held) >= min_size:
            return [torch.tensor(sorted(part), dtype=torch.long) for part in held]
    raise DataError(
        f"no Dirichlet(β={beta}) split of {total} examples gave each of {clients} clients "
        f"{min_size} examples in {MAX_DRAWS} draws; raise β or the data share"
    )


def prototype_partitions(
    targets: torch.Tensor,
    rows: torch.Tensor,
    shares: list[float],
    clients: list[int],
    beta: float,
    seed: int,
    min_size: int = 10,
) -> list[list[torch.Tensor]]:
    """``[prototype][client]`` row indices into the training split.

    ``rows`` are the training rows available to devices (the public and validation rows already
    taken out); prototype ``i`` gets share ``shares[i]`` of every class among them, split over
    ``clients[i]`` clients with ``Dir(beta)`` label skew. Each prototype's split uses its own seed
    stream, so adding a prototype never reshuffles another's clients.
    """
    if len(shares) != len(clients):
        raise ValueError(f"{len(shares)} shares for {len(clients)} prototypes")
    local_targets = targets[rows]
    result = []
    for index, (share_rows, count) in enumerate(
        zip(class_shares(local_targets, shares, seed), clients, strict=True)
    ):
        split = dirichlet_split(share_rows, local_targets, count, beta, seed * 7_919 + index + 1, min_size)
        result.append([rows[part] for part in split])
    return result


def sample_clients(clients: int, fraction: float, rng: np.random.Generator) -> list[int]:
    """The clients one round trains: ``max(⌊fraction·clients⌋, 1)`` distinct ones, sorted."""
    count = max(int(fraction * clients), 1)
    return sorted(int(client) for client in rng.choice(clients, size=count, replace=False))
