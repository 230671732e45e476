"""A ``log_dir`` that cannot be written (issue 21.8), for real: a read-only file system is named
read-only (not "No such file or directory"), and a disk that fills during a run makes the
TensorBoard sink retry the same events file with back-off (one new file per fault, not one per
analysis: 199 files in 200 steps before), every analysis it kept in memory written once space
returns. Filesystems are real tmpfs mounts (root and mount permission; skipped otherwise), each
run in its own process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.test_full_disk import _RUN, _mount_tmpfs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs on Linux")


def _mount(where, *options: str) -> bool:
    """A tmpfs at ``where`` (1 MB: room for the analyses kept while it was full), remounted
    with ``options``."""
    if not _mount_tmpfs(where):
        return False
    done = subprocess.run(["mount", "-o", ",".join(["remount", "size=1m", *options]),
                           str(where)], capture_output=True)
    if done.returncode:
        subprocess.run(["umount", str(where)], check=False)
        return False
    return True


_READ_ONLY = textwrap.dedent("""
    import json, sys, warnings
    import torch.nn as nn
    from ww_callbacks.integrations.torch import Watcher
    out = {}
    model = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 16))
    for name, log_dir in (("existing", sys.argv[1]), ("below", sys.argv[1] + "/run")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Watcher(model, log_dir=log_dir, every_n_steps=1, traps_every=0,
                         max_duty=None, wait="always", tensorboard=False) as w:
                for _ in range(2):
                    w.step()
        out[name] = [str(c.message) for c in caught]
        try:
            Watcher(model, log_dir=log_dir, every_n_steps=1)  # with its TensorBoard sink
            out[name + "_tensorboard"] = "no error"
        except OSError as err:
            out[name + "_tensorboard"] = str(err)
    print(json.dumps(out))
""")


def test_read_only_log_dir_is_named_read_only(tmp_path):
    disk = tmp_path / "ro"
    if not _mount(disk, "ro"):
        pytest.skip("cannot mount a read-only tmpfs here (needs root and mount permission)")
    try:
        done = subprocess.run([sys.executable, "-c", _READ_ONLY, str(disk)],
                              capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("existing", "below"):
        history = [m for m in out[name] if "history" in m]
        assert len(history) == 1, out[name]  # one warning, training went on
        assert "Read-only file system" in history[0]
        assert "No such file" not in history[0]
        assert "is read-only" in out[name + "_tensorboard"], out
        assert "give a writable log_dir" in out[name + "_tensorboard"]


_FILLS_UP = textwrap.dedent("""
    import json, os, sys, warnings
    import torch.nn as nn
    from ww_callbacks.integrations.tensorboard import TensorBoardSink
    from ww_callbacks.watcher import Watcher, WatcherWarning

    disk = sys.argv[1]
    tb_dir, filler = os.path.join(disk, "tb"), os.path.join(disk, "filler")
    model = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 16))
    sink = TensorBoardSink(log_dir=tb_dir, images_every=0, histograms_every=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w = Watcher(log_dir=None, sinks=[sink], traps_every=0, max_duty=None)
        run(3)                                   # 0-2 healthy
        fill_disk(filler)
        run(60)                                  # 3-62: the disk is full
        files_while_full = sorted(os.listdir(tb_dir))
        os.remove(filler)
        run(3)                                   # 63-65: space again
        w.close()
    print(json.dumps({
        "counts": w.faults.counts(), "files_while_full": files_while_full,
        "files": sorted(os.listdir(tb_dir)), "delivered": w.results_delivered,
        "warnings": [str(c.message) for c in caught if issubclass(c.category, WatcherWarning)]}))
""")


def test_tensorboard_sink_retries_the_same_file_while_the_disk_is_full(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    disk = tmp_path / "small"
    if not _mount(disk):
        pytest.skip("cannot mount a tmpfs here (needs root and mount permission)")
    try:
        done = subprocess.run([sys.executable, "-c", _RUN + _FILLS_UP, str(disk)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        shutil.copytree(disk / "tb", tmp_path / "tb")  # read off the mount (it is unmounted)
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars("ww/alpha_mean")]
    assert report["delivered"] == 66
    assert len(report["files_while_full"]) <= 2, report["files_while_full"]  # was 1 per step
    assert len(report["files"]) <= 2
    ((name, causes),) = report["counts"].items()
    assert name == "sink TensorBoardSink" and set(causes) == {"No space left on device"}
    assert sum("No space left" in m for m in report["warnings"]) == 1, report["warnings"]
    # nothing torn, nothing lost: the analyses kept while the disk was full are written after
    assert steps == sorted(set(steps)) == list(range(66)), steps
