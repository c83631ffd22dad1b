"""``distill fed``: federated distillation runs on Flower, their run directories and boards.

The algorithms are in :mod:`distill.federated` (engine-free); Flower is reached only through
:mod:`distill.engine.flower`. This package loads federated recipes (:mod:`.recipes`), runs the
rounds with checkpoints and resume (:mod:`.loop`), holds the Flower app components a deployment
names (:mod:`.apps`), and compares algorithms across seeds (:mod:`.board`).
"""
