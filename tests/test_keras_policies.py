"""The policies in the Keras 3 callback on the TensorFlow, JAX and PyTorch backends, each in its
own process (``KERAS_BACKEND`` is fixed when keras is imported). The checks live in
``tests/keras_runs/policies.py``: ``HTSREarlyStopping`` stops ``model.fit`` early with
``ww/stop_reason`` in History and restores exactly the weights of the step it names;
``LayerLRBalancer`` sets each layer's learning rate in a ``MultiOptimizer`` built by
``multi_optimizer_per_layer`` (also when it acts mid-epoch, where JAX needs the state synced;
Keras >= 3.15, older versions must raise an error saying so);
``TrapRemoval`` removes a planted correlation trap (which stays without it); ``KerasTarget``
writes weights back in every supported layout and refuses LoRA layers and schedules."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.keras_runs.runner import BACKENDS, run_on_backend

SCRIPT = Path(__file__).parent / "keras_runs" / "policies.py"


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_policies_on_backend(backend, tmp_path):
    report = run_on_backend(SCRIPT, backend, tmp_path)
    assert report["es_epochs"] < 20 and report["es_codes"][-1] > 0
    assert report["es_restored_step"] < report["es_stopped_step"]
    if report["multi_optimizer"]:  # Keras >= 3.15; older ones are checked to say so
        assert len(set(report["lr_scales"].values())) > 1
    assert report["traps_after_removal"]["fc1"] == 0 and report["traps_kept"]["fc1"] > 0
