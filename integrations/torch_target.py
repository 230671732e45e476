"""What policies may change in a torch model: weights, and per-layer learning rates that survive
every ``torch.optim.lr_scheduler`` (the torch :class:`~ww_callbacks.policies.Target`, used by the
Lightning, plain-torch and Hugging Face integrations; also importable as
``ww_callbacks.policies.TorchTarget``).

Weights: the analysis reads a torch weight as stored (``LayerWeights.weight`` is the parameter,
or a view of it such as one of the q/k/v slices of a packed attention projection), so the inverse
of its layout is a copy into that same tensor (:meth:`TorchTarget.set_layer_weight`). The one
torch layout change, a convolution's ``(out, in, *k)`` into per-position matrices, happens only
inside a policy's computation: :func:`ww_callbacks.matrices.oriented_stack` and its inverse
:func:`ww_callbacks.matrices.from_oriented_stack`, side by side.

A scheduler recomputes ``lr`` from values of its own (``base_lrs``; ``initial_lr``, ``max_lr``,
``min_lr`` of each param group for OneCycleLR; LambdaLR and CosineAnnealingWarmRestarts start
from ``base_lrs`` at every step), so a plain edit of ``group["lr"]`` is undone at its next step.
:func:`scale_param_group` scales all of them together, which makes the multiplier stick.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ww_callbacks.layers import LayerWeights, extract_layers, select_layers

#: The param-group key :func:`param_groups_per_layer` tags each group with.
LAYER_KEY = "ww_layer"
#: The param-group key holding the multiplier in effect.
SCALE_KEY = "ww_lr_scale"
_GROUP_LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


def _scaled(value: Any, factor: float) -> Any:
    if hasattr(value, "mul_"):  # a tensor lr (capturable optimizers): keep it a tensor
        return value.mul_(factor)
    return value * factor


def scale_param_group(optimizer: Any, index: int, factor: float,
                      schedulers: Sequence[Any] = ()) -> None:
    """Multiply the learning rate of ``optimizer.param_groups[index]`` by ``factor`` for good:
    the group's ``lr`` and the schedule's anchors (``initial_lr``, ``max_lr``, ``min_lr`` in the
    group; ``base_lrs``, ``_last_lr``, ``min_lrs`` of each scheduler of this optimizer)."""
    group = optimizer.param_groups[index]
    for key in _GROUP_LR_KEYS:
        if key in group and group[key] is not None:
            group[key] = _scaled(group[key], factor)
    for scheduler in schedulers:
        if getattr(scheduler, "optimizer", None) is not optimizer:
            continue
        for attr in ("base_lrs", "_last_lr", "min_lrs"):
            values = getattr(scheduler, attr, None)
            if isinstance(values, list) and index < len(values):
                values[index] = _scaled(values[index], factor)


def _watched(model: Any, layers: Any = None, **limits: Any) -> list[LayerWeights]:
    found, _ = extract_layers(model)
    kept, _ = select_layers(found, layers, **limits)
    return kept


def _is_dtensor(tensor: Any) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (without importing torch.distributed)."""
    import sys

    dtensor = getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)
    return dtensor is not None and isinstance(tensor, dtensor)


def _owner_bias(model: Any) -> dict[int, Any]:
    """id(weight parameter) -> the bias of the same module (when it has one)."""
    out = {}
    for module in model.modules():
        weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
        if weight is not None and hasattr(bias, "requires_grad"):
            out[id(weight)] = bias
    return out


def param_groups_per_layer(model: Any, layers: Any = None, *, min_evals: int = 8,
                           max_evals: int = 15000, max_N: int = 50000,
                           **group_options: Any) -> list[dict]:
    """Optimizer param groups with one group per watched layer (its weight and bias), tagged
    ``ww_layer=<longname>``, and a last group (``ww_layer=None``) with every other trainable
    parameter. ``group_options`` (``lr``, ``weight_decay``, ...) go into every group; the layer
    selection options are those of :func:`ww_callbacks.analyze`.

    ``torch.optim.AdamW(param_groups_per_layer(model, lr=1e-3))``, then give
    :class:`~ww_callbacks.policies.LayerLRBalancer` to the callback.
    """
    params = {id(p): p for p in model.parameters() if p.requires_grad}
    bias_of = _owner_bias(model)
    groups, taken = [], set()
    for layer in _watched(model, layers, min_evals=min_evals, max_evals=max_evals, max_N=max_N):
        weight = layer.weight
        if id(weight) not in params or id(weight) in taken:
            continue  # a slice of a shared parameter (packed attention) or frozen
        members = [weight]
        bias = bias_of.get(id(weight))
        if bias is not None and id(bias) in params and id(bias) not in taken:
            members.append(bias)
        taken.update(id(p) for p in members)
        groups.append({"params": members, LAYER_KEY: layer.longname, **group_options})
    rest = [p for pid, p in params.items() if pid not in taken]
    if rest:
        groups.append({"params": rest, LAYER_KEY: None, **group_options})
    return groups


class TorchTarget:
    """A torch model, its optimizers and their schedulers, as policies may change them.

    ``layers`` and the limits select the watched layers (as the watcher does). Param groups are
    matched to layers by the ``ww_layer`` tag of :func:`param_groups_per_layer` or, for groups
    built otherwise, by holding a watched layer's weight; a group shared by several watched
    layers gets the mean of their multipliers.
    """

    def __init__(self, model: Any, optimizers: Iterable[Any] = (), schedulers: Iterable[Any] = (),
                 *, layers: Any = None, min_evals: int = 8, max_evals: int = 15000,
                 max_N: int = 50000):
        self.model = model
        self.optimizers = [opt for opt in optimizers if opt is not None]
        self.schedulers = [s for s in schedulers if s is not None]
        self._layers = {layer.longname: layer for layer in _watched(
            model, layers, min_evals=min_evals, max_evals=max_evals, max_N=max_N)}
        self._groups: list[tuple[Any, int, list[str]]] | None = None

    # ------------------------------------------------------------------ weights

    def get_state(self) -> dict[str, Any]:
        """Host copies of every tensor of ``model.state_dict()``."""
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Load a state from :meth:`get_state` back into the model (in place)."""
        self.model.load_state_dict(state)

    def layer_names(self) -> list[str]:
        """The watched layers."""
        return list(self._layers)

    def layer_weight(self, longname: str) -> LayerWeights:
        """The live weight of one watched layer (a view of its parameter). A DTensor (FSDP2,
        tensor parallel) comes back whole: a collective, every rank calls it for the same
        layers (the policies of a distributed watcher decide the same on every rank)."""
        layer = self._layers[longname]
        if _is_dtensor(layer.weight):
            from dataclasses import replace

            return replace(layer, weight=layer.weight.detach().full_tensor())
        return layer

    def set_layer_weight(self, longname: str, weight: np.ndarray) -> None:
        """Overwrite one layer's weight in place (dtype and device kept), given in the layout of
        :meth:`layer_weight`, i.e. as stored: the copy goes into the same tensor or view. A
        DTensor gets rank 0's ``weight`` cut into its own shards (a collective, as
        :meth:`layer_weight`)."""
        import torch

        live = self._layers[longname].weight
        new = torch.as_tensor(np.asarray(weight), dtype=live.dtype).to(live.device)
        if _is_dtensor(live):
            from torch.distributed.tensor import distribute_tensor

            new = distribute_tensor(new, live.device_mesh, live.placements)
        with torch.no_grad():
            live.copy_(new)

    # ------------------------------------------------------------------ learning rates

    def _group_layers(self) -> list[tuple[Any, int, list[str]]]:
        """(optimizer, group index, layers) for every group that steers exactly one watched
        parameter (the q/k/v slices of a packed attention weight count as one)."""
        if self._groups is None:
            by_param: dict[int, list[str]] = {}
            for name, layer in self._layers.items():
                base = getattr(layer.weight, "_base", None)
                by_param.setdefault(id(base if base is not None else layer.weight), []).append(name)
            self._groups = []
            for opt in self.optimizers:
                for i, group in enumerate(opt.param_groups):
                    if group.get(LAYER_KEY) is not None:
                        names = [group[LAYER_KEY]] if group[LAYER_KEY] in self._layers else []
                    else:
                        owned = [by_param[id(p)] for p in group["params"] if id(p) in by_param]
                        names = owned[0] if len(owned) == 1 else []
                    if names:
                        self._groups.append((opt, i, names))
        return self._groups

    def lr_layers(self) -> list[str]:
        """Watched layers that have a param group to steer."""
        return sorted({n for _, _, names in self._group_layers() for n in names})

    def set_lr_scales(self, scales: Mapping[str, float]) -> None:
        """Set each listed layer's multiplier (relative to the unscaled schedule)."""
        for opt, i, names in self._group_layers():
            wanted = [scales[n] for n in names if n in scales]
            if not wanted:
                continue
            group = opt.param_groups[i]
            new = float(sum(wanted) / len(wanted))
            old = float(group.get(SCALE_KEY, 1.0))
            if new != old:
                scale_param_group(opt, i, new / old, self.schedulers)
                group[SCALE_KEY] = new
