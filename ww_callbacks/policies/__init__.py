"""Policies: act on the metrics while training runs.

- :class:`HTSREarlyStopping`: stop when a layer is over-trained and trapped (or another rule),
  optionally restoring the best weights;
- :class:`LayerLRBalancer`: per-layer learning rates from alpha (TempBalance), on top of any
  scheduler; :func:`param_groups_per_layer` builds the param groups it needs;
- :class:`TrapRemoval`: remove correlation traps with the SVD-sharpness transform (opt-in).

Give them to any integration: ``WeightWatcherCallback(policies=[HTSREarlyStopping()])``.
They are framework-free: the integration hands them a :class:`~.base.Target` (torch:
:class:`TorchTarget`; Keras: :class:`~.keras_target.KerasTarget`).
"""

from .base import Policy, Target
from .early_stopping import STOP_CODES, STOP_REASON, HTSREarlyStopping
from .lr_balance import LR_SCALE_PREFIX, LayerLRBalancer, tempbalance_scales
from .policy_set import PolicySet
from .torch_target import TorchTarget, param_groups_per_layer, scale_param_group
from .traps import TrapRemoval, count_traps, svd_sharpness

__all__ = [
    "HTSREarlyStopping", "KerasTarget", "LR_SCALE_PREFIX", "LayerLRBalancer", "Policy",
    "PolicySet",
    "STOP_CODES", "STOP_REASON", "Target", "TorchTarget", "TrapRemoval", "count_traps",
    "multi_optimizer_per_layer", "param_groups_per_layer", "scale_param_group", "svd_sharpness",
    "tempbalance_scales",
]


def __getattr__(name: str):
    """``KerasTarget`` and ``multi_optimizer_per_layer`` import keras: only when asked for."""
    if name in ("KerasTarget", "multi_optimizer_per_layer"):
        from . import keras_target

        return getattr(keras_target, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
