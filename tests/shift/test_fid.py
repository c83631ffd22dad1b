"""Fréchet distance: golden values, invariances, both square-root routes, bad inputs."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest

from distill.shift.fid import frechet_distance, frechet_distance_from_stats, gaussian_stats

Method = Literal["eigh", "sqrtm"]
METHODS: list[Method] = ["eigh", "sqrtm"]


def _with_moments(n: int, mean: float, std: float, seed: int) -> np.ndarray:
    """n 1-D points with exactly this sample mean and unbiased sample standard deviation."""
    x = np.random.default_rng(seed).normal(size=n)
    x = (x - x.mean()) / x.std(ddof=1)
    return (mean + std * x).reshape(-1, 1)


@pytest.mark.parametrize("method", METHODS)
def test_identical_sets_have_zero_distance(method: Method) -> None:
    a = np.random.default_rng(0).normal(size=(40, 5))
    assert frechet_distance(a, a.copy(), method=method) == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_one_dimensional_closed_form(method: Method) -> None:
    # For 1-D Gaussians FID = (μ1 − μ2)² + (σ1 − σ2)².
    a = _with_moments(50, mean=1.5, std=2.0, seed=1)
    b = _with_moments(70, mean=-0.5, std=0.5, seed=2)
    expected = (1.5 + 0.5) ** 2 + (2.0 - 0.5) ** 2
    assert frechet_distance(a, b, method=method) == pytest.approx(expected, rel=1e-9)


def test_from_stats_golden_values() -> None:
    # Σ1 = I, Σ2 = 4I in 3-D: Tr(I + 4I − 2·2I) = 3; plus ‖(1, 2, 2)‖² = 9.
    value = frechet_distance_from_stats(np.zeros(3), np.eye(3), np.array([1.0, 2.0, 2.0]), 4 * np.eye(3))
    assert value == pytest.approx(12.0)
    # Diagonal covariances: Σ (√a_i − √b_i)².
    a, b = np.array([1.0, 9.0, 0.25]), np.array([4.0, 1.0, 0.25])
    expected = float(((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    for method in METHODS:
        got = frechet_distance_from_stats(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b), method=method)
        assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_symmetric(method: Method) -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(30, 4)), rng.normal(loc=1.0, scale=2.0, size=(45, 4))
    assert frechet_distance(a, b, method=method) == pytest.approx(frechet_distance(b, a, method=method))


def test_translation_changes_only_the_mean_term() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(30, 4)), rng.normal(scale=1.7, size=(35, 4)) @ rng.normal(size=(4, 4))
    shift = np.array([3.0, -1.0, 0.5, 2.0])
    # Shifting both sets changes nothing.
    assert frechet_distance(a + shift, b + shift) == pytest.approx(frechet_distance(a, b), rel=1e-9)

    # Shifting one set changes the mean term only: the covariance term stays put.
    def covariance_term(x: np.ndarray, y: np.ndarray) -> float:
        gap = x.mean(axis=0) - y.mean(axis=0)
        return frechet_distance(x, y) - float(gap @ gap)

    assert covariance_term(a + shift, b) == pytest.approx(covariance_term(a, b), rel=1e-9)


def test_routes_agree_on_full_rank_data() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(size=(60, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(loc=0.3, size=(80, 6)) @ rng.normal(size=(6, 6))
    assert frechet_distance(a, b, method="eigh") == pytest.approx(
        frechet_distance(a, b, method="sqrtm"), rel=1e-7
    )


def test_eigh_route_is_exact_for_rank_deficient_covariances() -> None:
    # Fewer points than dimensions (the usual case for class means): two translated copies of one
    # set differ only in the mean term.
    a = np.random.default_rng(6).normal(size=(5, 20))
    shift = np.linspace(-1.0, 1.0, 20)
    value = frechet_distance(a, a + shift)
    assert value == pytest.approx(float(shift @ shift), rel=1e-8)


def test_never_negative() -> None:
    a = np.random.default_rng(7).normal(size=(10, 30)) * 1e3
    assert frechet_distance(a, a) >= 0.0


def test_gaussian_stats_shapes_and_values() -> None:
    x = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    mu, sigma = gaussian_stats(x)
    assert mu.tolist() == pytest.approx([2.0, 4.0])
    assert sigma == pytest.approx(np.cov(x, rowvar=False))
    mu1, sigma1 = gaussian_stats(np.array([[1.0], [3.0]]))
    assert mu1.shape == (1,) and sigma1.shape == (1, 1) and sigma1[0, 0] == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        (np.zeros(5), np.zeros((5, 1)), "2-D"),
        (np.zeros((1, 3)), np.zeros((5, 3)), "at least 2"),
        (np.zeros((4, 3)), np.zeros((5, 2)), "same feature dimension"),
        (np.full((4, 2), np.nan), np.zeros((5, 2)), "NaN"),
    ],
)
def test_bad_inputs_raise(a: np.ndarray, b: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        frechet_distance(a, b)


def test_bad_method_and_stats_raise() -> None:
    a = np.random.default_rng(8).normal(size=(5, 2))
    with pytest.raises(ValueError, match="unknown method"):
        frechet_distance(a, a, method="svd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance_from_stats(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="eps"):
        frechet_distance(a, a, eps=-1.0)
