"""Deprecated path: the torch target moved to :mod:`ww_callbacks.integrations.torch_target`
(framework code lives with its framework). Import ``TorchTarget``, ``param_groups_per_layer`` and
``scale_param_group`` from ``ww_callbacks.policies`` instead; this module still gives them, with a
``DeprecationWarning``."""

import warnings

from ww_callbacks.integrations.torch_target import (  # noqa: F401
    LAYER_KEY,
    SCALE_KEY,
    TorchTarget,
    param_groups_per_layer,
    scale_param_group,
)

warnings.warn("ww_callbacks.policies.torch_target moved to ww_callbacks.integrations.torch_target;"
              " import TorchTarget, param_groups_per_layer and scale_param_group from "
              "ww_callbacks.policies", DeprecationWarning, stacklevel=2)
