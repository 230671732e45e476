"""Old import paths that keep working: a module whose names moved gets a module ``__getattr__``
from :func:`moved_names`, which returns each name from its new home and warns once per name
(:class:`DeprecationWarning`, as the old option names do: :func:`ww_callbacks.options.deprecated`).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved_names(old_module: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old_module``: ``homes`` maps each moved name to
    ``"new.module:new_name"`` (or ``"new.module"`` when the name is the same)."""
    warned: set[str] = set()

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        module, _, new_name = home.partition(":")
        value = getattr(importlib.import_module(module), new_name or name)
        if name not in warned:
            warned.add(name)
            warnings.warn(f"ww_callbacks: {old_module}.{name} is deprecated, use "
                          f"{module}.{new_name or name}", DeprecationWarning, stacklevel=2)
        return value

    return __getattr__


_warned_methods: set[str] = set()


def deprecated_method(old: str, new: str) -> None:
    """Warn once per process (:class:`DeprecationWarning`) that method ``old`` is now ``new``;
    the caller then does what the old method did."""
    if old not in _warned_methods:
        _warned_methods.add(old)
        warnings.warn(f"ww_callbacks: {old}() is deprecated, use {new}", DeprecationWarning,
                      stacklevel=3)
