"""A full disk, for real: the history and a real file sink fail, the results still reach the
other outputs and the policies, each cause is warned once, and both recover by themselves when
space comes back.

Two portable ways to fill a disk, each in its own process:
- ``RLIMIT_FSIZE`` (SIGXFSZ ignored): every write past the size limit fails with ``EFBIG``
  ("File too large"); raising the soft limit again frees the "disk".
- a 100 KB tmpfs filled with a filler file (needs root and mount permission; skipped otherwise):
  writes fail with ``ENOSPC`` ("No space left on device"); deleting the filler frees it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="RLIMIT_FSIZE/tmpfs semantics checked on Linux")

#: Shared by the scripts: one analysed snapshot per call of ``run``, delivered at once;
#: ``fill_disk(path)`` writes ``path`` until its file system is full.
_RUN = textwrap.dedent("""
    step = 0
    def run(n):
        global step
        for _ in range(n):
            w.snapshot(model, step)
            w.wait_idle()
            w.poll()
            step += 1

    def fill_disk(filler):
        with open(filler, "wb", buffering=0) as fh:
            try:
                while fh.write(b"x" * 4096):
                    pass
            except OSError:
                pass
""")

_SCRIPT = textwrap.dedent("""
    import json, logging, os, resource, signal, sys, warnings
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    import torch.nn as nn
    from ww_callbacks.faults import WatcherWarning
    from ww_callbacks.session import WatchSession as Watcher

    mode, history_dir, sink_dir = sys.argv[1:4]

    class LineSink:
        '''A real file sink: one JSON line per result, with the reopen() contract.'''
        def __init__(self, path):
            self.path, self.seen, self.reopened = path, [], 0
            self.fh = open(path, "a")
        def write(self, result, scalars):
            self.fh.write(json.dumps({"step": result.step,
                                      "alpha": scalars["ww/alpha_mean"]}) + "\\n")
            self.fh.flush()
            self.seen.append(result.step)
        def reopen(self):  # the failed handle may hold a torn buffer: drop it
            try:
                self.fh.close()
            except OSError:
                pass
            self.fh = open(self.path, "a")
            self.reopened += 1
        def close(self):
            self.fh.close()

    class Recorder:
        '''A policy that only records what it decides on.'''
        def __init__(self):
            self.steps = []
        def on_result(self, result):
            self.steps.append(result.step)

    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger("ww_callbacks").addHandler(handler)
    model = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 16))
    sink, policy = LineSink(os.path.join(sink_dir, "sink.jsonl")), Recorder()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    history = os.path.join(history_dir, "ww_history.jsonl")
    filler = os.path.join(history_dir, "filler")

    def fill_history_disk():
        if mode == "rlimit":
            resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(history), hard))
        else:
            fill_disk(filler)

    def fill_sink_disk_too():  # rlimit only: a limit below both files
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(sink.path), hard))

    def free():
        if mode == "rlimit":
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        else:
            os.remove(filler)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w = Watcher(log_dir=history_dir, sinks=[sink], policies=[policy], traps_every=0,
                    max_duty=None)
        run(3)              # 0-2 healthy
        fill_history_disk()
        run(5)              # 3-7: the history fails, the sink and the policy do not
        if mode == "rlimit":
            fill_sink_disk_too()
            run(3)          # 8-10: both fail
        free()
        run(3)              # both recover
        w.close()
    print(json.dumps({
        "sink": sink.seen, "reopened": sink.reopened, "policy": policy.steps,
        "delivered": w.results_delivered, "counts": w.faults.counts(),
        "warnings": [str(c.message) for c in caught if issubclass(c.category, WatcherWarning)],
        "logged": logged, "last": step}))
""")


def _run(mode: str, history_dir, sink_dir) -> dict:
    out = subprocess.run([sys.executable, "-c", _RUN + _SCRIPT, mode, str(history_dir),
                          str(sink_dir)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _history_steps(folder) -> list[int]:
    from ww_callbacks.history import read_records

    return [r["step"] for r in read_records(folder)]


def test_file_size_limit_history_and_sink_fail_then_recover(tmp_path):
    report = _run("rlimit", tmp_path, tmp_path)
    steps = list(range(report["last"]))
    assert report["delivered"] == len(steps) == 14
    assert report["policy"] == steps  # the policies saw every result
    assert report["sink"] == [s for s in steps if not 8 <= s <= 10]  # failed only while full
    assert _history_steps(tmp_path) == [0, 1, 2, 11, 12, 13]  # readable after the torn stretch
    assert report["counts"] == {f"history {tmp_path / 'ww_history.jsonl'}": {"File too large": 8},
                                "sink LineSink": {"File too large": 3}}
    assert len(report["warnings"]) == 2  # once per output and cause, not per failed write
    assert all("File too large" in m for m in report["warnings"])
    assert report["reopened"] == 3  # before each write after a failed one: steps 9, 10, 11
    assert sum("works again" in m for m in report["logged"]) == 2
    assert any("8 x File too large" in m and "recovered" in m for m in report["logged"])


def _mount_tmpfs(where) -> bool:
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(where)],
                          capture_output=True)
    return done.returncode == 0


def test_full_tmpfs_history_fails_sink_on_a_healthy_disk_gets_everything(tmp_path):
    disk = tmp_path / "small"
    if not _mount_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    try:
        report = _run("tmpfs", disk, tmp_path)
        history = _history_steps(disk)
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    steps = list(range(report["last"]))
    assert report["sink"] == report["policy"] == steps  # the full history disk costs them none
    assert history == [0, 1, 2, 8, 9, 10]
    assert list(report["counts"].values()) == [{"No space left on device": 5}]
    assert len(report["warnings"]) == 1 and "No space left on device" in report["warnings"][0]


_TENSORBOARD_SCRIPT = textwrap.dedent("""
    import json, os, resource, signal, sys, warnings
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    import torch.nn as nn
    from ww_callbacks.integrations.tensorboard import TensorBoardSink
    from ww_callbacks.faults import WatcherWarning
    from ww_callbacks.session import WatchSession as Watcher

    tb_dir = sys.argv[1]
    model = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 16))
    sink = TensorBoardSink(log_dir=tb_dir, images_every=0, histograms_every=0)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w = Watcher(log_dir=None, sinks=[sink], traps_every=0, max_duty=None)
        run(3)                                   # 0-2 healthy
        first_file = sink.writer.path
        resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(first_file), hard))
        run(3)                                   # 3-5: the events file cannot grow
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        run(3)                                   # 6-8: recovered, in a new events file
        w.close()
    print(json.dumps({
        "counts": w.faults.counts(), "first_file": os.path.basename(first_file),
        "files": sorted(os.listdir(tb_dir)), "delivered": w.results_delivered,
        "warnings": [str(c.message) for c in caught if issubclass(c.category, WatcherWarning)]}))
""")


def test_tensorboard_sink_recovers_in_a_new_events_file(tmp_path):
    """The issue's case: TensorBoard, once its file failed, never wrote again. Now the sink
    starts a new events file when it is retried, and TensorBoard's own reader sees the steps
    before the fault and after it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = subprocess.run([sys.executable, "-c", _RUN + _TENSORBOARD_SCRIPT, str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["delivered"] == 9
    ((name, causes),) = report["counts"].items()
    assert name == "sink TensorBoardSink" and set(causes) == {"File too large"}
    assert sum("File too large" in m for m in report["warnings"]) == 1  # once per cause
    assert len(report["files"]) >= 2 and report["first_file"] in report["files"]
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars("ww/alpha_mean")]
    assert steps[:3] == [0, 1, 2] and steps[-3:] == [6, 7, 8], steps
