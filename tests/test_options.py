"""The shared options (:mod:`ww_callbacks.options`): declared once, validated once at
construction (issue 21 point 8: one test per bad value), the same names and defaults in every
host, unknown keywords refused when a host is made, and the README's table generated from the
declaration."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import numpy as np
import pytest

from ww_callbacks.options import (
    BY_NAME,
    OPTIONS,
    OptionError,
    WatchOptions,
    check_option,
    options_table,
)

README = Path(__file__).resolve().parent.parent / "README.md"

#: Issue 21 point 8: every value that was accepted and failed later, or did nothing.
BAD_VALUES = [
    ("max_duty", -1), ("max_duty", 0), ("max_duty", 5), ("max_duty", "abc"),
    ("max_duty", math.nan), ("traps_every", "abc"), ("traps_every", -1), ("min_evals", "abc"),
    ("min_evals", -5), ("layers", [3.5]), ("layers", "abc"), ("adapters", "bogus"),
    ("blas_threads", "abc"), ("blas_threads", -1), ("analysis_device", "nonsense"),
    ("fix_fingers", "bogus"), ("seed", "abc"), ("max_evals", 0), ("max_N", -1),
    ("every_n_steps", True), ("traps_every", True), ("layers", [1, -2]), ("mp_fit", "yes"),
    ("base", "final"), ("distributed", "yes"), ("wait", "sometimes"), ("every_n_epochs", 1.5),
    ("min_evals_for_trust", -1), ("min_evals_for_trust", None), ("min_evals_for_trust", "50"),
]


@pytest.mark.parametrize("name,value", BAD_VALUES, ids=[f"{n}={v!r}" for n, v in BAD_VALUES])
def test_a_bad_value_is_refused_naming_the_option_and_what_it_takes(name, value):
    with pytest.raises(OptionError) as caught:
        check_option(name, value)
    message = str(caught.value)
    assert f"{name}={value!r}" in message and f"{name} must be" in message, message


@pytest.mark.parametrize("name,value,expected", [
    ("traps_every", np.int64(2), 2), ("min_evals", np.int32(4), 4), ("max_N", None, None),
    ("blas_threads", None, None), ("max_duty", 0.25, 0.25), ("max_duty", np.float64(1.0), 1.0),
    ("max_duty", None, None), ("max_duty", "auto", "auto"), ("layers", [0, "dense", "fc1"],
                                                              [0, "dense", "fc1"]),
    ("layers", ("-fc1",), ("-fc1",)), ("layers", "conv2d", "conv2d"), ("layers", 3, 3),
    ("analysis_device", "cuda:1", "cuda:1"), ("analysis_device", "cpu", "cpu"),
    ("seed", np.int64(7), 7), ("mp_fit", np.bool_(True), True), ("every_n_steps", 0, 0),
    ("every_n_epochs", None, None), ("fix_fingers", "clip_xmax", "clip_xmax"),
])
def test_good_values_numpy_integers_included(name, value, expected):
    got = check_option(name, value)
    assert got == expected and type(got) is type(expected)


def test_watch_options_validates_at_construction_and_refuses_unknown_names():
    assert WatchOptions().as_dict() == {o.name: o.default for o in OPTIONS}
    assert WatchOptions(traps_every=np.int64(2)).traps_every == 2
    with pytest.raises(OptionError, match="max_duty=5"):
        WatchOptions(max_duty=5)
    with pytest.raises(OptionError, match="has no option 'max_dutty'.*max_duty"):
        WatchOptions.from_kwargs({"max_dutty": 0.5}, host="X")


def test_the_readme_table_is_the_declaration():
    """README.md holds :func:`options_table` verbatim (regenerate it with
    ``python -c "from ww_callbacks.options import options_table; print(options_table())"``)."""
    assert options_table() in README.read_text()


def test_the_declared_defaults_are_the_session_s():
    """The core's Watcher defaults are the declaration's (one set of defaults)."""
    from ww_callbacks.session import WatchSession as Watcher

    params = inspect.signature(Watcher).parameters
    for name, option in BY_NAME.items():
        assert params[name].default == option.default, name
def _hosts():
    hosts = []
    for module, cls in (("lightning", "WeightWatcherCallback"), ("keras", "WeightWatcherCallback"),
                        ("torch", "Watcher"), ("transformers", "WeightWatcherCallback")):
        hosts.append(pytest.param(module, cls, id=module))
    return hosts


def _host(module: str, cls: str):
    if module == "keras":
        import os

        os.environ.setdefault("KERAS_BACKEND", "torch")
    pytest.importorskip({"lightning": "lightning", "keras": "keras", "torch": "torch",
                         "transformers": "transformers"}[module])
    import importlib

    return getattr(importlib.import_module(f"ww_callbacks.integrations.{module}"), cls)


@pytest.mark.parametrize("module,cls", _hosts())
def test_every_host_takes_every_shared_option_with_its_default(module, cls, tmp_path):
    host_class = _host(module, cls)
    host = host_class(log_dir=str(tmp_path / "default"))
    assert host.options == WatchOptions()  # the same defaults everywhere
    if hasattr(host, "close"):
        host.close()
    changed = {"traps_every": 3, "min_evals": 4, "max_evals": 100, "max_N": 1000,
               "mp_fit": True, "fix_fingers": "clip_xmax", "analysis_device": "cpu",
               "keep_spectra": False, "seed": 5, "adapters": "both", "tied": "each",
               "base": "initial", "blas_threads": 2, "max_duty": 0.5, "strict": True,
               "distributed": False, "layers": [0, 1], "esd_every": 2, "analysis_in": "thread",
               "min_evals_for_trust": 20}
    assert set(changed) == set(BY_NAME)
    other = host_class(log_dir=str(tmp_path / "changed"), **changed)
    assert other.options.as_dict() == changed
    if hasattr(other, "close"):
        other.close()


@pytest.mark.parametrize("module,cls", _hosts())
@pytest.mark.parametrize("bad", [{"max_dutty": 0.5}, {"max_duty": 5}, {"every_n_steps": True},
                                 {"wait": "sometimes"}], ids=["typo", "range", "bool", "wait"])
def test_every_host_refuses_at_construction(module, cls, bad, tmp_path):
    host_class = _host(module, cls)
    name = next(iter(bad))
    if module == "lightning" and name == "every_n_steps":
        bad = {"every_n_train_steps": True}
        name = "every_n_train_steps"
    with pytest.raises((OptionError, TypeError, ValueError), match=re.escape(name)):
        host_class(log_dir=str(tmp_path), **bad)
