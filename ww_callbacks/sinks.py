"""Sinks built by name from one set of options.

The core never imports an integration: ``ww_callbacks.integrations`` registers its factories here
when it is imported (``"tensorboard"``, ``"wandb"``, each importing its module only when called),
and :class:`~ww_callbacks.session.WatchSession` builds the sinks its options name. A factory
takes the option's value (``True`` or the host's object, e.g. a writer or a run), the run's
``log_dir`` and the ``<name>_options`` dict, and returns a sink or None (nothing to write to).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

SinkFactory = Callable[[Any, "str | os.PathLike | None", Mapping[str, Any]], Any]

_FACTORIES: dict[str, SinkFactory] = {}


def register_sink_factory(name: str, factory: SinkFactory) -> None:
    """Make ``name`` an option of every session: ``factory(value, log_dir, options)``."""
    _FACTORIES[name] = factory


def sink_names() -> list[str]:
    """The names registered so far."""
    return sorted(_FACTORIES)


def build_sinks(requested: Mapping[str, tuple[Any, Mapping[str, Any] | None]],
                log_dir: str | os.PathLike | None) -> list[Any]:
    """A sink for each ``name: (value, options)`` whose value is set (not None or False), in
    the order given."""
    sinks = []
    for name, (value, options) in requested.items():
        if value is None or value is False:
            continue
        factory = _FACTORIES.get(name)
        if factory is None:
            raise ValueError(f"ww_callbacks: no sink named {name!r} (import "
                             f"ww_callbacks.integrations to register "
                             f"'tensorboard' and 'wandb'; known: {sink_names()})")
        sink = factory(value, log_dir, dict(options or {}))
        if sink is not None:
            sinks.append(sink)
    return sinks
