"""Deprecated path: the torch target moved to :mod:`ww_callbacks.integrations.torch_target`
(framework code lives with its framework). Import ``TorchTarget``, ``param_groups_per_layer`` and
``scale_param_group`` from ``ww_callbacks.policies`` instead; this module still gives them, with a
``DeprecationWarning``, imported from the integration when first asked for (the core itself
imports no integration)."""

import warnings
from typing import Any

_NAMES = ("LAYER_KEY", "SCALE_KEY", "TorchTarget", "param_groups_per_layer", "scale_param_group")

warnings.warn("ww_callbacks.policies.torch_target moved to ww_callbacks.integrations.torch_target;"
              " import TorchTarget, param_groups_per_layer and scale_param_group from "
              "ww_callbacks.policies", DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:
    """The moved names, from :mod:`ww_callbacks.integrations.torch_target`."""
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ww_callbacks.integrations import torch_target

    return getattr(torch_target, name)
