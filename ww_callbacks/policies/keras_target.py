"""Deprecated path: the Keras target moved to :mod:`ww_callbacks.integrations.keras_target`
(framework code lives with its framework). Import ``KerasTarget`` and
``multi_optimizer_per_layer`` from ``ww_callbacks.policies`` instead; this module still gives
them, with a ``DeprecationWarning``, imported from the integration when first asked for (the core
itself imports no integration)."""

import warnings
from typing import Any

_NAMES = ("KerasTarget", "multi_optimizer_per_layer")

warnings.warn("ww_callbacks.policies.keras_target moved to ww_callbacks.integrations.keras_target;"
              " import KerasTarget and multi_optimizer_per_layer from ww_callbacks.policies",
              DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:
    """The moved names, from :mod:`ww_callbacks.integrations.keras_target`."""
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ww_callbacks.integrations import keras_target

    return getattr(keras_target, name)
