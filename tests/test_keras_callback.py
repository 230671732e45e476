"""The Keras 3 callback on the TensorFlow, JAX and PyTorch backends, each in its own process
(``KERAS_BACKEND`` is fixed when keras is imported). The checks live in
``tests/keras_runs/fit_digits.py``: History holds the ww keys at every epoch, Keras
``EarlyStopping(monitor="ww/alpha_mean")`` acts on them, TensorBoard events are readable, the
final per-layer alphas equal ``ww_callbacks.analyze(model)``, and a fit that raises leaves no
worker thread."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.keras_runs.runner import BACKENDS, run_on_backend

SCRIPT = Path(__file__).parent / "keras_runs" / "fit_digits.py"


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_fit_on_backend(backend, tmp_path):
    report = run_on_backend(SCRIPT, backend, tmp_path)
    assert report["early_stopped_after"] < 10
    assert len(report["steps"]) >= 2 and report["steps"][0] == 0
