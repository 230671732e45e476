"""Run one of the scripts of this folder under one Keras backend, in its own process
(``KERAS_BACKEND`` is fixed when keras is imported), and return the JSON line it prints."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BACKENDS = ["tensorflow", "jax", "torch"]
BACKEND_MODULE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def run_on_backend(script: Path, backend: str, out_dir: Path, timeout: int = 600) -> dict:
    """The report of ``script OUT_DIR`` under ``backend``; skips when keras or the backend is
    missing (fails in CI, where every backend must be installed)."""
    if importlib.util.find_spec("keras") is None:  # (importing it here would pick a backend)
        pytest.skip("keras is not installed")
    if importlib.util.find_spec(BACKEND_MODULE[backend]) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{backend} must be installed in CI (.ci/run)")
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(script), str(out_dir)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    return report
