"""ooDML splits: class swaps with history and removal, closed-set sub-population swaps,
select_spread, model-free feature maps, and the errors for bad inputs."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from distill.shift.fid import frechet_distance
from distill.shift.splits import (
    ClassSplit,
    SubpopulationSplit,
    class_mean_features,
    class_sample_fid,
    class_swap_splits,
    pca_features,
    random_class_split,
    random_projection_features,
    select_spread,
    subpopulation_splits,
)


def _class_means(seed: int = 0, classes: int = 16, dim: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(classes, dim))


def _official_candidates(means: np.ndarray, split: ClassSplit, into_train: list[int], into_test: list[int]):
    """The official rule, written out independently: argmin of the distance-difference scores."""
    train, test = list(split.train_classes), list(split.test_classes)
    mu_train, mu_test = means[train].mean(axis=0), means[test].mean(axis=0)
    train_score = {c: np.linalg.norm(means[c] - mu_test) - np.linalg.norm(means[c] - mu_train) for c in train}
    test_score = {c: np.linalg.norm(means[c] - mu_train) - np.linalg.norm(means[c] - mu_test) for c in test}
    out_of_train = min((c for c in train if c not in into_train), key=lambda c: (train_score[c], c))
    out_of_test = min((c for c in test if c not in into_test), key=lambda c: (test_score[c], c))
    return out_of_train, out_of_test


# ------------------------------------------------------------------------------------------
# class swaps (open set)
# ------------------------------------------------------------------------------------------


def test_class_swaps_partition_classes_and_raise_fid() -> None:
    means = _class_means()
    splits = class_swap_splits(means, initial_train=range(0, 16, 2), steps=20)
    assert splits[0].kind == "initial" and splits[0].step == 0 and splits[0].changed is None
    assert len(splits) >= 3
    for index, split in enumerate(splits):
        assert split.step == index
        assert split.train_classes == tuple(sorted(split.train_classes))
        assert split.test_classes == tuple(sorted(split.test_classes))
        assert set(split.train_classes).isdisjoint(split.test_classes)
        assert set(split.train_classes) | set(split.test_classes) == set(range(16))
        assert len(split.train_classes) == len(split.test_classes) == 8
        expected_fid = frechet_distance(means[list(split.train_classes)], means[list(split.test_classes)])
        assert split.fid == pytest.approx(expected_fid)
    fids = [split.fid for split in splits]
    assert all(later > earlier for earlier, later in itertools.pairwise(fids))


def test_each_swap_moves_the_official_candidates() -> None:
    means = _class_means(seed=1)
    history = 3
    splits = class_swap_splits(means, range(8), steps=25, history=history, stop_when_flat=False)
    assert len(splits) == 26  # the official split_maker never stops early
    into_train: list[int] = []
    into_test: list[int] = []
    for before, after in itertools.pairwise(splits):
        assert after.kind == "swap"
        moved_to_test = set(before.train_classes) - set(after.train_classes)
        moved_to_train = set(before.test_classes) - set(after.test_classes)
        assert len(moved_to_test) == len(moved_to_train) == 1
        assert after.changed == (moved_to_test.pop(), moved_to_train.pop())
        assert after.changed == _official_candidates(
            means, before, into_train[-history:], into_test[-history:]
        )
        into_train.append(after.changed[1])
        into_test.append(after.changed[0])


def test_history_prevents_swapping_back() -> None:
    means = _class_means(seed=2)
    for history in (1, 2, 4):
        splits = class_swap_splits(means, range(0, 16, 2), steps=30, history=history, stop_when_flat=False)
        moves = [split.changed for split in splits[1:]]
        assert all(move is not None for move in moves)
        for step, (to_test, to_train) in enumerate(moves):  # type: ignore[misc]
            # a class that just entered train (test) stays there for `history` more swaps
            for later in moves[step + 1 : step + 1 + history]:
                assert later is not None
                assert later[0] != to_train and later[1] != to_test
    # Without history the greedy rule ping-pongs: some swap is immediately undone.
    no_history = class_swap_splits(means, range(0, 16, 2), steps=30, history=0, stop_when_flat=False)
    moves = [split.changed for split in no_history[1:]]
    assert any(b == (a[1], a[0]) for a, b in itertools.pairwise(moves) if a is not None and b is not None)


def test_removal_steps_raise_fid_further() -> None:
    means = _class_means(seed=3, classes=20)
    splits = class_swap_splits(means, range(0, 20, 2), steps=30, removal_steps=5)
    kinds = [split.kind for split in splits]
    assert "removal" in kinds
    first_removal = kinds.index("removal")
    assert set(kinds[1:first_removal]) <= {"swap"} and set(kinds[first_removal:]) == {"removal"}
    swap_peak = max(split.fid for split in splits[:first_removal])
    assert splits[-1].fid > swap_peak
    for before, after in zip(splits[first_removal - 1 :], splits[first_removal:], strict=False):
        assert set(after.train_classes) < set(before.train_classes)
        assert set(after.test_classes) < set(before.test_classes)
        assert len(before.train_classes) - len(after.train_classes) == 1
        assert len(before.test_classes) - len(after.test_classes) == 1
        assert after.changed == (
            (set(before.train_classes) - set(after.train_classes)).pop(),
            (set(before.test_classes) - set(after.test_classes)).pop(),
        )
        assert after.fid > before.fid
        assert set(after.train_classes).isdisjoint(after.test_classes)


def test_class_swaps_are_deterministic() -> None:
    means = _class_means(seed=4)
    first = class_swap_splits(means, [1, 3, 5, 7, 9, 11, 13, 15], steps=10, removal_steps=2)
    second = class_swap_splits(means.copy(), (15, 13, 11, 9, 7, 5, 3, 1), steps=10, removal_steps=2)
    assert first == second


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"class_means": np.zeros((3, 2)), "initial_train": [0]}, "at least 4 classes"),
        ({"class_means": np.zeros(8), "initial_train": [0]}, "2-D"),
        ({"initial_train": [0, 0, 1]}, "twice"),
        ({"initial_train": [0, 99]}, "outside"),
        ({"initial_train": [0]}, "at least 2 classes"),
        ({"initial_train": list(range(15))}, "at least 2 classes"),
        ({"initial_train": [0, 1, 2], "history": 3}, "history"),
        ({"initial_train": [0, 1, 2], "history": 1, "removal_steps": 2}, "removal_steps"),
        ({"initial_train": [0, 1], "steps": -1}, "steps"),
    ],
)
def test_class_swap_bad_inputs(kwargs: dict, match: str) -> None:
    arguments = {"class_means": _class_means(), "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        class_swap_splits(**arguments)


# ------------------------------------------------------------------------------------------
# sub-population swaps (closed set)
# ------------------------------------------------------------------------------------------


def _subpopulation_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """4 classes × 3 well-separated sub-populations × 12 samples, 4-D; the sub-population offsets
    are shared by the classes, so there is a real shift for the swaps to find."""
    rng = np.random.default_rng(seed)
    classes, subpops, per, dim = 4, 3, 12, 4
    centers = rng.normal(scale=4.0, size=(classes, dim))
    offsets = rng.normal(scale=3.0, size=(subpops, dim))
    x = np.concatenate(
        [
            centers[c] + offsets[k] + 0.4 * rng.normal(size=(per, dim))
            for c in range(classes)
            for k in range(subpops)
        ]
    )
    y = np.repeat(np.arange(classes) * 10, subpops * per)  # labels need not be 0..C-1
    return x, y


def _check_closed_set(split: SubpopulationSplit, labels: np.ndarray, removal: bool) -> None:
    assert not np.any(split.train_mask & split.test_mask)
    if not removal:
        assert np.all(split.train_mask | split.test_mask)
    assert set(split.train_units).isdisjoint(split.test_units)
    for label in np.unique(labels):
        assert any(unit[0] == label for unit in split.train_units)
        assert any(unit[0] == label for unit in split.test_units)
        assert np.any(split.train_mask & (labels == label)) and np.any(split.test_mask & (labels == label))


def test_subpopulation_splits_keep_every_class_on_both_sides() -> None:
    x, y = _subpopulation_data()
    splits = subpopulation_splits(x, y, clusters_per_class=3, steps=10, seed=0, history=1)
    assert splits[0].kind == "initial" and len(splits) >= 2
    per_side = {(unit[0], "train") for unit in splits[0].train_units}
    for index, split in enumerate(splits):
        assert split.step == index
        assert split.kind == ("initial" if index == 0 else "swap")
        _check_closed_set(split, y, removal=False)
        assert {(unit[0], "train") for unit in split.train_units} == per_side
        assert len(split.train_units) == len(splits[0].train_units)
    fids = [split.fid for split in splits]
    assert all(later > earlier for earlier, later in itertools.pairwise(fids))
    assert fids[-1] > 1.5 * fids[0]
    for before, after in itertools.pairwise(splits):
        out_of_train, into_train = after.changed  # type: ignore[misc]
        assert out_of_train is not None and into_train is not None
        assert out_of_train[0] == into_train[0]  # swaps stay inside one class
        assert out_of_train in before.train_units and out_of_train in after.test_units
        assert into_train in before.test_units and into_train in after.train_units


def test_subpopulation_history_blocks_moving_units_back() -> None:
    x, y = _subpopulation_data(seed=1)
    history = 2
    splits = subpopulation_splits(x, y, clusters_per_class=3, steps=12, seed=3, history=history)
    moves = [split.changed for split in splits[1:]]
    for step, move in enumerate(moves):
        assert move is not None
        to_test, to_train = move
        for later in moves[step + 1 : step + 1 + history]:
            assert later is not None
            assert later[0] != to_train and later[1] != to_test


def test_subpopulation_removal_shrinks_masks_and_raises_fid() -> None:
    x, y = _subpopulation_data(seed=2)
    splits = subpopulation_splits(x, y, clusters_per_class=3, steps=4, seed=0, removal_steps=4)
    removals = [split for split in splits if split.kind == "removal"]
    assert removals
    swap_peak = max(split.fid for split in splits if split.kind != "removal")
    assert removals[-1].fid > swap_peak
    previous_cover = None
    for split in splits:
        _check_closed_set(split, y, removal=True)
        cover = split.train_mask | split.test_mask
        if previous_cover is not None and split.kind == "removal":
            assert np.all(cover <= previous_cover) and cover.sum() < previous_cover.sum()
        previous_cover = cover
    fids = [split.fid for split in splits]
    assert all(later > earlier for earlier, later in itertools.pairwise(fids))


def test_subpopulation_splits_are_deterministic_with_a_seed() -> None:
    x, y = _subpopulation_data()
    first = subpopulation_splits(x, y, clusters_per_class=3, steps=5, seed=7)
    second = subpopulation_splits(x.copy(), y.copy(), clusters_per_class=3, steps=5, seed=7)
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a.train_mask, b.train_mask) and np.array_equal(a.test_mask, b.test_mask)
        assert a.fid == b.fid and a.train_units == b.train_units and a.changed == b.changed


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"clusters_per_class": 1}, "clusters_per_class"),
        ({"labels": np.zeros(5)}, "labels must have shape"),
        ({"features": np.zeros(144)}, "2-D"),
        ({"labels": np.zeros(144)}, "at least 2 classes"),
        ({"clusters_per_class": 40}, "fewer samples than clusters_per_class"),
        ({"train_fraction": 1.0}, "train_fraction"),
        ({"seed": -1}, "seed"),
    ],
)
def test_subpopulation_bad_inputs(change: dict, match: str) -> None:
    x, y = _subpopulation_data()
    arguments = {"features": x, "labels": y, "clusters_per_class": 3, "steps": 2, "seed": 0, **change}
    with pytest.raises(ValueError, match=match):
        subpopulation_splits(**arguments)


def test_subpopulation_rejects_classes_with_too_few_distinct_points() -> None:
    x, y = _subpopulation_data()
    x[y == 0] = 1.0  # class 0: one distinct point repeated
    with pytest.raises(ValueError, match="distinct"):
        subpopulation_splits(x, y, clusters_per_class=3, steps=2, seed=0)


# ------------------------------------------------------------------------------------------
# select_spread
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fid:
    fid: float


def test_select_spread_spans_the_range_in_increasing_order() -> None:
    items = [_Fid(v) for v in (0.0, 0.1, 0.2, 5.0, 9.0, 10.0)]
    assert [item.fid for item in select_spread(items, 3)] == [0.0, 5.0, 10.0]
    assert [item.fid for item in select_spread(items, 2)] == [0.0, 10.0]
    assert [item.fid for item in select_spread(items, 1)] == [0.0]
    assert [item.fid for item in select_spread(items, 6)] == [0.0, 0.1, 0.2, 5.0, 9.0, 10.0]
    shuffled = [items[i] for i in (3, 0, 5, 1, 4, 2)]
    assert [item.fid for item in select_spread(shuffled, 4)] == [0.0, 5.0, 9.0, 10.0]
    # Crowded targets still give distinct, increasing picks.
    crowded = [_Fid(v) for v in (0.0, 9.7, 9.8, 9.9, 10.0)]
    assert [item.fid for item in select_spread(crowded, 4)] == [0.0, 9.7, 9.8, 10.0]


def test_select_spread_on_real_splits() -> None:
    splits = class_swap_splits(_class_means(seed=5, classes=20), range(10), steps=30, removal_steps=4)
    chosen = select_spread(splits, 4)
    fids = [split.fid for split in chosen]
    assert fids[0] == min(s.fid for s in splits) and fids[-1] == max(s.fid for s in splits)
    assert all(later > earlier for earlier, later in itertools.pairwise(fids))


def test_select_spread_bad_counts() -> None:
    with pytest.raises(ValueError, match="cannot select"):
        select_spread([_Fid(1.0)], 2)
    with pytest.raises(ValueError, match="count"):
        select_spread([_Fid(1.0)], 0)


# ------------------------------------------------------------------------------------------
# feature maps and class means
# ------------------------------------------------------------------------------------------


def test_random_projection_features() -> None:
    x = np.random.default_rng(0).normal(size=(50, 3, 8, 8))
    x[:, 0, 0, 0] = 2.0  # a constant input feature must not produce NaN
    features = random_projection_features(x, dim=16, seed=1)
    assert features.shape == (50, 16) and np.all(np.isfinite(features))
    assert np.array_equal(features, random_projection_features(x, dim=16, seed=1))
    assert not np.allclose(features, random_projection_features(x, dim=16, seed=2))
    from_torch = random_projection_features(torch.from_numpy(x), dim=16, seed=1)
    assert np.allclose(from_torch, features)
    # Without standardisation it is a plain linear map: linear in the input.
    raw = random_projection_features(x, dim=16, seed=1, standardize=False)
    doubled = random_projection_features(2 * x, dim=16, seed=1, standardize=False)
    assert np.allclose(doubled, 2 * raw)
    with pytest.raises(ValueError, match="dim"):
        random_projection_features(x, dim=0)
    with pytest.raises(ValueError, match="sample axis"):
        random_projection_features(np.zeros(5))


def test_pca_features() -> None:
    x = np.random.default_rng(1).normal(size=(40, 12))
    features = pca_features(x, dim=5, seed=0)
    assert features.shape == (40, 5)
    assert np.array_equal(features, pca_features(x, dim=5, seed=0))
    variances = features.var(axis=0)
    assert np.all(np.diff(variances) <= 1e-12)  # components come in decreasing variance
    with pytest.raises(ValueError, match="dim must be at most"):
        pca_features(x, dim=13)


def test_class_mean_features() -> None:
    features = np.array([[0.0, 0.0], [2.0, 2.0], [5.0, 1.0], [1.0, 1.0]])
    labels = np.array([7, 7, 3, 7])
    classes, means = class_mean_features(features, labels)
    assert classes.tolist() == [3, 7]
    assert means.tolist() == [[5.0, 1.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="labels must have shape"):
        class_mean_features(features, labels[:2])


def test_class_sample_measure_is_the_mean_per_class_fid_of_the_examples() -> None:
    """``measure="class-samples"``: the recorded FID of every split is the mean over classes of the
    FID between that class's training and test examples, and it rises at every move."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(size=(60, 3)) + 4 * c for c in range(3)])
    y = np.repeat(np.arange(3), 60)
    splits = subpopulation_splits(
        x, y, clusters_per_class=4, steps=6, seed=0, history=1, measure="class-samples"
    )
    assert len(splits) >= 2
    assert all(b.fid > a.fid for a, b in itertools.pairwise(splits))
    for split in (splits[0], splits[-1]):
        direct = np.mean(
            [
                frechet_distance(x[split.train_mask & (y == c)], x[split.test_mask & (y == c)])
                for c in range(3)
            ]
        )
        assert split.fid == pytest.approx(direct, rel=1e-6)


def test_an_unknown_shift_measure_is_refused() -> None:
    x = np.random.default_rng(0).normal(size=(40, 2))
    with pytest.raises(ValueError, match="measure must be"):
        subpopulation_splits(x, np.repeat([0, 1], 20), 2, 1, 0, measure="samples")  # type: ignore[arg-type]


def test_the_iid_reference_split_halves_every_class_and_sits_near_zero_shift() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(size=(200, 2)) + 5 * c for c in range(3)])
    y = np.repeat(np.arange(3), 200)
    train, test = random_class_split(y, 0.5, seed=1)
    assert not (train & test).any() and (train | test).all()
    assert all(train[y == c].sum() == 100 for c in range(3))
    again, _ = random_class_split(y, 0.5, seed=1)
    assert (again == train).all()
    iid = class_sample_fid(x, y, train, test)
    shifted = subpopulation_splits(x, y, 4, 10, 0, history=1, measure="class-samples")[-1]
    assert iid < shifted.fid
    assert class_sample_fid(x, y, shifted.train_mask, shifted.test_mask) == pytest.approx(
        shifted.fid, rel=1e-6
    )
