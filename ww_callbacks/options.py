"""The options every integration shares, in one place: the layer-selection defaults, the values of
``wait``, and the old option names that still work (with a :class:`DeprecationWarning`).

README.md has the table of every option and the integrations it applies to.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

#: Layer-selection defaults (see :func:`ww_callbacks.layers.select_layers`): a layer is analysed
#: when its smaller dimension has at least ``MIN_EVALS`` and at most ``MAX_EVALS`` eigenvalues
#: and its larger one is at most ``MAX_N``.
MIN_EVALS = 8
MAX_EVALS = 15000
MAX_N = 50000

#: When training waits for an analysis: ``"never"`` (a snapshot that finds the previous one still
#: pending replaces it, counted in ``ww/snapshots_dropped``), ``"epoch"`` (an epoch's snapshot
#: waits for the previous analysis, and the epoch end for its own: monitored ``ww/`` values and
#: policies see every epoch) or ``"always"`` (every snapshot first waits until the previous one
#: is analysed and delivered, and epoch ends wait as with ``"epoch"``: nothing is dropped).
Wait = Literal["never", "epoch", "always"]
WAIT_VALUES = ("never", "epoch", "always")


def check_wait(wait: str) -> str:
    """``wait`` when it is one of :data:`WAIT_VALUES`; a clear error otherwise."""
    if wait not in WAIT_VALUES:
        raise ValueError(f"wait must be one of {WAIT_VALUES}, not {wait!r}")
    return wait


def deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn (:class:`DeprecationWarning`) that option ``old`` is now ``new``; the caller then
    uses the old option's value as the new one's."""
    warnings.warn(f"ww_callbacks: option {old!r} is deprecated, use {new!r}",
                  DeprecationWarning, stacklevel=stacklevel)


def renamed(new_value: Any, renames: dict[str, tuple[str, Any]]) -> Any:
    """The value of an option that also has old names: ``renames`` maps each old name to
    ``(new name, value given under the old name or None)``; an old name that was given warns
    (:func:`deprecated`) and its value wins."""
    for old, (new, value) in renames.items():
        if value is not None:
            deprecated(old, new, stacklevel=4)
            return value
    return new_value


def wait_from_flag(old: str, flag: bool | None, true_value: str, wait: str) -> str:
    """``wait`` given an old boolean option (``wait_for_epoch``, ``wait_for_analysis``; None:
    not given): True means ``true_value``, False ``"never"``, with a deprecation warning."""
    if flag is None:
        return wait
    deprecated(old, f"wait={true_value!r}" if flag else "wait='never'", stacklevel=4)
    return true_value if flag else "never"
