"""Time ``ww_callbacks.fit_powerlaw`` against WeightWatcher 0.7.7's ``WW_powerlaw.WWFit``.

Usage: ``python bench/fit_powerlaw_speed.py [--sizes 768,4096,15000] [--large 100000,300000]``

For each size and each kind of sample (Pareto with tail exponent 3.5; Marchenko-Pastur
eigenvalues, Q = 2, as the bulk of a random layer's spectrum) it prints the time of ours (best of
``--repeats``), of the reference (best of ``--ref-runs``: it is O(n^2)), the ratio ours/reference
and whether xmin and alpha are the same. Ours alone on the ``--large`` sizes; the reference once
on ``--trend`` values to show how its time grows.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import (  # noqa: E402
    best_time,
    load_line,
    no_stdout,
    print_header,
    quiet_weightwatcher,
)

from ww_callbacks import fit_powerlaw  # noqa: E402

PARETO_A = 2.5  # numpy's Lomax shape: the density's exponent is alpha = PARETO_A + 1
MP_Q = 2.0  # N / M of the Marchenko-Pastur law


def pareto_sample(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` values of a Pareto law on [1, inf) with density exponent ``PARETO_A + 1``."""
    return 1.0 + rng.pareto(PARETO_A, n)


def mp_sample(n: int, rng: np.random.Generator, q: float = MP_Q) -> np.ndarray:
    """``n`` draws from the Marchenko-Pastur law (sigma = 1, ratio ``q`` = N/M >= 1), by
    rejection sampling: the eigenvalues of W^T W / N for a Gaussian N x M matrix, without the
    O(M^3) eigendecomposition."""
    lam = 1.0 / q
    a, b = (1 - np.sqrt(lam)) ** 2, (1 + np.sqrt(lam)) ** 2

    def density(x: np.ndarray) -> np.ndarray:
        return np.sqrt(np.clip((b - x) * (x - a), 0.0, None)) / (2 * np.pi * lam * x)

    grid = np.linspace(a, b, 100_001)
    envelope = 1.05 * density(grid).max()
    out: list[np.ndarray] = []
    have = 0
    while have < n:
        x = rng.uniform(a, b, 2 * n)
        keep = x[rng.uniform(0.0, envelope, 2 * n) < density(x)]
        out.append(keep)
        have += len(keep)
    return np.concatenate(out)[:n]


SAMPLERS = {"pareto": pareto_sample, "mp": mp_sample}


def main() -> None:
    """Parse arguments, time both fits and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="768,4096,15000", help="sizes timed on both")
    parser.add_argument("--large", default="100000,300000", help="sizes timed on ours only")
    parser.add_argument("--trend", default="20000", help="sizes timed once on the reference only")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours (best kept)")
    parser.add_argument("--ref-runs", type=int, default=2,
                        help="timed runs of the reference below 10,000 values (best kept); "
                             "1 above")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples")
    args = parser.parse_args()

    def sizes(text: str) -> list[int]:
        return [int(s) for s in text.split(",") if s.strip()]

    ww_powerlaw = quiet_weightwatcher().WW_powerlaw

    def reference(x: np.ndarray) -> object:
        with no_stdout(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ww_powerlaw.WWFit(x[x > 1e-5])

    print_header(f"numpy {np.__version__}")
    print(f"ours: best of {args.repeats} (after a warm-up call); reference: best of "
          f"{args.ref_runs} below 10,000 values, 1 run above")
    print(f"{'sample':>7s} {'n':>7s} {'ours ms':>10s} {'ref ms':>11s} {'ours/ref':>9s} "
          f"{'speed-up':>9s}  same xmin  alpha rel diff   alpha")
    rng = np.random.default_rng(args.seed)
    all_same = True
    for n in sizes(args.sizes):
        for kind, sampler in SAMPLERS.items():
            x = sampler(n, rng)
            fit_powerlaw(x)  # warm-up
            t_ours, fit = best_time(lambda x=x: fit_powerlaw(x), args.repeats)
            runs = args.ref_runs if n < 10_000 else 1
            t_ref, ref = best_time(lambda x=x: reference(x), runs)
            same = bool(fit.xmin == ref.xmin)
            rel = abs(fit.alpha - ref.alpha) / abs(ref.alpha)
            all_same &= same and rel <= 1e-12
            print(f"{kind:>7s} {n:7d} {t_ours * 1e3:10.2f} {t_ref * 1e3:11.1f} "
                  f"{t_ours / t_ref:9.5f} {t_ref / t_ours:8.0f}x  {same!s:9s}  {rel:14.1e}  "
                  f"{fit.alpha:.4f}")
    print(f"same xmin and alpha (rel 1e-12) on every sample: {all_same}")
    for n in sizes(args.trend):
        for kind, sampler in SAMPLERS.items():
            x = sampler(n, rng)
            t_ref, _ = best_time(lambda x=x: reference(x), 1)
            print(f"{kind:>7s} {n:7d} reference alone: {t_ref:8.2f} s (1 run)")
    for n in sizes(args.large):
        for kind, sampler in SAMPLERS.items():
            x = sampler(n, rng)
            fit_powerlaw(x)
            t_ours, fit = best_time(lambda x=x: fit_powerlaw(x), args.repeats)
            print(f"{kind:>7s} {n:7d} ours alone: {t_ours * 1e3:9.1f} ms (best of "
                  f"{args.repeats}); alpha {fit.alpha:.4f}, tail {fit.n_tail} values")
    print(f"at end: {load_line()}")


if __name__ == "__main__":
    main()
