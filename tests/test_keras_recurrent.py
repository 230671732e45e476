"""Keras ``LSTM``, ``Bidirectional(GRU)`` and ``SimpleRNN`` on the TensorFlow, JAX and PyTorch
backends (issue 14), each in its own process: per-gate rows equal the hand-cut blocks of the
cells' kernels in Keras's gate order, watched live by the Keras callback during ``model.fit``.
The checks live in ``tests/keras_runs/recurrent.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.keras_runs.runner import BACKENDS, run_on_backend

SCRIPT = Path(__file__).parent / "keras_runs" / "recurrent.py"


@pytest.mark.slow  # ~1 min per backend on 2 cores (TensorFlow/JAX start-up and fit)
@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_recurrent_on_backend(backend, tmp_path):
    report = run_on_backend(SCRIPT, backend, tmp_path).check("gates")
    # LSTM 2 x 4 gates, two GRU directions 2 x 2 x 3, SimpleRNN 2
    assert report["gate_rows"] == 8 + 12 + 2
    assert report["rows"] == 8 + 12 + 2 + 1  # and the head
    assert report["steps"][0] == 0 and len(report["steps"]) >= 2
