"""The Keras 3 callback on the TensorFlow, JAX and PyTorch backends. Each backend runs
``tests/keras_runs/fit_digits.py`` once, in its own process (``KERAS_BACKEND`` is fixed when
keras is imported); each of its checks is a test here, named ``test_<check>[<backend>]``, that
fails with the check's own traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.keras_runs.runner import BACKENDS, BackendRun, run_on_backend

SCRIPT = Path(__file__).parent / "keras_runs" / "fit_digits.py"
CHECKS = ["fit", "batch_cadence", "early_stopping", "raise", "backup_and_restore"]


@pytest.fixture(scope="module", params=BACKENDS)
def run(request, tmp_path_factory) -> BackendRun:
    backend = request.param
    return run_on_backend(SCRIPT, backend, tmp_path_factory.mktemp(f"keras_fit_{backend}"))


def test_history_tensorboard_and_final_alphas(run):
    """History holds the ww keys at every epoch; TensorBoard events are readable with
    TensorBoard's reader; the final per-layer alphas equal ``ww_callbacks.analyze(model)``; no
    batch-end hook, snapshots at the optimizer's step counts of the epoch ends."""
    report = run.check("fit")
    assert len(report["steps"]) >= 2 and report["steps"][0] == 0


def test_every_n_steps_cadence(run):
    """``every_n_steps``: snapshots at multiples of n, taken between steps (batch begins)."""
    run.check("batch_cadence")


def test_keras_early_stopping_on_a_ww_metric(run):
    """Keras's own ``EarlyStopping(monitor="ww/alpha_mean")`` acts on the ww keys."""
    report = run.check("early_stopping")
    assert report["early_stopped_after"] < 10


def test_a_fit_that_raises_leaves_no_worker_thread(run):
    run.check("raise")


def test_backup_and_restore_continues_the_history(run):
    """A fit interrupted after its epoch-1 backup, then resumed by ``BackupAndRestore``,
    continues the same history: steps strictly increasing, none twice, up to the last step."""
    run.check("backup_and_restore")


def test_every_check_is_reported(run):
    """The script ran exactly the checks that have a test above."""
    assert sorted(run.checks) == sorted(CHECKS), run.output
