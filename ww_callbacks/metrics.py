"""Per-layer metrics that follow from a spectrum and its power-law alpha (htsr-spec section 4)."""

from __future__ import annotations

import math

import numpy as np

#: Added to each probability in the matrix entropy, as the reference does.
ENTROPY_EPSILON = 1e-10
#: Eigenvalues below this count towards ``weak_rank_loss``.
WEAK_RANK_TOLERANCE = 1e-6


def matrix_rank(evals: np.ndarray, N: int) -> int:
    """Number of singular values above ``sigma_max * N * eps`` (numpy's ``matrix_rank`` rule)."""
    sv = np.sqrt(np.maximum(evals, 0.0))
    return int(np.count_nonzero(sv > sv.max() * N * np.finfo(np.float64).eps))


def matrix_entropy(evals: np.ndarray, rank: int) -> float:
    """Normalised spectral entropy: -sum p ln p / ln(rank), p_i = lambda_i / sum lambda."""
    p = evals / np.sum(evals) + ENTROPY_EPSILON
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(-np.sum(p * np.log(p)) / np.log(rank + ENTROPY_EPSILON))


def norm_metrics(evals: np.ndarray, alpha: float, N: int, fit_ok: bool) -> dict:
    """Norm, rank and entropy columns of one spectrum; alpha-dependent ones are NaN on a failed
    fit (the reference fills them from alpha = -1)."""
    norm = float(np.sum(evals))
    spectral_norm = float(np.max(evals))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_norm = math.log10(norm) if norm > 0 else -math.inf
        log_spectral_norm = math.log10(spectral_norm) if spectral_norm > 0 else -math.inf
        if fit_ok:
            alpha_weighted = alpha * log_spectral_norm
            log_alpha_norm = float(np.log10(np.sum(evals ** alpha)))
        else:
            alpha_weighted = log_alpha_norm = math.nan
    rank = matrix_rank(evals, N)
    return {
        "norm": norm,
        "log_norm": log_norm,
        "spectral_norm": spectral_norm,
        "log_spectral_norm": log_spectral_norm,
        "alpha_weighted": alpha_weighted,
        "log_alpha_norm": log_alpha_norm,
        "stable_rank": norm / spectral_norm if spectral_norm > 0 else math.nan,
        "matrix_rank": rank,
        "entropy": matrix_entropy(evals, rank) if norm > 0 else math.nan,
        "weak_rank_loss": int(np.count_nonzero(evals < WEAK_RANK_TOLERANCE)),
    }


def detx_metrics(evals: np.ndarray, num_pl_spikes: int) -> dict:
    """The detX / ERG (SETOL) columns.

    Rescale to mean 1 (x = lambda * n / sum lambda); from the top down, the first i with
    prod_{j>=i} x_j < 1 gives ``detX_num = n - i``; ``ERG_gap = detX_num - num_pl_spikes``.
    The reference stores the *unrescaled* value under ``detX_val`` and the rescaled one under
    ``detX_val_unrescaled``; the names are kept as it has them.
    """
    n = len(evals)
    total = float(np.sum(evals))
    if n < 2 or not evals[0] < evals[-1] or total <= 0:
        num, idx = 0, 0
    else:
        scale = n / total
        with np.errstate(divide="ignore"):
            logs = np.log(evals[:0:-1] * scale)  # x_{n-1}, ..., x_1
        below = np.flatnonzero(np.cumsum(logs) < 0.0)
        if below.size:
            idx = n - 1 - int(below[0])
            num = n - idx
        else:
            num, idx = n, 0
    rescaled = evals[idx] * (n / total) if total > 0 else math.nan
    return {
        "detX_num": num,
        "num_ERG_spikes": num,
        "ERG_gap": num - num_pl_spikes,
        "detX_val": float(evals[idx]) if n else math.nan,
        "detX_val_unrescaled": float(rescaled) if n else math.nan,
    }


def jensen_shannon_distance(p: np.ndarray, q: np.ndarray) -> float:
    """JS distance of two equal-length non-negative vectors paired by index (the reference's
    ``rand_distance`` between sorted spectra): ``sqrt((KL(p||m) + KL(q||m)) / 2)`` with
    ``m = (p + q) / 2`` and each argument of KL normalised to sum 1, as ``scipy.stats.entropy``."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = (p + q) / 2
    m = m / m.sum()

    def kl(a: np.ndarray) -> float:
        a = a / a.sum()
        mask = a > 0
        return float(np.sum(a[mask] * np.log(a[mask] / m[mask])))

    return math.sqrt(max((kl(p) + kl(q)) / 2, 0.0))
