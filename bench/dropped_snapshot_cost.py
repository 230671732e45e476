"""What a due step costs the training thread when its snapshot is taken, and when it is dropped.

    python bench/dropped_snapshot_cost.py [--steps 100]

A plain torch loop on a 6 x Linear(1024) MLP (the issue's case: copying every due step's weights
cost 4.7-5.5 ms, 1.43x the step, though 99.6% of the copies were then dropped). Measured in one
run, on the training thread:
- the step itself (forward, backward, SGD) on a batch of 64, as the baseline;
- ``Watcher.snapshot`` when the worker is free: the snapshot is copied (24 MB);
- ``Watcher.snapshot`` at every step while a slow analysis runs: the worker predicts it would not
  reach the snapshot before the next one, so nothing is copied and the step counts as dropped.
- a Python call that does nothing, timed the same way at the same moments: while the analysis
  thread runs Python code, any call on the training thread may wait for the GIL (up to the
  5 ms switch interval); the difference is what the dropped snapshot itself costs.
Prints the median of each and the ratios to the step time.

Then, from the first step on (issue 22), for ``analysis_in="process"`` and ``"thread"``: a new
watcher, ``snapshot`` at every step of the loop while its first analyses run (their cost still
unknown) and after: the training-thread time of every due step but the first (the initial
weights, always copied), median and mean, and the copies made against the analyses done
(target: at most analyses + 1; before issue 22 every due step copied while the cost was
unknown: 268 copies for 2 analyses, 5.2 ms per due step).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

from ww_callbacks.session import WatchSession as Watcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--analysis-in", default="process", choices=["process", "thread"],
                        help="where the analysis runs for the first part")
    parser.add_argument("--first-only", action="store_true",
                        help="only the runs from the first step on (a loaded machine: the first "
                             "part's twelve warm-up analyses take minutes at nice 19)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(6)])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(64, 1024)

    def train_step() -> float:
        start = time.perf_counter()
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        return time.perf_counter() - start

    print(f"torch threads {torch.get_num_threads()}, {args.steps} steps, 6 x Linear(1024)")
    steps = [train_step() for _ in range(args.steps)]

    print("load:", open("/proc/loadavg").read().strip())
    print(f"training step: median {statistics.median(steps) * 1e3:.2f} ms")
    for mode in ("process", "thread"):
        _from_first_step(model, train_step, mode, args.steps)
    if args.first_only:
        return
    watcher = Watcher(traps_every=0, max_duty=None, analysis_in=args.analysis_in)
    copied = []
    for step in range(12):  # the first analyses give the worker its cost estimate
        train_step()
        start = time.perf_counter()
        assert watcher.snapshot(model, step)
        copied.append(time.perf_counter() - start)
        watcher.wait_idle(600)
        watcher.poll()
    dropped, idle_calls, skipped_before = [], [], watcher.dropped
    assert watcher.snapshot(model, 100)  # a real analysis of 6 layers, seconds long
    for step in range(101, 101 + args.steps):
        train_step()
        start = time.perf_counter()
        _noop(model, step)  # the same call shape doing nothing: the GIL wait alone
        idle_calls.append(time.perf_counter() - start)
        start = time.perf_counter()
        watcher.snapshot(model, step)
        dropped.append(time.perf_counter() - start)
        watcher.poll()
        if watcher._worker.idle:  # the analysis finished: hand it the next step
            break
    n_dropped = watcher.dropped - skipped_before
    watcher.close(final=False)

    step_t = statistics.median(steps)
    copy_t = statistics.median(copied[1:])  # the first one also chose the layers
    drop_t = statistics.median(dropped)
    noop_t = statistics.median(idle_calls)
    print(f"training step           : median {step_t * 1e3:8.3f} ms")
    print(f"due step, copied        : median {copy_t * 1e3:8.3f} ms  ({copy_t / step_t:.2f}x the "
          f"step)")
    print(f"due step, dropped       : median {drop_t * 1e3:8.3f} ms  ({drop_t / step_t:.4f}x the "
          f"step; {n_dropped} of {len(dropped)} due steps dropped while one analysis ran)")
    print(f"no-op call, same moment : median {noop_t * 1e3:8.3f} ms  (a Python call doing "
          "nothing, timed the same way while the analysis runs: waiting for the GIL)")
    print(f"dropped - no-op         : {(drop_t - noop_t) * 1e3:8.3f} ms  (what the drop itself "
          "costs)")
    print(f"copied / dropped        : {copy_t / drop_t:.1f}x")


def _from_first_step(model, train_step, mode: str, steps: int) -> None:
    """A new watcher, a due snapshot at every step from the first one on."""
    watcher = Watcher(traps_every=0, max_duty=None, analysis_in=mode)
    costs = []
    start_run = time.perf_counter()
    for step in range(steps):
        train_step()
        start = time.perf_counter()
        watcher.snapshot(model, step)
        costs.append(time.perf_counter() - start)
        watcher.poll(step)
    run = time.perf_counter() - start_run
    watcher.wait_idle(600)  # the last skipped step is taken: one copy, one analysis more
    watcher.poll()
    copies, analyses = watcher.copies, watcher.results_delivered
    watcher.close()
    later = costs[1:]
    print(f"from the first step, analysis in a {mode}: {steps} steps in {run:.1f} s; due step "
          f"(all but the first) median {statistics.median(later) * 1e3:.4f} ms, mean "
          f"{statistics.fmean(later) * 1e3:.4f} ms; first {costs[0] * 1e3:.2f} ms; copies "
          f"{copies}, analyses {analyses} (copies <= analyses + 1: {copies <= analyses + 1})")


def _noop(model: object, step: int) -> bool:
    """Does nothing: times what any Python call on the training thread waits for the GIL while
    the analysis thread runs Python code."""
    return model is None and step < 0


if __name__ == "__main__":
    main()
