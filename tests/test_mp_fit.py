"""Tests of ``ww_callbacks.mp_fit`` against WeightWatcher 0.7.7's own Marchenko-Pastur fit.

The reference is ``WeightWatcher.mp_fit`` (scipy ``brute`` + ``fmin`` over an sklearn KDE);
ours must give the same spike count and, to within rounding, the same sigma and bulk edges.
Run with ``-s`` to see the observed deviations and the speed comparison.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from functools import cache

import numpy as np
import pytest

ww = pytest.importorskip("weightwatcher")

from ww_callbacks.mp_fit import MPFit, _linear_kde, _nelder_mead_1d, _Objective, fit_mp  # noqa: E402

logging.getLogger("weightwatcher").setLevel(logging.CRITICAL)

# Observed on the reference cases: every field bit-for-bit equal (deviation 0.0).  The
# tolerance leaves room for last-bit differences on other platforms / BLAS builds.
REL_TOL = 1e-9

FLOAT_FIELDS = ("sigma_mp", "mp_softrank", "bulk_min", "bulk_max", "W_scale")


def _esd(W: np.ndarray) -> np.ndarray:
    """Eigenvalues of ``W^T W`` (squared singular values), as WeightWatcher computes them."""
    return np.linalg.svd(W, compute_uv=False) ** 2


def _gauss(seed: int, N: int, M: int) -> tuple[np.ndarray, int, int]:
    """Spectrum of an N x M standard Gaussian matrix."""
    rng = np.random.default_rng(seed)
    return _esd(rng.standard_normal((N, M))), N, M


def _spiked(seed: int) -> tuple[np.ndarray, int, int]:
    """Gaussian matrix plus a large rank-3 perturbation (three clear spikes)."""
    rng = np.random.default_rng(seed)
    N, M = 500, 200
    U = rng.standard_normal((N, 3))
    V = rng.standard_normal((M, 3))
    W = rng.standard_normal((N, M)) + 0.6 * np.sqrt(N / M) * U @ V.T
    return _esd(W), N, M


def _student_t(seed: int, N: int, M: int) -> tuple[np.ndarray, int, int]:
    """Heavy-tailed matrix with Student-t (df=3) entries."""
    rng = np.random.default_rng(seed)
    return _esd(rng.standard_t(3.0, (N, M))), N, M


def _planted(seed: int) -> tuple[np.ndarray, int, int]:
    """Gaussian matrix with a single huge planted element."""
    rng = np.random.default_rng(seed)
    N, M = 500, 200
    W = rng.standard_normal((N, M))
    W[3, 7] = 200.0
    return _esd(W), N, M


def _pooled(seed: int) -> tuple[np.ndarray, int, int]:
    """Spectra of 5 independent Gaussian 256 x 128 replicas, pooled (length 5 M)."""
    rng = np.random.default_rng(seed)
    N, M = 256, 128
    return np.concatenate([_esd(rng.standard_normal((N, M))) for _ in range(5)]), N, M


def _mostly_zeros(seed: int) -> tuple[np.ndarray, int, int]:
    """Rank-deficient spectrum: every grid sigma is penalised in the reference's brute search."""
    rng = np.random.default_rng(seed)
    return np.concatenate([np.zeros(90), rng.random(10)]), 200, 100


CASES: dict[str, Callable[[], tuple[np.ndarray, int, int]]] = {
    "gauss_Q1_M30": lambda: _gauss(1, 30, 30),
    "gauss_Q1_M300": lambda: _gauss(2, 300, 300),
    "gauss_Q1.5_M200": lambda: _gauss(3, 300, 200),
    "gauss_Q4_M128": lambda: _gauss(4, 512, 128),
    "gauss_Q4_M800": lambda: _gauss(5, 3200, 800),
    "gauss_Q8_M50": lambda: _gauss(6, 400, 50),
    "spiked_rank3_Q2.5": lambda: _spiked(7),
    "student_t3_Q2_M150": lambda: _student_t(8, 300, 150),
    "student_t3_Q1_M256": lambda: _student_t(9, 256, 256),
    "planted_huge_element": lambda: _planted(10),
    "pooled_5_replicas": lambda: _pooled(11),
    "mostly_zeros": lambda: _mostly_zeros(12),
}


@cache
def _case(name: str) -> tuple[np.ndarray, int, int]:
    """The spectrum of a named case, built once."""
    return CASES[name]()


def _reference(evals: np.ndarray, N: int, M: int) -> MPFit:
    """WeightWatcher 0.7.7's ``mp_fit`` (rescale=True, no plots) on ``evals``."""
    watcher = ww.WeightWatcher()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = watcher.mp_fit(
            evals,
            N,
            M,
            rf=1,
            layer_name="layer",
            layer_id=0,
            plot_id=0,
            plot=False,
            savefig=False,
            savedir="",
            color="blue",
            hist_alpha=0.25,
            rescale=True,
            orig_evals=evals,
        )
    num_spikes, sigma_mp, mp_softrank, bulk_min, bulk_max, w_scale = result
    return MPFit(
        num_spikes=int(num_spikes),
        sigma_mp=float(sigma_mp),
        mp_softrank=float(mp_softrank),
        bulk_min=float(bulk_min),
        bulk_max=float(bulk_max),
        W_scale=float(w_scale),
    )


@cache
def _reference_case(name: str) -> MPFit:
    """Reference result of a named case, computed once per session."""
    return _reference(*_case(name))


def _rel_dev(ours: float, ref: float) -> float:
    """Relative deviation (0 when equal, including 0 == 0)."""
    if ours == ref:
        return 0.0
    return abs(ours - ref) / max(abs(ref), np.finfo(float).tiny)


@pytest.mark.reference
@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference(name: str) -> None:
    """Spike count identical and every float within REL_TOL of WeightWatcher's mp_fit."""
    evals, N, M = _case(name)
    ref = _reference_case(name)
    ours = fit_mp(evals, N, M)
    devs = {field: _rel_dev(getattr(ours, field), getattr(ref, field)) for field in FLOAT_FIELDS}
    print(f"\n{name}: spikes {ours.num_spikes}/{ref.num_spikes}, max rel dev {devs}")
    assert ours.num_spikes == ref.num_spikes
    for field in FLOAT_FIELDS:
        assert getattr(ours, field) == pytest.approx(getattr(ref, field), rel=REL_TOL), field


@pytest.mark.reference
def test_cases_exercise_spikes_and_penalties() -> None:
    """The case list covers spectra with and without spikes, as intended."""
    assert _reference_case("gauss_Q4_M128").num_spikes == 0
    assert _reference_case("spiked_rank3_Q2.5").num_spikes == 3
    assert _reference_case("planted_huge_element").num_spikes >= 1
    assert _reference_case("student_t3_Q2_M150").num_spikes > 0
    # All grid sigmas penalised: brute keeps the first grid point, 0.05 * sigma0, whose bulk
    # edge is 0.05**2 of the largest scaled eigenvalue.
    assert _reference_case("mostly_zeros").mp_softrank == pytest.approx(0.0025)


@pytest.mark.reference
@pytest.mark.parametrize("name", ["gauss_Q1_M300", "gauss_Q4_M128", "spiked_rank3_Q2.5"])
def test_objective_matches_resid_mp(name: str) -> None:
    """The vectorised objective equals ``sum(resid_mp(...)**2)`` for grid, penalised and
    negative sigmas."""
    from weightwatcher import RMT_Util

    evals, N, M = _case(name)
    Q = N / M
    x = (evals.size / np.sum(evals)) * evals
    to_fit = np.sqrt(x) if Q == 1 else x
    sigmas = np.array([0.05, 0.3, 0.7, 0.95, 1.0, 1.07, 1.5, 3.0, -1.0])
    ours = _Objective(to_fit, Q)(sigmas)
    ref = [RMT_Util.resid_mp(np.array([s]), to_fit, Q, 0.1, False) for s in sigmas]
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)  # observed <= 2e-15


def test_linear_kde_matches_sklearn() -> None:
    """The numpy KDE equals sklearn's linear-kernel KernelDensity (bandwidth 0.1)."""
    neighbors = pytest.importorskip("sklearn.neighbors")
    rng = np.random.default_rng(20)
    for values in (rng.gamma(2.0, 0.5, 3000), np.r_[np.zeros(50), rng.random(40) * 3], [1.0]):
        values = np.asarray(values, dtype=np.float64)
        grid = np.linspace(0, values.max() + 0.5, 1000)
        kde = neighbors.KernelDensity(kernel="linear", bandwidth=0.1).fit(values[:, None])
        ref = np.exp(kde.score_samples(grid[:, None]))
        ours = _linear_kde(values, grid, 0.1)
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)


def test_linear_kde_blocks_do_not_change_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Splitting the (grid, sample) pairs into tiny blocks gives the same densities."""
    import ww_callbacks.mp_fit as mp_fit

    rng = np.random.default_rng(21)
    values = rng.gamma(4.0, 0.25, 20_000)
    grid = np.linspace(0, values.max() + 0.5, 1000)
    whole = _linear_kde(values, grid, 0.1)
    monkeypatch.setattr(mp_fit, "_KDE_PAIR_BUDGET", 7)
    np.testing.assert_array_equal(_linear_kde(values, grid, 0.1), whole)


_NM_FUNCTIONS: dict[str, tuple[Callable[[float], float], float]] = {
    "quadratic": (lambda x: (x - 1.3) ** 2 + 0.5, 0.2),
    "abs": (lambda x: abs(x - 3.0), 10.0),
    "flat": (lambda x: 7.0, 1.0),
    "unbounded_runs_out_of_calls": (lambda x: -x, 1.0),
    "steps": (lambda x: float(np.floor(4 * x) ** 2), 2.3),
    "wiggly": (lambda x: float(np.cos(5 * x) + x * x / 10), 0.7),
    "start_at_zero": (lambda x: (x - 0.01) ** 2, 0.0),
    "negative_start": (lambda x: (x + 2.0) ** 4, -0.5),
}


@pytest.mark.parametrize("name", list(_NM_FUNCTIONS))
def test_nelder_mead_matches_scipy_fmin(name: str) -> None:
    """The 1-D Nelder-Mead returns exactly what ``scipy.optimize.fmin`` returns."""
    optimize = pytest.importorskip("scipy.optimize")
    func, x0 = _NM_FUNCTIONS[name]
    xopt, fopt, *_ = optimize.fmin(lambda v: func(float(v[0])), x0, full_output=1, disp=0)
    ours_x, ours_f = _nelder_mead_1d(func, x0)
    assert ours_x == xopt[0]
    assert ours_f == fopt


def test_does_not_touch_global_rng() -> None:
    """fit_mp leaves numpy's global random state exactly as it found it."""
    evals, N, M = _case("gauss_Q4_M128")
    before = np.random.get_state()
    fit_mp(evals, N, M)
    after = np.random.get_state()
    assert before[0] == after[0]
    np.testing.assert_array_equal(before[1], after[1])
    assert before[2:] == after[2:]


def test_result_type_and_input_order() -> None:
    """Returns a frozen MPFit of plain Python numbers; eigenvalue order is irrelevant."""
    evals, N, M = _case("spiked_rank3_Q2.5")
    fit = fit_mp(evals, N, M)
    assert isinstance(fit, MPFit)
    assert type(fit.num_spikes) is int
    assert all(type(getattr(fit, f)) is float for f in FLOAT_FIELDS)
    with pytest.raises(AttributeError):
        fit.sigma_mp = 1.0  # type: ignore[misc]
    shuffled = np.random.default_rng(30).permutation(evals)
    other = fit_mp(shuffled, N, M)
    assert other.num_spikes == fit.num_spikes
    assert other.sigma_mp == pytest.approx(fit.sigma_mp, rel=1e-9)


@pytest.mark.parametrize(
    ("evals", "N", "M"),
    [
        (np.array([]), 10, 5),
        (np.array([1.0, np.nan, 2.0]), 10, 5),
        (np.array([1.0, np.inf]), 10, 5),
        (np.zeros(5), 10, 5),
        (np.ones((2, 3)), 10, 5),
        (np.ones(5), 0, 5),
        (np.ones(5), 10, -1),
        (np.array([1.0, -1e-12, 2.0]), 5, 5),
    ],
    ids=["empty", "nan", "inf", "all_zero", "2d", "N0", "M_negative", "negative_Q1"],
)
def test_degenerate_input_raises(evals: np.ndarray, N: int, M: int) -> None:
    """Degenerate input raises ValueError with a message (the caller records a failure)."""
    with pytest.raises(ValueError, match="MP fit"):
        fit_mp(evals, N, M)


@pytest.mark.reference
def test_speed_report() -> None:
    """Print (not assert) our time vs the reference's for a 768 x 768 layer; see with -s."""
    evals, N, M = _gauss(40, 768, 768)
    t0 = time.perf_counter()
    ref = _reference(evals, N, M)
    t_ref = time.perf_counter() - t0
    fit_mp(evals, N, M)  # warm up
    runs = 20
    t0 = time.perf_counter()
    for _ in range(runs):
        ours = fit_mp(evals, N, M)
    t_ours = (time.perf_counter() - t0) / runs
    print(
        f"\nmp fit M=768: ours {t_ours * 1e3:.2f} ms, reference {t_ref * 1e3:.0f} ms, "
        f"ratio {t_ref / t_ours:.0f}x"
    )
    assert ours.num_spikes == ref.num_spikes
