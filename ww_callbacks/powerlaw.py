"""The continuous power-law fit of an eigenvalue tail, as WeightWatcher 0.7.7's ``WWFit`` does it.

For sorted values x (those above ``min_value``), every distinct value but the largest is an xmin
candidate i with tail size n = n_all - i, maximum-likelihood exponent
``alpha_i = 1 + n / sum_{j>=i} ln(x_j / x_i)`` and Kolmogorov-Smirnov distance
``D_i = max_{j>=i} |1 - (x_j/x_i)^(1-alpha_i) - (j-i)/n|``; the fit keeps the first candidate with
the smallest D. The reference scans all candidates in O(n^2); here a branch-and-bound over
sub-sampled tails (cheap lower and upper bounds on every D_i, exact D only for the few candidates
that can still win) gives the same answer in a fraction of the time, and the winners are scored
with the reference's own formulas so that ties break the same way.

Also: the reference's small-sample branch (n_all < 20, bias-corrected alpha),
``fix_fingers='clip_xmax'``, and a fixed-xmin mode (``xmin='median'`` or ``'top_third'``: the
Hill estimate that training-time methods use).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Eigenvalues at or below this are ignored by the fit (the reference's ``EVALS_THRESH``).
MIN_VALUE = 1e-5
#: Below this many values the reference switches to its small-sample estimator.
SMALL_N = 20
OVER_TRAINED_ALPHA = 2.0
UNDER_TRAINED_ALPHA = 6.0
SUCCESS = "success"
FAILED = "failed"

_BLOCK = 1 << 21  # elements per temporary array in the bound computations
_MARGIN = 1e-8  # slack on the bounds, far above the rounding of the accurate alpha_i


class FitOptionError(ValueError):
    """An option of :func:`fit_powerlaw` has a value it does not accept: the caller's mistake,
    raised. (A sample that cannot be fitted is not an error: it gives a failed fit.)"""


@dataclass(frozen=True)
class PowerLawFit:
    """Result of :func:`fit_powerlaw`.

    ``n_tail`` is the number of values >= xmin (the reference's ``num_pl_spikes``); with
    ``fix_fingers`` ``raw_alpha`` is the unclipped fit's alpha and ``num_fingers`` the number of
    largest values dropped. A failed fit has alpha = D = sigma = xmin = -1 and ``status='failed'``.
    """

    alpha: float
    xmin: float
    xmax: float
    D: float
    sigma: float
    n_tail: int
    status: str = SUCCESS
    warning: str = ""
    num_fingers: int = 0
    raw_alpha: float = -1.0

    @property
    def ok(self) -> bool:
        """True when the fit succeeded."""
        return self.status == SUCCESS


def alpha_warning(alpha: float) -> str:
    """The reference's verdict: ``over-trained`` below 2, ``under-trained`` above 6, else ''."""
    if alpha < OVER_TRAINED_ALPHA:
        return "over-trained"
    if alpha > UNDER_TRAINED_ALPHA:
        return "under-trained"
    return ""


def failed_fit(reason: str) -> PowerLawFit:
    """The fit a layer gets when no power law can be fitted; ``warning`` says why."""
    return PowerLawFit(-1.0, -1.0, math.nan, -1.0, -1.0, 0, FAILED, reason)


# ----------------------------------------------------------------------------- the KS scan


def _reference_alpha_D(x: np.ndarray, logx: np.ndarray, i: int) -> tuple[float, float]:
    """alpha_i and D_i computed exactly as the reference does (for the final tie-break)."""
    n_all = len(x)
    n = float(n_all - i)
    alpha = 1 + n / (np.sum(logx[i:]) - n * logx[i])
    if not alpha > 1:
        return float(alpha), 1.0
    D = np.max(np.abs(1 - (x[i:] / x[i]) ** (-alpha + 1) - np.arange(n) / n))
    return float(alpha), float(D)


def _alphas(logx: np.ndarray) -> np.ndarray:
    """alpha_i for every i, from suffix sums of non-negative terms (accurate to ~n eps)."""
    n_all = len(logx)
    k = np.arange(n_all)
    # sum_{j>=i} (logx_j - logx_i) = sum_{k>i} (n_all - k) * (logx_k - logx_{k-1})
    steps = np.empty(n_all)
    steps[0] = 0.0
    steps[1:] = np.diff(logx) * (n_all - k[1:])
    den = np.cumsum(steps[::-1])[::-1]  # den_i' = sum_{k>=i'} steps_k
    den = np.append(den[1:], 0.0)  # sum over k > i
    with np.errstate(divide="ignore"):
        return 1.0 + (n_all - k) / den


def _gaps(logx: np.ndarray, alphas: np.ndarray, cand: np.ndarray, points: int | None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds on D_i for candidates ``cand`` from ``points + 1`` samples of each
    tail, spread evenly over it (``points=None``: every value, and both bounds are D_i itself).

    Lower bound: the KS gap at the sampled values. Upper bound: between two samples the model CDF
    and the empirical CDF are both non-decreasing, so the gap is at most the larger cross
    difference of the two samples.
    """
    n_all = len(logx)
    tails = n_all - cand
    exact = points is None or points + 1 >= int(tails.max())
    width = int(tails.max()) if exact else points + 1
    lower = np.empty(len(cand))
    upper = np.empty(len(cand))
    rows = max(1, _BLOCK // width)
    steps = np.arange(width)
    for start in range(0, len(cand), rows):
        idx = cand[start:start + rows]
        tail = tails[start:start + rows][:, None]
        if exact:
            j = np.minimum(idx[:, None] + steps[None, :], n_all - 1)
        else:
            j = idx[:, None] + (steps[None, :] * (tail - 1)) // points
        model = -np.expm1((1.0 - alphas[idx][:, None]) * (logx[j] - logx[idx][:, None]))
        emp = (j - idx[:, None]) / tail
        low = np.abs(model - emp).max(axis=1)
        lower[start:start + rows] = low
        if exact:
            upper[start:start + rows] = low
        else:
            cross = np.maximum(model[:, 1:] - emp[:, :-1], emp[:, 1:] - model[:, :-1])
            upper[start:start + rows] = cross.max(axis=1)
    return lower, upper


def _scan(x: np.ndarray) -> tuple[int, float, float]:
    """Index, alpha and D of the best xmin candidate of sorted ``x`` (len >= 2, standard branch)."""
    n_all = len(x)
    logx = np.log(x)
    alphas = _alphas(logx)
    # candidates: first occurrence of each distinct value, the largest value excluded
    first = np.flatnonzero(np.diff(x, prepend=-np.inf) > 0)
    cand = first[first < n_all - 1]
    cand = cand[np.isfinite(alphas[cand])]
    if len(cand) == 0:
        raise ValueError("no xmin candidate: all values are equal")
    points: int | None = 16
    while True:
        lower, upper = _gaps(logx, alphas, cand, points)
        if points is None:
            threshold = lower.min()
        else:
            # the exact D of the few most promising candidates is a tight bound on the minimum
            probe = cand[np.argsort(upper)[:4]]
            threshold = min(upper.min(), _gaps(logx, alphas, probe, None)[0].min())
        cand = cand[lower <= threshold + _MARGIN]
        if points is None:
            break
        points = points * 8 if points * 8 + 1 < int((n_all - cand).max()) else None
    best_i, best_alpha, best_D = -1, math.nan, math.inf
    for i in cand:  # few survivors: score them as the reference does, first minimum wins
        alpha, D = _reference_alpha_D(x, logx, int(i))
        if D < best_D:
            best_i, best_alpha, best_D = int(i), alpha, D
    return best_i, best_alpha, best_D


def _scan_small(x: np.ndarray) -> tuple[int, float, float]:
    """The reference's small-sample branch (n_all < 20): candidates need a tail of >= 8 values,
    alpha is the bias-corrected ``1 + (n-1)/sum ln(x_j/x_i)``. The reference also computes the
    objective ``D - 0.868/sqrt(n)`` but its caller then keeps the candidate of smallest D, so the
    smallest D is what decides here too (the numbers must be the reference's)."""
    n_all = len(x)
    logx = np.log(x)
    alphas = np.zeros(n_all - 1)
    Ds = np.ones(n_all - 1)
    for i in range(n_all - 1):
        n = n_all - i
        if n < 8:
            continue
        s = float(np.sum(logx[i:]) - n * logx[i])
        if s <= 1e-12:
            continue
        alphas[i] = 1.0 + (n - 1.0) / s
        if alphas[i] > 1.0:
            Ds[i] = np.max(np.abs(np.arange(n) / n - (1.0 - (x[i:] / x[i]) ** (1.0 - alphas[i]))))
    if not np.any(alphas > 1.0):  # no usable candidate: the whole sample
        s = float(np.sum(logx) - n_all * logx[0])
        if s <= 1e-12:
            raise ValueError("all values are equal")
        alphas[0] = 1.0 + (n_all - 1.0) / s
        Ds[0] = np.max(np.abs(np.arange(n_all) / n_all - (1.0 - (x / x[0]) ** (1.0 - alphas[0]))))
    i = int(np.argmin(Ds))
    if not alphas[i] > 1.0:
        raise ValueError("no tail with alpha > 1")
    return i, float(alphas[i]), float(Ds[i])


def _fit_sorted(x: np.ndarray, xmin_mode: str | float | None) -> tuple[int, float, float]:
    """Index of xmin, alpha and D for sorted positive ``x``."""
    n_all = len(x)
    if xmin_mode is None or xmin_mode == "scan":
        return _scan_small(x) if n_all < SMALL_N else _scan(x)
    if xmin_mode == "median":
        i = n_all // 2
    elif xmin_mode == "top_third":
        i = n_all - max(2, n_all // 3)
    elif isinstance(xmin_mode, (int, float)):
        i = int(np.searchsorted(x, float(xmin_mode), side="left"))
    else:
        raise FitOptionError(f"xmin must be None, 'scan', 'median', 'top_third' or a number, "
                         f"not {xmin_mode!r}")
    i = min(max(i, 0), n_all - 2)
    alpha, D = _reference_alpha_D(x, np.log(x), i)
    return i, alpha, D


def _fit_values(x: np.ndarray, xmin_mode) -> PowerLawFit:
    """Fit sorted positive ``x``; raises ValueError when it cannot be fitted."""
    if len(x) < 2:
        raise ValueError(f"{len(x)} value(s) above the threshold: too few to fit")
    i, alpha, D = _fit_sorted(x, xmin_mode)
    if not np.isfinite(alpha):
        raise ValueError("alpha is not finite")
    n_tail = len(x) - i
    sigma = (alpha - 1.0) / math.sqrt(n_tail)
    return PowerLawFit(alpha, float(x[i]), float(x[-1]), D, sigma, n_tail, SUCCESS,
                       alpha_warning(alpha))


def fit_powerlaw(values, *, xmin: str | float | None = None, fix_fingers: str | None = None,
                 min_value: float = MIN_VALUE, max_fingers: int = 10,
                 finger_thresh: float = 1.0) -> PowerLawFit:
    """Fit a continuous power law to the tail of a positive 1-D sample (ties allowed).

    ``xmin``: None or ``'scan'`` (the reference's KS scan over all candidates), ``'median'`` (tail
    = upper half), ``'top_third'``, or a number (the tail starts at the first value >= it).
    ``fix_fingers='clip_xmax'``: refit without the k largest values, k = 2..max_fingers-1, and
    keep the first fit whose alpha is more than ``finger_thresh`` below the unclipped one
    (stopping once alpha <= 2), as the reference does. Values <= ``min_value`` are ignored.
    Never raises for bad data: a failed fit comes back with ``status='failed'`` and the reason;
    an option it does not accept raises :class:`FitOptionError` (a ``ValueError``).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        return failed_fit("non-finite values (NaN/Inf)")
    x = np.sort(x[x > min_value])
    try:
        first = _fit_values(x, xmin)
        if fix_fingers in (None, False):
            return first
        if fix_fingers != "clip_xmax":
            raise FitOptionError(f"fix_fingers must be None or 'clip_xmax', not {fix_fingers!r}")
        best, num_fingers = first, 0
        for k in range(2, max_fingers):
            if len(x) - k < 2:
                break
            fit = _fit_values(x[:-k], xmin)
            if fit.alpha + finger_thresh < first.alpha:
                best, num_fingers = fit, k - 1
                break
            if fit.alpha <= OVER_TRAINED_ALPHA:
                break
        n_tail = int(np.count_nonzero(x >= best.xmin))
        return PowerLawFit(best.alpha, best.xmin, best.xmax, best.D, best.sigma, n_tail,
                           SUCCESS, best.warning, num_fingers, first.alpha)
    except FitOptionError:
        raise
    except ValueError as err:
        return failed_fit(f"power-law fit failed: {err}")
