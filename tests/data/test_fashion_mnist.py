"""Fashion-MNIST from its IDX files: the reader, the data source, the stratified subset, and every
way a file can be wrong (each a one-line DataError naming the file)."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from distill.config import DataField
from distill.data import DATASETS, load_data
from distill.data import fashion_mnist as fm
from distill.data.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    read_idx_images,
    read_idx_labels,
    read_idx_pair,
)
from distill.errors import DataError

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def idx_bytes(magic: int, array: np.ndarray) -> bytes:
    """``array`` (uint8) as an IDX file: big-endian magic, big-endian sizes, raw bytes."""
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", size) for size in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write(path: Path, data: bytes, compress: bool) -> Path:
    """Write ``data`` to ``path`` (plus ``.gz`` and gzip-compressed when ``compress``)."""
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def fake_parts(
    n_train: int = 200, n_test: int = 50, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random 28×28 uint8 images and shuffled balanced labels for both parts."""
    rng = np.random.default_rng(seed)
    parts = {}
    for part, count in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255  # the full range, to check the scaling
        labels = rng.permutation(np.arange(count) % 10).astype(np.uint8)
        parts[part] = images, labels
    return parts


def write_folder(
    folder: Path, compress: bool = True, parts: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
) -> Path:
    """A Fashion-MNIST folder of the four standard files."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = parts or fake_parts()
    for part, (images_name, labels_name) in fm.FILES.items():
        images, labels = parts[part]
        write(folder / images_name, idx_bytes(IMAGES_MAGIC, images), compress)
        write(folder / labels_name, idx_bytes(LABELS_MAGIC, labels), compress)
    return folder


def spec_from(data: dict[str, Any]) -> Any:
    """A data spec validated as a recipe's ``data`` section is."""
    return TypeAdapter(DataField).validate_python(data)


def raises(message: str) -> Any:
    """``pytest.raises(DataError)`` whose message contains ``message`` verbatim."""
    return pytest.raises(DataError, match=re.escape(message))


def one_line(error: pytest.ExceptionInfo[DataError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- reader


@pytest.mark.parametrize("compress", [False, True])
def test_reader_reads_plain_and_gzip_files(tmp_path, compress):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    labels = np.array([0, 9, 4], dtype=np.uint8)
    images_path = write(tmp_path / "images", idx_bytes(IMAGES_MAGIC, images), compress)
    labels_path = write(tmp_path / "labels", idx_bytes(LABELS_MAGIC, labels), compress)
    read_images, read_labels = read_idx_pair(images_path, labels_path)
    assert read_images.dtype == np.uint8 and read_images.shape == (3, 4, 5)
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)
    assert read_images.flags.writeable


def test_compression_is_recognised_by_content_not_name(tmp_path):
    labels = np.array([1, 2, 3], dtype=np.uint8)
    unpacked = tmp_path / "labels.gz"  # a browser may unpack a download and keep the name
    unpacked.write_bytes(idx_bytes(LABELS_MAGIC, labels))
    np.testing.assert_array_equal(read_idx_labels(unpacked), labels)


def test_label_range_is_the_callers(tmp_path):
    path = write(tmp_path / "labels", idx_bytes(LABELS_MAGIC, np.array([0, 12], dtype=np.uint8)), False)
    assert read_idx_labels(path, num_classes=None).tolist() == [0, 12]
    with raises(
        f"{path}: label 12 at index 1 is out of range (1 out-of-range labels in all); expected class ids 0..9"
    ):
        read_idx_labels(path)


# --------------------------------------------------------------------------- the data source


def test_registered_and_validated_from_a_recipe_section(tmp_path):
    assert "fashion-mnist" in DATASETS
    spec = spec_from({"name": "fashion-mnist", "path": str(tmp_path), "train_samples": 6000})
    assert isinstance(spec, fm.FashionMNISTSpec)
    assert spec.path == tmp_path and spec.train_samples == 6000 and spec.test_samples is None
    with pytest.raises(ValueError, match="did you mean 'test_samples'"):
        spec_from({"name": "fashion-mnist", "test_sample": 10})
    with pytest.raises(ValueError, match="must be a positive integer"):
        spec_from({"name": "fashion-mnist", "train_samples": 0})
    assert len(fm.CLASS_NAMES) == 10 and fm.CLASS_NAMES[9] == "Ankle boot"


@pytest.mark.parametrize("compress", [False, True])
def test_load_shapes_dtype_scaling_and_labels(tmp_path, compress):
    parts = fake_parts()
    folder = write_folder(tmp_path / "fashion", compress, parts)
    bundle = load_data(spec_from({"name": "fashion-mnist", "path": str(folder), "val_fraction": 0.1}))
    assert bundle.name == "fashion-mnist" and bundle.num_classes == 10
    assert bundle.input_shape == (1, 28, 28)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (180, 20, 50)
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.inputs.dtype == torch.float32 and split.targets.dtype == torch.int64
        assert float(split.inputs.min()) >= 0.0 and float(split.inputs.max()) <= 1.0
    images, labels = parts["test"]  # the test split keeps the file's order
    expected = torch.from_numpy(images.astype(np.float32)[:, None] / 255.0)
    torch.testing.assert_close(bundle.test.inputs, expected, rtol=0, atol=0)
    assert bundle.test.targets.tolist() == labels.tolist()
    assert float(bundle.test.inputs[0, 0, 0, 1]) == 1.0
    everything = torch.cat([bundle.train.targets, bundle.val.targets]).sort().values
    assert everything.tolist() == sorted(parts["train"][1].tolist())


def test_plain_and_gzip_folders_give_the_same_data(tmp_path):
    plain = load_data(fm.FashionMNISTSpec(path=write_folder(tmp_path / "plain", compress=False)))
    packed = load_data(fm.FashionMNISTSpec(path=write_folder(tmp_path / "packed", compress=True)))
    assert plain.fingerprint == packed.fingerprint


def test_folder_from_environment_then_default(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "from-env")
    monkeypatch.setenv(fm.ENVIRONMENT_VARIABLE, str(folder))
    assert len(load_data(fm.FashionMNISTSpec(val_fraction=0.0)).train) == 200
    monkeypatch.delenv(fm.ENVIRONMENT_VARIABLE)
    monkeypatch.setattr(fm, "DEFAULT_DIRECTORY", tmp_path / "nowhere")
    with raises(f"fashion-mnist: folder {tmp_path / 'nowhere'} (the default location) does not exist"):
        load_data(fm.FashionMNISTSpec())


# --------------------------------------------------------------------------- stratified subset


def test_stratified_subset_keeps_class_proportions():
    labels = np.repeat(np.arange(10), np.arange(1, 11) * 10)  # 10, 20, …, 100 examples: 550
    rows = fm.stratified_subset(labels, 110, seed=(0, 0))
    assert np.bincount(labels[rows]).tolist() == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert len(np.unique(rows)) == 110 and np.all(np.diff(rows) > 0)
    rows = fm.stratified_subset(labels, 57, seed=(0, 0))  # shares 1.04, 2.07, …: remainders decide
    counts = np.bincount(labels[rows], minlength=10)
    assert counts.sum() == 57
    assert np.all(np.abs(counts - np.arange(1, 11) * 10 * 57 / 550) < 1)
    assert fm.stratified_subset(labels, 550, seed=3).tolist() == list(range(550))


def test_subset_is_seeded_by_split_seed(tmp_path):
    parts = fake_parts(n_train=400, n_test=100)
    parts["train"] = parts["train"][0], np.sort(parts["train"][1])  # any order: still stratified
    folder = write_folder(tmp_path / "fashion", parts=parts)

    def load(split_seed: int) -> Any:
        return load_data(
            spec_from(
                {
                    "name": "fashion-mnist",
                    "path": str(folder),
                    "train_samples": 100,
                    "test_samples": 30,
                    "val_fraction": 0.0,
                    "split_seed": split_seed,
                }
            )
        )

    first, again, other = load(0), load(0), load(1)
    assert (len(first.train), len(first.test)) == (100, 30)
    assert first.train.targets.bincount().tolist() == [10] * 10
    assert first.test.targets.bincount().tolist() == [3] * 10
    assert first.fingerprint == again.fingerprint
    assert not torch.equal(first.train.inputs, other.train.inputs)
    assert not torch.equal(first.test.inputs, other.test.inputs)
    with_val = load_data(fm.FashionMNISTSpec(path=folder, train_samples=100, val_fraction=0.2))
    assert (len(with_val.train), len(with_val.val)) == (80, 20)  # validation comes out of the 100


def test_subset_larger_than_the_data_is_refused(tmp_path):
    folder = write_folder(tmp_path / "fashion")
    with raises(f"fashion-mnist: test_samples is 51, but {folder} holds only 50 test examples"):
        load_data(fm.FashionMNISTSpec(path=folder, test_samples=51))


# --------------------------------------------------------------------------- bad files


def test_missing_file_names_it_and_how_to_get_the_data(tmp_path):
    folder = write_folder(tmp_path / "fashion")
    (folder / f"{TEST_LABELS}.gz").unlink()
    with raises(f"fashion-mnist: {TEST_LABELS}[.gz] not found in {folder} (data.path)") as error:
        load_data(fm.FashionMNISTSpec(path=folder))
    message = one_line(error)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "https://github.com/zalandoresearch/fashion-mnist" in message and "data.path" in message


def test_missing_or_wrong_folder(tmp_path):
    with raises(f"fashion-mnist: folder {tmp_path / 'absent'} (data.path) does not exist") as error:
        load_data(fm.FashionMNISTSpec(path=tmp_path / "absent"))
    assert "apt-get install dataset-fashion-mnist" in one_line(error)
    a_file = tmp_path / "file"
    a_file.write_bytes(b"")
    with raises(f"fashion-mnist: {a_file} (data.path) is not a folder"):
        load_data(fm.FashionMNISTSpec(path=a_file))


@pytest.mark.parametrize("compress", [False, True])
def test_wrong_magic_names_the_file(tmp_path, compress):
    folder = write_folder(tmp_path / "fashion", compress)
    images = fake_parts()["train"][0]
    path = write(folder / TRAIN_IMAGES, idx_bytes(LABELS_MAGIC, images[:, 0, 0]), compress)
    with raises(
        f"{path}: magic number 0x00000801 (an IDX label file (magic 0x00000801: uint8 labels, n)); "
        "expected an IDX image file (magic 0x00000803: uint8 images, n×rows×cols)"
    ) as error:
        load_data(fm.FashionMNISTSpec(path=folder))
    one_line(error)
    path.write_bytes(b"\x00\x00\x08\x03\x00")  # the magic alone, then a cut header
    with raises(f"{path}: truncated header (5 bytes); expected an IDX image file"):
        read_idx_images(path)
    path.write_bytes(b"PK\x03\x04" + bytes(20))
    with raises(f"{path}: magic number 0x504b0304; expected an IDX image file"):
        read_idx_images(path)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_or_overlong_data_names_the_file(tmp_path, compress):
    folder = write_folder(tmp_path / "fashion", compress)
    data = idx_bytes(IMAGES_MAGIC, fake_parts()["test"][0])
    path = write(folder / TEST_IMAGES, data[:-100], compress)
    with raises(
        f"{path}: truncated: the header declares 50×28×28 = 39200 bytes of data, the file holds 39100; "
        "expected an IDX image file"
    ) as error:
        load_data(fm.FashionMNISTSpec(path=folder))
    one_line(error)
    write(folder / TEST_IMAGES, data + b"\x00", compress)
    with raises(f"{path}: longer than its header says: the header declares 50×28×28 = 39200 bytes"):
        load_data(fm.FashionMNISTSpec(path=folder))


def test_damaged_gzip_names_the_file(tmp_path):
    folder = write_folder(tmp_path / "fashion")
    path = folder / f"{TRAIN_LABELS}.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with raises(f"{path}: damaged gzip file (the compressed stream ends early); expected an IDX label file"):
        load_data(fm.FashionMNISTSpec(path=folder))
    path.write_bytes(b"\x1f\x8b" + bytes(40))
    with raises(f"{path}: not a valid gzip file"):
        read_idx_labels(path)


def test_count_mismatch_names_both_files(tmp_path):
    folder = write_folder(tmp_path / "fashion", compress=False)
    path = write(folder / TEST_LABELS, idx_bytes(LABELS_MAGIC, np.zeros(49, dtype=np.uint8)), False)
    with raises(
        f"{path}: 49 labels but {folder / TEST_IMAGES} holds 50 images; expected one label per image"
    ) as error:
        load_data(fm.FashionMNISTSpec(path=folder))
    one_line(error)


@pytest.mark.parametrize("compress", [False, True])
def test_label_out_of_range_names_the_file(tmp_path, compress):
    folder = write_folder(tmp_path / "fashion", compress)
    labels = np.arange(200, dtype=np.uint8) % 10
    labels[7] = 10
    path = write(folder / TRAIN_LABELS, idx_bytes(LABELS_MAGIC, labels), compress)
    with raises(
        f"{path}: label 10 at index 7 is out of range (1 out-of-range labels in all); expected class ids 0..9"
    ):
        load_data(fm.FashionMNISTSpec(path=folder))


def test_wrong_image_size_names_the_file(tmp_path):
    parts = fake_parts()
    parts["train"] = parts["train"][0][:, :27, :27], parts["train"][1]
    folder = write_folder(tmp_path / "fashion", parts=parts)
    with raises(f"{folder / TRAIN_IMAGES}.gz: images of 27×27 pixels; expected 28×28 Fashion-MNIST images"):
        load_data(fm.FashionMNISTSpec(path=folder))


def test_unreadable_file_gives_the_os_reason(tmp_path):
    with raises(f"{tmp_path}: cannot read the file (Is a directory)"):
        read_idx_images(tmp_path)
    with raises(f"{tmp_path / 'absent'}: cannot read the file (No such file or directory)"):
        read_idx_labels(tmp_path / "absent")


# --------------------------------------------------------------------------- the real data


@pytest.mark.skipif(not fm.DEFAULT_DIRECTORY.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv(fm.ENVIRONMENT_VARIABLE, raising=False)
    files = fm.fashion_mnist_files(fm.DEFAULT_DIRECTORY)
    train_images, train_labels = read_idx_pair(*files["train"])
    test_images, test_labels = read_idx_pair(*files["test"])
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert np.bincount(test_labels).tolist() == [1000] * 10
    bundle = load_data(
        spec_from({"name": "fashion-mnist", "train_samples": 600, "test_samples": 200, "val_fraction": 0.0})
    )
    assert bundle.input_shape == (1, 28, 28) and bundle.num_classes == 10
    assert bundle.train.targets.bincount().tolist() == [60] * 10
    assert bundle.test.targets.bincount().tolist() == [20] * 10
    assert float(bundle.train.inputs.min()) >= 0.0 and float(bundle.train.inputs.max()) == 1.0
