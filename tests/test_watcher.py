"""The framework-free Watcher: hand-over, faults, history, resume."""

from __future__ import annotations

import json
import threading
import time
import tracemalloc

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from ww_callbacks import analyze  # noqa: E402
from ww_callbacks.faults import WatcherWarning  # noqa: E402
from ww_callbacks.history import load_history  # noqa: E402
from ww_callbacks.layers import extract_layers  # noqa: E402
from ww_callbacks.session import WatchSession as Watcher  # noqa: E402
from ww_callbacks.snapshot import Snapshotter  # noqa: E402


def _model(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 48))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ww-worker"]


class Recorder:
    def __init__(self):
        self.seen: list[tuple[int, dict]] = []
        self.closed = False

    def write(self, result, scalars):
        self.seen.append((result.step, scalars))

    def close(self):
        self.closed = True


class Broken(Recorder):
    def write(self, result, scalars):
        raise OSError("disk full")


def test_results_reach_history_then_sinks(tmp_path):
    model = _model()
    sink = Recorder()
    with Watcher(log_dir=tmp_path, sinks=[sink]) as watcher:
        assert watcher.snapshot(model, step=0, epoch=0)
        watcher.wait_idle()
        with torch.no_grad():
            model[0].weight.mul_(3.0)
        watcher.snapshot(model, step=10, epoch=1)
    assert sink.closed and [s for s, _ in sink.seen] == [0, 10]
    history = load_history(tmp_path)
    assert sorted(set(history.step)) == [0, 10]
    final = analyze(model, randomize=True)
    last = history[history.step == 10].reset_index(drop=True)
    np.testing.assert_allclose(last.alpha, final.alpha, rtol=1e-12)
    scalars = sink.seen[-1][1]
    assert scalars["ww_alpha/0"] == pytest.approx(final.alpha[0])
    assert {"ww/alpha_mean", "ww/num_traps", "ww/snapshots_dropped", "ww_traps/2"} <= set(scalars)
    assert not _workers()


def test_snapshot_is_a_copy(tmp_path):
    model = _model()
    snap = Snapshotter(extract_layers(model)[0]).take(0, 0, False)
    with torch.no_grad():
        model[0].weight.zero_()
    assert snap.layers[0].weight.abs().sum() > 0


def test_traps_cadence():
    model = _model()
    seen = Recorder()
    with Watcher(sinks=[seen], traps_every=2) as watcher:
        for step in range(4):
            watcher.snapshot(model, step)
            watcher.wait_idle()
    assert ["ww/num_traps" in scalars for _, scalars in seen.seen] == [True, False, True, False]


def test_failing_sink_warns_once_and_loses_nothing(tmp_path):
    model = _model()
    good = Recorder()
    with pytest.warns(WatcherWarning, match="disk full") as record:
        with Watcher(log_dir=tmp_path, sinks=[Broken(), good]) as watcher:
            for step in range(3):
                watcher.snapshot(model, step)
                watcher.wait_idle()
                watcher.poll()
    assert len([w for w in record if "disk full" in str(w.message)]) == 1
    assert len(good.seen) == 3
    assert sorted(set(load_history(tmp_path).step)) == [0, 1, 2]


def test_worker_failure_is_reported_on_the_training_thread(monkeypatch):
    import ww_callbacks.session.watch_session as watcher_module

    def boom(*args, **kwargs):
        raise ValueError("analysis exploded")

    monkeypatch.setenv("WW_CALLBACKS_ANALYSIS_IN", "thread")  # the patch is in this process
    monkeypatch.setattr(watcher_module, "analyze_layers", boom)
    model = _model()
    watcher = Watcher()
    watcher.snapshot(model, 5)
    watcher.wait_idle()
    with pytest.warns(WatcherWarning, match="step 5 failed.*analysis exploded"):
        watcher.poll()
    watcher.snapshot(model, 6)  # the worker survived its failure
    watcher.wait_idle()
    strict = Watcher(strict=True)
    strict.snapshot(model, 7)
    strict.wait_idle()
    with pytest.raises(RuntimeError, match="step 7 failed"):
        strict.poll()
    with pytest.warns(WatcherWarning):
        watcher.close()
    strict.close(deliver=False)
    assert not _workers()


def test_exception_in_with_block_stops_worker_without_final_analysis(tmp_path):
    model = _model()
    with pytest.raises(KeyError):
        with Watcher(log_dir=tmp_path) as watcher:
            watcher.snapshot(model, 0)
            raise KeyError("user code failed")
    assert not _workers()


def test_nan_weights_mark_the_layer_failed(tmp_path):
    model = _model()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with Watcher(log_dir=tmp_path) as watcher:
        watcher.snapshot(model, 0)
    history = load_history(tmp_path)
    assert list(history.status) == ["success", "failed"]


def test_slow_analysis_drops_snapshots_and_memory_stays_flat(monkeypatch):
    import ww_callbacks.session.watch_session as watcher_module

    real = watcher_module.analyze_layers

    def slow(*args, **kwargs):
        time.sleep(0.05)
        return real(*args, **kwargs)

    monkeypatch.setenv("WW_CALLBACKS_ANALYSIS_IN", "thread")  # the patch is in this process
    monkeypatch.setattr(watcher_module, "analyze_layers", slow)
    model = _model()
    watcher = Watcher(traps_every=0)
    tracemalloc.start()
    try:
        for step in range(2000):
            watcher.snapshot(model, step)
            watcher.poll()
            if step == 500:
                watcher.wait_idle()
                base = tracemalloc.get_traced_memory()[0]
        watcher.wait_idle()
        watcher.poll()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
        watcher.close()
    assert watcher.dropped > 1000
    assert watcher.snapshots_taken == 2000
    assert grown < 2_000_000, grown


def test_initial_snapshot_is_never_replaced(analysis_gate):
    """Snapshots arriving while the worker is busy replace each other (newest wins), but the
    first of a run, the initial weights, is always analysed."""
    gate = analysis_gate
    model = _model()
    watcher = Watcher(traps_every=0, max_duty=None)
    for step in range(5):  # all five arrive before the worker analyses anything
        watcher.snapshot(model, step)
    gate.set()
    watcher.wait_idle()
    steps = [r.step for r in watcher.poll()]
    watcher.close()
    assert steps == [0, 4] and watcher.dropped == 3


def test_a_failed_run_still_analyses_the_initial_weights():
    """discard_pending (training failed: no final analysis) drops the newest-wins snapshot but
    not the initial weights, which are always analysed."""
    from ww_callbacks.results import Snapshot
    from ww_callbacks.worker import BackgroundWorker

    gate = threading.Event()
    seen = []

    def analyse(snapshot):
        gate.wait(10)
        seen.append(snapshot.step)
        return snapshot.step

    worker = BackgroundWorker(analyse)
    worker.submit(Snapshot(0, 0, [], False, 0.0), keep=True)  # picked up, waits on the gate
    worker.submit(Snapshot(1, 0, [], False, 0.0), keep=True)  # queued behind it
    worker.submit(Snapshot(2, 0, [], False, 0.0))
    worker.discard_pending()
    gate.set()
    assert worker.close(10)
    assert seen == [0, 1] and worker.drain()[0] == [0, 1]


def test_resume_truncates_history_after_checkpoint(tmp_path):
    model = _model()
    with Watcher(log_dir=tmp_path) as first:
        for step in (0, 10, 20, 30):
            first.snapshot(model, step)
            first.wait_idle()
            if step == 10:
                state = first.state_dict()
    resumed = Watcher(log_dir=tmp_path)
    resumed.load_state_dict(state)
    assert resumed.snapshots_taken == 2
    for step in (20, 30):
        resumed.snapshot(model, step)
        resumed.wait_idle()
    resumed.close()
    steps = load_history(tmp_path, level="model").step.tolist()
    assert steps == [0, 10, 20, 30]


def test_close_twice_and_at_rest():
    watcher = Watcher()
    watcher.close()
    watcher.close()
    assert watcher.poll() == []


def test_worker_thread_ends_when_idle_and_restarts():
    """Nothing tells the watcher when a Keras fit() raises: an idle worker ends by itself."""
    model = _model()
    watcher = Watcher()
    watcher._ensure_worker()._linger = 0.1
    watcher.snapshot(model, 0)
    watcher.wait_idle()
    deadline = time.monotonic() + 5
    while _workers() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _workers()
    watcher.snapshot(model, 1)  # a new thread picks the next snapshot up
    watcher.wait_idle()
    assert [r.step for r in watcher.poll()] == [0, 1]
    watcher.close()


# ---------------------------------------------------------------------- the session core


def test_session_cadence_snapshots_each_step_once(tmp_path):
    """WatchSession owns the cadence and the "already taken" check: the initial weights, due
    steps and epochs, the end; a step is never taken twice (epoch end = last step = end)."""
    from ww_callbacks.cadence import Cadence
    from ww_callbacks.session import WatchSession

    model = _model()
    session = WatchSession(cadence=Cadence(every_n_steps=4, every_n_epochs=1), wait="always",
                           log_dir=tmp_path, traps_every=0)
    session.begin(0, 0, model)
    for step in range(1, 9):
        session.step_end(step, (step - 1) // 4, model)
        if step % 4 == 0:
            session.epoch_end(step, step // 4 - 1, model)
    session.end(8, 1, model)
    assert session.closed and session.dropped == 0  # wait="always": nothing replaced
    assert list(load_history(tmp_path, level="model")["step"]) == [0, 4, 8]


def test_session_builds_named_sinks_and_rejects_unknown_names(tmp_path):
    import ww_callbacks.integrations  # noqa: F401  (registers "tensorboard" and "wandb")
    from ww_callbacks.integrations.tensorboard import TensorBoardSink
    from ww_callbacks.session import WatchSession
    from ww_callbacks.sinks import build_sinks

    session = WatchSession(log_dir=tmp_path, tensorboard=True, tensorboard_options={
        "images_every": 0})
    assert [type(s) for s in session.built_sinks] == [TensorBoardSink]
    session.close(deliver=False)  # (a finalizer's close still releases the event file)
    assert session.built_sinks[0]._closed
    with pytest.raises(ValueError, match="no sink named 'nope'"):
        build_sinks({"nope": (True, None)}, tmp_path)
    with pytest.raises(ValueError, match="wait must be one of"):
        WatchSession(wait="sometimes")


def test_policy_set_isolates_failures_and_keeps_state():
    from ww_callbacks.policies import HTSREarlyStopping
    from ww_callbacks.policies.policy_set import PolicySet

    class Failing:
        def on_result(self, result):
            raise KeyError("bad")

    failing = PolicySet([Failing(), Failing()])
    failing.on_result(None)
    failing.on_result(None)  # each policy is reported once
    assert len(failing.failures) == 2 and "Failing.on_result" in failing.failures[0]
    early = HTSREarlyStopping("plateau", patience=2, verbose=False)
    policies = PolicySet([Failing(), early])
    early.streak = 1
    state = policies.state_dict()
    assert state[0] == {} and state[1]["streak"] == 1
    again = PolicySet([Failing(), HTSREarlyStopping("plateau", patience=2, verbose=False)])
    again.load_state_dict(state)
    assert again.policies[1].streak == 1 and not again.should_stop
    with pytest.raises(KeyError):
        PolicySet([Failing()], strict=True).on_result(None)


def test_session_state_file_keeps_the_newest_states(tmp_path):
    """save_state keeps the policies' state by step (the newest two) in a JSON file; a step
    without a state warns that the policies start afresh."""
    from ww_callbacks.policies import HTSREarlyStopping
    from ww_callbacks.session import WatchSession

    policy = HTSREarlyStopping("plateau", patience=5, verbose=False)
    session = WatchSession(policies=[policy])
    path = tmp_path / "backup" / "ww_state.json"
    for step, streak in ((10, 1), (20, 2), (30, 3)):
        policy.streak = streak
        session.save_state(path, step)
    assert sorted(json.loads(path.read_text())) == ["20", "30"]
    assert session.saved_state(path, 20)["policies"][0]["streak"] == 2
    with pytest.warns(WatcherWarning, match="no state of step 10"):
        assert session.saved_state(path, 10) is None
    fresh = HTSREarlyStopping("plateau", patience=5, verbose=False)
    resumed = WatchSession(policies=[fresh])
    resumed.resume(30, session.saved_state(path, 30))
    assert fresh.streak == 3
    session.close()
    resumed.close()
