"""The Keras 3 callback on the TensorFlow, JAX and PyTorch backends, each in its own process
(``KERAS_BACKEND`` is fixed when keras is imported). The checks live in
``tests/keras_runs/fit_digits.py``: History holds the ww keys at every epoch, Keras
``EarlyStopping(monitor="ww/alpha_mean")`` acts on them, TensorBoard events are readable, the
final per-layer alphas equal ``ww_callbacks.analyze(model)``, and a fit that raises leaves no
worker thread."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "keras_runs" / "fit_digits.py"
BACKEND_MODULE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_keras_fit_on_backend(backend, tmp_path):
    if importlib.util.find_spec("keras") is None:  # (importing it here would pick a backend)
        pytest.skip("keras is not installed")
    if importlib.util.find_spec(BACKEND_MODULE[backend]) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{backend} must be installed in CI (.ci/run)")
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    assert report["early_stopped_after"] < 10
    assert len(report["steps"]) >= 2 and report["steps"][0] == 0
