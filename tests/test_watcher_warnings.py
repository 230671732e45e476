"""Nothing silent: a watcher with nothing to analyse says so once; the first NaN/Inf in the
weights gets one clear warning naming the layers and the step."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from ww_callbacks.faults import WatcherWarning  # noqa: E402
from ww_callbacks.history import load_history  # noqa: E402
from ww_callbacks.session import WatchSession as Watcher  # noqa: E402


def _ours(caught) -> list[str]:
    return [str(c.message) for c in caught if issubclass(c.category, WatcherWarning)]


def test_nothing_to_analyse_warns_once(tmp_path):
    model = nn.Sequential(nn.ReLU(), nn.Linear(4, 3))  # 3 eigenvalues < min_evals=8
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Watcher(log_dir=tmp_path) as watcher:
            for step in range(3):
                watcher.snapshot(model, step)
                watcher.wait_idle()
    messages = _ours(caught)
    assert len(messages) == 1, messages
    assert "no layer to analyse" in messages[0] and "min_evals=8" in messages[0]
    assert "1" in messages[0]  # the passed-over layer is named with its reason
    assert len(load_history(tmp_path, level="model")) == 3  # the records say it, warned


def test_first_nan_in_the_weights_is_warned_once_with_layers_and_step(tmp_path):
    model = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(),
                          nn.Linear(16, 12))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Watcher(log_dir=tmp_path, traps_every=0, max_duty=None) as watcher:
            for step in range(5):
                if step == 2:
                    with torch.no_grad():
                        model[2].weight[0, 0] = float("nan")
                        model[4].weight[1, 1] = float("inf")
                watcher.snapshot(model, step)
                watcher.wait_idle()
                watcher.poll()
    messages = _ours(caught)
    assert len(messages) == 1, messages
    assert "step 2" in messages[0] and "2, 4" in messages[0] and "2 layer(s)" in messages[0]
    layers = load_history(tmp_path)
    assert set(layers[layers.status == "failed"].step) == {2, 3, 4}
