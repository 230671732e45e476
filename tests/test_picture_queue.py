"""The picture thread of the dashboards (:mod:`ww_callbacks.picture_queue`): frames merged while
they wait (newest wins, off-schedule ESDs carried over), the CPU-time budget, the final frame
drawn after training returns, and what a real TensorBoard sink writes under the default budget."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from tests.events import read_events  # noqa: E402
from tests.test_dashboards import watch  # noqa: E402
from ww_callbacks import tags  # noqa: E402
from ww_callbacks.dashboard import Frame  # noqa: E402
from ww_callbacks.integrations.tensorboard import TensorBoardSink  # noqa: E402
from ww_callbacks.picture_queue import PICTURE_DUTY, PictureQueue, wait_for_pictures  # noqa: E402
from ww_callbacks.results import AnalysisResult  # noqa: E402


def _result(step: int, layers=("a", "b", "c")) -> AnalysisResult:
    return AnalysisResult(step, None, pd.DataFrame({"alpha": [3.0]}), {}, 0.0, 0.0, False,
                          spectra={name: [1.0, 2.0] for name in layers})


def _busy(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@pytest.mark.parametrize("duty", [None, 0.5])
def test_waiting_frames_merge_into_the_newest_keeping_off_schedule_esds(duty):
    """While frame 0 is drawn, the kept (final) frame stays; the others beyond ``max_waiting``
    (2 here; 0 under a budget) merge into the next: its scheduled ESDs, plus the ESD of a layer
    that gained a trap in an older one (results hold DataFrames: never compared)."""
    started, release = threading.Event(), threading.Event()
    drawn = []

    def draw(result, frame):
        started.set()
        release.wait(10)
        drawn.append((frame.step, frame.summary, list(frame.esd_layers)))
        return frame.step

    queue = PictureQueue(draw, "test-pictures", duty=duty, max_waiting=2 if duty is None else None)
    try:
        queue.submit(_result(0), Frame(0, summary=True, esd_layers=["a"]))
        assert started.wait(10)  # frame 0 is being drawn (and blocked) now
        queue.submit(_result(1), Frame(1, summary=True), keep=True)
        queue.submit(_result(2), Frame(2, summary=True, esd_layers=["a"], changed=["a"]))
        queue.submit(_result(3), Frame(3, esd_layers=["b"]))
        queue.submit(_result(4), Frame(4, esd_layers=["c"]))
        queue.submit(_result(5), Frame(5, esd_layers=["c"]))
    finally:
        release.set()
    outcomes = [outcome for _, outcome in queue.ready(wait=True)]
    queue.close()
    if duty is None:  # 2, 3 merged into 4 and 5 wait
        assert outcomes == [0, 1, 4, 5] and queue.merged == 2
        assert drawn[2] == (4, True, ["c", "a"])  # b (on schedule at step 3) gave way to c
    else:  # 2, 3, 4 merged into 5
        assert outcomes == [0, 1, 5] and queue.merged == 3
        assert drawn[2] == (5, True, ["c", "a"])


def test_budget_bounds_the_drawing_cpu_time():
    """Frames submitted every 20 ms for 1.5 s, each costing 20 ms of CPU, under a 10% budget:
    the thread's CPU time stays within the budget (plus one frame), the rest is merged and
    counted, and the newest frame is drawn when the sink asks (its close)."""
    duty, cost = 0.1, 0.02
    queue = PictureQueue(lambda result, frame: _busy(cost), "test-budget", duty=duty)
    start = time.monotonic()
    submitted = 0
    while time.monotonic() - start < 1.5:
        queue.submit(_result(submitted), Frame(submitted, esd_layers=["a"]))
        submitted += 1
        time.sleep(0.02)
    elapsed = time.monotonic() - start
    during = queue.frames_drawn
    assert queue.cpu_s <= duty * elapsed + 2 * cost
    assert during < submitted / 3, (during, submitted)
    queue.ready(wait=True)
    queue.close()
    assert queue.frames_drawn + queue.merged == submitted
    assert queue.frames_drawn == during + 1  # the newest, drawn at the end


def test_finish_draws_the_last_frame_after_returning():
    """``finish`` returns at once; the final frame and then the sink's closing step run in the
    queue's thread; ``wait_for_pictures`` waits for them."""
    release = threading.Event()
    order = []

    def draw(result, frame):
        release.wait(10)
        order.append(f"draw {frame.step}")

    queue = PictureQueue(draw, "test-finish")
    queue.submit(_result(7), Frame(7, summary=True), keep=True)
    start = time.monotonic()
    queue.finish(lambda: order.append("closed"))
    assert time.monotonic() - start < 0.5 and order == []
    assert not wait_for_pictures(0.2)
    release.set()
    assert wait_for_pictures(10)
    assert order == ["draw 7", "closed"]
    with pytest.raises(RuntimeError, match="closed"):
        queue.submit(_result(8), Frame(8, summary=True))


def test_bad_duty():
    with pytest.raises(ValueError, match="picture duty"):
        PictureQueue(lambda r, f: None, "x", duty=0)


def test_default_budget_a_short_run_gets_its_final_frame_with_the_trap(tmp_path):
    """Under the default budget a run of seconds draws no frame while it trains: the layer that
    gained a trap at step 1 and every other layer are drawn once, at the final analysis, after
    the watcher closed."""
    assert PICTURE_DUTY == 0.005
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    sink = TensorBoardSink(log_dir=tmp_path, images_every=1)
    recorder = watch(model, [sink], steps=(0, 1, 2), trap_at=1)
    traps = [r.details.set_index("longname").rand_num_spikes["2"] for r in recorder.results]
    assert traps[0] == 0 and traps[1] >= 1
    assert sink.pictures.frames_drawn <= 1  # at most the final frame so far
    acc = read_events(tmp_path)
    assert sink.pictures.frames_drawn == 1 and sink.pictures.merged >= 1
    for tag in (tags.ALPHA_HEATMAP, tags.CORRELATION_FLOW, "ww_esd_plot/0", "ww_esd_plot/2"):
        assert [im.step for im in acc.Images(tag)] == [2], tag
