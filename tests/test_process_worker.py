"""The analysis in a child process (``analysis_in="process"``), with real processes and signals:
the same history as the thread, no torch and the lowest priority in the child, a killed child
restarted once and reported, no child and no shared-memory segment left after any exit (close,
a killed child, a SIGKILLed training process, Ctrl-C), copies bounded by analyses."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from ww_callbacks.faults import WatcherWarning  # noqa: E402
from ww_callbacks.history import read_records  # noqa: E402
from ww_callbacks.process_worker import CHILD_NICE, ProcessWorker  # noqa: E402
from ww_callbacks.session import WatchSession as Watcher  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="checks /proc and /dev/shm")


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line for line in f)
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return _gone(pid)


def _segments_left(names) -> set[str]:
    return {name for name in names if os.path.exists(f"/dev/shm/{name}")}


def _wait_busy(watcher: Watcher, timeout: float = 60.0) -> int:
    """Wait until the child analyses (a snapshot sent to a live child); its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker = watcher._worker
        if worker is not None and worker.analysing is not None and worker.child_pid is not None:
            return worker.child_pid
        time.sleep(0.005)
    raise AssertionError("the analysis never started in a child")


def _mlp(seed: int = 0, *sizes: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    sizes = sizes or (120, 90, 60)
    layers = [nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False)]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("wall_time", "duration_s", "writer")}


def _close_enough(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close_enough(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close_enough(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return (a == b or (math.isnan(a) and math.isnan(b))  # (equal infinities too)
                or abs(a - b) <= 1e-12 * max(1.0, abs(a)))
    return a == b


def test_same_history_as_the_thread_and_a_child_without_torch(tmp_path):
    """A fixed-seed run gives the same history (to 1e-12) in a child process as in the thread;
    the child has not imported torch and runs at its nice value; its segments are unlinked at
    close."""
    histories = {}
    for mode in ("thread", "process"):
        model = _mlp(0)
        watcher = Watcher(log_dir=tmp_path / mode, analysis_in=mode, max_duty=None)
        for step in range(3):
            with torch.no_grad():
                model[0].weight.mul_(1.01)
            assert watcher.snapshot(model, step)
            assert watcher.wait_idle(120)
            watcher.poll()
        if mode == "process":
            worker = watcher._worker
            assert isinstance(worker, ProcessWorker)
            status = worker._child.status()
            assert status["torch"] is False
            assert status["nice"] == CHILD_NICE
            names = watcher._segments.names
            assert names and _segments_left(names) == set(names)
        else:
            assert type(watcher._worker).__name__ == "BackgroundWorker"
        watcher.close()
        if mode == "process":
            assert _segments_left(names) == set()
        histories[mode] = [_strip(r) for r in read_records(tmp_path / mode / "ww_history.jsonl")]
    assert len(histories["process"]) == 3
    assert _close_enough(histories["thread"], histories["process"])


def test_base_initial_is_analysed_in_the_child_with_the_same_history(tmp_path):
    """``base="initial"`` (the update since the first snapshot) goes to the child too: its base
    weights cross once (the child keeps them), and the history equals the thread's to 1e-12."""
    histories = {}
    for mode in ("thread", "process"):
        model = _mlp(0)
        watcher = Watcher(log_dir=tmp_path / mode, analysis_in=mode, max_duty=None,
                          base="initial", min_evals=0)
        for step in range(3):
            with torch.no_grad():
                for layer in (model[0], model[1]):
                    layer.weight.add_(0.05 * torch.randn(layer.weight.shape,
                                                         generator=torch.Generator()
                                                         .manual_seed(step)))
            assert watcher.snapshot(model, step)
            assert watcher.wait_idle(120)
            watcher.poll()
        if mode == "process":
            worker = watcher._worker
            assert isinstance(worker, ProcessWorker) and worker.analysed_while_starting == 0
            assert worker._child.base_token == watcher.copier.base.token
        watcher.close()
        histories[mode] = [_strip(r) for r in read_records(tmp_path / mode / "ww_history.jsonl")]
    assert len(histories["process"]) == 3
    # the first snapshot is its own base: a zero update, whose fits fail; later ones fit
    alphas = [[layer["alpha"] for layer in r["layers"]] for r in histories["process"]]
    assert all(a == -1 or math.isnan(a) for a in alphas[0]), alphas[0]
    assert all(a > 0 for a in alphas[2]), alphas[2]
    assert _close_enough(histories["thread"], histories["process"])


@pytest.mark.slow
def test_a_killed_child_is_restarted_once_and_reported(tmp_path):
    """SIGKILL of the child mid-analysis: one warning naming the step, a new child analyses the
    next snapshots; a second death moves the analysis into the training process."""
    model = _mlp(0, 1200, 1200, 1200)
    watcher = Watcher(log_dir=tmp_path, analysis_in="process", max_duty=None)
    assert watcher.snapshot(model, 0)  # the child starts and analyses once
    assert watcher.wait_idle(120)
    watcher.poll()
    first = watcher._worker.child_pid
    assert watcher.snapshot(model, 1)
    assert _wait_busy(watcher) == first
    time.sleep(0.2)
    os.kill(first, signal.SIGKILL)
    assert watcher.wait_idle(60)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        watcher.poll()
    died = [str(w.message) for w in seen if issubclass(w.category, WatcherWarning)]
    assert len(died) == 1 and "step 1 failed" in died[0] and "SIGKILL" in died[0], died
    assert "new analysis process" in died[0]
    assert _wait_gone(first, 5)
    assert watcher.snapshot(model, 2)  # the next snapshot: a new child
    assert watcher.wait_idle(120)
    assert [r.step for r in watcher.poll()] == [2]
    second = watcher._worker.child_pid
    assert second != first and watcher._worker.restarts == 1

    assert watcher.snapshot(model, 3)
    assert _wait_busy(watcher) == second
    time.sleep(0.2)
    os.kill(second, signal.SIGKILL)
    assert watcher.wait_idle(60)
    with pytest.warns(WatcherWarning, match="training process from now on"):
        watcher.poll()
    assert watcher.snapshot(model, 4)
    assert watcher.wait_idle(120)
    assert [r.step for r in watcher.poll()] == [4]
    assert watcher._worker.in_thread
    names = watcher._segments.names
    watcher.close()
    assert [r["step"] for r in read_records(tmp_path / "ww_history.jsonl")] == [0, 2, 4]
    assert _segments_left(names) == set()


_ORPHAN = textwrap.dedent("""
    import sys, time, torch, torch.nn as nn
    from ww_callbacks.session import WatchSession as Watcher
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(1500, 1500) for _ in range(4)])
    w = Watcher(analysis_in="process", max_duty=None)
    w.snapshot(model, 0)
    while w._worker.analysing is None:
        time.sleep(0.01)
    print(w._worker.child_pid, *w._segments.names, flush=True)
    time.sleep(600)
""")


@pytest.mark.slow
def test_sigkill_of_the_training_process_leaves_no_child_nor_segment():
    proc = subprocess.Popen([sys.executable, "-c", _ORPHAN], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line, "the script did not start its analysis"
        child, names = int(line[0]), line[1:]
        assert not _gone(child)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert _wait_gone(child, 5), "the analysis process outlived its parent"
        deadline = time.monotonic() + 5  # multiprocessing's resource tracker unlinks them
        while _segments_left(names) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _segments_left(names) == set()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


_CTRL_C = textwrap.dedent("""
    import sys, time, torch, torch.nn as nn
    from ww_callbacks.integrations.torch import Watcher
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(2000, 2000) for _ in range(4)])
    try:
        with Watcher(model, every_n_steps=1, tensorboard=False, analysis_in="process") as w:
            w.step()
            while w.session._worker is None or w.session._worker.analysing is None:
                time.sleep(0.01)
            print("analysing", w.session._worker.child_pid, *w.session._segments.names, flush=True)
            while True:
                time.sleep(0.01)
    finally:
        print("closed", time.time(), flush=True)
""")


@pytest.mark.slow
def test_ctrl_c_during_a_long_analysis_in_the_child(tmp_path):
    """Ctrl-C: the session closes within 2 s, the child and the segments are gone."""
    proc = subprocess.Popen([sys.executable, "-c", _CTRL_C], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().split()
        assert first and first[0] == "analysing", proc.stderr.read()
        child, names = int(first[1]), first[2:]
        time.sleep(0.5)
        sent = time.time()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        closed = float(proc.stdout.readline().split()[1]) - sent
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in stderr
    assert closed < 2.0, f"close took {closed:.2f} s\n{stderr}"
    assert _wait_gone(child, 5)
    assert _segments_left(names) == set()


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_copies_bounded_by_analyses_when_the_analysis_is_slower(tmp_path, mode):
    """A snapshot due at every step, an analysis many steps long, from the first step on: due
    steps whose snapshot would not be analysed are not copied (copies <= analyses + 1)."""
    model = _mlp(0, 1000, 1000, 1000)  # an analysis of ~1 s, a loop of ~0.5 s
    watcher = Watcher(analysis_in=mode, max_duty=None, traps_every=0)
    x = torch.randn(16, 1000, generator=torch.Generator().manual_seed(1))
    for step in range(60):
        model(x).pow(2).mean().backward()
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(1e-3 * p.grad)
                p.grad = None
        watcher.snapshot(model, step)
        watcher.poll(step)
        time.sleep(0.005)
    watcher.close()
    counts = (watcher.copies, watcher.results_delivered, watcher.dropped)
    assert watcher.results_delivered >= 2, counts
    assert watcher.dropped > 0, counts
    assert watcher.copies <= watcher.results_delivered + 1, \
        (watcher.copies, watcher.results_delivered, watcher.dropped)
    # every due step is analysed or counted dropped (a copy replaced in the slot is both a copy
    # and a drop: the +1)
    assert watcher.results_delivered + watcher.dropped == 60, counts


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="autogroups are Linux's")
def test_the_child_shares_the_training_process_scheduling_group():
    """The child's nice value only works inside the training process's scheduling group: a child in
    a session of its own gets a kernel autogroup of its own, which takes an equal CPU share
    whatever its nice value (a 26-ms training step took 350-415 ms next to it on the 2-core
    VM). So: the same session (and autogroup) as the parent, a process group of its own (Ctrl-C
    goes to the terminal's foreground group, not to the child)."""
    from ww_callbacks.process_worker import Child

    child = Child()
    try:
        assert os.getsid(child.pid) == os.getsid(0)
        assert os.getpgid(child.pid) == child.pid != os.getpgid(0)
        # Both files are empty where the scheduling group is a cpu cgroup rather than an
        # autogroup (CI's container): then the cgroup files must agree, as they always must.
        for name in ("autogroup", "cgroup"):
            mine = f"/proc/self/{name}"
            if os.path.exists(mine):
                with open(mine) as own, open(f"/proc/{child.pid}/{name}") as its:
                    assert its.read() == own.read(), name
        assert child.status()["nice"] == CHILD_NICE
    finally:
        child.stop()
