"""Scripts restarted the way their authors restart them: into the same ``log_dir`` without
resuming the watcher (one warning naming the two ways out), resumed from a state taken while an
analysis was in flight (the counters do not drift), and ended without ``close()`` (the final
weights are analysed at interpreter exit, with one line saying so)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest

torch = pytest.importorskip("torch")

from ww_callbacks.history import read_records  # noqa: E402
from ww_callbacks.integrations.torch import Watcher  # noqa: E402


def _model() -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.Linear(48, 16))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def _run(model, log_dir, steps: int, state: dict | None = None, **options) -> Watcher:
    ww = Watcher(model, log_dir=log_dir, tensorboard=False, every_n_steps=2, **options)
    if state is not None:
        ww.load_state_dict(state)
    for _ in range(steps):
        with torch.no_grad():
            model[0].weight.mul_(1.01)
        ww.step()
    return ww


def _restart_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "without resuming the watcher" in str(w.message)]


def test_restart_without_resume_warns_once_and_a_resume_does_not(tmp_path):
    model = _model()
    first = _run(model, tmp_path, 8, wait="always")
    state = first.state_dict()
    first.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(model, tmp_path, 8, wait="always").close()  # a restart: steps 1, 2, 4, ... again
    found = _restart_warnings(caught)
    assert len(found) == 1, found
    assert "up to step 8" in found[0] and "starts at step 1" in found[0]
    assert "ww.state_dict()" in found[0] and "log_dir" in found[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _run(model, tmp_path, 4, state=state, wait="always")  # wired: continues
        again.close()
    assert not _restart_warnings(caught)


def test_delivered_count_does_not_drift_over_resumes(tmp_path):
    model = _model()
    state = None
    for _ in range(3):  # three runs, each saving its state while an analysis is in flight
        ww = _run(model, tmp_path, 6, state=state)
        state = ww.state_dict()
        ww.close()  # the analysis in flight at the checkpoint still lands in the history
        assert ww.results_delivered + ww.dropped == ww.snapshots_taken
    final = _run(model, tmp_path, 4, state=state)
    final.close()
    assert final.results_delivered + final.dropped == final.snapshots_taken
    assert final.results_delivered == len(read_records(tmp_path))


SCRIPT = """
import gc
import torch
from ww_callbacks.integrations.torch import Watcher

def train():
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.Linear(48, 16))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    ww = Watcher(model, log_dir={log_dir!r}, every_n_steps=50, optimizer=opt,
                 tensorboard={tensorboard!r})
    for _ in range(7):
        model(torch.randn(4, 32)).sum().backward()
        opt.step(); opt.zero_grad()
        ww.step()
    return ww

{how}
print("trained", flush=True)
"""
#: A module-level watcher (alive at exit), and one whose function returned and was collected
#: (its analysis thread keeps it, and the model, until exit).
HOW = {"module level": "ww = train()", "dropped": "train(); gc.collect()"}


@pytest.mark.parametrize("tensorboard,how", [(True, "module level"), (False, "dropped")])
def test_unclosed_watcher_analyses_the_final_weights_at_exit(tmp_path, tensorboard, how):
    code = textwrap.dedent(SCRIPT).format(log_dir=str(tmp_path), tensorboard=tensorboard,
                                          how=HOW[how])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [r["step"] for r in read_records(tmp_path)] == [0, 7]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ww_callbacks:")]
    assert "final weights (step 7)" in lines[0] and "close()" in lines[0], proc.stderr
    # then, while pictures are still being drawn (the final frame: ~0.5 s), one more line
    pictures = ["ww_callbacks: drawing the final pictures (ww-tensorboard-plots) before exit, "
                "at most 60 s (Ctrl-C skips them)"]
    assert lines[1:] in ([], pictures) if tensorboard else lines[1:] == [], proc.stderr
    if tensorboard:
        assert list(tmp_path.glob("events.out.tfevents.*"))


PICTURES_AT_EXIT = """
import time
import pandas as pd
from ww_callbacks.dashboard import Frame
from ww_callbacks.picture_queue import PictureQueue
from ww_callbacks.results import AnalysisResult

drawn = []
queue = PictureQueue(lambda result, frame: (time.sleep(1.0), drawn.append(1)), "ww-test-plots")
queue.submit(AnalysisResult(3, None, pd.DataFrame({"alpha": [3.0]}), {}, 0.0, 0.0, False),
             Frame(3, summary=True), keep=True)
queue.finish(lambda: print("closed", flush=True))
"""


def test_one_line_while_the_final_pictures_are_drawn_at_exit():
    proc = subprocess.run([sys.executable, "-c", PICTURES_AT_EXIT], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "closed"  # the exit waited for the drawing, then the close
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "drawing the final pictures (ww-test-plots)" in lines[0], lines


def test_layers_beyond_the_size_limits_are_named_once(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(32, 48), torch.nn.Linear(48, 300))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ww = _run(model, tmp_path, 4, wait="always", max_N=200)
        ww.close()
    found = [str(w.message) for w in caught if "larger than the size limits" in str(w.message)]
    assert len(found) == 1 and "1 (N 300 > max_N 200)" in found[0], found
    assert {r["longname"] for r in read_records(tmp_path)[-1]["layers"]} == {"0"}
