"""The federated recipe: data, device prototypes, and each stage's schedule.

A recipe is validated whole before anything starts; what depends on the data (whether each
prototype's share can feed its clients) is checked by :func:`distill.federated.setting.build_setting`
before the first round, naming the field at fault.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, TypeAlias

from pydantic import Field, model_validator

from distill.data.sources import DATASETS, DataSpec
from distill.models import ModelSpec, model_field
from distill.schema import BatchSize, Epochs, PositiveInt, SampleCount, Section, Seed

if TYPE_CHECKING:
    ModelField: TypeAlias = ModelSpec
    DataField: TypeAlias = DataSpec
else:  # discriminated unions over every spec registered when this module is first imported
    ModelField = model_field()
    DataField = DATASETS.union("dataset")

#: The algorithms a federated run can use; ``takfl-noreg`` is TAKFL with every γ_i = 0.
ALGORITHMS = ("fedavg", "feddf", "takfl", "takfl-noreg")
Algorithm = Literal["fedavg", "feddf", "takfl", "takfl-noreg"]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
#: The most clients one prototype may have (each is a Flower SuperNode in simulation).
MAX_CLIENTS = 1000
#: The most prototypes (TAKFL runs P² distillations a round).
MAX_PROTOTYPES = 16

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
Rate = Annotated[float, Field(gt=0.0, le=10.0)]
Decay = Annotated[float, Field(ge=0.0, le=1.0)]
Temperature = Annotated[float, Field(gt=0.0, le=1000.0)]


class PrototypeSpec(Section):
    """One device prototype: an architecture, its clients, and its share of every class.

    ``self_weight`` is TAKFL's γ_i (official CV scripts: 0.01 for every prototype).
    """

    name: str = Field(pattern=_NAME, max_length=32)
    model: ModelField
    clients: Annotated[int, Field(le=MAX_CLIENTS)] = Field(ge=1)
    fraction: Fraction = 1.0
    data_share: Fraction
    self_weight: Annotated[float, Field(ge=0.0, le=1000.0)] = 0.01


class LocalSpec(Section):
    """Each sampled client's local training (official TAKFL CV: Adam, lr 1e-3, batch 64).

    ``optimizer``: ``adam`` (a fresh Adam every round, as the official TAKFL clients) or ``sgd``
    (plain SGD, as DPSGD/AIMS gossip; Adam's first steps are lr-sized per coordinate whatever the
    gradient, which drives devices with one or two classes far apart between aggregations).
    """

    optimizer: Literal["adam", "sgd"] = "adam"
    epochs: Epochs = 2
    batch_size: BatchSize = 64
    lr: Rate = 1e-3
    weight_decay: Decay = 0.0


class DistillSpec(Section):
    """The server's distillation on the public set (TAKFL: T = 3, T_s = 20, batch 128)."""

    epochs: Epochs = 2
    batch_size: BatchSize = 128
    lr: Rate = 1e-4
    weight_decay: Decay = 0.0
    temperature: Temperature = 3.0
    self_temperature: Temperature = 20.0


class MergeSpec(Section):
    """How TAKFL picks each student's task-vector coefficients λ_i (see
    :mod:`distill.federated.merging`); ``fixed`` rows are given per student, one value per
    teacher, in prototype order."""

    lambdas: Literal["heuristic", "tune", "fixed"] = "heuristic"
    candidates: Annotated[int, Field(le=1000)] = Field(default=5, ge=1)
    tune_epochs: Epochs = 5
    fixed: list[list[Annotated[float, Field(ge=0.0)]]] | None = None


class AveragingSpec(Section):
    """How the server averages a prototype's client models: ``linear`` (FedAvg), ``power`` (the
    weighted power mean of degree ``degree`` in the mirror space, AIMS), or ``hyperprism`` (one
    degree per layer from a hypernetwork the server trains on its validation split; see
    :mod:`distill.federated.hypernetwork`)."""

    rule: Literal["linear", "power", "hyperprism"] = "linear"
    degree: Annotated[float, Field(ge=1.0, le=64.0)] = 3.0
    max_degree: Annotated[float, Field(ge=1.0, le=64.0)] = 9.0
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = 0.01
    batch_size: BatchSize = 64


class FedRecipe(Section):
    """A federated distillation run (``distill fed RECIPE``)."""

    name: str = Field(pattern=_NAME, max_length=64)
    description: str = ""
    seed: Seed = 0
    data: DataField
    algorithm: Algorithm = "takfl"
    rounds: Annotated[int, Field(le=100_000)] = Field(ge=1)
    prototypes: list[PrototypeSpec] = Field(min_length=1, max_length=MAX_PROTOTYPES)
    dirichlet_beta: Annotated[float, Field(gt=0.0, le=1e6)] = 0.3
    min_client_samples: PositiveInt = 10
    public_samples: SampleCount = 2000
    local: LocalSpec = Field(default_factory=LocalSpec)
    distill: DistillSpec = Field(default_factory=DistillSpec)
    merge: MergeSpec = Field(default_factory=MergeSpec)
    averaging: AveragingSpec = Field(default_factory=AveragingSpec)
    #: seconds the server waits for a round's replies; a client later than that misses the round
    timeout_s: Annotated[float, Field(gt=0.0, le=86_400.0)] = 600.0

    @model_validator(mode="after")
    def _consistent(self) -> FedRecipe:
        names = [prototype.name for prototype in self.prototypes]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"prototype name '{name}' is used twice; names must be unique")
        total = sum(prototype.data_share for prototype in self.prototypes)
        if total > 1.0 + 1e-9:
            shares = ", ".join(f"{prototype.data_share:g}" for prototype in self.prototypes)
            raise ValueError(f"the prototypes' data_share values ({shares}) sum to {total:g}; at most 1")
        if self.merge.lambdas == "fixed":
            count = len(self.prototypes)
            rows = self.merge.fixed
            if rows is None or len(rows) != count or any(len(row) != count for row in rows):
                raise ValueError(
                    f"merge.fixed: lambdas 'fixed' needs a {count}×{count} matrix (one row per "
                    "student, one value per teacher)"
                )
            for index, row in enumerate(rows):
                if sum(row) <= 0:
                    raise ValueError(f"merge.fixed[{index}]: the row must have a positive sum")
        elif self.merge.fixed is not None:
            raise ValueError("merge.fixed is only read when merge.lambdas is 'fixed'")
        if self.data.val_fraction == 0 and self.data.pools is None and self.merge.lambdas != "fixed":
            raise ValueError(
                f"merge.lambdas '{self.merge.lambdas}' scores on a validation split, but "
                "data.val_fraction is 0"
            )
        if self.data.pools is not None:
            raise ValueError("data.pools: a federated run splits the data itself; remove 'pools'")
        return self

    @property
    def self_weights(self) -> list[float]:
        """Each prototype's γ_i as this run uses it (0 for ``takfl-noreg``)."""
        if self.algorithm == "takfl-noreg":
            return [0.0 for _ in self.prototypes]
        return [prototype.self_weight for prototype in self.prototypes]
