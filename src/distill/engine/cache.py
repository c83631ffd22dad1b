"""Teacher-output cache: a frozen teacher's outputs computed once, memory-mapped from disk.

Offline distillation queries the same frozen teacher on the same inputs over and over. The cache
stores, for every augmentation *draw* ``d`` and training sample ``i``, the teacher's
temperature-``T`` log-probabilities on exactly the augmented input the student sees under that
draw (see :class:`~distill.data.augment.AugmentPlan`, which makes a sample's augmentation a
function of (draw, index) alone). This is the Fast Knowledge Distillation recipe (Shen & Xing,
ECCV 2022: store the augmentation parameters and the teacher's top-k soft labels per draw),
generalized to mixup partners, shifts, noise, flips and crops.

Storage per (draw, sample): all ``C`` log-probabilities, or the ``top_k`` largest as
(log-probability, class) pairs; the remaining probability mass (``1 − Σ top-k``) is either spread
evenly over the other classes (``rest: uniform``, FKD's choice, the default) or compared as one
bin with the student's mass on those classes (``rest: bin``,
:func:`distill.losses.kd_loss_top_k`). Files live under
``$DISTILL_CACHE/teacher-outputs/<key>/`` where the key hashes the teacher's weights, the data
fingerprint, the augmentation spec and seed, the number of draws, ``T``, ``top_k`` and the
storage precision: any change selects another cache. Each draw is filled the first time it is
needed and stamped with a CRC32; a draw whose bytes no longer match, or a truncated file, is
detected and recomputed, with a message.

A method that matches features (FitNet hints, attention transfer) also gets the tapped teacher
layers' outputs stored per (draw, sample), in the same precision: then the teacher does not run
at all after a draw is filled. The layers and their per-sample shapes are part of the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from distill.data.augment import AugmentPlan, AugmentSpec, planned_batches
from distill.data.bundle import DataBundle, Split
from distill.files import DirectoryLock, atomic_write_json
from distill.models.taps import FeatureTaps
from distill.schema import BatchSize, FilePath, PositiveInt, Section

LOG = logging.getLogger("distill")
FORMAT_VERSION = 1


class TeacherCacheSpec(Section):
    """``top_k``: keep the k most probable classes (unset: all); ``precision`` of stored values;
    ``directory``: where caches live (default ``$DISTILL_CACHE/teacher-outputs``); ``rest``: how
    a top-k target treats the other classes — ``uniform`` spreads the remaining mass evenly over
    them (as Fast Knowledge Distillation does), ``bin`` merges them into one bin on both sides
    (:func:`distill.losses.kd_loss_top_k`)."""

    top_k: PositiveInt | None = None
    precision: Literal["float32", "float16"] = "float32"
    directory: FilePath | None = None
    batch_size: BatchSize = 1024
    rest: Literal["uniform", "bin"] = "uniform"


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, shapes, bytes) of ``model``."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything the cached values depend on."""

    teacher: str
    data: str
    augment: str
    seed: int
    draws: int
    temperature: float
    top_k: int | None
    precision: str
    num_samples: int
    num_classes: int
    #: tapped teacher layers stored alongside the outputs: (module name, per-sample shape)
    features: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @classmethod
    def for_training(
        cls,
        teacher: nn.Module,
        data: DataBundle,
        augment: AugmentSpec,
        seed: int,
        epochs: int,
        temperature: float,
        top_k: int | None,
        precision: str,
        feature_layers: Sequence[str] = (),
    ) -> CacheKey:
        """The key of the cache a KD run needs: ``teacher`` on ``data``'s training split under
        ``augment`` drawn from ``seed`` for ``epochs`` epochs, softened at ``temperature``, with
        the outputs of the teacher modules ``feature_layers`` (their shapes are probed on one
        training sample)."""
        return cls(
            teacher=weights_fingerprint(teacher),
            data=data.fingerprint,
            augment=augment.model_dump_json(exclude={"draws"}),
            seed=seed,
            draws=cache_draws(epochs, augment.enabled, augment.draws),
            temperature=temperature,
            top_k=top_k,
            precision=precision,
            num_samples=len(data.train),
            num_classes=data.num_classes,
            features=feature_shapes(teacher, data.train.inputs[:1], feature_layers),
        )

    def fields(self) -> dict[str, Any]:
        """The key as JSON values (what ``meta.json`` stores); ``features`` only when there are
        any, so that a logits-only key reads as it did before features could be cached."""
        fields = json.loads(json.dumps(self.__dict__))
        if not self.features:
            del fields["features"]
        return fields

    def digest(self) -> str:
        payload = json.dumps({"version": FORMAT_VERSION, **self.fields()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]


def feature_shapes(
    teacher: nn.Module, example: torch.Tensor, layers: Sequence[str]
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """``(layer, per-sample output shape)`` of each named teacher module, in sorted order."""
    if not layers:
        return ()
    names = sorted(set(layers))
    taps = FeatureTaps(teacher, names, owner="teacher_cache")
    was_training = teacher.training
    try:
        teacher.eval()
        device = next(teacher.parameters(), torch.empty(0)).device
        with torch.inference_mode():
            teacher(example.to(device))
        return tuple((name, tuple(taps.features[name].shape[1:])) for name in names)
    finally:
        teacher.train(was_training)
        taps.remove()


def default_cache_root() -> Path:
    from distill.data.sources import cache_dir

    return cache_dir() / "teacher-outputs"


class TeacherOutputCache:
    """Memory-mapped teacher log-probabilities for ``draws × samples``, filled draw by draw."""

    def __init__(
        self, key: CacheKey, root: Path | None = None, batch_size: int = 1024, rest: str = "uniform"
    ) -> None:
        self.key = key
        self.batch_size = batch_size
        self.rest = rest
        self.path = (root or default_cache_root()) / key.digest()
        self.stored_classes = key.top_k if key.top_k is not None else key.num_classes
        self.stored_classes = min(self.stored_classes, key.num_classes)
        self.dtype = np.float16 if key.precision == "float16" else np.float32
        self._values: np.memmap | None = None
        self._classes: np.memmap | None = None
        self._features: dict[str, np.memmap] = {}
        self._verified: set[int] = set()
        self.hits = 0
        self.fills = 0
        self._open()

    # ------------------------------------------------------------------ files
    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    @property
    def temperature(self) -> float:
        """The temperature the stored log-probabilities are softened at."""
        return self.key.temperature

    @property
    def sparse(self) -> bool:
        return self.stored_classes < self.key.num_classes

    def _shape(self, name: str = "values") -> tuple[int, ...]:
        if name.startswith("feature-"):
            _, shape = self.key.features[int(name.removeprefix("feature-"))]
            return (self.key.draws, self.key.num_samples, *shape)
        return (self.key.draws, self.key.num_samples, self.stored_classes)

    def _feature_files(self) -> dict[str, str]:
        """Tapped layer name → its file's stem (``feature-<i>``, by the key's order)."""
        return {name: f"feature-{index}" for index, (name, _) in enumerate(self.key.features)}

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the cache directory's lock: two processes that share a cache (the same teacher,
        data and augmentation, e.g. runs started side by side) never create, fill or record it at
        once. Waits for the other process, which holds it only while it creates or fills a draw."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock(self.path)
        lock.acquire("teacher-output cache", wait=True)
        try:
            yield
        finally:
            lock.release()

    def _open(self) -> None:
        with self._locked():
            self._open_unlocked()

    def _open_unlocked(self) -> None:
        meta = self._read_meta()
        if meta is not None:
            try:
                self._values = self._load_checked("values")
                if self.sparse:
                    self._classes = self._load_checked("classes")
                self._features = {
                    name: self._load_checked(stem) for name, stem in self._feature_files().items()
                }
                self.meta = meta
                return
            except (OSError, ValueError, EOFError) as error:
                LOG.warning("teacher cache %s is damaged (%s); rebuilding it", self.path, error)
        self._create()

    def _load_checked(self, name: str) -> np.memmap:
        """Memory-map ``name.npy`` for writing after checking its shape and length read-only
        (numpy would silently extend a truncated file opened for writing)."""
        path = self.path / f"{name}.npy"
        probe = np.load(path, mmap_mode="r")  # raises on a file shorter than its header says
        if probe.shape != self._shape(name):
            raise ValueError(f"{name}.npy has shape {probe.shape}, expected {self._shape(name)}")
        if path.stat().st_size < probe.offset + probe.nbytes:
            raise ValueError(f"{name}.npy is truncated")
        del probe
        return np.load(path, mmap_mode="r+")

    def _read_meta(self) -> dict[str, Any] | None:
        if not self.meta_path.exists():
            return None
        try:
            meta = json.loads(self.meta_path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            LOG.warning("teacher cache %s has unreadable metadata (%s); rebuilding it", self.path, error)
            return None
        problem = _meta_problem(meta)
        if problem is not None:
            LOG.warning("teacher cache %s has damaged metadata (%s); rebuilding it", self.path, problem)
            return None
        if meta["key"] != self.key.fields():
            LOG.warning("teacher cache %s belongs to another key; rebuilding it", self.path)
            return None
        return meta

    def _create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._values = np.lib.format.open_memmap(
            self.path / "values.npy", mode="w+", dtype=self.dtype, shape=self._shape()
        )
        if self.sparse:
            class_dtype = np.int16 if self.key.num_classes < 2**15 else np.int32
            self._classes = np.lib.format.open_memmap(
                self.path / "classes.npy", mode="w+", dtype=class_dtype, shape=self._shape()
            )
        self._features = {
            name: np.lib.format.open_memmap(
                self.path / f"{stem}.npy", mode="w+", dtype=self.dtype, shape=self._shape(stem)
            )
            for name, stem in self._feature_files().items()
        }
        self.meta = {"key": self.key.fields(), "checksums": {}}
        atomic_write_json(self.meta_path, self.meta)

    def _arrays(self) -> list[np.memmap]:
        """Every stored array, in checksum order: values, classes (top-k), tapped features."""
        assert self._values is not None
        classes = [] if self._classes is None else [self._classes]
        return [self._values, *classes, *self._features.values()]

    def _checksum(self, draw: int) -> int:
        checksum = 0
        for stored in self._arrays():
            checksum = zlib.crc32(np.ascontiguousarray(stored[draw]).data, checksum)
        return checksum

    def bytes_per_sample(self) -> int:
        """Bytes stored per (draw, sample)."""
        itemsize = np.dtype(self.dtype).itemsize
        values = self.stored_classes * itemsize
        classes = 0 if self._classes is None else self.stored_classes * self._classes.dtype.itemsize
        return values + classes + self._feature_values() * itemsize

    def draw_bytes_in_memory(self) -> int:
        """Bytes one whole draw takes once read into memory, the size :meth:`draw_outputs` and
        :meth:`draw_features` return: float32 features, and float32 values over every class
        (a top-k draw with ``rest: uniform`` is returned spread) or, with ``rest: bin``, the
        top k as float32 values and int64 classes."""
        if self._classes is not None and self.rest == "bin":
            outputs = self.stored_classes * (4 + 8)
        else:
            outputs = self.key.num_classes * 4
        return self.key.num_samples * (outputs + self._feature_values() * 4)

    def _feature_values(self) -> int:
        """Tapped-feature values stored per sample, all layers together."""
        return sum(int(np.prod(shape)) for _, shape in self.key.features)

    # ------------------------------------------------------------------ use
    def is_filled(self, draw: int) -> bool:
        """Whether ``draw`` is complete and its bytes still match their checksum."""
        stored = self.meta["checksums"].get(str(draw))
        if stored is None:
            return False
        if draw in self._verified:
            return True
        if self._checksum(draw) != stored:
            LOG.warning("teacher cache %s: draw %d failed its checksum; recomputing it", self.path, draw)
            return False
        self._verified.add(draw)
        return True

    def fill(
        self,
        draw: int,
        teacher: nn.Module,
        split: Split,
        plan: AugmentPlan | None,
        device: torch.device,
        batch_size: int,
    ) -> None:
        """Run ``teacher`` over every sample of ``split`` under ``plan`` and store draw ``draw``
        — unless another process sharing the cache stored it since this one last looked."""
        with self._locked():
            if self._filled_on_disk(draw):
                return
            assert self._values is not None
            teacher.eval()
            temperature = self.key.temperature
            taps = FeatureTaps(teacher, list(self._features), owner="teacher_cache")
            try:
                for indices, inputs in planned_batches(split.inputs, split.targets, plan, batch_size, device):
                    with torch.inference_mode():
                        log_probs = torch.log_softmax(teacher(inputs).float() / temperature, dim=1)
                    self._store(draw, int(indices[0]), log_probs, taps.features)
            finally:
                taps.remove()
            for stored in self._arrays():
                stored.flush()
            self.meta["checksums"][str(draw)] = self._checksum(draw)
            atomic_write_json(self.meta_path, self.meta)
            self._verified.add(draw)
            self.fills += 1

    def _filled_on_disk(self, draw: int) -> bool:
        """Under the lock: take in the draws other processes sharing the cache recorded since
        this one opened it, and say whether ``draw`` is now stored."""
        on_disk = self._read_meta()
        if on_disk is not None:
            self.meta["checksums"] = {**on_disk["checksums"], **self.meta["checksums"]}
        return self.is_filled(draw)

    def _store(
        self, draw: int, start: int, log_probs: torch.Tensor, features: dict[str, torch.Tensor]
    ) -> None:
        """Write one filled batch, samples ``start …``, of draw ``draw``."""
        assert self._values is not None
        rows = slice(start, start + len(log_probs))
        if self._classes is not None:
            top_values, top_classes = log_probs.topk(self.stored_classes, dim=1)
            self._values[draw, rows] = top_values.cpu().numpy()
            self._classes[draw, rows] = top_classes.cpu().numpy()
        else:
            self._values[draw, rows] = log_probs.cpu().numpy()
        for name, stored in self._features.items():
            stored[draw, rows] = features[name].float().cpu().numpy()

    def outputs(
        self, draw: int, indices: torch.Tensor, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stored teacher log-probabilities at temperature T for the samples ``indices``:
        ``(batch, classes)`` and ``None``, or for a top-k cache ``(batch, k)`` values and their
        ``(batch, k)`` class indices."""
        self.hits += 1
        return self._rows(draw, indices.numpy(), device)

    def draw_outputs(self, draw: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All of draw ``draw`` (as :meth:`outputs`, every sample) on ``device``: read once per
        epoch, after which a batch is plain tensor indexing."""
        return self._rows(draw, slice(None), device)

    def _rows(self, draw: int, rows: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        assert self._values is not None
        values = torch.from_numpy(np.asarray(self._values[draw, rows], dtype=np.float32)).to(device)
        if self._classes is None:
            return values, None
        classes = torch.from_numpy(self._classes[draw, rows].astype(np.int64)).to(device)
        if self.rest == "uniform":
            return spread_rest_uniformly(values, classes, self.key.num_classes), None
        return values, classes

    def features(self, draw: int, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """The stored tapped-layer outputs of the samples ``indices`` under draw ``draw``."""
        return self._feature_rows(draw, indices.numpy(), device)

    def draw_features(self, draw: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Every sample's stored tapped-layer outputs under draw ``draw`` (as float32)."""
        return self._feature_rows(draw, slice(None), device)

    def _feature_rows(self, draw: int, rows: Any, device: torch.device) -> dict[str, torch.Tensor]:
        return {
            name: torch.from_numpy(np.asarray(stored[draw, rows], dtype=np.float32)).to(device)
            for name, stored in self._features.items()
        }


def _meta_problem(meta: Any) -> str | None:
    """What is wrong with the parsed ``meta.json`` of a cache, or ``None`` if it has the form
    :meth:`TeacherOutputCache._create` writes: ``{"key": {...}, "checksums": {"<draw>": crc}}``."""
    if not isinstance(meta, dict):
        return f"meta.json must be a JSON object, got {type(meta).__name__}"
    if not isinstance(meta.get("key"), dict):
        return "meta.json has no 'key' object"
    checksums = meta.get("checksums")
    if not isinstance(checksums, dict):
        return "meta.json has no 'checksums' object"
    for draw, checksum in checksums.items():
        if not draw.isdigit() or type(checksum) is not int or not 0 <= checksum < 2**32:
            return f"meta.json checksum of draw {draw!r} is {checksum!r}, expected a CRC32 integer"
    return None


def spread_rest_uniformly(
    top_log_probs: torch.Tensor, top_classes: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """A full ``(batch, num_classes)`` log-distribution from its top-k entries, the remaining
    mass spread evenly over the ``num_classes − k`` other classes."""
    others = num_classes - top_log_probs.shape[1]
    remainder = (1.0 - top_log_probs.exp().sum(dim=1, keepdim=True)).clamp_min(1e-12)
    full = (remainder / max(others, 1)).log().expand(-1, num_classes).clone()
    return full.scatter_(1, top_classes, top_log_probs)


def cache_draws(epochs: int, augment_enabled: bool, fixed_draws: int | None) -> int:
    """How many draws a run needs: 1 without augmentation, else ``draws`` or one per epoch."""
    if not augment_enabled:
        return 1
    return fixed_draws if fixed_draws is not None else epochs
