"""The policies experiment of ``examples/policies_experiment.py`` runs end to end (its quick
version: 2 seeds, 5 epochs, the default and the 32x learning rate). Its own checks (no analysis
dropped, the early-stopped run follows the full run until it stops, the restored weights score
what the full run scored at that epoch) raise when they fail."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "policies_experiment.py"


@pytest.mark.slow
def test_policies_experiment_quick():
    spec = importlib.util.spec_from_file_location("policies_experiment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    threads = torch.get_num_threads()
    try:
        spec.loader.exec_module(module)
        out = module.main(["--quick"])
    finally:
        sys.modules.pop(spec.name, None)
        torch.set_num_threads(threads)
    assert isinstance(out, dict) and out
