"""What an analysis running next to training costs the training step: in a thread of the
training process vs in a separate (child) process, and why.

    python bench/interference.py [--rounds 6] [--block 1.5] [--nice 10]

A small CNN (two 3x3 convolutions, 32 and 64 channels, on a batch of 32 RGB 32x32 images) trains
with torch's default threads (every core). Next to it an analysis of six 512x512 random matrices
runs back to back (``analyze_layers`` with traps, one BLAS thread, niced by ``--nice``), either

- ``thread``: in a daemon thread of this process (as ``analysis_in="thread"``: per-thread nice
  value, threadpoolctl limit), or
- ``process``: in a spawned child process (as ``analysis_in="process"``: process nice value,
  one BLAS thread),

or not at all (``none``, the baseline). Blocks of ``--block`` seconds of each mode are
INTERLEAVED (none, thread, process, none, ...) for ``--rounds`` rounds, so a change of machine
load hits every mode alike; the median step time of each mode over all its blocks is printed,
with the ratios to ``none``.

Then the probe (the profile of the cause): a thread that only sleeps 0.2 ms and measures how
late it wakes up is a training thread coming back from a torch op (torch releases the GIL in
every op and must take it back after). Next to the analysis thread (no training), its extra
delay is the GIL the analysis holds (numpy's small calls and the fits' Python loops hold it;
LAPACK's eigvalsh releases it); next to the child process, only the CPU is shared. Printed:
the median and 99th percentile of the extra delay per wake-up, and the share of the analysis
thread's time spent holding the GIL (``1 - wall time released / wall time``, estimated by
timing ``eigvalsh`` alone, which runs without the GIL).

``--torch-threads 1`` takes torch's OpenMP team out: what is left of the cost is the GIL (thread)
and the shared cores (both).

Also runs ``thread`` with ``sys.setswitchinterval(0.0005)`` (``thread-si0.5ms``): if the cost is
the wait for a GIL holder, a tenth of the switch interval cuts it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time

import numpy as np

MATRICES = 6
SIZE = 512


def _matrices() -> list:
    """The analysed layers: random matrices from a private generator."""
    from ww_callbacks.layers import LayerWeights

    rng = np.random.default_rng(0)
    layers = []
    for i in range(MATRICES):
        w = rng.standard_normal((SIZE, SIZE)) / np.sqrt(SIZE)
        layers.append(LayerWeights(layer_id=i, name=f"l{i}", longname=f"l{i}", layer_type="dense",
                                   weight=w))
    return layers


def _lower(nice: int, per_thread: bool) -> None:
    if nice:
        target = threading.get_native_id() if per_thread else 0
        os.setpriority(os.PRIO_PROCESS, target, os.getpriority(os.PRIO_PROCESS, target) + nice)


def _analyse_while(go, quit_, counter, busy) -> None:
    """Analyse back to back while ``go`` is set; return when ``quit_`` is set."""
    from threadpoolctl import threadpool_limits

    from ww_callbacks.analysis import analyze_layers

    layers = _matrices()
    with threadpool_limits(limits=1, user_api="blas"):
        while not quit_.is_set():
            if not go.wait(0.05):
                continue
            busy.value = 1
            if go.is_set():
                analyze_layers(layers, randomize=True, seed=0)
                with counter.get_lock():
                    counter.value += 1
            busy.value = 0


def _thread_main(go, quit_, nice: int, counter, busy) -> None:
    _lower(nice, per_thread=True)
    _analyse_while(go, quit_, counter, busy)


def _child(go, quit_, ready, nice: int, counter, busy) -> None:
    """The child process's main (spawn: importable, no torch)."""
    _lower(nice, per_thread=False)
    import ww_callbacks.analysis  # noqa: F401  (imports done before timing starts)

    ready.set()
    _analyse_while(go, quit_, counter, busy)


class Analysis:
    """Back-to-back analyses in one thread or one child process, started once and switched on
    and off per block (an analysis in flight when a block ends finishes first)."""

    def __init__(self, mode: str, nice: int):
        ctx = mp.get_context("spawn")
        self.counter = ctx.Value("l", 0)
        self.busy = ctx.Value("i", 0)
        if mode == "process":
            self.go, self.quit = ctx.Event(), ctx.Event()
            ready = ctx.Event()
            self.runner = ctx.Process(target=_child, args=(self.go, self.quit, ready, nice,
                                                           self.counter, self.busy), daemon=True)
            self.runner.start()
            ready.wait(120)
        else:
            self.go, self.quit = threading.Event(), threading.Event()
            self.runner = threading.Thread(target=_thread_main,
                                           args=(self.go, self.quit, nice, self.counter, self.busy),
                                           daemon=True)
            self.runner.start()

    def start(self) -> None:
        self.go.set()

    def halt(self) -> None:
        """Stop after the analysis in flight (waits for it: the next block starts clean)."""
        self.go.clear()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.busy.value:
            time.sleep(0.005)  # (an analysis may be in flight: let it end)

    def close(self) -> None:
        self.quit.set()
        self.go.clear()
        self.runner.join(30)


def _cnn():
    import torch
    import torch.nn as nn

    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(64 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    x = torch.randn(32, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (32,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> float:
        start = time.perf_counter()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        return time.perf_counter() - start

    return step


def _switches() -> tuple[int, int]:
    """This thread's (voluntary, involuntary) context switches so far (Linux)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/status") as f:
            values = dict(line.split(":", 1) for line in f if "ctxt_switches" in line)
        return (int(values["voluntary_ctxt_switches"]),
                int(values["nonvoluntary_ctxt_switches"]))
    except (OSError, KeyError):
        return (0, 0)


class Profile:
    """Per mode: the training thread's CPU time and context switches per step. Off-CPU time
    (wall - CPU) is where the thread waited: for the GIL (a voluntary switch: it sleeps on
    the GIL's condition), for its OpenMP team, or preempted (an involuntary switch)."""

    def __init__(self) -> None:
        self.cpu: list[float] = []
        self.voluntary = 0
        self.involuntary = 0
        self.steps = 0


def _block(step, seconds: float, profile: Profile | None = None) -> list[float]:
    step()  # the first step after a switch pays the switch
    times, end = [], time.monotonic() + seconds
    before = _switches()
    while time.monotonic() < end:
        cpu = time.thread_time()
        times.append(step())
        if profile is not None:
            profile.cpu.append(time.thread_time() - cpu)
    after = _switches()
    if profile is not None:
        profile.voluntary += after[0] - before[0]
        profile.involuntary += after[1] - before[1]
        profile.steps += len(times)
    return times


def _probe(seconds: float) -> list[float]:
    """Extra wake-up delay of a thread sleeping 0.2 ms (the GIL taken back after a release)."""
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        time.sleep(0.0002)
        out.append(time.perf_counter() - start - 0.0002)
    return out


def _gil_share(seconds: float = 3.0) -> float:
    """Share of an analysis's wall time spent holding the GIL: the analysis timed once alone,
    and the LAPACK eigen-decompositions (GIL released) timed alone."""
    from threadpoolctl import threadpool_limits

    from ww_callbacks.analysis import analyze_layers

    layers = _matrices()
    with threadpool_limits(limits=1, user_api="blas"):
        analyze_layers(layers, randomize=True, seed=0)
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < seconds:
            analyze_layers(layers, randomize=True, seed=0)
            n += 1
        total = (time.perf_counter() - start) / n
        start = time.perf_counter()
        for layer in layers:  # the analysis decomposes W^T W and its randomized twin
            x = layer.weight.T @ layer.weight
            np.linalg.eigvalsh(x)
            np.linalg.eigvalsh(x)
        released = time.perf_counter() - start
    return max(0.0, 1 - released / total), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=float, default=1.5)
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch's intra-op threads (default: torch's own, every core); 1 "
                             "takes the OpenMP team out of the picture")
    args = parser.parse_args()
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores;"
          f" analysis: {MATRICES} x {SIZE}x{SIZE} with traps, 1 BLAS thread, nice +{args.nice}")
    print("load before:", open("/proc/loadavg").read().strip())
    step = _cnn()
    _block(step, 1.0)  # warm-up
    thread, proc = Analysis("thread", args.nice), Analysis("process", args.nice)
    modes = ["none", "thread", "process", "thread-si0.5ms"]
    times: dict[str, list[float]] = {m: [] for m in modes}
    profiles = {m: Profile() for m in modes}
    analyses: dict[str, int] = {m: 0 for m in modes}
    default_si = sys.getswitchinterval()
    for _ in range(args.rounds):
        for mode in modes:
            runner = {"thread": thread, "thread-si0.5ms": thread, "process": proc}.get(mode)
            if mode == "thread-si0.5ms":
                sys.setswitchinterval(0.0005)
            before = 0
            if runner is not None:
                before = runner.counter.value
                runner.start()
                time.sleep(0.3)  # the analysis under way
            times[mode] += _block(step, args.block, profiles[mode])
            if runner is not None:
                runner.halt()
                analyses[mode] += runner.counter.value - before
            sys.setswitchinterval(default_si)
    base = statistics.median(times["none"])
    print(f"{'mode':16s} {'median step':>12s} {'ratio':>7s} {'steps':>6s} {'analyses':>8s}")
    for mode in modes:
        med = statistics.median(times[mode])
        print(f"{mode:16s} {med * 1e3:9.2f} ms {med / base:7.3f} {len(times[mode]):6d} "
              f"{analyses[mode]:8d}")

    print("\nprofile of the training thread, per step (medians; switches: means)")
    print(f"{'mode':16s} {'wall':>9s} {'CPU':>9s} {'off-CPU':>9s} {'voluntary':>10s} "
          f"{'involuntary':>12s}")
    for mode in modes:
        prof, med = profiles[mode], statistics.median(times[mode])
        cpu = statistics.median(prof.cpu)
        print(f"{mode:16s} {med * 1e3:6.2f} ms {cpu * 1e3:6.2f} ms {(med - cpu) * 1e3:6.2f} ms "
              f"{prof.voluntary / max(prof.steps, 1):10.1f} "
              f"{prof.involuntary / max(prof.steps, 1):12.1f}")

    print("\nprobe: extra wake-up delay of a thread sleeping 0.2 ms (GIL reacquisition)")
    for mode in ["none", "thread", "process"]:
        runner = {"thread": thread, "process": proc}.get(mode)
        if runner is not None:
            runner.start()
            time.sleep(0.3)
        delays = sorted(_probe(3.0))
        if runner is not None:
            runner.halt()
        med, p99 = statistics.median(delays), delays[int(0.99 * len(delays))]
        print(f"  next to {mode:8s}: median {med * 1e3:6.3f} ms, p99 {p99 * 1e3:6.3f} ms, "
              f"max {delays[-1] * 1e3:6.2f} ms ({len(delays)} wake-ups)")
    share, total = _gil_share()
    print(f"analysis alone: {total:.3f} s, share holding the GIL ~{share:.0%}")
    thread.close()
    proc.close()
    print("load after:", open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
