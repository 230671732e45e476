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
