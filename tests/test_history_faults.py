"""The history file under faults, in real processes: a writer killed with SIGKILL, a torn last
line, two watchers on one folder. Resuming (``load_state_dict``, ``resume_from`` and a Lightning
``fit(ckpt_path=...)``) must work on whatever a crash leaves, and keep the records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from tests.faults import kill_when  # noqa: E402
from ww_callbacks.faults import WatcherWarning  # noqa: E402
from ww_callbacks.history import HISTORY_FILE, HistoryWriter, load_history, read_records  # noqa: E402
from ww_callbacks.session import WatchSession as Watcher  # noqa: E402

TORN = '{"step": 0, "ep'  # the issue's repro: a record cut by a crash


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 16))


def _steps(path) -> list[int]:
    return [r["step"] for r in read_records(path)]


def test_issue_repro_torn_fragment_then_load_state_dict(tmp_path):
    (tmp_path / HISTORY_FILE).write_text(TORN)
    watcher = Watcher(log_dir=tmp_path)
    watcher.load_state_dict({"last_step": 5})  # raised JSONDecodeError before
    with watcher:
        watcher.snapshot(_model(), 6)
    assert _steps(tmp_path) == [6]


def test_append_after_a_torn_tail_starts_a_new_line(tmp_path):
    with Watcher(log_dir=tmp_path, traps_every=0) as watcher:
        watcher.snapshot(_model(), 0)
    with open(tmp_path / HISTORY_FILE, "a") as fh:
        fh.write(TORN)  # a crash in the middle of the next record
    with Watcher(log_dir=tmp_path, traps_every=0) as watcher:
        watcher.snapshot(_model(), 1)
    assert _steps(tmp_path) == [0, 1]  # the new record is not glued to the fragment
    lines = (tmp_path / HISTORY_FILE).read_text().splitlines()
    assert lines[1] == TORN and len(lines) == 3


def test_resume_from_drops_the_torn_line_and_keeps_the_records(tmp_path):
    with Watcher(log_dir=tmp_path, traps_every=0) as watcher:
        for step in (0, 10, 20):
            watcher.snapshot(_model(), step)
            watcher.wait_idle()
    with open(tmp_path / HISTORY_FILE, "a") as fh:
        fh.write(TORN)
    resumed = Watcher(log_dir=tmp_path, traps_every=0)
    resumed.resume_from(10)
    assert resumed.snapshots_taken == 2 and resumed.last_snapshot_step == 10
    with resumed:
        resumed.snapshot(_model(), 20)
    assert _steps(tmp_path) == [0, 10, 20]
    assert (tmp_path / HISTORY_FILE).read_text().endswith("\n")


def test_every_record_names_its_writer(tmp_path):
    with Watcher(log_dir=tmp_path) as first:
        first.snapshot(_model(), 0)
    with Watcher(log_dir=tmp_path) as second:
        second.snapshot(_model(), 1)
    writers = [r["writer"] for r in read_records(tmp_path)]
    assert [w["pid"] for w in writers] == [os.getpid()] * 2
    assert writers[0]["run_id"] != writers[1]["run_id"]
    assert writers[0]["host"] and writers[0]["run_id"] == first.history.writer["run_id"]
    assert not (tmp_path / (HISTORY_FILE + ".owner")).exists()  # released at close


def test_a_second_watcher_on_the_same_folder_is_warned(tmp_path):
    first = Watcher(log_dir=tmp_path)
    with pytest.warns(WatcherWarning, match="another watcher .* is writing to"):
        second = Watcher(log_dir=tmp_path)
    second.close()
    first.close()
    with warnings.catch_warnings():  # both closed: a third one is alone
        warnings.simplefilter("error", WatcherWarning)
        Watcher(log_dir=tmp_path).close()


def test_owner_files_of_dead_processes_are_ignored(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    writer = HistoryWriter(tmp_path / HISTORY_FILE)
    owner = {**writer.writer, "pid": int(dead.stdout), "run_id": "gone"}
    writer.owner_path.write_text(json.dumps(owner))
    with warnings.catch_warnings():
        warnings.simplefilter("error", WatcherWarning)
        with Watcher(log_dir=tmp_path) as watcher:
            watcher.snapshot(_model(), 0)
    assert _steps(tmp_path) == [0]


# A training loop that keeps a checkpoint of the watcher's state, killed with SIGKILL.
_KILLED_LOOP = textwrap.dedent("""
    import json, os, sys, torch, torch.nn as nn
    from ww_callbacks.integrations.torch import Watcher
    log_dir = sys.argv[1]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 16))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    w = Watcher(model, log_dir=log_dir, every_n_steps=1, traps_every=0, tensorboard=False,
                max_duty=None)
    step = 0
    while True:
        opt.zero_grad()
        model(torch.randn(8, 32)).pow(2).mean().backward()
        opt.step()
        w.step()
        step += 1
        if step % 5 == 0:
            w.wait_idle()
            w.poll()
            state = json.dumps(w.state_dict())
            with open(os.path.join(log_dir, "state.tmp"), "w") as fh:
                fh.write(state)
            os.replace(os.path.join(log_dir, "state.tmp"), os.path.join(log_dir, "state.json"))
""")


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path):
    killed = kill_when([sys.executable, "-c", _KILLED_LOOP, str(tmp_path)],
                       lambda: (tmp_path / "state.json").exists()
                       and len(_steps(tmp_path)) >= 12)
    with open(tmp_path / HISTORY_FILE, "a") as fh:  # as if it died inside a write
        fh.write(TORN)
    before = _steps(tmp_path)
    state = json.loads((tmp_path / "state.json").read_text())
    last = state["last_step"]
    assert last in before and before == sorted(before)

    with warnings.catch_warnings():  # the dead writer's owner file does not count
        warnings.simplefilter("error", WatcherWarning)
        resumed = Watcher(log_dir=tmp_path, traps_every=0)
    resumed.load_state_dict(state)
    with resumed:
        resumed.snapshot(_model(), last + 1)
    after = _steps(tmp_path)
    assert after == [s for s in before if s <= last] + [last + 1]
    pids = {r["writer"]["pid"] for r in read_records(tmp_path)}
    assert pids == {killed, os.getpid()}
    assert len(load_history(tmp_path, level="model")) == len(after)


@pytest.mark.slow
def test_lightning_resume_from_checkpoint_over_a_torn_history(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.callbacks import ModelCheckpoint

    from tests.test_lightning import BATCHES, DigitsMLP, quiet
    from ww_callbacks.integrations.lightning import WeightWatcherCallback

    ckpt_dir = tmp_path / "ckpt"

    def fit(max_epochs: int, ckpt_path: str | None = None) -> WeightWatcherCallback:
        cb = WeightWatcherCallback(traps_every=0, wait="epoch", log_dir=tmp_path / "ww")
        ckpt = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=-1)
        trainer = L.Trainer(**quiet(max_epochs=max_epochs, enable_checkpointing=True,
                                    logger=False, callbacks=[cb, ckpt]))
        trainer.fit(DigitsMLP(), ckpt_path=ckpt_path)
        return cb

    first = fit(2)
    with open(first.history_path, "a") as fh:
        fh.write(TORN)
    second = fit(3, ckpt_path=str(ckpt_dir / "last.ckpt"))  # raised JSONDecodeError before
    assert _steps(second.history_path) == [0, BATCHES, 2 * BATCHES, 3 * BATCHES]
