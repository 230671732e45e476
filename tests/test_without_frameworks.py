"""The framework-free core's tests skip, not error, when torch or a training framework is not
installed: every test module is collected with torch, Lightning, Keras, Transformers,
TensorFlow, JAX, accelerate and peft made unimportable (a package of that name that raises
``ModuleNotFoundError``, what a missing install raises), and the core's own tests still run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BLOCKED = ("torch", "lightning", "pytorch_lightning", "keras", "transformers", "tensorflow",
           "jax", "accelerate", "peft")
TESTS = Path(__file__).resolve().parent


def _without_frameworks(tmp_path: Path) -> dict[str, str]:
    for name in BLOCKED:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError('No module named {name} (blocked by the test)', "
            f"name={name!r})\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_every_test_module_collects_without_the_frameworks(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", str(TESTS)],
                          capture_output=True, text=True, timeout=600, cwd=TESTS.parent,
                          env=_without_frameworks(tmp_path))
    # pytest exits 2 on a collection error and names it in its ERRORS section and closing line
    # (test names may contain the word, e.g. test_broken_headers_are_input_errors)
    closing = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "= ERRORS =" not in proc.stdout and "error" not in closing.lower(), proc.stdout[-6000:]


def test_core_tests_run_without_the_frameworks(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-m", "not slow", str(TESTS / "test_powerlaw.py"),
                           str(TESTS / "test_options.py"), str(TESTS / "test_cadence.py"),
                           str(TESTS / "test_import_graph.py")],
                          capture_output=True, text=True, timeout=600, cwd=TESTS.parent,
                          env=_without_frameworks(tmp_path))
    tail = proc.stdout[-3000:]
    assert proc.returncode == 0 and " passed" in tail and "error" not in tail.lower(), tail
