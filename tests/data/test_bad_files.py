"""Data files that are not what they claim to be: each is refused with a DataError naming the file
(and array) and what was expected — never a traceback, never pickle, never a silent 100 %."""

import re
import zipfile

import numpy as np
import pytest

from distill.data import load_data
from distill.data.pools import read_unlabeled_file
from distill.data.sources import CsvSpec, MNIST1DSpec, NpzSpec, SyntheticSpec
from distill.errors import DataError


def valid_npz(path, samples=40, classes=2):
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.standard_normal((samples, 3)), y=np.arange(samples) % classes)
    return path


def raises(message):
    """``pytest.raises(DataError)`` whose message contains ``message`` verbatim."""
    return pytest.raises(DataError, match=re.escape(message))


def test_object_arrays_are_named_and_never_unpickled(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([[1, 2], [3, 4]], dtype=object), y=np.array([0, 1]))
    with raises("objects.npz: array 'x' holds Python objects (dtype=object); object arrays are not loaded"):
        load_data(NpzSpec(path=path))


def test_object_label_array_is_named(tmp_path):
    path = tmp_path / "labels.npz"
    np.savez(path, x=np.zeros((4, 2)), y=np.array(["a", 1, None, 2.0], dtype=object))
    with raises("labels.npz: array 'y' holds Python objects (dtype=object)"):
        load_data(NpzSpec(path=path))


def test_a_bare_npy_is_not_an_npz_archive(tmp_path):
    path = tmp_path / "inputs.npy"
    np.save(path, np.zeros((10, 3)))
    with raises(
        "inputs.npy: a single NumPy array (.npy), not an .npz archive; expected an .npz archive "
        "holding arrays 'x' (inputs) and 'y' (labels)"
    ):
        load_data(NpzSpec(path=path))


def test_the_expected_keys_follow_the_spec(tmp_path):
    path = tmp_path / "inputs.npy"
    np.save(path, np.zeros((10, 3)))
    with raises("expected an .npz archive holding arrays 'features' (inputs) and 'target' (labels)"):
        load_data(NpzSpec(path=path, inputs_key="features", labels_key="target"))


def test_a_bare_npy_as_test_file_is_named(tmp_path):
    test_path = tmp_path / "test.npy"
    np.save(test_path, np.zeros((10, 3)))
    with raises("test.npy: a single NumPy array (.npy), not an .npz archive"):
        load_data(NpzSpec(path=valid_npz(tmp_path / "train.npz"), test_path=test_path))


def test_a_truncated_npz_is_refused(tmp_path):
    whole = valid_npz(tmp_path / "whole.npz").read_bytes()
    path = tmp_path / "truncated.npz"
    path.write_bytes(whole[: len(whole) // 2])
    with raises(
        "truncated.npz: not a readable .npz file: truncated or damaged archive (File is not a zip file)"
    ):
        load_data(NpzSpec(path=path))


def test_damaged_array_bytes_are_named(tmp_path):
    data = bytearray(valid_npz(tmp_path / "whole.npz").read_bytes())
    for index in range(200, 400):  # inside the first member, 'x.npy'
        data[index] ^= 0xFF
    path = tmp_path / "damaged.npz"
    path.write_bytes(bytes(data))
    with raises("damaged.npz: array 'x' is damaged or truncated (Bad CRC-32 for file 'x.npy')"):
        load_data(NpzSpec(path=path))


@pytest.mark.parametrize(
    "content",
    [np.random.default_rng(1).bytes(500), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", b""],
    ids=["random bytes", "safetensors-like", "empty"],
)
def test_bytes_that_are_no_zip_archive_are_refused(tmp_path, content):
    path = tmp_path / "noise.npz"
    path.write_bytes(content)
    with raises(
        "noise.npz: not a readable .npz file: it is not a zip archive of NumPy arrays; expected an .npz "
        "archive holding arrays 'x' (inputs) and 'y' (labels)"
    ):
        load_data(NpzSpec(path=path))


def test_a_zip_member_that_is_not_an_npy_array(tmp_path):
    path = tmp_path / "plain.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x", b"hello")
        archive.writestr("y.npy", b"junk")
    with raises("plain.npz: member 'x' is not a NumPy array (.npy) file"):
        load_data(NpzSpec(path=path))


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"\xff\xfe\x00binary" + np.random.default_rng(2).bytes(300), "byte 0 is not UTF-8; a binary file?"),
        (b"label,a\x00,b\n0,1,2\n", "it contains NUL bytes; a binary file?"),
    ],
    ids=["not utf-8", "nul bytes"],
)
def test_a_binary_file_given_as_csv(tmp_path, content, detail):
    path = tmp_path / "table.csv"
    path.write_bytes(content)
    with raises(f"table.csv: not a UTF-8 text CSV file ({detail}); expected a header row"):
        load_data(CsvSpec(path=path))


def test_an_npz_given_as_csv(tmp_path):
    path = valid_npz(tmp_path / "data.npz")
    with raises("data.npz: not a UTF-8 text CSV file (byte"):
        load_data(CsvSpec(path=path))


def test_a_utf8_csv_with_a_byte_order_mark_still_loads(tmp_path):
    path = tmp_path / "excel.csv"
    text = "label,a,b\n" + "".join(f"{i % 2},{i},{i * 2}\n" for i in range(30))
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_data(CsvSpec(path=path, val_fraction=0.0)).input_shape == (2,)


def test_one_class_npz_is_refused(tmp_path):
    path = tmp_path / "one.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((40, 3)), y=np.full(40, 3))
    with raises(f"{path}: every training label is 3; a classification data set needs at least 2 classes"):
        load_data(NpzSpec(path=path))


def test_one_class_csv_is_refused_even_with_declared_classes(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("a,label\n" + "".join(f"{i},0\n" for i in range(20)))
    with raises(f"{path}: every training label is 0; a classification data set needs at least 2 classes"):
        load_data(CsvSpec(path=path, num_classes=2))


def test_a_one_class_test_file_is_allowed(tmp_path):
    test_path = tmp_path / "test.npz"
    np.savez(test_path, x=np.zeros((5, 3)), y=np.ones(5, dtype=int))
    bundle = load_data(NpzSpec(path=valid_npz(tmp_path / "train.npz"), test_path=test_path))
    assert bundle.num_classes == 2 and len(bundle.test) == 5


def test_two_class_built_in_data_still_loads():
    assert load_data(SyntheticSpec(num_classes=2, num_samples=40, num_test=10)).num_classes == 2


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: np.save(p.with_suffix(".npy"), np.zeros((5, 40))) or p.with_suffix(".npy").rename(p),
            "extra.npz: a single NumPy array (.npy), not an .npz archive; expected an .npz archive holding "
            "array 'x' of unlabeled inputs",
        ),
        (
            lambda p: np.savez(p, x=np.array([[1.0]] * 5, dtype=object)),
            "extra.npz: array 'x' holds Python objects (dtype=object); object arrays are not loaded",
        ),
        (
            lambda p: p.write_bytes(np.random.default_rng(3).bytes(100)),
            "extra.npz: not a readable .npz file: it is not a zip archive of NumPy arrays",
        ),
    ],
    ids=["bare npy", "object array", "random bytes"],
)
def test_bad_unlabeled_npz_files(tmp_path, make, message):
    path = tmp_path / "extra.npz"
    make(path)
    with raises(message):
        read_unlabeled_file(path, "x", (1, 40))


def test_binary_unlabeled_csv(tmp_path):
    path = tmp_path / "extra.csv"
    path.write_bytes(b"a,b\n\xff\xfe\x01\x02")
    with raises("extra.csv: not a UTF-8 text CSV file (byte 4 is not UTF-8; a binary file?)"):
        read_unlabeled_file(path, "x", (2,))


def test_a_bad_unlabeled_file_is_refused_through_the_pools(tmp_path):
    path = tmp_path / "pool.npz"
    path.write_bytes(b"nonsense")
    with raises("pool.npz: not a readable .npz file"):
        load_data(
            MNIST1DSpec(num_samples=600, pools={"labeled": 50, "validation": 50, "unlabeled_file": path})
        )
