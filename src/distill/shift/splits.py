"""ooDML-style train/test splits of rising distribution shift, measured by the Fréchet distance.

Method: Milbich et al., "Characterizing Generalization under Out-Of-Distribution Shifts in Deep
Metric Learning", NeurIPS 2021, arXiv 2107.09562; official code
``Confusezius/Characterizing_Generalization_in_DeepMetricLearning`` (``create_dataset_splits.py``,
``split_helpers.py``). ``docs/methods/oodml-splits.md`` records what the official code does and
where this module departs from it.

* :func:`class_swap_splits` — the open-set procedure of the paper. Each class is one point (its mean
  feature under a frozen network); the shift of a split is the FID between the set of train-class
  means and the set of test-class means. Each step swaps the most test-like train class with the
  most train-like test class, where "X-like" is measured as in ``split_helpers.split_maker``: a
  train class c scores ‖m_c − μ_test‖ − ‖m_c − μ_train‖ (μ = mean of the set's class means; the
  lowest score is the most test-like) and a test class scores ‖m_c − μ_train‖ − ‖m_c − μ_test‖.
  Classes moved in the last ``history`` steps may not be moved back (no ping-pong). Optional
  removal steps then drop the same two candidates instead of swapping them
  (``split_maker_with_class_removal``).
* :func:`subpopulation_splits` — the closed-set variant for classifiers: every class is cut into
  k-means sub-clusters and the swapped units are (class, sub-cluster) pairs, always inside one
  class, so every class keeps training and test data while the inputs shift.
* :func:`select_spread` — a few splits spanning the FID range evenly.
* :func:`random_projection_features`, :func:`pca_features`, :func:`class_mean_features` — feature
  maps that favour no model, and the per-class means the open-set procedure needs.

Everything here is deterministic for fixed inputs (and ``seed`` where one is taken).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from distill.shift.fid import frechet_distance, frechet_distance_from_stats

__all__ = [
    "ClassSplit",
    "SubpopulationSplit",
    "class_mean_features",
    "class_sample_fid",
    "class_swap_splits",
    "pca_features",
    "random_class_split",
    "random_projection_features",
    "select_spread",
    "subpopulation_splits",
]

SplitKind = Literal["initial", "swap", "removal"]
#: How a sub-population split's shift is measured (see :func:`subpopulation_splits`).
ShiftMeasure = Literal["unit-means", "class-samples"]

# A move must raise the FID by more than this (relative) margin to count as raising it, so that
# round-off never turns a neutral move into an "increase".
_RELATIVE_TOLERANCE = 1e-9


def _raises(new_fid: float, fid: float) -> bool:
    return new_fid > fid + _RELATIVE_TOLERANCE * max(1.0, abs(fid))


@dataclass(frozen=True)
class ClassSplit:
    """One open-set split: disjoint train and test class sets and their FID (arXiv 2107.09562).

    ``step`` counts the moves made since the initial split (0); ``kind`` says what the last move
    was. ``changed`` is ``(train_class, test_class)``, the two classes that move swapped (the
    first went to test, the second to train) or removed; ``None`` for the initial split.
    """

    train_classes: tuple[int, ...]
    test_classes: tuple[int, ...]
    fid: float
    step: int
    kind: SplitKind
    changed: tuple[int, int] | None = None


@dataclass(frozen=True, eq=False)
class SubpopulationSplit:
    """One closed-set split: boolean sample masks plus the (class, sub-cluster) units behind them.

    ``train_mask`` and ``test_mask`` are (N,) and disjoint; their union is every sample, or fewer
    after removal steps. Every class has at least one unit on each side. ``fid`` is the Fréchet
    distance between the train-unit means and the test-unit means. ``changed`` is
    ``(train_unit, test_unit)`` for a swap (the first went to test, the second to train),
    ``(unit, None)`` or ``(None, unit)`` for a removal from train or test, ``None`` initially.
    """

    train_mask: np.ndarray
    test_mask: np.ndarray
    train_units: tuple[tuple[int, int], ...]
    test_units: tuple[tuple[int, int], ...]
    fid: float
    step: int
    kind: SplitKind
    changed: tuple[tuple[int, int] | None, tuple[int, int] | None] | None = None


class _HasFid(Protocol):
    @property
    def fid(self) -> float: ...


SplitT = TypeVar("SplitT", bound=_HasFid)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _check_int(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def _flatten_inputs(x: np.ndarray | torch.Tensor) -> np.ndarray:
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.ndim < 2:
        raise ValueError(f"x must have a sample axis and at least one feature axis, got shape {array.shape}")
    if array.shape[0] < 2:
        raise ValueError(f"x needs at least 2 samples, got {array.shape[0]}")
    flat = array.reshape(array.shape[0], -1).astype(np.float64)
    if not np.all(np.isfinite(flat)):
        raise ValueError("x holds NaN or infinite values")
    return flat


def _standardize(x: np.ndarray) -> np.ndarray:
    std = x.std(axis=0)
    return np.asarray((x - x.mean(axis=0)) / np.where(std > 0, std, 1.0))


def _distance_scores(
    means: np.ndarray, train_idx: Sequence[int] | np.ndarray, test_idx: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ooDML's swap scores (``split_helpers.split_maker``); the lowest score is the best candidate.

    train score = ‖m − μ_test‖ − ‖m − μ_train‖ (low: a test-like train point);
    test score = ‖m − μ_train‖ − ‖m − μ_test‖ (low: a train-like test point).
    """
    train_means = means[list(train_idx)]
    test_means = means[list(test_idx)]
    mu_train = train_means.mean(axis=0)
    mu_test = test_means.mean(axis=0)
    train_scores = np.linalg.norm(train_means - mu_test, axis=1) - np.linalg.norm(
        train_means - mu_train, axis=1
    )
    test_scores = np.linalg.norm(test_means - mu_train, axis=1) - np.linalg.norm(test_means - mu_test, axis=1)
    return train_scores, test_scores


def _best(candidates: Sequence[int], scores: np.ndarray, forbidden: deque[int]) -> int | None:
    """Lowest-scoring candidate not in ``forbidden``; ties go to the smaller id."""
    allowed = [
        (float(score), item) for item, score in zip(candidates, scores, strict=True) if item not in forbidden
    ]
    return min(allowed)[1] if allowed else None


def class_mean_features(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean features: ``(classes, means)`` with ``classes`` sorted and ``means`` (C, D).

    ooDML computes these from a frozen network's pooled features (``split_helpers.get_features``);
    row ``i`` of ``means`` belongs to ``classes[i]``, so ``class_swap_splits`` indices are row indices.
    """
    feats = _as_matrix(features, "features")
    labs = np.asarray(labels)
    if labs.ndim != 1 or labs.shape[0] != feats.shape[0]:
        raise ValueError(f"labels must have shape ({feats.shape[0]},) to match features, got {labs.shape}")
    classes, inverse = np.unique(labs, return_inverse=True)
    sums = np.zeros((classes.shape[0], feats.shape[1]))
    np.add.at(sums, inverse, feats)
    counts = np.bincount(inverse, minlength=classes.shape[0])
    return classes, sums / counts[:, None]


# --------------------------------------------------------------------------------------------
# open-set: class swaps (the ooDML procedure)
# --------------------------------------------------------------------------------------------


def class_swap_splits(
    class_means: np.ndarray,
    initial_train: Sequence[int],
    steps: int,
    history: int = 5,
    removal_steps: int = 0,
    *,
    stop_when_flat: bool = True,
) -> list[ClassSplit]:
    """Open-set splits of rising shift by greedy class swaps, then class removals (arXiv 2107.09562).

    ``class_means`` is (K, D): one row per class (see :func:`class_mean_features`); classes are row
    indices. ``initial_train`` lists the train classes of the starting split; every other class is
    a test class. Both sides need at least 2 classes (a covariance needs two points).

    Each of up to ``steps`` swap steps takes the lowest-scoring train class and the lowest-scoring
    test class (scores in the module docstring) that were not moved *into* their current side in
    the last ``history`` steps, and swaps them (``split_helpers.split_maker``, one swap per step;
    the official default and the value ``create_dataset_splits.py`` uses is ``HISTORY=5``).
    Afterwards up to ``removal_steps`` removal steps pick the two candidates by the same rule and
    drop both (``split_maker_with_class_removal``), so each side loses one class per step; the
    removal phase also ends early if every class left on a side is still held by the history.

    With ``stop_when_flat`` (default) a move that would not raise the FID is not made and ends its
    phase: the swap phase then hands over to the removal phase, and the removal phase ends. The
    recorded FIDs are then strictly increasing, and the list may be shorter than
    ``1 + steps + removal_steps``. With ``stop_when_flat=False`` swaps follow the official
    ``split_maker`` exactly (it never checks the FID, so the FID is *not* guaranteed to rise at
    every step) and removals are always made.

    Returns the initial split (step 0) followed by one :class:`ClassSplit` per move made.
    """
    means = _as_matrix(class_means, "class_means")
    num_classes = means.shape[0]
    if num_classes < 4:
        raise ValueError(f"class swaps need at least 4 classes (2 per side), got {num_classes}")
    steps = _check_int(steps, "steps", 0)
    history = _check_int(history, "history", 0)
    removal_steps = _check_int(removal_steps, "removal_steps", 0)
    train_list = [_check_int(c, "every initial_train entry", 0) for c in initial_train]
    if len(set(train_list)) != len(train_list):
        raise ValueError("initial_train lists a class twice")
    outside = [c for c in train_list if not 0 <= c < num_classes]
    if outside:
        raise ValueError(f"initial_train holds classes outside 0..{num_classes - 1}: {outside}")
    train = sorted(train_list)
    test = sorted(set(range(num_classes)) - set(train))
    if len(train) < 2 or len(test) < 2:
        raise ValueError(
            f"both sides need at least 2 classes, got {len(train)} train and {len(test)} test classes"
        )
    smaller = min(len(train), len(test))
    if steps > 0 and history >= smaller:
        raise ValueError(
            f"history ({history}) must be smaller than the smaller side ({smaller} classes), "
            "or every candidate would be forbidden"
        )
    if removal_steps > smaller - 2:
        raise ValueError(
            f"removal_steps ({removal_steps}) would leave fewer than 2 classes on a side; "
            f"at most {smaller - 2} for this split"
        )

    def split_fid(train_set: Sequence[int], test_set: Sequence[int]) -> float:
        return frechet_distance(means[list(train_set)], means[list(test_set)])

    # Classes moved *into* train (resp. test) in the last `history` moves may not leave it again:
    # the official code keeps the list positions it swapped, which then hold exactly those classes.
    into_train: deque[int] = deque(maxlen=history)
    into_test: deque[int] = deque(maxlen=history)
    fid = split_fid(train, test)
    splits = [ClassSplit(tuple(train), tuple(test), fid, 0, "initial")]
    step = 0

    def candidates() -> tuple[int, int] | None:
        train_scores, test_scores = _distance_scores(means, train, test)
        out_of_train = _best(train, train_scores, into_train)
        out_of_test = _best(test, test_scores, into_test)
        if out_of_train is None or out_of_test is None:
            return None  # only possible once removals shrink a side to its history
        return out_of_train, out_of_test

    for _ in range(steps):
        pair = candidates()
        assert pair is not None  # history < the smaller side, and swaps keep the side sizes
        leaving_train, leaving_test = pair
        new_train = sorted([c for c in train if c != leaving_train] + [leaving_test])
        new_test = sorted([c for c in test if c != leaving_test] + [leaving_train])
        new_fid = split_fid(new_train, new_test)
        if stop_when_flat and not _raises(new_fid, fid):
            break
        train, test, fid, step = new_train, new_test, new_fid, step + 1
        into_train.append(leaving_test)
        into_test.append(leaving_train)
        splits.append(
            ClassSplit(tuple(train), tuple(test), fid, step, "swap", changed=(leaving_train, leaving_test))
        )

    for _ in range(removal_steps):
        pair = candidates()
        if pair is None:
            break
        dropped_train, dropped_test = pair
        new_train = [c for c in train if c != dropped_train]
        new_test = [c for c in test if c != dropped_test]
        new_fid = split_fid(new_train, new_test)
        if stop_when_flat and not _raises(new_fid, fid):
            break
        train, test, fid, step = new_train, new_test, new_fid, step + 1
        splits.append(
            ClassSplit(tuple(train), tuple(test), fid, step, "removal", changed=(dropped_train, dropped_test))
        )
    return splits


# --------------------------------------------------------------------------------------------
# closed-set: sub-population swaps inside each class
# --------------------------------------------------------------------------------------------


def _cluster_classes(
    feats: np.ndarray, labs: np.ndarray, classes: np.ndarray, clusters_per_class: int, seed: int, n_init: int
) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray]:
    """k-means inside every class: (sample → unit index, unit keys (class, cluster), unit means)."""
    class_seeds = [int(v) for v in np.random.default_rng(seed).integers(0, 2**31 - 1, size=len(classes))]
    sample_unit = np.full(feats.shape[0], -1, dtype=np.int64)
    keys: list[tuple[int, int]] = []
    unit_means: list[np.ndarray] = []
    for class_index, label in enumerate(classes):
        rows = np.flatnonzero(labs == label)
        class_feats = feats[rows]
        distinct = int(np.unique(class_feats, axis=0).shape[0])
        if distinct < clusters_per_class:
            raise ValueError(
                f"class {label!r} has {distinct} distinct feature vectors, fewer than "
                f"clusters_per_class={clusters_per_class}"
            )
        kmeans = KMeans(n_clusters=clusters_per_class, n_init=n_init, random_state=class_seeds[class_index])
        assignment = kmeans.fit_predict(class_feats)
        # Number the clusters by their smallest member row, so the numbering does not depend on
        # the order k-means happened to find them in.
        first_row = [int(np.flatnonzero(assignment == k)[0]) for k in range(clusters_per_class)]
        for cluster, k in enumerate(np.argsort(first_row)):
            members = rows[assignment == k]
            sample_unit[members] = len(keys)
            keys.append((int(label), cluster))
            unit_means.append(feats[members].mean(axis=0))
    return sample_unit, keys, np.stack(unit_means)


class _UnitMoments:
    """Per unit: example count, feature sum and sum of outer products, so that the Gaussian fit of
    any union of units is a sum away; caches each class's FID by its (train, test) unit sets."""

    def __init__(self, feats: np.ndarray, sample_unit: np.ndarray, units: int) -> None:
        self.count = np.bincount(sample_unit, minlength=units).astype(np.float64)
        self.total = np.stack([feats[sample_unit == u].sum(axis=0) for u in range(units)])
        self.outer = np.stack([feats[sample_unit == u].T @ feats[sample_unit == u] for u in range(units)])
        self._cache: dict[tuple[tuple[int, ...], tuple[int, ...]], float] = {}

    def _stats(self, chosen: list[int]) -> tuple[np.ndarray, np.ndarray]:
        n = self.count[chosen].sum()
        mean = self.total[chosen].sum(axis=0) / n
        covariance = (self.outer[chosen].sum(axis=0) - n * np.outer(mean, mean)) / max(n - 1.0, 1.0)
        return mean, covariance

    def class_fid(self, units: list[int], train_flags: np.ndarray, test_flags: np.ndarray) -> float:
        train = tuple(u for u in units if train_flags[u])
        test = tuple(u for u in units if test_flags[u])
        key = (train, test)
        if key not in self._cache:
            self._cache[key] = frechet_distance_from_stats(
                *self._stats(list(train)), *self._stats(list(test))
            )
        return self._cache[key]


def subpopulation_splits(
    features: np.ndarray,
    labels: np.ndarray,
    clusters_per_class: int,
    steps: int,
    seed: int,
    *,
    history: int = 2,
    removal_steps: int = 0,
    train_fraction: float = 0.5,
    n_init: int = 10,
    measure: ShiftMeasure = "unit-means",
) -> list[SubpopulationSplit]:
    """Closed-set splits of rising shift: ooDML's greedy swaps applied to sub-populations of classes.

    ``features`` (N, D) are fixed feature vectors (see :func:`random_projection_features`,
    :func:`pca_features`, or a frozen teacher's features); ``labels`` (N,) are class labels.

    1. Every class is cut into ``clusters_per_class`` (≥ 2) sub-clusters by k-means (scikit-learn
       ``KMeans``, ``n_init`` restarts, seeded from ``seed``). A unit is a (class, cluster) pair;
       its mean feature plays the part a class mean plays in ooDML.
    2. Initial split (step 0): for every class a seeded random ``train_fraction`` of its units
       (at least one, at most all but one) go to train, the rest to test — a near in-distribution
       split.
    3. Each swap step scores units as ooDML scores classes (module docstring), takes in every
       class its lowest-scoring train unit and lowest-scoring test unit not moved into their side
       in the last ``history`` steps, ranks the classes by the sum of the two scores, and makes the
       first swap in that order that raises the FID between train-unit and test-unit means.
       Swaps stay inside a class, so the label set and the number of units per side and class
       never change. The phase ends after ``steps`` swaps or when no swap raises the FID.
    4. Up to ``removal_steps`` removal steps then drop one unit at a time — the lowest-scoring unit,
       train or test, whose class keeps another unit on that side — if that raises the FID; its
       samples leave both masks.

    ``measure`` is the FID a move must raise (and the one recorded): ``unit-means`` (ooDML's, carried
    over) is the FID between the set of train-unit means and the set of test-unit means;
    ``class-samples`` is the mean over classes of the FID between the class's training examples and
    its test examples (Gaussian fits to their features). The first mixes the spread *between*
    classes into the measure, so a move can raise it without moving any class's test examples
    further from its training examples; the second measures only the shift inside each class,
    which is what a closed-set classifier has to bridge.

    Recorded FIDs are strictly increasing. Returns the initial split and one
    :class:`SubpopulationSplit` per move; the list may be shorter than ``1 + steps + removal_steps``.
    """
    feats = _as_matrix(features, "features")
    labs = np.asarray(labels)
    if labs.ndim != 1 or labs.shape[0] != feats.shape[0]:
        raise ValueError(f"labels must have shape ({feats.shape[0]},) to match features, got {labs.shape}")
    clusters_per_class = _check_int(clusters_per_class, "clusters_per_class", 2)
    steps = _check_int(steps, "steps", 0)
    seed = _check_int(seed, "seed", 0)
    history = _check_int(history, "history", 0)
    removal_steps = _check_int(removal_steps, "removal_steps", 0)
    n_init = _check_int(n_init, "n_init", 1)
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie strictly between 0 and 1, got {train_fraction}")
    if measure not in ("unit-means", "class-samples"):
        raise ValueError(f"measure must be 'unit-means' or 'class-samples', got {measure!r}")
    classes, counts = np.unique(labs, return_counts=True)
    if classes.shape[0] < 2:
        raise ValueError(f"sub-population splits need at least 2 classes, got {classes.shape[0]}")
    small = classes[counts < clusters_per_class]
    if small.size:
        raise ValueError(
            f"classes {small.tolist()} have fewer samples than clusters_per_class={clusters_per_class}"
        )

    sample_unit, keys, unit_means = _cluster_classes(feats, labs, classes, clusters_per_class, seed, n_init)
    units_of_class = [
        list(range(i * clusters_per_class, (i + 1) * clusters_per_class)) for i in range(classes.shape[0])
    ]
    per_side = min(max(round(clusters_per_class * train_fraction), 1), clusters_per_class - 1)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    in_train = np.zeros(len(keys), dtype=bool)
    for units in units_of_class:
        in_train[rng.permutation(units)[:per_side]] = True
    removed = np.zeros(len(keys), dtype=bool)

    moments = _UnitMoments(feats, sample_unit, len(keys)) if measure == "class-samples" else None

    def unit_fid(train_flags: np.ndarray, removed_flags: np.ndarray) -> float:
        test_flags = ~train_flags & ~removed_flags
        if moments is None:
            return frechet_distance(unit_means[train_flags & ~removed_flags], unit_means[test_flags])
        return float(
            np.mean(
                [
                    moments.class_fid(units, train_flags & ~removed_flags, test_flags)
                    for units in units_of_class
                ]
            )
        )

    def record(
        fid: float,
        step: int,
        kind: SplitKind,
        changed: tuple[tuple[int, int] | None, tuple[int, int] | None] | None,
    ) -> SubpopulationSplit:
        train_units = np.flatnonzero(in_train & ~removed)
        test_units = np.flatnonzero(~in_train & ~removed)
        return SubpopulationSplit(
            train_mask=np.isin(sample_unit, train_units),
            test_mask=np.isin(sample_unit, test_units),
            train_units=tuple(keys[u] for u in train_units),
            test_units=tuple(keys[u] for u in test_units),
            fid=fid,
            step=step,
            kind=kind,
            changed=changed,
        )

    def scores() -> np.ndarray:
        """Per unit: ooDML's train score for train units, test score for test units (low = move it)."""
        live = ~removed
        train_idx = np.flatnonzero(in_train & live)
        test_idx = np.flatnonzero(~in_train & live)
        train_scores, test_scores = _distance_scores(unit_means, train_idx, test_idx)
        out = np.full(len(keys), np.inf)
        out[train_idx] = train_scores
        out[test_idx] = test_scores
        return out

    into_train: deque[int] = deque(maxlen=history)
    into_test: deque[int] = deque(maxlen=history)
    fid = unit_fid(in_train, removed)
    splits = [record(fid, 0, "initial", None)]
    step = 0

    for _ in range(steps):
        unit_scores = scores()
        proposals: list[tuple[float, int, int, int]] = []
        for class_index, units in enumerate(units_of_class):
            train_side = [u for u in units if in_train[u] and u not in into_train]
            test_side = [u for u in units if not in_train[u] and u not in into_test]
            proposals.extend(
                (float(unit_scores[u] + unit_scores[v]), class_index, u, v)
                for u in train_side
                for v in test_side
            )
        accepted = False
        for _score, _class_index, out_of_train, out_of_test in sorted(proposals):
            trial = in_train.copy()
            trial[out_of_train], trial[out_of_test] = False, True
            new_fid = unit_fid(trial, removed)
            if _raises(new_fid, fid):
                in_train, fid, step = trial, new_fid, step + 1
                into_train.append(out_of_test)
                into_test.append(out_of_train)
                splits.append(record(fid, step, "swap", (keys[out_of_train], keys[out_of_test])))
                accepted = True
                break
        if not accepted:
            break

    for _ in range(removal_steps):
        unit_scores = scores()
        removable: list[tuple[float, int]] = []
        for units in units_of_class:
            for side in (True, False):
                live_side = [u for u in units if in_train[u] == side and not removed[u]]
                if len(live_side) >= 2:
                    removable.extend((float(unit_scores[u]), u) for u in live_side)
        accepted = False
        for _score, unit in sorted(removable):
            trial = removed.copy()
            trial[unit] = True
            new_fid = unit_fid(in_train, trial)
            if _raises(new_fid, fid):
                removed, fid, step = trial, new_fid, step + 1
                changed = (keys[unit], None) if in_train[unit] else (None, keys[unit])
                splits.append(record(fid, step, "removal", changed))
                accepted = True
                break
        if not accepted:
            break
    return splits


def random_class_split(labels: np.ndarray, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An i.i.d. reference split: in every class a seeded random ``train_fraction`` of the examples
    (at least one, at most all but one) go to train, the rest to test. Boolean (N,) masks."""
    labs = np.asarray(labels)
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie strictly between 0 and 1, got {train_fraction}")
    rng = np.random.default_rng(np.random.SeedSequence([_check_int(seed, "seed", 0), 2]))
    train = np.zeros(labs.shape[0], dtype=bool)
    for label in np.unique(labs):
        rows = np.flatnonzero(labs == label)
        if rows.size < 2:
            raise ValueError(f"class {label!r} has {rows.size} example(s); a split needs 2 per class")
        take = min(max(round(rows.size * train_fraction), 1), rows.size - 1)
        train[rng.permutation(rows)[:take]] = True
    return train, ~train


def class_sample_fid(
    features: np.ndarray, labels: np.ndarray, train_mask: np.ndarray, test_mask: np.ndarray
) -> float:
    """The ``class-samples`` shift of any split (:func:`subpopulation_splits`): the mean over
    classes of the FID between the class's training and test examples' features."""
    feats = _as_matrix(features, "features")
    labs = np.asarray(labels)
    return float(
        np.mean(
            [
                frechet_distance(feats[train_mask & (labs == c)], feats[test_mask & (labs == c)])
                for c in np.unique(labs[train_mask | test_mask])
            ]
        )
    )


# --------------------------------------------------------------------------------------------
# choosing splits, feature maps
# --------------------------------------------------------------------------------------------


def select_spread(splits: Sequence[SplitT], count: int) -> list[SplitT]:
    """``count`` splits whose FIDs span the range evenly, in increasing FID order.

    Always the lowest- and the highest-FID split; in between, for each of the evenly spaced
    target FIDs, the closest split not yet taken that keeps the picks in increasing FID order.
    Ties in FID keep the input order (earlier step first).
    """
    count = _check_int(count, "count", 1)
    if count > len(splits):
        raise ValueError(f"cannot select {count} splits from {len(splits)}")
    ordered = sorted(enumerate(splits), key=lambda item: (float(item[1].fid), item[0]))
    fids = np.array([float(split.fid) for _, split in ordered])
    if count == 1:
        return [ordered[0][1]]
    targets = np.linspace(fids[0], fids[-1], count)
    picked = [0]
    for i in range(1, count - 1):
        low = picked[-1] + 1
        high = len(ordered) - (count - i)  # leave room for the remaining picks
        window = np.abs(fids[low : high + 1] - targets[i])
        picked.append(low + int(np.argmin(window)))
    picked.append(len(ordered) - 1)
    return [ordered[i][1] for i in picked]


def random_projection_features(
    x: np.ndarray | torch.Tensor, dim: int = 64, seed: int = 0, *, standardize: bool = True
) -> np.ndarray:
    """A fixed Gaussian random projection of the flattened inputs: (N, ...) → (N, dim) float64.

    The inputs are flattened to (N, P), optionally standardised per input feature (zero mean,
    unit variance; constant features are only centred), and multiplied by a (P, dim) matrix of
    N(0, 1/dim) entries drawn from ``seed``. The projection depends on no model, so splits built
    on it favour none of the models later compared on them; by Johnson–Lindenstrauss it roughly
    keeps the distances between inputs.
    """
    flat = _flatten_inputs(x)
    dim = _check_int(dim, "dim", 1)
    seed = _check_int(seed, "seed", 0)
    if standardize:
        flat = _standardize(flat)
    projection = np.random.default_rng(seed).standard_normal((flat.shape[1], dim)) / np.sqrt(dim)
    return np.asarray(flat @ projection)


def pca_features(
    x: np.ndarray | torch.Tensor, dim: int, seed: int = 0, *, standardize: bool = False
) -> np.ndarray:
    """The first ``dim`` principal components of the flattened inputs (scikit-learn ``PCA``).

    (N, ...) → (N, dim) float64; ``seed`` fixes the randomized solver scikit-learn picks for large
    inputs. Like :func:`random_projection_features` it depends on no model.
    """
    flat = _flatten_inputs(x)
    dim = _check_int(dim, "dim", 1)
    seed = _check_int(seed, "seed", 0)
    if dim > min(flat.shape):
        raise ValueError(f"dim must be at most min(samples, input features) = {min(flat.shape)}, got {dim}")
    if standardize:
        flat = _standardize(flat)
    return np.asarray(PCA(n_components=dim, random_state=seed).fit_transform(flat), dtype=np.float64)
