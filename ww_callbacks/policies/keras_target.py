"""Deprecated path: the Keras target moved to :mod:`ww_callbacks.integrations.keras_target`
(framework code lives with its framework). Import ``KerasTarget`` and
``multi_optimizer_per_layer`` from ``ww_callbacks.policies`` instead; this module still gives
them, with a ``DeprecationWarning``."""

import warnings

from ww_callbacks.integrations.keras_target import (  # noqa: F401
    KerasTarget,
    multi_optimizer_per_layer,
)

warnings.warn("ww_callbacks.policies.keras_target moved to ww_callbacks.integrations.keras_target;"
              " import KerasTarget and multi_optimizer_per_layer from ww_callbacks.policies",
              DeprecationWarning, stacklevel=2)
