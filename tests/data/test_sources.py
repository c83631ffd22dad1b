import numpy as np
import pytest
import torch

from distill.data import load_data
from distill.data.bundle import split_off, validated_split
from distill.data.sources import CsvSpec, DigitsSpec, MNIST1DSpec, NpzSpec, SyntheticSpec
from distill.errors import DataError


def test_mnist1d_default_reproduces_the_standard_split():
    bundle = load_data(MNIST1DSpec(val_fraction=0.0))
    assert (len(bundle.train), len(bundle.test)) == (4000, 1000)
    assert bundle.input_shape == (1, 40) and bundle.num_classes == 10
    assert torch.isfinite(bundle.train.inputs).all()
    assert bundle.train.targets.bincount().min() > 300  # every class present


def test_mnist1d_is_generated_offline_deterministically_and_restores_numpy_state():
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    first = load_data(MNIST1DSpec(num_samples=300, seed=1))
    assert np.random.rand() == expected_next
    second = load_data(MNIST1DSpec(num_samples=300, seed=1))
    assert first.fingerprint == second.fingerprint
    assert load_data(MNIST1DSpec(num_samples=300, seed=2)).fingerprint != first.fingerprint


def test_validation_split_is_seeded_and_disjoint():
    bundle = load_data(MNIST1DSpec(num_samples=500, val_fraction=0.2))
    assert len(bundle.val) == 80 and len(bundle.train) == 320
    again = load_data(MNIST1DSpec(num_samples=500, val_fraction=0.2))
    torch.testing.assert_close(bundle.val.inputs, again.val.inputs)
    other = load_data(MNIST1DSpec(num_samples=500, val_fraction=0.2, split_seed=1))
    assert not torch.equal(bundle.val.inputs, other.val.inputs)


def test_digits_and_synthetic_shapes():
    digits = load_data(DigitsSpec())
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert float(digits.train.inputs.max()) <= 1.0
    images = load_data(SyntheticSpec(shape=[3, 16, 16], num_classes=4, num_samples=100, num_test=40))
    assert images.input_shape == (3, 16, 16)
    assert len(images.test) == 40 and int(images.train.targets.max()) < 4


def test_npz_and_csv_files(npz_file, tmp_path):
    bundle = load_data(NpzSpec(path=npz_file, standardize=True))
    assert bundle.num_classes == 3 and bundle.input_shape == (6,)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 120
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("a,b,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(30)))
    table = load_data(CsvSpec(path=csv_path, val_fraction=0.0))
    assert table.input_shape == (2,) and table.num_classes == 2


def test_separate_test_file(npz_file, tmp_path):
    test_path = tmp_path / "test.npz"
    np.savez(test_path, x=np.zeros((10, 6)), y=np.arange(10) % 3)
    bundle = load_data(NpzSpec(path=npz_file, test_path=test_path))
    assert len(bundle.test) == 10


@pytest.mark.parametrize(
    ("inputs", "labels", "message"),
    [
        (np.array([[0.0, np.nan], [1.0, 1.0]]), np.array([0, 1]), "NaN or infinite values in 1 rows"),
        (np.zeros((3, 2)), np.array([0, 1]), "3 input rows but 2 labels"),
        (np.zeros((2, 2)), np.array([0, -1]), "labels must be ≥ 0"),
        (np.zeros((2, 2)), np.array([0.5, 1.0]), "integer class ids"),
        (np.zeros(2), np.array([0, 1]), "inputs must be shaped"),
        (np.array([["a", "b"]]), np.array([0]), "must be numeric"),
    ],
)
def test_bad_arrays_name_the_problem(inputs, labels, message):
    with pytest.raises(DataError, match=message):
        validated_split(inputs, labels, "file.npz")


def test_npz_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, features=np.zeros((4, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"bad.npz: no array 'x'; the file holds: features, y"):
        load_data(NpzSpec(path=path))
    with pytest.raises(DataError, match="data file not found"):
        load_data(NpzSpec(path=tmp_path / "missing.npz"))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match=r"not a readable \.npz file"):
        load_data(NpzSpec(path=garbage))


def test_label_out_of_range_for_declared_classes(npz_file):
    with pytest.raises(DataError, match="label 2 is out of range for 2 classes"):
        load_data(NpzSpec(path=npz_file, num_classes=2))


def test_csv_errors(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b,label\n1,2,0\n1,x,1\n")
    with pytest.raises(DataError, match=r"bad.csv:3: non-numeric"):
        load_data(CsvSpec(path=path))
    with pytest.raises(DataError, match="no label column 'target'"):
        load_data(CsvSpec(path=path, label_column="target"))


def test_split_off_rejects_degenerate_fractions():
    split = validated_split(np.zeros((3, 2)), np.array([0, 1, 0]), "x")
    with pytest.raises(DataError, match="leaves no samples"):
        split_off(split, 0.01, seed=0)
