"""Run one of the scripts of this folder under one Keras backend, in its own process
(``KERAS_BACKEND`` is fixed when keras is imported), and give each of its checks to pytest by
name (the protocol: :mod:`tests.keras_runs.checks`).

A test module makes one :class:`BackendRun` per backend in a module-scoped fixture, and each test
asks it for one check's outcome: the test fails with the check's traceback, skips with the reason
the script gave, or gets what the check measured."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.keras_runs.checks import REPORT_NAME

BACKENDS = ["tensorflow", "jax", "torch"]
BACKEND_MODULE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def require_backend(backend: str) -> None:
    """Skip when keras or the backend is missing (fail in CI, where every backend must be
    installed)."""
    if importlib.util.find_spec("keras") is None:  # (importing it here would pick a backend)
        pytest.skip("keras is not installed")
    if importlib.util.find_spec(BACKEND_MODULE[backend]) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{backend} must be installed in CI (.ci/run)")
        pytest.skip(f"{backend} is not installed")


class BackendRun:
    """The outcomes of every check of ``script`` under ``backend``, from one process."""

    def __init__(self, script: Path, backend: str, out_dir: Path, timeout: int = 900):
        self.backend = backend
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
               "CUDA_VISIBLE_DEVICES": ""}
        try:
            proc = subprocess.run([sys.executable, str(script), str(out_dir)], env=env,
                                  capture_output=True, text=True, timeout=timeout)
            self.output = proc.stdout[-3000:] + proc.stderr[-6000:]
            self.returncode: int | None = proc.returncode
        except subprocess.TimeoutExpired as err:
            self.output = f"timed out after {timeout} s\n" + _text(err.stdout)[-3000:] + _text(
                err.stderr)[-6000:]
            self.returncode = None
        path = out_dir / REPORT_NAME
        report = json.loads(path.read_text()) if path.exists() else {"checks": {}}
        assert report.get("backend", backend) == backend, report
        self.checks: dict[str, dict] = report["checks"]

    def check(self, name: str) -> dict:
        """What check ``name`` measured; fails the test with the check's traceback (or the
        process's output when the check never ran) and skips with the script's reason."""
        outcome = self.checks.get(name)
        if outcome is None:
            pytest.fail(f"check {name!r} did not run on {self.backend} (exit code "
                        f"{self.returncode}):\n{self.output}", pytrace=False)
        if "skipped" in outcome:
            pytest.skip(outcome["skipped"])
        if not outcome["ok"]:
            pytest.fail(f"check {name!r} failed on {self.backend}:\n{outcome['error']}",
                        pytrace=False)
        return outcome["report"]


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


def run_on_backend(script: Path, backend: str, out_dir: Path, timeout: int = 900) -> BackendRun:
    """Run ``script OUT_DIR`` under ``backend`` (skipping as :func:`require_backend` says)."""
    require_backend(backend)
    return BackendRun(script, backend, out_dir, timeout)
