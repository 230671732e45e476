"""Policies: act on the metrics while training runs.

- :class:`HTSREarlyStopping`: stop when a layer is over-trained and trapped (or another rule),
  optionally restoring the best weights;
- :class:`LayerLRBalancer`: per-layer learning rates from alpha (TempBalance), on top of any
  scheduler; :func:`param_groups_per_layer` builds the param groups it needs;
- :class:`TrapRemoval`: remove correlation traps with the SVD-sharpness transform (opt-in).

Give them to any integration: ``WeightWatcherCallback(policies=[HTSREarlyStopping()])``.
They are framework-free: the integration hands them a :class:`~.base.Target`. The targets, which
change a framework's training state, live with their framework in ``ww_callbacks.integrations``
(:mod:`~ww_callbacks.integrations.torch_target`, :mod:`~ww_callbacks.integrations.keras_target`);
their public names are re-exported here on first use, so importing this package imports neither
torch nor keras.
"""

from typing import Any

from .base import Policy, Target
from .early_stopping import STOP_CODES, STOP_REASON, HTSREarlyStopping
from .lr_balance import LR_SCALE_PREFIX, LayerLRBalancer, tempbalance_scales
from .policy_set import PolicySet
from .traps import TrapRemoval, count_traps, svd_sharpness

#: Public names of the integrations' targets (imported when the name is first used).
_TORCH_NAMES = ("TorchTarget", "param_groups_per_layer", "scale_param_group")
_KERAS_NAMES = ("KerasTarget", "multi_optimizer_per_layer")

__all__ = [
    "HTSREarlyStopping", "KerasTarget", "LR_SCALE_PREFIX", "LayerLRBalancer", "Policy",
    "PolicySet",
    "STOP_CODES", "STOP_REASON", "Target", "TorchTarget", "TrapRemoval", "count_traps",
    "multi_optimizer_per_layer", "param_groups_per_layer", "scale_param_group", "svd_sharpness",
    "tempbalance_scales",
]


def __getattr__(name: str) -> Any:
    """The framework targets and their helpers, imported from ``ww_callbacks.integrations`` only
    when asked for."""
    if name in _TORCH_NAMES:
        from ww_callbacks.integrations import torch_target as module
    elif name in _KERAS_NAMES:
        from ww_callbacks.integrations import keras_target as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
