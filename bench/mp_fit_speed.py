"""Time ``ww_callbacks.mp_fit.fit_mp`` against WeightWatcher 0.7.7's ``mp_fit``.

Usage: ``PYTHONPATH=. python bench/mp_fit_speed.py [--n 768] [--m 768] [--runs 50]``

Prints the median time of ours and of the reference on the spectrum of a Gaussian N x M
matrix, the speed-up ratio, and whether both results agree.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np

from ww_callbacks.mp_fit import fit_mp


def _median_time(func: Callable[[], object], runs: int) -> float:
    """Median wall time of ``runs`` calls of ``func``, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Parse arguments, time both implementations and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=768, help="rows N of the matrix (N >= M)")
    parser.add_argument("--m", type=int, default=768, help="columns M of the matrix")
    parser.add_argument("--runs", type=int, default=50, help="timed runs of ours")
    parser.add_argument("--ref-runs", type=int, default=3, help="timed runs of the reference")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random matrix")
    args = parser.parse_args()

    import weightwatcher

    logging.getLogger("weightwatcher").setLevel(logging.CRITICAL)
    rng = np.random.default_rng(args.seed)
    evals = np.linalg.svd(rng.standard_normal((args.n, args.m)), compute_uv=False) ** 2
    watcher = weightwatcher.WeightWatcher()

    def reference() -> tuple:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return watcher.mp_fit(
                evals, args.n, args.m, 1, "layer", 0, 0, False, False, "", "blue", 0.25,
                True, evals,
            )  # fmt: skip

    def ours() -> object:
        return fit_mp(evals, args.n, args.m)

    ours()  # warm up
    t_ours = _median_time(ours, args.runs)
    t_ref = _median_time(reference, args.ref_runs)
    ref = reference()
    fit = ours()
    print(f"spectrum of a Gaussian {args.n} x {args.m} matrix ({evals.size} eigenvalues)")
    print(f"ours:      {t_ours * 1e3:9.2f} ms  (median of {args.runs})")
    print(f"reference: {t_ref * 1e3:9.2f} ms  (median of {args.ref_runs})")
    print(f"ratio:     {t_ref / t_ours:9.0f} x")
    print(
        f"num_spikes ours/ref: {fit.num_spikes}/{ref[0]}, "
        f"sigma_mp ours/ref: {fit.sigma_mp!r}/{float(ref[1])!r}"
    )


if __name__ == "__main__":
    main()
