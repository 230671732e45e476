"""The import graph is one-way (rules and reading in ``tests/import_graph.py``): the engine
imports nothing above it, the core imports no integration, no module imports itself through a
circle; and importing a submodule loads no report and registers no exit hook.

How imports are counted: every ``import`` statement, at module level or inside a function (a
lazy import is still an edge); only those under ``if TYPE_CHECKING:`` are left out. The few lazy
edges that are the documented front door or a deprecated path are listed in
``import_graph.ALLOWED`` with their reason, and must stay inside a function."""

from __future__ import annotations

import shutil
import subprocess
import sys

import import_graph
import pytest


def test_the_import_graph_is_one_way():
    problems = import_graph.violations()
    assert not problems, "\n".join(problems)


def test_allowed_edges_exist_and_are_lazy():
    """Every exception is still needed and is an import inside a function (it runs only when
    the name is asked for)."""
    found = {(e.importer, e.imported): e for e in import_graph.edges()}
    for pair, reason in import_graph.ALLOWED.items():
        assert pair in found, f"ALLOWED lists an edge that no longer exists: {pair}"
        assert found[pair].in_function, f"an allowed edge must be lazy: {found[pair]} ({reason})"


@pytest.mark.parametrize("plant,expected", [
    ("from ..session import WatchSession\n", "the engine module ww_callbacks.layers.base reaches "
     "ww_callbacks.session"),
    ("def later():\n    from ww_callbacks.integrations import tensorboard\n",
     "reaches ww_callbacks.integrations.tensorboard"),
    ("from ww_callbacks.layers import LayerWeights\n", "import circle among"),
])
def test_a_planted_bad_import_fails(tmp_path, plant, expected):
    """A copy of the sources with one bad import added (module- or function-level) breaks the
    rules, and the message names the chain of imports."""
    for folder in import_graph.PACKAGES:
        shutil.copytree(import_graph.ROOT / folder, tmp_path / folder)
    target = tmp_path / "ww_callbacks" / "layers" / "base.py"
    target.write_text(target.read_text() + "\n" + plant)
    problems = import_graph.violations(tmp_path)
    assert any(expected in p for p in problems), problems


def test_a_core_module_importing_an_integration_fails(tmp_path):
    for folder in import_graph.PACKAGES:
        shutil.copytree(import_graph.ROOT / folder, tmp_path / folder)
    target = tmp_path / "ww_callbacks" / "history.py"
    target.write_text(target.read_text() + "\nfrom .integrations import torch_target\n")
    problems = import_graph.violations(tmp_path)
    assert any(p.startswith("the core imports an integration: ww_callbacks.history -> "
                            "ww_callbacks.integrations.torch_target") for p in problems), problems


def test_importing_a_submodule_loads_no_report_and_registers_no_exit_hook():
    """No exit hook of ours is registered on import (the libraries' own, such as
    multiprocessing's, are not counted: each registration is recorded with its module)."""
    code = ("import atexit, sys\n"
            "mine = []\n"
            "register = atexit.register\n"
            "def recording(func, *args, **kwargs):\n"
            "    mine.append(getattr(func, '__module__', '?'))\n"
            "    return register(func, *args, **kwargs)\n"
            "atexit.register = recording\n"
            "import ww_callbacks.powerlaw, ww_callbacks.watcher, ww_callbacks.picture_queue\n"
            "import ww_callbacks.session\n"
            "print([m for m in mine if m.startswith('ww_callbacks')], sorted(\n"
            "    m for m in sys.modules if m in ('ww_callbacks.report', 'ww_callbacks.figures',\n"
            "                                   'matplotlib')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[] []", out.stdout + out.stderr


def test_public_names_still_import():
    import ww_callbacks
    from ww_callbacks import analyze, fit_powerlaw, write_report  # noqa: F401
    from ww_callbacks.analysis import analyze as old_path
    from ww_callbacks.front_door import analyze as front

    assert old_path is front is ww_callbacks.analyze
    assert set(ww_callbacks.__all__) <= set(dir(ww_callbacks))
    assert ww_callbacks.__version__
