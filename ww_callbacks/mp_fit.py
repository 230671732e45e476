"""Fast, numpy-only reproduction of WeightWatcher 0.7.7's Marchenko-Pastur (MP) fit.

WeightWatcher's ``WeightWatcher.mp_fit`` fits the MP bulk scale ``sigma`` of a layer's
empirical spectral density (ESD) with ``scipy.optimize.brute`` over a grid of sigmas,
polished by ``scipy.optimize.fmin`` (Nelder-Mead).  The objective
(``RMT_Util.resid_mp``) re-fits an sklearn ``KernelDensity`` on every call although
the density estimate does not depend on sigma, which makes the reference cost about
a second or more per layer.

This module computes the same quantities with the same arithmetic, but:

* the linear-kernel density estimate is computed once, with numpy, over sorted values;
* the objective is evaluated for all grid sigmas at once (a 2-D grid x points array);
* the polish is a line-by-line 1-D re-implementation of scipy's ``_minimize_neldermead``
  with ``fmin``'s defaults, so it visits the same points in the same order.

It imports only numpy and the standard library (scipy's and sklearn's code would hold
the GIL in the background thread this runs in) and never touches numpy's global
random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["MPFit", "fit_mp"]

# Constants of the reference implementation (weightwatcher 0.7.7, RMT_Util.py).
_BANDWIDTH = 0.1  # KDE bandwidth ``bw`` passed by ``mp_fit``.
_NUM_GRID_POINTS = 1000  # points of the KDE evaluation grid in ``resid_mp``.
_GRID_PAD = 0.5  # the KDE grid runs over ``[0, max(to_fit) + 0.5]``.
_DENSITY_THRESH = 0.01  # KDE points with density < THRESH contribute 0 to the residual.
_PENALTY = 1000.0  # residual of every kept point when the MP edges are implausible.
_SIGMA_LO, _SIGMA_HI, _SIGMA_STEP = 0.05, 2.0, 0.01  # brute grid, in units of sigma0.

# scipy.optimize.fmin defaults (scipy/_optimize.py, _minimize_neldermead, N = 1).
_NM_XATOL = 1e-4
_NM_FATOL = 1e-4
_NM_MAXITER = 200  # N * 200
_NM_MAXFUN = 200  # N * 200
_NM_NONZDELT = 0.05
_NM_ZDELT = 0.00025

# Upper bound on the number of (grid point, sample) pairs materialised at once by the
# KDE; bounds its memory to a few tens of MiB whatever the number of eigenvalues.
_KDE_PAIR_BUDGET = 1 << 15

# Upper bound on grid sigmas evaluated in one vectorised block (memory bound).
_SIGMA_BLOCK = 256


@dataclass(frozen=True)
class MPFit:
    """Result of the Marchenko-Pastur fit, as returned by WeightWatcher's ``mp_fit``.

    Attributes:
        num_spikes: number of scaled eigenvalues above the MP bulk edge plus the
            Tracy-Widom margin ``sqrt(TW)``.
        sigma_mp: fitted MP scale ``sigma`` of the scaled spectrum (may in principle be
            negative, exactly as in the reference, since the objective is even in sigma).
        mp_softrank: ``bulk_max / max(scaled eigenvalue)``, both on the scaled spectrum.
        bulk_min: lower MP bulk edge, unscaled (divided by ``W_scale**2``).
        bulk_max: upper MP bulk edge, unscaled (divided by ``W_scale**2``).
        W_scale: the spectrum scale, ``sqrt(len(evals)) / sqrt(sum(evals))``; the fit is
            done on ``W_scale**2 * evals``, whose mean is 1.
    """

    num_spikes: int
    sigma_mp: float
    mp_softrank: float
    bulk_min: float
    bulk_max: float
    W_scale: float


class _MaxFunCallError(RuntimeError):
    """Raised by the counting wrapper when Nelder-Mead exceeds its evaluation budget."""


def _linear_kde(values: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    """Evaluate a 1-D linear-kernel density estimate of ``values`` on ``grid``.

    Equals sklearn's ``KernelDensity(kernel='linear', bandwidth=h)`` densities:
    ``density(g) = mean_i max(0, 1 - |g - x_i| / h) / h``.

    Only the samples within ``h`` of each grid point are visited (found by binary
    search in the sorted samples), in blocks of at most ``_KDE_PAIR_BUDGET`` pairs, so
    the cost is O(n log n + pairs) with pairs <= len(grid) * n, and memory is bounded.

    Args:
        values: 1-D finite samples.
        grid: 1-D ascending evaluation points.
        bandwidth: kernel half-width ``h`` (> 0).

    Returns:
        The density at each grid point (float64, same length as ``grid``).
    """
    xs = np.sort(values)
    n = xs.size
    lo = np.searchsorted(xs, grid - bandwidth, side="left")
    hi = np.searchsorted(xs, grid + bandwidth, side="right")
    counts = hi - lo
    sums = np.zeros(grid.size, dtype=np.float64)

    start = 0
    while start < grid.size:
        # Largest block [start, stop) whose pair count fits the budget (at least 1 point).
        cum = np.cumsum(counts[start:])
        stop = start + max(1, int(np.searchsorted(cum, _KDE_PAIR_BUDGET, side="right")))
        block_counts = counts[start:stop]
        total = int(block_counts.sum())
        if total:
            seg = np.repeat(np.arange(stop - start), block_counts)
            offsets = np.cumsum(block_counts) - block_counts
            idx = np.arange(total) - offsets[seg] + lo[start:stop][seg]
            dist = np.abs(grid[start:stop][seg] - xs[idx])
            kern = np.maximum(1.0 - dist / bandwidth, 0.0)
            sums[start:stop] = np.bincount(seg, weights=kern, minlength=stop - start)
        start = stop

    return sums / (n * bandwidth)


class _Objective:
    """Sum of squared residuals of ``resid_mp`` (allresid=False), for many sigmas at once.

    Built once from the data; the KDE of ``to_fit`` is computed at construction and
    reused for every sigma.  ``__call__`` maps an array of sigmas to the array of
    objective values, each bit-for-bit the arithmetic the reference does per sigma.
    """

    def __init__(self, to_fit: np.ndarray, Q: float) -> None:
        """Compute the KDE, drop the near-zero-density points, and cache the peak.

        Args:
            to_fit: the fitted samples (scaled eigenvalues, or their square roots if
                ``Q == 1``).
            Q: aspect ratio ``N / M``.

        Raises:
            ValueError: if the KDE is below the threshold everywhere (the reference
                fails there too, on ``max()`` of an empty array).
        """
        self.Q = Q
        xde = np.linspace(0, np.max(to_fit) + _GRID_PAD, _NUM_GRID_POINTS)
        yde = _linear_kde(to_fit, xde, _BANDWIDTH)
        good = yde > _DENSITY_THRESH
        # Points with density exactly THRESH are dropped from the residual altogether.
        self.n_bad = int(np.count_nonzero(yde < _DENSITY_THRESH))
        self.xde = xde[good]
        self.yde = yde[good]
        if self.xde.size == 0:
            raise ValueError(
                "MP fit failed: the kernel density estimate of the spectrum is below "
                f"{_DENSITY_THRESH} at every evaluation point"
            )
        self.x_peak = self.xde[np.flatnonzero(self.yde == np.max(self.yde))[0]]
        self.x_max = np.max(self.xde)
        self.penalty_value = float(np.sum(np.full(self.xde.size, _PENALTY) ** 2))

    def __call__(self, sigmas: np.ndarray) -> np.ndarray:
        """Return the objective for each sigma of the 1-D array ``sigmas``."""
        out = np.empty(sigmas.size, dtype=np.float64)
        for start in range(0, sigmas.size, _SIGMA_BLOCK):
            block = sigmas[start : start + _SIGMA_BLOCK]
            out[start : start + block.size] = self._block(block)
        return out

    def _block(self, sigmas: np.ndarray) -> np.ndarray:
        """Objective values for a block of sigmas (one grid x points array)."""
        Q = self.Q
        sigma = sigmas[:, np.newaxis]
        x = self.xde[np.newaxis, :]
        with np.errstate(all="ignore"):
            if Q == 1:
                # quarter_circle_fun: the support [0, 2] does not depend on sigma.
                ymp = np.nan_to_num((1 / (np.pi * sigma * sigma)) * np.sqrt(4 - x**2))
                penalised = np.zeros(sigmas.size, dtype=bool)
            else:
                # marchenko_pastur_fun, same operations in the same order.
                y = 1 / Q
                b = np.power(sigma * (1 + np.sqrt(1 / Q)), 2)
                a = np.power(sigma * (1 - np.sqrt(1 / Q)), 2)
                ymp = np.nan_to_num(
                    (1 / (2 * np.pi * sigma * sigma * x * y)) * np.sqrt((b - x) * (x - a))
                )
                penalised = ((b < self.x_peak) | (b > self.x_max) | (a > self.x_peak))[:, 0]
            resid = np.zeros((sigmas.size, self.xde.size + self.n_bad), dtype=np.float64)
            resid[:, : self.xde.size] = ymp - self.yde
            values = np.sum(resid**2, axis=1)
        values[penalised] = self.penalty_value
        return values

    def scalar(self, sigma: float) -> float:
        """Objective at a single sigma (the function Nelder-Mead minimises)."""
        return float(self(np.array([sigma], dtype=np.float64))[0])


def _sort2(sim: list[float], fsim: list[float]) -> None:
    """Order a 2-vertex simplex by value in place, like ``np.argsort`` (stable, NaN last)."""
    f0, f1 = fsim
    if f1 < f0 or (math.isnan(f0) and not math.isnan(f1)):
        sim.reverse()
        fsim.reverse()


def _nelder_mead_1d(func: Callable[[float], float], x0: float) -> tuple[float, float]:
    """Minimise ``func`` from ``x0`` exactly as ``scipy.optimize.fmin(func, [x0])`` does.

    A transcription of scipy's ``_minimize_neldermead`` for one variable with fmin's
    defaults (xatol = fatol = 1e-4, maxiter = maxfun = 200, rho=1, chi=2, psi=0.5,
    sigma=0.5, initial simplex ``[x0, 1.05 * x0]`` or ``[0, 0.00025]``), including the
    evaluation-budget behaviour.  With two vertices ``xbar`` is the best vertex and
    ``fsim[-2]`` is ``fsim[0]``, which removes the plain-reflection acceptance branch.

    Args:
        func: objective of one float.
        x0: starting point.

    Returns:
        ``(xopt, fopt)``: the best vertex and the smallest simplex value.
    """
    ncalls = 0

    def f(x: float) -> float:
        nonlocal ncalls
        if ncalls >= _NM_MAXFUN:
            raise _MaxFunCallError
        ncalls += 1
        return func(x)

    x1 = (1 + _NM_NONZDELT) * x0 if x0 != 0 else _NM_ZDELT
    sim = [x0, x1]
    fsim = [math.inf, math.inf]
    try:
        for k in range(2):
            fsim[k] = f(sim[k])
    except _MaxFunCallError:  # pragma: no cover - cannot happen with maxfun = 200
        pass
    _sort2(sim, fsim)

    iterations = 1
    while ncalls < _NM_MAXFUN and iterations < _NM_MAXITER:
        try:
            if abs(sim[1] - sim[0]) <= _NM_XATOL and abs(fsim[0] - fsim[1]) <= _NM_FATOL:
                break
            xbar = sim[0]
            xr = 2 * xbar - 1 * sim[1]  # reflection: (1 + rho) xbar - rho x_worst
            fxr = f(xr)
            doshrink = False
            if fxr < fsim[0]:
                xe = 3 * xbar - 2 * sim[1]  # expansion: (1 + rho chi) xbar - rho chi x_worst
                fxe = f(xe)
                if fxe < fxr:
                    sim[1], fsim[1] = xe, fxe
                else:
                    sim[1], fsim[1] = xr, fxr
            elif fxr < fsim[1]:
                xc = 1.5 * xbar - 0.5 * sim[1]  # outside contraction
                fxc = f(xc)
                if fxc <= fxr:
                    sim[1], fsim[1] = xc, fxc
                else:
                    doshrink = True
            else:
                xcc = 0.5 * xbar + 0.5 * sim[1]  # inside contraction
                fxcc = f(xcc)
                if fxcc < fsim[1]:
                    sim[1], fsim[1] = xcc, fxcc
                else:
                    doshrink = True
            if doshrink:
                sim[1] = sim[0] + 0.5 * (sim[1] - sim[0])
                fsim[1] = f(sim[1])
            iterations += 1
        except _MaxFunCallError:
            pass
        _sort2(sim, fsim)

    return sim[0], min(fsim)


def _validate(evals: np.ndarray, N: int, M: int) -> np.ndarray:
    """Check the inputs and return ``evals`` as a 1-D float64 array.

    Raises:
        ValueError: on degenerate input (empty, non-finite, non-positive sum, bad sizes).
    """
    if int(N) != N or int(M) != M or N <= 0 or M <= 0:
        raise ValueError(f"MP fit needs positive integer N and M, got N={N!r}, M={M!r}")
    arr = np.asarray(evals, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"MP fit needs a 1-D array of eigenvalues, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("MP fit needs at least one eigenvalue, got an empty array")
    if not np.all(np.isfinite(arr)):
        raise ValueError("MP fit needs finite eigenvalues, got NaN or infinite values")
    total = np.sum(arr)
    if not total > 0:
        raise ValueError(f"MP fit needs eigenvalues with a positive sum, got sum={total!r}")
    return arr


def fit_mp(evals: np.ndarray, N: int, M: int) -> MPFit:
    """Fit the Marchenko-Pastur bulk to a layer's eigenvalues, as WeightWatcher 0.7.7 does.

    Equivalent to ``WeightWatcher().mp_fit(evals, N, M, rf, ..., rescale=True, ...)``
    (whose result does not depend on ``rf``), without scipy or sklearn.

    Args:
        evals: 1-D eigenvalues of ``W^T W`` (squared singular values) of an N x M
            matrix, in any order; may hold zeros, and may be the pooled spectrum of
            several matrices (its length is used for the scaling, as in the reference).
        N: the layer's larger dimension.
        M: the layer's smaller dimension (not multiplied by any receptive field size);
            ``Q = N / M``, and ``Q == 1`` fits the quarter-circle law to the singular
            values instead of the MP law to the eigenvalues.

    Returns:
        The fitted :class:`MPFit`.

    Raises:
        ValueError: on degenerate input (empty, all zero, non-finite, negative values
            with ``Q == 1``) or when the density estimate is negligible everywhere.
    """
    evals = _validate(evals, N, M)
    Q = N / M

    # mp_fit (rescale=True): scale the spectrum to mean 1.
    w_norm = np.sqrt(np.sum(evals))
    w_scale = np.sqrt(evals.shape[0]) / w_norm
    x = (w_scale * w_scale) * evals
    if not np.all(np.isfinite(x)):
        raise ValueError("MP fit failed: scaled eigenvalues are not finite")
    lambda_max = np.max(x)

    # fit_density_with_range: grid of sigmas relative to calc_sigma(Q, x).
    inv_sq_q = 1.0 / np.sqrt(Q)
    sigma0 = np.sqrt(lambda_max / np.square(1 + inv_sq_q))
    grid = np.arange(_SIGMA_LO * sigma0, _SIGMA_HI * sigma0, _SIGMA_STEP * sigma0)
    if grid.size == 0:
        raise ValueError(f"MP fit failed: empty sigma grid (sigma0={sigma0!r})")

    if Q == 1:
        if np.any(x < 0):
            raise ValueError("MP fit with Q == 1 needs non-negative eigenvalues")
        to_fit = np.sqrt(x)
    else:
        to_fit = x
    objective = _Objective(to_fit, Q)

    # scipy.optimize.brute: first grid minimum, then fmin polish; brute keeps the
    # polished point unconditionally (Nelder-Mead never ends worse than its start).
    values = objective(grid)
    best = float(grid[int(np.argmin(values))])
    s1, _ = _nelder_mead_1d(objective.scalar, best)
    s1 = np.float64(s1)

    # mp_fit: bulk edges, Tracy-Widom margin, spikes and soft rank.
    bulk_max = (s1 * (1 + 1 / np.sqrt(Q))) ** 2
    bulk_min = (s1 * (1 - 1 / np.sqrt(Q))) ** 2
    tw = 1 / np.sqrt(Q) * np.power(bulk_max, 2 / 3) * np.power(M, -2 / 3)
    bulk_max_tw = bulk_max + np.sqrt(tw)
    num_spikes = int(np.count_nonzero(x > bulk_max_tw))
    mp_softrank = bulk_max / lambda_max

    return MPFit(
        num_spikes=num_spikes,
        sigma_mp=float(s1),
        mp_softrank=float(mp_softrank),
        bulk_min=float(bulk_min / (w_scale * w_scale)),
        bulk_max=float(bulk_max / (w_scale * w_scale)),
        W_scale=float(w_scale),
    )
