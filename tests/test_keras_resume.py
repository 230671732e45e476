"""A Keras fit resumed by ``BackupAndRestore`` continues the policies' state (kept by the
callback next to the backup's files), on the TensorFlow, JAX and PyTorch backends, each in its
own process. The checks live in ``tests/keras_runs/resume.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.keras_runs.runner import BACKENDS, run_on_backend

SCRIPT = Path(__file__).parent / "keras_runs" / "resume.py"


@pytest.fixture(scope="module", params=BACKENDS)
def run(request, tmp_path_factory):
    return run_on_backend(SCRIPT, request.param, tmp_path_factory.mktemp(request.param))


def test_old_option_names_warn(run):
    run.check("old_names")


def test_keras_resume_continues_the_policy_state(run):
    report = run.check("resume")
    assert report["kept_streak"] == 2 and report["resumed_streak"] == 4
