"""Where the framework targets live: under ``ww_callbacks.integrations``, re-exported by
``ww_callbacks.policies`` on first use (so the core imports neither torch nor keras), and still
reachable through their old submodule paths with a ``DeprecationWarning``."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings

import pytest


def test_core_imports_neither_torch_nor_keras():
    code = ("import sys, ww_callbacks, ww_callbacks.policies, ww_callbacks.layers\n"
            "print(sorted(m for m in ('torch', 'keras', 'tensorflow', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_torch_names_resolve_to_the_integration():
    pytest.importorskip("torch")
    import ww_callbacks.policies as policies
    from ww_callbacks.integrations import torch_target

    for name in ("TorchTarget", "param_groups_per_layer", "scale_param_group"):
        assert getattr(policies, name) is getattr(torch_target, name)
        assert name in dir(policies)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        policies.nothing


@pytest.mark.parametrize("old,new,names", [
    ("ww_callbacks.policies.torch_target", "ww_callbacks.integrations.torch_target",
     ("TorchTarget", "param_groups_per_layer", "scale_param_group")),
    ("ww_callbacks.policies.keras_target", "ww_callbacks.integrations.keras_target",
     ("KerasTarget", "multi_optimizer_per_layer")),
])
def test_old_submodule_paths_warn_and_work(old, new, names):
    if "keras" in old:
        os.environ.setdefault("KERAS_BACKEND", "torch")  # as tests/test_keras_layers.py
    pytest.importorskip("torch" if "torch" in old else "keras")
    sys.modules.pop(old, None)  # the warning comes with the first import
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message)
               for w in caught), [str(w.message) for w in caught]
    moved = importlib.import_module(new)
    for name in names:
        assert getattr(module, name) is getattr(moved, name)
