"""Fréchet distance between two sets of feature vectors, each summarised by a Gaussian fit.

ooDML (Milbich et al., "Characterizing Generalization under Out-Of-Distribution Shifts in Deep
Metric Learning", NeurIPS 2021, arXiv 2107.09562) measures the shift of a train/test split as the
Fréchet (Inception) distance between the *set of train-class mean features* and the *set of
test-class mean features* (official code: ``split_helpers.metric_fid``). For Gaussians
N(μ1, Σ1) and N(μ2, Σ2)::

    FID = ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})

The statistics are the sample mean and the unbiased sample covariance (``np.cov(rowvar=False)``,
divisor n − 1), as in the official code and in the standard FID implementations.

The trace of the matrix square root is the only delicate part. Two routes are offered:

* ``method="eigh"`` (default): Σ1 Σ2 is similar to the symmetric positive semi-definite matrix
  Σ1^{1/2} Σ2 Σ1^{1/2}, so Tr((Σ1 Σ2)^{1/2}) is the sum of the square roots of the latter's
  eigenvalues. Both steps use ``numpy.linalg.eigh`` with round-off eigenvalues (negative, or
  below n·ε·max|λ|) set to zero, so the result is real and exact for rank-deficient covariances too (the usual
  case here: fewer classes than feature dimensions). ``eps`` is not needed on this route.
* ``method="sqrtm"``: ``scipy.linalg.sqrtm`` of Σ1 Σ2 as in the standard FID code (Heusel et al.'s
  TTUR implementation and pytorch-fid): when the result is not finite, ``eps`` is added to both
  diagonals and the root is taken again; a tiny imaginary part from round-off is dropped (real
  part), a large one raises ``ValueError``. (The ooDML code always adds ``eps = 1e-8`` to both
  diagonals before ``sqrtm`` and keeps the real part.)
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import linalg

__all__ = ["frechet_distance", "frechet_distance_from_stats", "gaussian_stats"]


def _as_feature_set(x: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (vectors as rows), got shape {array.shape}")
    if array.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 vectors to estimate a covariance, got {array.shape[0]}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of the rows of ``x`` (N, D), N ≥ 2.

    A 1-D feature space gives a (1, 1) covariance, never a scalar.
    """
    array = _as_feature_set(x, "x")
    mu = array.mean(axis=0)
    sigma = np.atleast_2d(np.cov(array, rowvar=False))
    return mu, sigma


def _clip_round_off(values: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off noise (|λ| ≤ n·ε·max|λ|, negatives) set to 0.

    Without this, the square roots of ~1e-16 noise in the null space of a rank-deficient
    covariance add up to ~1e-8 each and bias the trace.
    """
    if values.size == 0:
        return values
    tolerance = values.size * np.finfo(np.float64).eps * float(np.max(np.abs(values)))
    return np.where(values > tolerance, values, 0.0)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (round-off → 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    roots = np.sqrt(_clip_round_off(values))
    return np.asarray((vectors * roots) @ vectors.T)


def _trace_sqrt_product(
    sigma1: np.ndarray, sigma2: np.ndarray, eps: float, method: Literal["eigh", "sqrtm"]
) -> float:
    """Tr((Σ1 Σ2)^{1/2}) for covariance matrices Σ1, Σ2."""
    if method == "eigh":
        root1 = _sqrt_psd(sigma1)
        inner = root1 @ sigma2 @ root1
        values = np.linalg.eigvalsh((inner + inner.T) / 2.0)
        return float(np.sqrt(_clip_round_off(values)).sum())
    if method == "sqrtm":
        product = sigma1 @ sigma2
        covmean = linalg.sqrtm(product)
        if not np.all(np.isfinite(covmean)):
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        covmean = np.asarray(covmean)
        if np.iscomplexobj(covmean):
            imaginary = np.max(np.abs(np.diagonal(covmean).imag)) if covmean.size else 0.0
            if not np.allclose(np.diagonal(covmean).imag, 0.0, atol=1e-3):
                raise ValueError(f"matrix square root has a large imaginary component {imaginary:.3g}")
            covmean = covmean.real
        return float(np.trace(covmean))
    raise ValueError(f"unknown method '{method}'; allowed: eigh, sqrtm")


def frechet_distance_from_stats(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
    method: Literal["eigh", "sqrtm"] = "eigh",
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); see the module docstring."""
    m1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    m2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"means must be vectors of one length, got shapes {m1.shape} and {m2.shape}")
    dim = m1.shape[0]
    if s1.shape != (dim, dim) or s2.shape != (dim, dim):
        raise ValueError(
            f"covariances must be ({dim}, {dim}) to match the means, got {s1.shape} and {s2.shape}"
        )
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    diff = m1 - m2
    trace_root = _trace_sqrt_product(s1, s2, eps, method)
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_root)
    # Round-off can leave a tiny negative value for (near-)identical distributions.
    return max(value, 0.0)


def frechet_distance(
    a: np.ndarray,
    b: np.ndarray,
    eps: float = 1e-6,
    method: Literal["eigh", "sqrtm"] = "eigh",
) -> float:
    """Fréchet distance between Gaussian fits of two sets of feature vectors (rows of ``a``, ``b``).

    ``a`` is (N1, D) and ``b`` is (N2, D) with N1, N2 ≥ 2. This is the split-difficulty measure of
    ooDML (arXiv 2107.09562, ``split_helpers.metric_fid``): there ``a`` and ``b`` are the per-class
    mean features of the train and the test classes. Symmetric in ``a`` and ``b``; zero for
    identical sets; clipped at 0 against round-off.
    """
    fa = _as_feature_set(a, "a")
    fb = _as_feature_set(b, "b")
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"a and b must have the same feature dimension, got {fa.shape[1]} and {fb.shape[1]}")
    mu1, sigma1 = gaussian_stats(fa)
    mu2, sigma2 = gaussian_stats(fb)
    return frechet_distance_from_stats(mu1, sigma1, mu2, sigma2, eps=eps, method=method)
