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

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "keras_runs" / "policies.py"
BACKEND_MODULE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_keras_policies_on_backend(backend, tmp_path):
    if importlib.util.find_spec("keras") is None:
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
    assert report["es_epochs"] < 20 and report["es_codes"][-1] > 0
    assert report["es_restored_step"] < report["es_stopped_step"]
    if report["multi_optimizer"]:  # Keras >= 3.15; older ones are checked to say so
        assert len(set(report["lr_scales"].values())) > 1
    assert report["traps_after_removal"]["fc1"] == 0 and report["traps_kept"]["fc1"] > 0
