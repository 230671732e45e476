"""Eigenvalue spectra (ESDs) of stacks of weight matrices, on the CPU with numpy.

lambda_i = sigma_i(W)^2, the eigenvalues of X = W^T W, with no 1/N normalisation. The default route
forms the M x M Gram matrix in float64 and calls ``eigvalsh`` (several times faster than an SVD and
equal to it where the matrix is well conditioned); slices whose smallest eigenvalue falls below
``GRAM_RCOND`` times the largest are redone with an SVD, so that ranks and tiny eigenvalues stay
exact. numpy's LAPACK calls release the GIL (scipy's do not), so this runs well in a background
thread. The GPU twin lives in :mod:`ww_callbacks.spectra_torch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Below this ratio lambda_min / lambda_max a slice's Gram spectrum is replaced by an SVD's.
GRAM_RCOND = 1e-9


@dataclass(frozen=True)
class Spectrum:
    """The pooled spectrum of one layer (or slice) and the per-slice facts the metrics need."""

    evals: np.ndarray  # all eigenvalues, ascending, float64
    sv_max: float  # largest singular value over the slices
    sv_min: float  # max over slices of each slice's smallest singular value (as the reference)
    rank_loss: int  # sum over slices of M - rank, rank as numpy's matrix_rank (N * eps tolerance)


def _singular_values(stack: np.ndarray) -> np.ndarray:
    """``(S, M)`` singular values of a float64 ``(S, N, M)`` stack, ascending per slice."""
    gram = np.matmul(stack.transpose(0, 2, 1), stack)
    evals = np.linalg.eigvalsh(gram)
    np.maximum(evals, 0.0, out=evals)
    top = evals[:, -1:]
    shaky = (evals[:, 0:1] < GRAM_RCOND * top).ravel()
    sv = np.sqrt(evals)
    if shaky.any():
        sv[shaky] = np.sort(np.linalg.svd(stack[shaky], compute_uv=False), axis=-1)
    return sv


def summarize_singular_values(sv: np.ndarray, N: int) -> Spectrum:
    """Pool ``(S, M)`` ascending singular values into a :class:`Spectrum`."""
    evals = np.sort((sv * sv).ravel())
    sv_max = float(sv[:, -1].max()) if sv.size else 0.0
    sv_min = float(sv[:, 0].max()) if sv.size else 0.0
    tol = sv[:, -1:] * N * np.finfo(np.float64).eps
    rank_loss = int(sv.shape[1] * sv.shape[0] - np.count_nonzero(sv > tol))
    return Spectrum(evals, sv_max, sv_min, rank_loss)


def stack_spectrum(stack: np.ndarray) -> Spectrum:
    """The :class:`Spectrum` of a float64 ``(S, N, M)`` stack of matrices (N >= M)."""
    return summarize_singular_values(_singular_values(stack), stack.shape[1])


def shuffled_spectrum(stack: np.ndarray, rng: np.random.Generator, replicas: int = 1) -> np.ndarray:
    """Ascending eigenvalues of ``replicas`` element-shuffled copies of each slice, pooled.

    Each slice's elements are permuted independently (the reference's ``np.random.shuffle`` of the
    flattened matrix), with the caller's private generator: the global RNG is never touched.
    """
    S, N, M = stack.shape
    out = []
    for _ in range(replicas):
        flat = stack.reshape(S, N * M)
        shuffled = rng.permuted(flat, axis=1).reshape(S, N, M)
        out.append((_singular_values(shuffled) ** 2).ravel())
    return np.sort(np.concatenate(out))
