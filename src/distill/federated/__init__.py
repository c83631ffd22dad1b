"""Federated distillation across heterogeneous device prototypes: the algorithms, engine-free.

Everything here works on models, state dicts and tensors; no module imports an engine (Flower
lives in :mod:`distill.engine.flower`). The pieces:

- :mod:`~distill.federated.partition`: per-prototype class shares and Dirichlet label skew;
- :mod:`~distill.federated.averaging`: FedAvg, task vectors and their weighted merge;
- :mod:`~distill.federated.local`: a client's local training, logits and accuracy;
- :mod:`~distill.federated.distillation`: distillation on the public set (FedDF's one target,
  TAKFL's per-teacher tasks with self-regularization);
- :mod:`~distill.federated.merging`: TAKFL's task-vector coefficients (fixed, heuristic, tune);
- :mod:`~distill.federated.spec`: the federated recipe;
- :mod:`~distill.federated.server`: one round of each algorithm over whatever carries the
  messages (a :class:`~distill.federated.server.Transport`).
"""
