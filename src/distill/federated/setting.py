"""The data a federation works on, derived the same way on the server and on every client.

From the recipe's data source: the *test* split scores every model; the *validation* split
(private data, ``data.val_fraction``) scores TAKFL's λ candidates; ``public_samples`` rows of the
training split, drawn with the run seed, become the public set (its labels are never used); the
remaining training rows are split over prototypes and clients
(:func:`~distill.federated.partition.prototype_partitions`). Everything is a function of the
recipe, so a client needs only the recipe and its (prototype, client) index to find its shard.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from distill.data.bundle import DataBundle, Split
from distill.data.sources import load_data
from distill.errors import DataError, RecipeError
from distill.federated.partition import prototype_partitions
from distill.federated.spec import FedRecipe
from distill.models import build_model


@dataclass(frozen=True)
class FederatedSetting:
    """The splits of one federation: public inputs, validation, test, and each client's rows."""

    bundle: DataBundle
    public: torch.Tensor
    #: ``[prototype][client]`` row indices into ``bundle.train``
    shards: list[list[torch.Tensor]]

    @property
    def validation(self) -> Split:
        assert self.bundle.val is not None
        return self.bundle.val

    def client_split(self, prototype: int, client: int) -> Split:
        return self.bundle.train.subset(self.shards[prototype][client])


def recipe_key(recipe: FedRecipe) -> str:
    """A digest of everything that decides the data setting (data spec, seed, partition)."""
    decisive = {
        "data": recipe.data.model_dump(mode="json"),
        "seed": recipe.seed,
        "beta": recipe.dirichlet_beta,
        "min": recipe.min_client_samples,
        "public": recipe.public_samples,
        "prototypes": [(p.clients, p.data_share) for p in recipe.prototypes],
    }
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]


def build_setting(recipe: FedRecipe) -> FederatedSetting:
    """Load the data and split it; a share too small for its clients is a :class:`RecipeError`
    naming ``prototypes[i].data_share``."""
    bundle = load_data(recipe.data)
    check_validation(recipe, bundle)
    train_rows = len(bundle.train)
    if recipe.public_samples >= train_rows:
        raise RecipeError(
            f"public_samples: {recipe.public_samples} public examples leave none of the "
            f"{train_rows} training examples for the devices"
        )
    order = torch.from_numpy(np.random.default_rng([recipe.seed, 11]).permutation(train_rows)).long()
    public_rows, device_rows = order[: recipe.public_samples], order[recipe.public_samples :].sort().values
    for index, prototype in enumerate(recipe.prototypes):
        available = int(prototype.data_share * len(device_rows))
        needed = prototype.clients * recipe.min_client_samples
        if available < needed:
            raise RecipeError(
                f"prototypes[{index}].data_share: {prototype.data_share:g} of {len(device_rows)} "
                f"device examples is about {available}, too few for {prototype.clients} clients of "
                f"at least {recipe.min_client_samples} (min_client_samples) each"
            )
    try:
        shards = prototype_partitions(
            bundle.train.targets,
            device_rows,
            [prototype.data_share for prototype in recipe.prototypes],
            [prototype.clients for prototype in recipe.prototypes],
            recipe.dirichlet_beta,
            recipe.seed,
            recipe.min_client_samples,
        )
    except DataError as error:
        raise RecipeError(f"dirichlet_beta: {error}") from None
    return FederatedSetting(bundle, bundle.train.inputs[public_rows], shards)


def check_validation(recipe: FedRecipe, bundle: DataBundle) -> None:
    """What the server scores on the validation split (TAKFL's λ, HyperPrism's degrees) needs one."""
    if bundle.val is not None and len(bundle.val) > 0:
        return
    if recipe.algorithm.startswith("takfl") and recipe.merge.lambdas != "fixed":
        raise RecipeError("data.val_fraction: TAKFL's λ selection needs a non-empty validation split")
    if recipe.averaging.rule == "hyperprism":
        raise RecipeError(
            "data.val_fraction: HyperPrism averaging trains its degrees on the validation split"
        )


#: settings built in this process, by :func:`recipe_key` (oldest first); a few are kept
_SETTINGS: dict[str, FederatedSetting] = {}
_KEPT_SETTINGS = 4


def setting_for(recipe: FedRecipe) -> FederatedSetting:
    """:func:`build_setting`, cached per process by :func:`recipe_key`: a client answers many
    messages, and the runs of a board (algorithms × seeds) share the data of each seed."""
    key = recipe_key(recipe)
    setting = _SETTINGS.get(key)
    if setting is None:
        setting = build_setting(recipe)
        _SETTINGS[key] = setting
        while len(_SETTINGS) > _KEPT_SETTINGS:
            del _SETTINGS[next(iter(_SETTINGS))]
    else:
        check_validation(recipe, setting.bundle)
    return setting


def build_prototype_model(recipe: FedRecipe, index: int, setting: FederatedSetting, seed: int) -> nn.Module:
    """Prototype ``index``'s architecture, initialized from ``seed``."""
    spec = recipe.prototypes[index].model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec, setting.bundle.input_shape, setting.bundle.num_classes)
