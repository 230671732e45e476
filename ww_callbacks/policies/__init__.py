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

from importlib import import_module
from typing import Any

from .base import Policy, Target
from .early_stopping import STOP_CODES, STOP_REASON, HTSREarlyStopping
from .lr_balance import LR_SCALE_PREFIX, LayerLRBalancer, tempbalance_scales
from .policy_set import PolicySet
from .traps import TrapRemoval, count_traps, svd_sharpness

#: Public name -> the integration module that defines it (imported when the name is first used).
_FRAMEWORK_NAMES = {
    "TorchTarget": "ww_callbacks.integrations.torch_target",
    "param_groups_per_layer": "ww_callbacks.integrations.torch_target",
    "scale_param_group": "ww_callbacks.integrations.torch_target",
    "KerasTarget": "ww_callbacks.integrations.keras_target",
    "multi_optimizer_per_layer": "ww_callbacks.integrations.keras_target",
}

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
    module = _FRAMEWORK_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
