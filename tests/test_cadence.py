"""The cadence the user asked for is analysed: every requested snapshot unless the analysis cannot
keep up (then the newest wins, without copying the ones that would be dropped); ``max_duty``
counts the worker's CPU time, never the first analysis, and delays rather than drops."""

from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import ww_callbacks.session.host_copies as host_copies_module  # noqa: E402
import ww_callbacks.session.watch_session as watcher_module  # noqa: E402
from ww_callbacks.history import read_records  # noqa: E402
from ww_callbacks.results import Snapshot  # noqa: E402
from ww_callbacks.session import WatchSession as Watcher  # noqa: E402
from ww_callbacks.snapshot import Snapshotter  # noqa: E402
from ww_callbacks.worker import CPU_MAX_DUTY, BackgroundWorker, resolve_max_duty  # noqa: E402


def _burn(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _run_worker(worker: BackgroundWorker, count: int, every: float, seen: list) -> None:
    """Submit ``count`` snapshots ``every`` seconds apart, once the first one (with its one-time
    costs) has been analysed."""
    worker.submit(Snapshot(0, None, [], False, 0.0), keep=True)
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    for step in range(1, count):
        worker.submit(Snapshot(step, None, [], False, 0.0))
        time.sleep(every)
    assert worker.close(30)


def test_auto_duty_is_half_a_core_on_cpu_and_off_on_gpu():
    assert resolve_max_duty("auto", on_gpu=False) == CPU_MAX_DUTY == 0.5
    assert resolve_max_duty("auto", on_gpu=True) is None
    assert resolve_max_duty(0.1, on_gpu=True) == 0.1  # an explicit limit is kept
    assert resolve_max_duty(None, on_gpu=False) is None
    with pytest.raises(ValueError, match="max_duty"):
        resolve_max_duty(1.5, on_gpu=False)
    with pytest.raises(ValueError, match="max_duty"):
        resolve_max_duty("often", on_gpu=False)


def test_first_analysis_costs_are_not_counted():
    """A slow first analysis (imports, warm-up) does not make the worker rest: with the old
    rule (rest 1/duty - 1 times the last analysis) max_duty=0.02 rested 25 s here and kept only
    the first and the last snapshot."""
    seen = []

    def analyse(snapshot):
        _burn(0.5 if not seen else 0.005)
        seen.append(snapshot.step)
        return snapshot.step

    worker = BackgroundWorker(analyse, max_duty=0.02, blas_threads=None)
    _run_worker(worker, 12, 0.1, seen)
    assert seen[:2] == [0, 1] and seen[-1] == 11  # no rest after the first analysis
    # 0.005 s CPU / 0.02 = 0.25 s per analysis at a 0.1 s cadence: about one in three
    assert len(seen) >= 4, seen


def test_duty_counts_cpu_time_not_waiting():
    """An analysis that mostly waits (the CPU is busy with training, a GPU copy) uses little CPU
    time: it is not held back by the limit."""
    seen = []

    def analyse(snapshot):
        time.sleep(0.05)  # 50 ms of wall time, ~0 CPU
        seen.append(snapshot.step)
        return snapshot.step

    worker = BackgroundWorker(analyse, max_duty=0.05, blas_threads=None)
    _run_worker(worker, 15, 0.1, seen)
    assert seen == list(range(15))


def test_a_rest_delays_the_next_analysis_instead_of_dropping_it():
    """Analyses of 0.02 s CPU time at a 0.25 s cadence, limit 50% (the CPU default): each rest
    (0.02 s) ends before the next snapshot, every snapshot is analysed. (The cadence leaves room
    for a loaded 2-core machine, where 0.02 s of CPU can take 0.1 s of wall time.)"""
    seen = []

    def analyse(snapshot):
        _burn(0.02)
        seen.append(snapshot.step)
        return snapshot.step

    worker = BackgroundWorker(analyse, max_duty=CPU_MAX_DUTY, blas_threads=None)
    _run_worker(worker, 15, 0.25, seen)
    assert seen == list(range(15))


class _CountingSnapshotter(Snapshotter):
    copies = 0

    def take(self, step, epoch, randomize):
        type(self).copies += 1
        return super().take(step, epoch, randomize)


def test_snapshots_that_would_be_dropped_are_not_copied(monkeypatch):
    """A snapshot every ~2 ms, an analysis of ~60 ms: nearly all due steps are dropped, and
    nearly none of them is copied (the worker predicts it would not reach them)."""
    real = watcher_module.analyze_layers

    def slow(*args, **kwargs):
        time.sleep(0.06)
        return real(*args, **kwargs)

    monkeypatch.setenv("WW_CALLBACKS_ANALYSIS_IN", "thread")  # the patch is in this process
    monkeypatch.setattr(watcher_module, "analyze_layers", slow)
    monkeypatch.setattr(host_copies_module, "Snapshotter", _CountingSnapshotter)
    _CountingSnapshotter.copies = 0
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
    watcher = Watcher(traps_every=0, max_duty=None)
    watcher.snapshot(model, 0)
    watcher.wait_idle()
    watcher.snapshot(model, 1)  # the second analysis gives the worker its cost estimate
    watcher.wait_idle()
    copies_before = _CountingSnapshotter.copies
    for step in range(2, 602):
        watcher.snapshot(model, step)
        watcher.poll()
        time.sleep(0.002)
    watcher.close()
    copies = _CountingSnapshotter.copies - copies_before
    delivered = watcher.results_delivered - 2
    assert watcher.snapshots_taken == 602
    assert watcher.results_delivered + watcher.dropped == watcher.snapshots_taken
    assert watcher.dropped > 400
    # each analysed snapshot was copied once; ACCEPT_MARGIN may waste a copy or two per analysis
    assert delivered <= copies <= 3 * delivered + 2, (copies, delivered)


def test_the_final_weights_are_analysed_even_if_their_due_step_was_skipped(tmp_path,
                                                                         analysis_gate):
    gate = analysis_gate
    model = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 16))
    watcher = Watcher(log_dir=tmp_path, traps_every=0, max_duty=None)
    watcher.snapshot(model, 0)
    gate.set()
    watcher.wait_idle()
    gate.clear()
    watcher.snapshot(model, 1)  # in flight, waits on the gate
    while watcher._worker._pending is not None:
        time.sleep(0.001)  # until the worker has picked it up
    watcher.snapshot(model, 2)  # accepted: the worker has no estimate of its cost yet
    watcher._worker._wall_estimate = 10.0  # as measured on a slow analysis
    with torch.no_grad():
        model[0].weight.mul_(2.0)
    assert not watcher.snapshot(model, 3)  # skipped: the worker would not reach it in time
    gate.set()
    watcher.close()
    steps = [r["step"] for r in read_records(tmp_path)]
    assert steps == [0, 1, 3]  # 2 was replaced by 3, taken at close: the final weights
    assert watcher.dropped == 1 and watcher.snapshots_taken == 4


def test_a_run_that_fits_in_its_cadence_is_analysed_entirely(tmp_path):
    """The default (max_duty="auto") on a small MLP snapshotted every 0.2 s: every requested
    snapshot is analysed (the issue's default kept the first and the last)."""
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    with Watcher(log_dir=tmp_path) as watcher:
        for step in range(12):
            with torch.no_grad():
                model[0].weight.add_(0.01)
            watcher.snapshot(model, step)
            watcher.poll()
            time.sleep(0.2)
    assert [r["step"] for r in read_records(tmp_path)] == list(range(12))
    assert watcher.dropped == 0
