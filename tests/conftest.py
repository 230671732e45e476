"""Shared fixtures: quiet WeightWatcher logging, a helper to run the reference without letting it
change the test process's global random state."""

from __future__ import annotations

import logging

import numpy as np
import pytest


@pytest.fixture
def reference_details():
    """Run ``weightwatcher==0.7.7``'s ``analyze`` on a model with a fixed global seed, restoring
    numpy's global RNG afterwards (the reference shuffles with it)."""
    ww = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.CRITICAL)

    def run(model, **kwargs):
        state = np.random.get_state()
        np.random.seed(12345)
        try:
            return ww.WeightWatcher(model=model).analyze(**kwargs)
        finally:
            np.random.set_state(state)

    return run


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    """W&B in offline mode with everything under ``tmp_path`` (no network, no API key); finishes
    a run left open and resets W&B's process-wide settings before and after."""
    wandb = pytest.importorskip("wandb")
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path),
                       "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true",
                       "WANDB_DISABLE_CODE": "true", "WANDB_CONSOLE": "off",
                       "WANDB_CACHE_DIR": str(tmp_path / "cache"),
                       "WANDB_CONFIG_DIR": str(tmp_path / "config"),
                       "WANDB_DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    wandb.teardown()  # W&B keeps the settings of the first run of a process: read them again
    yield tmp_path
    if wandb.run is not None:
        wandb.run.finish()
    wandb.teardown()


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path, monkeypatch):
    """Every test runs in its own folder, so files written to the current directory by default
    (a Lightning run without a logger keeps its history in ``default_root_dir``) never land in
    the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def one_torch_thread():
    """Tiny torch models train fastest on one thread, and the analysis thread gets the other
    core (torch's default, every core, makes a 2-core machine crawl once the worker runs)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def analysis_gate(monkeypatch):
    """Holds every watcher analysis until the test sets the returned event (10 s at most), so
    a test can keep the worker busy while it takes snapshots. The gate is in this process, so
    the analyses run in the worker thread (``analysis_in="thread"`` for every session)."""
    import threading

    monkeypatch.setenv("WW_CALLBACKS_ANALYSIS_IN", "thread")

    import ww_callbacks.session.watch_session as watcher_module

    real = watcher_module.analyze_layers
    gate = threading.Event()

    def gated(*args, **kwargs):
        gate.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(watcher_module, "analyze_layers", gated)
    return gate
