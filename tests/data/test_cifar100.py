"""CIFAR-100 from its python-pickle batches: the data source, the folder search, the restricted
unpickler (no code from files), and every way a batch can be wrong (each a one-line DataError
naming the file)."""

from __future__ import annotations

import os
import pickle
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
from distill.data import cifar100 as cf
from distill.errors import DataError

#: the fine classes the fake batches use (ten, spread over 0..99), and a coarse label for each
FINE = np.array([0, 11, 22, 33, 44, 55, 66, 77, 88, 99])
COARSE = {int(fine): int(fine) % 20 for fine in FINE}

Parts = dict[str, tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------- writing batches


def fake_parts(n_train: int = 40, n_test: int = 20, seed: int = 0) -> Parts:
    """Random uint8 rows ``(n, 3072)`` and shuffled fine labels, each of :data:`FINE` equally often."""
    rng = np.random.default_rng(seed)
    parts = {}
    for part, count in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        data[0, 0], data[0, 1] = 0, 255  # the full range, to check the scaling
        parts[part] = data, rng.permutation(FINE[np.arange(count) % len(FINE)])
    return parts


def batch_entries(data: Any, fine: Any, coarse: Any = None) -> dict[bytes, Any]:
    """A batch dict with bytes keys, as the Python 2 files hold; labels given as an array become
    a list of ints, as in the files (pass a list of anything to write that)."""
    if isinstance(fine, np.ndarray):
        fine = fine.tolist()
    if coarse is None:
        coarse = [COARSE[int(label)] for label in fine]
    return {
        b"batch_label": b"training batch 1 of 1",
        b"data": data,
        b"fine_labels": fine,
        b"coarse_labels": coarse,
        b"filenames": [b"image_%d.png" % index for index in range(len(fine))],
    }


def py3_batch(data: Any, fine: Any, coarse: Any = None, protocol: int = 2) -> bytes:
    """A batch pickled by this Python and numpy (protocol 2: ``_codecs.encode``, ``numpy._core``)."""
    return pickle.dumps(batch_entries(data, fine, coarse), protocol=protocol)


def _short_string(value: bytes) -> bytes:
    return b"U" + bytes([len(value)]) + value  # SHORT_BINSTRING: a Python 2 str


def py2_batch(data: np.ndarray, fine: Any, coarse: Any = None) -> bytes:
    """A batch byte for byte as Python 2's cPickle with numpy 1.x wrote the real files (protocol 2,
    ``numpy.core.multiarray._reconstruct``, ``dtype('u1', 0, 1)``, the pixels as one BINSTRING)."""
    if coarse is None:
        coarse = [COARSE[int(label)] for label in fine]

    def ints(values: Any) -> bytes:
        return b"](" + b"".join(b"K" + bytes([int(value)]) for value in values) + b"e"

    array = b"".join(
        [
            b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _short_string(b"b"),
            b"\x87R(K\x01(" + b"".join(b"M" + struct.pack("<H", size) for size in data.shape) + b"t",
            b"cnumpy\ndtype\n" + _short_string(b"u1") + b"K\x00K\x01\x87R",
            b"(K\x03" + _short_string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb",
            b"\x89T" + struct.pack("<I", data.nbytes) + data.tobytes() + b"tb",
        ]
    )
    names = b"](" + b"".join(_short_string(b"image_%d.png" % index) for index in range(len(fine))) + b"e"
    return b"".join(
        [
            b"\x80\x02}(",
            _short_string(b"batch_label") + _short_string(b"training batch 1 of 1"),
            _short_string(b"data") + array,
            _short_string(b"fine_labels") + ints(fine),
            _short_string(b"coarse_labels") + ints(coarse),
            _short_string(b"filenames") + names,
            b"u.",
        ]
    )


def write_folder(folder: Path, parts: Parts | None = None, python2: bool = True) -> Path:
    """A ``cifar-100-python`` folder: ``train``, ``test`` (and a ``meta``, which is not read)."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = parts or fake_parts()
    for part, (data, fine) in parts.items():
        (folder / part).write_bytes(py2_batch(data, fine) if python2 else py3_batch(data, fine))
    names = {b"fine_label_names": [b"apple"], b"coarse_label_names": [b"fish"]}
    (folder / "meta").write_bytes(pickle.dumps(names, protocol=2))
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


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "cifar-100-python")


# --------------------------------------------------------------------------- the data source


def test_registered_and_validated_from_a_recipe_section(tmp_path):
    assert "cifar100" in DATASETS
    spec = spec_from({"name": "cifar100", "path": str(tmp_path), "labels": "coarse", "train_samples": 500})
    assert isinstance(spec, cf.CIFAR100Spec)
    assert spec.path == tmp_path and spec.labels == "coarse" and spec.train_samples == 500
    assert spec_from({"name": "cifar100"}).labels == "fine"
    with pytest.raises(ValueError, match="'fine' or 'coarse'"):
        spec_from({"name": "cifar100", "labels": "superclass"})
    with pytest.raises(ValueError, match="did you mean 'test_samples'"):
        spec_from({"name": "cifar100", "test_sample": 10})
    with pytest.raises(ValueError, match="must be a positive integer"):
        spec_from({"name": "cifar100", "train_samples": 0})
    assert len(cf.FINE_CLASS_NAMES) == 100 and len(set(cf.FINE_CLASS_NAMES)) == 100
    assert cf.FINE_CLASS_NAMES[0] == "apple" and cf.FINE_CLASS_NAMES[99] == "worm"
    assert len(cf.COARSE_CLASS_NAMES) == 20 and cf.COARSE_CLASS_NAMES[19] == "vehicles_2"


@pytest.mark.parametrize("python2", [True, False], ids=["python2-cpickle", "python3-protocol2"])
def test_load_shapes_dtype_scaling_and_fine_labels(tmp_path, python2):
    parts = fake_parts()
    folder = write_folder(tmp_path / "cifar-100-python", parts, python2)
    bundle = load_data(spec_from({"name": "cifar100", "path": str(folder), "val_fraction": 0.25}))
    assert bundle.name == "cifar100" and bundle.num_classes == 100
    assert bundle.input_shape == (3, 32, 32)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (30, 10, 20)
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.inputs.dtype == torch.float32 and split.targets.dtype == torch.int64
        assert float(split.inputs.min()) >= 0.0 and float(split.inputs.max()) <= 1.0
    data, fine = parts["test"]  # the test split keeps the file's order
    expected = torch.from_numpy(data.reshape(20, 3, 32, 32).astype(np.float32) / 255.0)
    torch.testing.assert_close(bundle.test.inputs, expected, rtol=0, atol=0)
    assert bundle.test.targets.tolist() == fine.tolist()
    assert float(bundle.test.inputs[0, 0, 0, 1]) == 1.0
    everything = torch.cat([bundle.train.targets, bundle.val.targets]).sort().values
    assert everything.tolist() == sorted(parts["train"][1].tolist())


def test_python2_and_python3_pickles_give_the_same_data(tmp_path):
    parts = fake_parts()
    old = load_data(cf.CIFAR100Spec(path=write_folder(tmp_path / "py2", parts, python2=True)))
    new = load_data(cf.CIFAR100Spec(path=write_folder(tmp_path / "py3", parts, python2=False)))
    assert old.fingerprint == new.fingerprint


def test_coarse_labels(folder):
    parts = fake_parts()
    bundle = load_data(cf.CIFAR100Spec(path=folder, labels="coarse", val_fraction=0.0))
    assert bundle.num_classes == 20
    assert bundle.test.targets.tolist() == [COARSE[int(label)] for label in parts["test"][1]]
    fine = load_data(cf.CIFAR100Spec(path=folder, val_fraction=0.0))
    torch.testing.assert_close(bundle.test.inputs, fine.test.inputs, rtol=0, atol=0)


def test_each_row_is_a_red_then_green_then_blue_plane_row_major(tmp_path):
    parts = fake_parts()
    data = parts["test"][0]
    data[:3] = 0
    data[0, 0 * 1024 + 5 * 32 + 7] = 255  # image 0: red at row 5, column 7
    data[1, 1 * 1024 + 31 * 32 + 0] = 255  # image 1: green at row 31, column 0
    data[2, 2 * 1024 + 0 * 32 + 31] = 255  # image 2: blue at row 0, column 31
    folder = write_folder(tmp_path / "cifar-100-python", parts)
    inputs = load_data(cf.CIFAR100Spec(path=folder)).test.inputs
    for image, (channel, row, column) in enumerate([(0, 5, 7), (1, 31, 0), (2, 0, 31)]):
        assert float(inputs[image, channel, row, column]) == 1.0
        assert float(inputs[image].sum()) == 1.0


def test_a_fortran_ordered_array_reads_as_its_values(tmp_path):
    data, fine = fake_parts()["train"]
    path = tmp_path / "train"
    path.write_bytes(py3_batch(np.asfortranarray(data), fine))
    images, labels = cf.read_cifar100_batch(path)
    np.testing.assert_array_equal(images.reshape(40, 3072), data)
    assert labels.tolist() == fine.tolist()


@pytest.mark.parametrize("protocol", [3, 4])
def test_later_protocols_up_to_4_read(tmp_path, protocol):
    data, fine = fake_parts()["train"]
    path = tmp_path / "train"
    path.write_bytes(py3_batch(data, fine, protocol=protocol))
    np.testing.assert_array_equal(cf.read_cifar100_batch(path)[0].reshape(40, 3072), data)


# --------------------------------------------------------------------------- stratified subsets


def test_subset_is_stratified_and_seeded_by_split_seed(folder):
    def load(split_seed: int, labels: str = "fine") -> Any:
        return load_data(
            spec_from(
                {
                    "name": "cifar100",
                    "path": str(folder),
                    "labels": labels,
                    "train_samples": 20,
                    "test_samples": 10,
                    "val_fraction": 0.0,
                    "split_seed": split_seed,
                }
            )
        )

    first, again, other = load(0), load(0), load(1)
    assert (len(first.train), len(first.test)) == (20, 10)
    assert first.train.targets.bincount(minlength=100)[FINE].tolist() == [2] * 10
    assert first.test.targets.bincount(minlength=100)[FINE].tolist() == [1] * 10
    assert first.fingerprint == again.fingerprint
    assert not torch.equal(first.train.inputs, other.train.inputs)
    assert not torch.equal(first.test.inputs, other.test.inputs)
    coarse = load(0, "coarse")  # stratified by the labels trained on
    assert coarse.train.targets.bincount().tolist() == [2 if c in COARSE.values() else 0 for c in range(20)]
    with_val = load_data(cf.CIFAR100Spec(path=folder, train_samples=20, val_fraction=0.25))
    assert (len(with_val.train), len(with_val.val)) == (15, 5)  # validation comes out of the 20


def test_subset_larger_than_the_data_is_refused(folder):
    with raises(f"cifar100: test_samples is 21, but {folder} holds only 20 test examples"):
        load_data(cf.CIFAR100Spec(path=folder, test_samples=21))


# --------------------------------------------------------------------------- finding the folder


def test_path_may_be_the_folder_or_its_parent(folder):
    direct = load_data(cf.CIFAR100Spec(path=folder))
    parent = load_data(spec_from({"name": "cifar100", "path": str(folder.parent)}))
    assert direct.fingerprint == parent.fingerprint
    assert cf.cifar100_directory(folder.parent) == (folder, "data.path")


def test_folder_from_environment_then_defaults(tmp_path, monkeypatch, folder):
    monkeypatch.setenv(cf.ENVIRONMENT_VARIABLE, str(folder.parent))  # the parent works here too
    assert cf.cifar100_directory() == (folder, f"${cf.ENVIRONMENT_VARIABLE}")
    assert len(load_data(cf.CIFAR100Spec(val_fraction=0.0)).train) == 40
    monkeypatch.delenv(cf.ENVIRONMENT_VARIABLE)
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    cached, local = tmp_path / "cache" / "cifar-100-python", tmp_path / "data" / "cifar-100-python"
    assert cf.default_directories() == [cached, local]
    with raises(
        "cifar100: no CIFAR-100 folder found: data.path and $DISTILL_CIFAR100 are not set, and "
        f"neither {cached} nor {local} exists: download cifar-100-python.tar.gz"
    ) as error:
        load_data(cf.CIFAR100Spec())
    message = one_line(error)
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message and "data.path" in message
    write_folder(local)
    assert cf.cifar100_directory() == (local, "the default location")
    write_folder(cached)
    assert cf.cifar100_directory() == (cached, "the default location")  # the cache comes first


def test_missing_or_wrong_folder(tmp_path):
    with raises(f"cifar100: folder {tmp_path / 'absent'} (data.path) does not exist") as error:
        load_data(cf.CIFAR100Spec(path=tmp_path / "absent"))
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in one_line(error)
    archive = tmp_path / "cifar-100-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b")
    with raises(f"cifar100: {archive} (data.path) is not a folder (an archive: extract it first)"):
        load_data(cf.CIFAR100Spec(path=archive))
    with raises(f"cifar100: train and test not found in {tmp_path} (data.path), nor a cifar-100-python"):
        load_data(cf.CIFAR100Spec(path=tmp_path))


def test_missing_file_names_it_and_how_to_get_the_data(folder):
    (folder / "test").unlink()
    with raises(f"cifar100: test not found in {folder} (data.path)") as error:
        load_data(cf.CIFAR100Spec(path=folder))
    assert "extract it, and pass the cifar-100-python folder as data.path" in one_line(error)


# --------------------------------------------------------------------------- no code from files


class _System:
    """Pickles as a call of ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> Any:
        return os.system, (self.command,)


class _Exec:
    """Pickles as a call of ``exec(source)``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self) -> Any:
        return exec, (self.source,)


def test_a_pickle_that_would_run_a_command_is_refused_and_runs_nothing(folder, tmp_path):
    marker = tmp_path / "pwned"
    data, fine = fake_parts()["train"]
    entries = batch_entries(data, fine)
    entries[b"batch_label"] = _System(f"touch {marker}")
    (folder / "train").write_bytes(pickle.dumps(entries, protocol=2))
    with raises(
        f"{folder / 'train'}: refused to load: the pickle names the global posix.system, which a genuine "
        "CIFAR-100 batch never names (it may name only numpy's array reconstruction); "
        "nothing in the file was run"
    ) as error:
        load_data(cf.CIFAR100Spec(path=folder))
    one_line(error)
    assert not marker.exists()


def test_exec_is_refused_though_the_payload_is_live(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps([_Exec(f"open({str(marker)!r}, 'w').close()")], protocol=2)
    path = tmp_path / "train"
    path.write_bytes(payload)
    with raises(f"{path}: refused to load: the pickle names the global __builtin__.exec"):
        cf.read_cifar100_batch(path)
    assert not marker.exists()
    pickle.loads(payload)  # what plain pickle.load would have done
    assert marker.exists()


def test_globals_hidden_where_numpy_arguments_go_are_refused(tmp_path):
    # a genuine array's opening, then os.system in the dtype's place
    path = tmp_path / "train"
    path.write_bytes(
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R"
        b"(K\x01K\x01\x85cos\nsystem\nU\x05touch\x85R\x89U\x01\x00tb."
    )
    with raises(f"{path}: refused to load: the pickle names the global os.system"):
        cf.read_cifar100_batch(path)


def _allowed_but_misused(tmp_path: Path, body: bytes) -> Path:
    path = tmp_path / "train"
    path.write_bytes(b"\x80\x02" + body + b".")
    return path


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # an array allocated at the size the file asks for: 10^12 bytes
        (
            b"cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85U\x01b\x87R",
            "not (ndarray, (0,), b'b')",
        ),
        (b"cnumpy\ndtype\nU\x02O8K\x00K\x01\x87R", "only plain numeric types are read"),  # objects
        (b"c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R", "not latin1"),
        (b"c__builtin__\nbytes\nJ\x00\xca\x9a\x3b\x85R", "bytes called with 1 arguments"),  # 1 GB
        (b"cnumpy\nndarray\n)R", "malformed pickle (numpy.ndarray called)"),  # the stand-in is no class
        # BUILD with slot state would setattr on the stand-in, e.g. its defaults, for later files
        (
            b"c_codecs\nencode\nN}X\x0c\x00\x00\x00__defaults__X\x06\x00\x00\x00latin1\x85s\x86b",
            "state set on",
        ),
    ],
    ids=["huge-reconstruct", "object-dtype", "other-codec", "bytes-of-a-size", "ndarray-called", "set-state"],
)
def test_allowed_globals_accept_only_what_numpy_writes(tmp_path, body, reason):
    path = _allowed_but_misused(tmp_path, body)
    with raises(f"{path}: ") as error:
        cf.read_cifar100_batch(path)
    assert reason in one_line(error)


def test_array_state_must_match_its_shape(tmp_path):
    data, fine = fake_parts()["train"]
    raw = py2_batch(data, fine)
    short = raw.replace(struct.pack("<I", data.nbytes) + data.tobytes(), struct.pack("<I", 100) + bytes(100))
    path = tmp_path / "train"
    path.write_bytes(short)
    with raises(
        f"{path}: malformed pickle (an array of 40×3072 uint8 needs 122880 bytes, "
        "the pickle holds 100); expected a CIFAR-100 python batch"
    ):
        cf.read_cifar100_batch(path)


def test_a_protocol_5_pickle_is_refused_with_a_hint(tmp_path):
    data, fine = fake_parts()["train"]
    path = tmp_path / "train"
    path.write_bytes(py3_batch(data, fine, protocol=5))
    with raises(
        f"{path}: refused to load: the pickle names the global numpy._core.numeric._frombuffer "
        "(the protocol-5 array form: re-pickle it at protocol 2 to 4)"
    ):
        cf.read_cifar100_batch(path)


# --------------------------------------------------------------------------- bad files


def test_truncated_trailing_and_non_pickle_files(folder):
    path = folder / "train"
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with raises(
        f"{path}: truncated or not a pickle (pickle data was truncated); expected a CIFAR-100"
    ) as error:
        load_data(cf.CIFAR100Spec(path=folder))
    one_line(error)
    path.write_bytes(b"")
    with raises(f"{path}: truncated or not a pickle (Ran out of input)"):
        load_data(cf.CIFAR100Spec(path=folder))
    path.write_bytes(raw + b"\x00")
    with raises(f"{path}: data after the end of the pickle"):
        load_data(cf.CIFAR100Spec(path=folder))
    path.write_bytes(b"\x00\x01")
    with raises(f"{path}: damaged or not a pickle (invalid load key, '\\x00'.)"):
        load_data(cf.CIFAR100Spec(path=folder))


def test_unreadable_file_gives_the_os_reason(tmp_path):
    with raises(f"{tmp_path}: cannot read the file (Is a directory)"):
        cf.read_cifar100_batch(tmp_path)


def test_a_pickle_that_is_not_a_dict(folder):
    (folder / "test").write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with raises(f"{folder / 'test'}: the pickle holds a list, not a dict; expected a CIFAR-100 python batch"):
        load_data(cf.CIFAR100Spec(path=folder))


def test_missing_entries_name_what_is_there(folder):
    data, fine = fake_parts()["train"]
    entries = batch_entries(data, fine)
    del entries[b"fine_labels"]
    path = folder / "train"
    path.write_bytes(pickle.dumps(entries, protocol=2))
    with raises(
        f"{path}: no 'fine_labels' entry (it has: batch_label, coarse_labels, data, filenames); "
        "expected a CIFAR-100 python batch"
    ) as error:
        load_data(cf.CIFAR100Spec(path=folder))
    one_line(error)
    assert len(load_data(cf.CIFAR100Spec(path=folder, labels="coarse")).train) == 36  # fine is not needed
    del entries[b"data"]
    path.write_bytes(pickle.dumps(entries, protocol=2))
    with raises(f"{path}: no 'data' entry"):
        load_data(cf.CIFAR100Spec(path=folder, labels="coarse"))


def test_text_keys_of_a_python3_repickle_are_read(tmp_path):
    data, fine = fake_parts()["train"]
    path = tmp_path / "train"
    entries = {key.decode(): value for key, value in batch_entries(data, fine).items()}
    path.write_bytes(pickle.dumps(entries, protocol=2))
    assert cf.read_cifar100_batch(path)[1].tolist() == fine.tolist()
    entries[b"fine_labels"] = fine[:, None]
    path.write_bytes(pickle.dumps(entries, protocol=2))
    with raises(
        f"{path}: 'fine_labels' is a int64 array shaped (40, 1); expected a list of integer class ids"
    ):
        cf.read_cifar100_batch(path)


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (np.zeros((40, 3072), dtype=np.uint16), "a uint16 array shaped (40, 3072)"),
        (np.zeros((40, 3071), dtype=np.uint8), "a uint8 array shaped (40, 3071)"),
        (np.zeros((40, 3, 32, 32), dtype=np.uint8), "a uint8 array shaped (40, 3, 32, 32)"),
        (np.zeros((40, 3072), dtype=np.float32), "a float32 array shaped (40, 3072)"),
        ([[0] * 3072] * 40, "a list, not a numpy array"),
    ],
    ids=["uint16", "narrow", "4-d", "float", "list"],
)
def test_data_must_be_uint8_rows_of_3072(tmp_path, data, found):
    path = tmp_path / "train"
    path.write_bytes(py3_batch(data, fake_parts()["train"][1]))
    with raises(
        f"{path}: 'data' is {found}; expected uint8 images shaped (N, 3072): 1024 red, 1024 green, "
        "1024 blue values each"
    ) as error:
        cf.read_cifar100_batch(path)
    one_line(error)


def test_no_images(tmp_path):
    path = tmp_path / "train"
    path.write_bytes(py3_batch(np.zeros((0, 3072), dtype=np.uint8), []))
    with raises(f"{path}: 'data' holds no images"):
        cf.read_cifar100_batch(path)


@pytest.mark.parametrize("labels", ["fine", "coarse"])
def test_label_out_of_range_names_the_file(tmp_path, labels):
    data, fine = fake_parts()["train"]
    coarse = [COARSE[int(label)] for label in fine]
    wrong, top = (fine.tolist(), 100) if labels == "fine" else (coarse, 20)
    wrong[7], wrong[9] = top, -1
    path = tmp_path / "train"
    path.write_bytes(py3_batch(data, wrong, coarse) if labels == "fine" else py3_batch(data, fine, wrong))
    with raises(
        f"{path}: {labels} label {top} at index 7 is out of range (2 out-of-range labels in all); "
        f"expected class ids 0..{top - 1}"
    ) as error:
        cf.read_cifar100_batch(path, labels)
    one_line(error)


@pytest.mark.parametrize(
    ("labels", "found"),
    [
        ([*range(39), "7"], "'fine_labels' holds a str at index 39"),
        ([*range(39), True], "'fine_labels' holds a bool at index 39"),
        ([*range(39), 1.0], "'fine_labels' holds a float at index 39"),
        ({"a": 1}, "'fine_labels' is a dict"),
        (np.zeros((40, 1), dtype=np.int64).tolist(), "'fine_labels' holds a list at index 0"),
    ],
    ids=["str", "bool", "float", "dict", "nested-list"],
)
def test_labels_must_be_integer_class_ids(tmp_path, labels, found):
    data = fake_parts()["train"][0]
    path = tmp_path / "train"
    path.write_bytes(py3_batch(data, labels, coarse=[0] * 40))
    with raises(f"{path}: {found}; expected a list of integer class ids 0..99"):
        cf.read_cifar100_batch(path)


def test_a_label_array_of_a_repickle_is_read(tmp_path):
    data, fine = fake_parts()["train"]
    path = tmp_path / "train"
    entries = batch_entries(data, fine, coarse=[0] * 40)
    entries[b"fine_labels"] = fine.astype(np.int64)
    path.write_bytes(pickle.dumps(entries, protocol=2))
    assert cf.read_cifar100_batch(path)[1].tolist() == fine.tolist()


def test_count_mismatch_names_the_file(folder):
    data, fine = fake_parts()["test"]
    path = folder / "test"
    path.write_bytes(py2_batch(data, fine[:19]))
    with raises(f"{path}: 19 fine labels but 20 images in 'data'; expected one label per image") as error:
        load_data(cf.CIFAR100Spec(path=folder))
    one_line(error)


# --------------------------------------------------------------------------- the real data


_REAL = [folder for folder in cf.default_directories() if (folder / "train").is_file()]


@pytest.mark.skipif(not _REAL, reason="CIFAR-100 is not in a default location")
def test_real_cifar100():
    train, test = (cf.read_cifar100_batch(_REAL[0] / name) for name in ("train", "test"))
    assert train[0].shape == (50000, 3, 32, 32) and test[0].shape == (10000, 3, 32, 32)
    assert np.bincount(train[1]).tolist() == [500] * 100
    assert np.bincount(test[1]).tolist() == [100] * 100
    assert np.bincount(cf.read_cifar100_batch(_REAL[0] / "test", "coarse")[1]).tolist() == [500] * 20
