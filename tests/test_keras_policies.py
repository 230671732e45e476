"""The policies in the Keras 3 callback on the TensorFlow, JAX and PyTorch backends. Each
backend runs ``tests/keras_runs/policies.py`` once, in its own process (``KERAS_BACKEND`` is
fixed when keras is imported); each of its checks is a test here, named
``test_<check>[<backend>]``, that fails with the check's own traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.keras_runs.runner import BACKENDS, BackendRun, run_on_backend

SCRIPT = Path(__file__).parent / "keras_runs" / "policies.py"
CHECKS = ["target", "early_stopping", "lr_balance", "traps"]


@pytest.fixture(scope="module", params=BACKENDS)
def run(request, tmp_path_factory) -> BackendRun:
    backend = request.param
    return run_on_backend(SCRIPT, backend, tmp_path_factory.mktemp(f"keras_policies_{backend}"))


def test_keras_target_writes_every_layout_back(run):
    """``KerasTarget`` without fit: weights written back land in the variables in the analysis'
    layout for every writable kind (Embedding, MultiHeadAttention's EinsumDense projections,
    Conv1D, Dense, Conv2DTranspose, Conv2D); LoRA layers and learning-rate schedules are
    refused; learning-rate layers are found through an unbuilt OptimizerMap (Keras < 3.15: an
    error says to upgrade)."""
    report = run.check("target")
    assert {"emb", "mha.query", "conv1d", "dense", "deconv", "conv2d"} <= set(
        report["target_written"]), report


def test_htsr_early_stopping_restores_the_best_weights(run):
    """``HTSREarlyStopping`` stops ``model.fit`` early with ``ww/stop_reason`` in History and
    restores exactly the weights of the step it names."""
    report = run.check("early_stopping")
    assert report["es_epochs"] < 20 and report["es_codes"][-1] > 0
    assert report["es_restored_step"] < report["es_stopped_step"]


def test_lr_balancer_sets_each_sub_optimizer(run):
    """``LayerLRBalancer`` sets each layer's learning rate in a ``MultiOptimizer`` built by
    ``multi_optimizer_per_layer``, also when it acts mid-epoch (where JAX needs the state
    synced). Keras >= 3.15."""
    report = run.check("lr_balance")
    assert len(set(report["lr_scales"].values())) > 1


def test_trap_removal_removes_a_planted_trap(run):
    """``TrapRemoval`` removes a planted correlation trap, which stays without it."""
    report = run.check("traps")
    assert report["traps_after_removal"]["fc1"] == 0 and report["traps_kept"]["fc1"] > 0


def test_every_check_is_reported(run):
    """The script ran (or reported as skipped) exactly the checks that have a test above."""
    assert sorted(run.checks) == sorted(CHECKS), run.output
