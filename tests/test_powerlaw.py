"""fit_powerlaw: the reference's WWFit numbers, the fast modes, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ww_callbacks import PowerLawFit, fit_powerlaw
from ww_callbacks.powerlaw import FitOptionError


def _samples():
    rng = np.random.default_rng(7)
    for n in (8, 12, 19, 20, 25, 60, 300, 1500):
        yield f"pareto{n}", np.sort(rng.pareto(2.0, n) + 1.0)
        yield f"mp{n}", np.linalg.eigvalsh(_gram(rng, 3 * n, n))
    yield "heavy2000", np.linalg.eigvalsh(_gram(rng, 4000, 2000, heavy=True))


def _gram(rng, N, M, heavy=False):
    W = rng.standard_t(3, (N, M)) if heavy else rng.standard_normal((N, M))
    return W.T @ W / N


@pytest.mark.reference
@pytest.mark.parametrize("label,values", list(_samples()))
def test_equals_reference_wwfit(label, values):
    ww_powerlaw = pytest.importorskip("weightwatcher.WW_powerlaw")
    ref = ww_powerlaw.WWFit(values[values > 1e-5])
    fit = fit_powerlaw(values)
    assert fit.ok
    assert fit.xmin == ref.xmin, label
    assert fit.alpha == pytest.approx(ref.alpha, rel=1e-12)
    assert fit.D == pytest.approx(ref.D, rel=1e-12)
    assert fit.sigma == pytest.approx(ref.sigma, rel=1e-12)
    assert fit.xmax == values.max()


@pytest.mark.reference
@pytest.mark.parametrize("label,values", list(_samples())[-6:])
def test_clip_xmax_equals_reference(label, values):
    rmt = pytest.importorskip("weightwatcher.RMT_Util")
    nz = values[values > 1e-5]
    ref, num_fingers, raw = rmt.fit_clipped_powerlaw(nz, max_fingers=10)
    fit = fit_powerlaw(values, fix_fingers="clip_xmax")
    assert fit.alpha == pytest.approx(ref.alpha, rel=1e-12)
    assert fit.xmin == ref.xmin
    assert fit.num_fingers == num_fingers
    assert fit.raw_alpha == pytest.approx(raw.alpha, rel=1e-12)


def test_large_sample_is_exact():
    """10^5 values: the pruned scan equals a brute-force scan on the candidates near the optimum
    and no candidate has a smaller D."""
    rng = np.random.default_rng(3)
    x = np.sort(rng.pareto(1.5, 100_000) + 1.0)
    fit = fit_powerlaw(x)
    assert fit.ok and 2.0 < fit.alpha < 3.2
    logx = np.log(x)
    n_all = len(x)
    for i in rng.choice(n_all - 1, 300, replace=False):
        n = n_all - i
        alpha = 1 + n / (np.sum(logx[i:]) - n * logx[i])
        D = np.max(np.abs(1 - (x[i:] / x[i]) ** (1 - alpha) - np.arange(n) / n))
        assert D >= fit.D - 1e-12


def test_ties_use_distinct_candidates():
    rng = np.random.default_rng(5)
    x = np.round(rng.pareto(2.0, 5000) + 1.0, 2)  # many repeated values
    fit = fit_powerlaw(x)
    assert fit.ok
    assert fit.xmin in set(x)
    assert fit.n_tail == np.count_nonzero(x >= fit.xmin)


def test_fixed_xmin_modes():
    rng = np.random.default_rng(11)
    x = np.sort(rng.pareto(2.0, 999) + 1.0)
    med = fit_powerlaw(x, xmin="median")
    assert med.xmin == x[len(x) // 2] and med.n_tail == len(x) - len(x) // 2
    hill = 1 + med.n_tail / np.sum(np.log(x[len(x) // 2:] / med.xmin))
    assert med.alpha == pytest.approx(hill, rel=1e-12)
    third = fit_powerlaw(x, xmin="top_third")
    assert third.n_tail == len(x) // 3
    at = fit_powerlaw(x, xmin=5.0)
    assert at.xmin >= 5.0 and x[len(x) - at.n_tail - 1] < 5.0
    with pytest.raises(ValueError):
        fit_powerlaw(x, xmin="nonsense")


@pytest.mark.parametrize("values,reason", [
    ([], "too few"),
    ([0.0, 0.0, 1e-7], "too few"),
    ([1.0, np.nan, 2.0], "non-finite"),
    ([2.0] * 50, "equal"),
    ([3.0], "too few"),
])
def test_bad_input_gives_failed_fit(values, reason):
    fit = fit_powerlaw(values)
    assert isinstance(fit, PowerLawFit)
    assert fit.status == "failed" and not fit.ok
    assert fit.alpha == -1 and fit.D == -1 and fit.xmin == -1 and fit.sigma == -1
    assert reason in fit.warning and math.isnan(fit.xmax)


@pytest.mark.parametrize("options", [{"xmin": "nonsense"}, {"fix_fingers": "xmax_clip"}])
def test_bad_option_raises_its_own_type(options):
    """A bad option is the caller's mistake and raises FitOptionError (a ValueError), told
    apart from an unfittable sample by its type; the same sample fits with valid options."""
    x = np.random.default_rng(3).pareto(2.0, 200) + 1.0
    with pytest.raises(FitOptionError, match=next(iter(options))):
        fit_powerlaw(x, **options)
    assert issubclass(FitOptionError, ValueError)
    assert fit_powerlaw(x).ok


def test_warning_thresholds():
    rng = np.random.default_rng(2)
    steep = fit_powerlaw(rng.pareto(8.0, 3000) + 1.0)
    flat = fit_powerlaw(rng.pareto(0.6, 3000) + 1.0)
    assert steep.warning == "under-trained" and flat.warning == "over-trained"
