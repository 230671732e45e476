"""The plain-PyTorch Watcher in real training loops: TensorBoard, history, faults, back-pressure."""

from __future__ import annotations

import copy
import ctypes
import gc
import threading
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

pytest.importorskip("tensorboard")
from sklearn.datasets import load_digits  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from tests.events import read_events  # noqa: E402
from ww_callbacks import analyze  # noqa: E402
from ww_callbacks.faults import WatcherWarning  # noqa: E402
from ww_callbacks.history import load_history, read_records  # noqa: E402
from ww_callbacks.integrations.tensorboard import TensorBoardSink  # noqa: E402
from ww_callbacks.integrations.torch import Watcher  # noqa: E402
from ww_callbacks.results import Snapshot  # noqa: E402


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    return torch.tensor(data.data, dtype=torch.float32) / 16.0, torch.tensor(data.target)


def _mlp(seed: int = 0, hidden: int = 128) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def _train_step(model, opt, x, y, g: torch.Generator) -> None:
    idx = torch.randint(0, len(x), (64,), generator=g)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
    opt.step()


def _workers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "ww-worker" and t.is_alive()}


def _history_steps(log_dir: Path) -> list[int]:
    return [r["step"] for r in read_records(log_dir)]


def test_plain_loop_tensorboard_and_history(tmp_path, digits):
    x, y = digits
    model = _mlp()
    initial = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    workers_before = _workers()
    with Watcher(model, log_dir=tmp_path, every_n_steps=20, optimizer=opt) as w:
        assert len(opt._optimizer_step_pre_hooks) == 1
        for i in range(105):
            _train_step(model, opt, x, y, g)
            w.step(epoch=i // 50)
            w.wait_idle()  # keeps every due analysis (a fast loop would drop some: by design)
    assert _history_steps(tmp_path) == [0, 20, 40, 60, 80, 100, 105]
    assert w.dropped == 0 and w.results_delivered == 7
    assert not opt._optimizer_step_pre_hooks  # hook removed on close
    assert not _workers() - workers_before  # earlier tests' idle threads may end meanwhile

    history = load_history(tmp_path)
    layers = ["0", "2"]
    assert sorted(set(history.longname)) == layers
    assert history[history.step == 105].epoch.tolist() == [2, 2]
    # step 0 holds the initial weights; the last one the final weights
    np.testing.assert_allclose(history[history.step == 0].alpha,
                               analyze(initial, randomize=True).alpha, rtol=1e-12)
    np.testing.assert_allclose(history[history.step == 105].alpha,
                               analyze(model, randomize=True).alpha, rtol=1e-12)

    acc = read_events(str(tmp_path))
    acc.Reload()
    for layer in layers:
        events = acc.Scalars(f"ww_alpha/{layer}")
        assert [e.step for e in events] == [0, 20, 40, 60, 80, 100, 105]
        expected = history[history.longname == layer].alpha
        np.testing.assert_allclose([e.value for e in events], expected, rtol=1e-6)
    assert acc.Tags()["histograms"] and acc.Tags()["images"]


def test_exception_propagates_and_stops_the_worker(tmp_path, digits):
    x, y = digits
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    workers_before = _workers()
    with pytest.raises(RuntimeError, match="boom"):
        with Watcher(model, log_dir=tmp_path, every_n_steps=5, optimizer=opt) as w:
            for i in range(12):
                _train_step(model, opt, x, y, g)
                w.step()
                if i == 0:
                    w.wait_idle()  # the initial analysis is in before the failure
                if i == 10:
                    raise RuntimeError("boom")
    assert not _workers() - workers_before  # earlier tests' idle threads may end meanwhile
    assert not opt._optimizer_step_pre_hooks
    steps = _history_steps(tmp_path)
    assert steps[0] == 0 and 11 not in steps  # no final analysis of a failed run
    assert set(steps) <= {0, 5, 10}


class Broken:
    """A sink whose disk is full."""

    def __init__(self):
        self.calls = 0

    def write(self, result, scalars):
        self.calls += 1
        raise OSError("disk full")

    def close(self):
        pass


def test_failing_sink_warns_once_and_loses_nothing(tmp_path, digits):
    x, y = digits
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    broken = Broken()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Watcher(model, log_dir=tmp_path, every_n_steps=10, sinks=[broken],
                     traps_every=0, tensorboard_options={"images_every": 0}) as w:
            for _ in range(40):
                _train_step(model, opt, x, y, g)
                w.step()
                w.wait_idle()
    ours = [c for c in caught if issubclass(c.category, WatcherWarning)]
    assert len(ours) == 1 and "disk full" in str(ours[0].message)
    assert broken.calls == 5
    assert _history_steps(tmp_path) == [0, 10, 20, 30, 40]
    # the TensorBoard sink next to the broken one got everything
    acc = read_events(str(tmp_path))
    acc.Reload()
    assert [e.step for e in acc.Scalars("ww_alpha/0")] == [0, 10, 20, 30, 40]


def _rss_bytes() -> int | None:
    """Resident memory once glibc has handed its free heap pages back (``malloc_trim``): what
    is still held, not what the allocator keeps cached for the threads (measured: a few MB that
    come and go between runs, against ~190 MB for the leak this guards against)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: measure as is
        pass
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096
    except OSError:
        return None


def _live_snapshots() -> int:
    return sum(type(o) is Snapshot for o in gc.get_objects())


def test_slow_analysis_fast_cadence_drops_with_flat_memory(tmp_path, monkeypatch):
    """A snapshot every step, an analysis that takes 50 ms: snapshots are dropped, never queued;
    memory stays flat and at most one snapshot waits (plus the one being analysed)."""
    model = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128))  # 64 KB/layer
    monkeypatch.setenv("WW_CALLBACKS_ANALYSIS_IN", "thread")  # the patch is in this process
    w = Watcher(model, log_dir=tmp_path, every_n_steps=1, traps_every=0, tensorboard=False)
    analyse = w.session._analyse

    def slow(snapshot):
        time.sleep(0.05)
        return analyse(snapshot)

    monkeypatch.setattr(w.session, "_analyse", slow)  # before the worker starts
    tracemalloc.start()
    try:
        with w:
            w.wait_idle()  # the first analysis (step 0) warms up allocators, pandas, the file
            w.poll()
            most_live = 0
            for i in range(1, 2001):
                with torch.no_grad():
                    model[0].weight.add_(1e-4)
                w.step()
                if i % 250 == 0:
                    most_live = max(most_live, _live_snapshots())
                if i == 500:
                    gc.collect()
                    py_500, rss_500 = tracemalloc.get_traced_memory()[0], _rss_bytes()
            gc.collect()
            py_2000, rss_2000 = tracemalloc.get_traced_memory()[0], _rss_bytes()
    finally:
        tracemalloc.stop()
    assert w.snapshots_taken == 2001  # step 0 and every step; the final one is step 2000
    assert w.dropped > 0
    assert w.results_delivered + w.dropped == w.snapshots_taken  # analysed or counted, no third
    assert len(read_records(tmp_path)) == w.results_delivered
    assert 1 <= most_live <= 2
    assert _live_snapshots() == 0
    assert py_2000 - py_500 < 1_000_000
    if rss_500 is not None:
        # 1,500 leaked snapshots would be ~190 MB
        assert rss_2000 - rss_500 < 5_000_000


def test_epoch_cadence_without_with_block(tmp_path, digits):
    x, y = digits
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    w = Watcher(log_dir=tmp_path, every_n_steps=0, every_n_epochs=2, tensorboard=False,
                traps_every=0)
    for epoch in range(5):
        for _ in range(3):
            _train_step(model, opt, x, y, g)
            w.step(model)  # model given late: the first call snapshots (step 1)
            w.wait_idle()
        w.epoch_end(epoch)
        w.wait_idle()
    w.step()  # one more update after the last epoch
    w.close()
    w.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        w.step()
    records = read_records(tmp_path)
    assert [(r["step"], r["epoch"]) for r in records] == [(1, None), (6, 1), (12, 3), (16, 4)]


def test_resume_continues_steps_without_duplicates(tmp_path, digits):
    x, y = digits
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    with Watcher(model, log_dir=tmp_path, every_n_steps=20, optimizer=opt,
                 tensorboard=False, traps_every=0) as w:
        for i in range(55):
            _train_step(model, opt, x, y, g)
            w.step()
            w.wait_idle()
            if i + 1 == 45:
                state = w.state_dict()  # a checkpoint at step 45
    assert _history_steps(tmp_path) == [0, 20, 40, 55]

    resumed = Watcher(model, log_dir=tmp_path, every_n_steps=20, optimizer=opt,
                      tensorboard=False, traps_every=0)
    resumed.load_state_dict(state)
    with resumed:  # no new step-0 snapshot
        for _ in range(20):
            _train_step(model, opt, x, y, g)
            resumed.step()
            resumed.wait_idle()
    assert _history_steps(tmp_path) == [0, 20, 40, 60, 65]


def test_passed_writer_is_used_and_left_open(tmp_path):
    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    model = _mlp()
    with Watcher(model, log_dir=tmp_path / "ww", tensorboard=writer, traps_every=0) as w:
        assert [type(s) for s in w.sinks] == [TensorBoardSink]
    writer.add_scalar("still/open", 1.0, 1)
    writer.close()
    acc = read_events(str(tmp_path / "tb"))
    acc.Reload()
    assert {"ww_alpha/0", "still/open"} <= set(acc.Tags()["scalars"])
    assert not any(p.name.startswith("events") for p in (tmp_path / "ww").iterdir())


def test_no_model_is_a_clear_error(tmp_path):
    with Watcher(log_dir=None, tensorboard=True) as w:
        assert w.sinks == [] and w.history_path is None
        with pytest.raises(ValueError, match="no model"):
            w.step()


def test_wandb_run_gets_a_wandb_sink(tmp_path, digits, wandb_offline):
    """An offline W&B run (everything under tmp_path) receives the analyses."""
    wandb = pytest.importorskip("wandb")
    sink_module = pytest.importorskip("ww_callbacks.integrations.wandb")
    x, y = digits
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    run = wandb.init(project="ww-test")
    try:
        with Watcher(model, log_dir=tmp_path, every_n_steps=5, wandb=run, tensorboard=False,
                     traps_every=0) as w:
            (sink,) = w.sinks
            assert isinstance(sink, sink_module.WandbSink) and sink.run is run
            for _ in range(10):
                _train_step(model, opt, x, y, g)
                w.step()
                w.wait_idle()
        assert sink.writes == 3 and _history_steps(tmp_path) == [0, 5, 10]
    finally:
        run.finish()


def test_old_option_names_still_work(tmp_path):
    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    with pytest.warns(DeprecationWarning, match="'writer'"):
        w = Watcher(_mlp(), log_dir=None, writer=writer, traps_every=0)
    assert [type(s) for s in w.sinks] == [TensorBoardSink] and w.sinks[0].writer is writer
    w.close(final=False)
    writer.close()
