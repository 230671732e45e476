"""The protocol that turns a backend script's checks into tests by name
(``tests/keras_runs/checks.py`` and ``runner.py``), shown on a small script without Keras: a
passing check gives what it measured, a failing one fails its test with the check's traceback
(and does not stop the next check), a skipped one skips with its reason, and a check the process
never reached fails with the process's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.keras_runs.runner import BackendRun

SCRIPT = '''
import sys
sys.path.insert(0, {folder!r})
from pathlib import Path
from checks import run_checks

def fails():
    raise AssertionError("the planted failure")

run_checks(Path(sys.argv[1]), "jax", [("measures", lambda: {{"value": 3}}), ("fails", fails),
                                      ("after", lambda: None)],
           skipped={{"not_here": "no such backend feature"}})
'''


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> BackendRun:
    folder = tmp_path_factory.mktemp("protocol")
    script = folder / "script.py"
    script.write_text(SCRIPT.format(folder=str(Path(__file__).parent / "keras_runs")))
    return BackendRun(script, "jax", folder, timeout=120)


def test_outcomes_by_name(run):
    assert run.returncode == 1  # one check failed
    assert run.check("measures") == {"value": 3}
    assert run.check("after") == {}  # ran after the failure
    with pytest.raises(pytest.fail.Exception, match="(?s)failed on jax.*the planted failure"):
        run.check("fails")
    with pytest.raises(pytest.skip.Exception, match="no such backend feature"):
        run.check("not_here")
    with pytest.raises(pytest.fail.Exception, match="did not run on jax"):
        run.check("missing")
