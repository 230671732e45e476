"""Tied weights: one matrix that two modules share (nanoGPT's and GPT-2's
``lm_head.weight is transformer.wte.weight``, T5's shared embedding, an encoder/decoder pair).

WeightWatcher 0.7.7 analyses such a matrix once per module, so it counts twice in the means, the
alerts and the heatmap. Here (``tied="once"``, the default) it is analysed once: one row under the
first name (model order), the other names in that row's ``aliases`` and listed as skipped with the
reason ``tied to <first name>``. ``tied="each"`` keeps WeightWatcher's behaviour (one row per
module, all the same).

Two weights are tied when they are the same memory: the same torch storage at the same offset
with the same strides, or the same numpy buffer, read as the same matrix (a transposed view of
the other counts too: it has the same spectrum). Composite weights (LoRA, ``W - W_base``) and
shape-only stand-ins are never merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .base import LayerWeights
from .skips import Skip

#: The values of the ``tied`` option.
TIED_VALUES = ("once", "each")


def check_tied(tied: str) -> str:
    """``tied`` when it is one of :data:`TIED_VALUES`; a clear error otherwise."""
    if tied not in TIED_VALUES:
        raise ValueError(f"tied must be one of {TIED_VALUES} ('once': a shared weight is "
                         f"analysed once; 'each': once per module, as WeightWatcher), not {tied!r}")
    return tied


def memory_key(weight: Any) -> tuple | None:
    """What identifies the memory a weight reads (None when it cannot be told: composites,
    meta or distributed tensors, empty tensors)."""
    shape = getattr(weight, "shape", None)
    if shape is None:
        return None
    try:
        if hasattr(weight, "untyped_storage") and type(weight).__name__ in ("Tensor",
                                                                             "Parameter"):
            if weight.device.type == "meta" or weight.numel() == 0:
                return None
            layout = tuple(sorted(zip(weight.shape, weight.stride(), strict=True)))
            return ("torch", str(weight.device), weight.untyped_storage().data_ptr(),
                    weight.storage_offset(), layout, str(weight.dtype))
        import numpy as np

        if isinstance(weight, np.ndarray) and weight.size:
            layout = tuple(sorted(zip(weight.shape, weight.strides, strict=True)))
            return ("numpy", weight.__array_interface__["data"][0], layout, str(weight.dtype))
    except (RuntimeError, TypeError, ValueError, AttributeError):  # unusual tensor subclasses
        return None
    return None


def merge_tied(layers: Sequence[LayerWeights], tied: str = "once",
               order: Sequence[str] | None = None) -> tuple[list[LayerWeights], list[Skip]]:
    """``layers`` with each tied weight once (``tied="once"``): the first row keeps it and lists
    the others' longnames in ``aliases``; the others become :class:`Skip` records "tied to
    <first>". ``order``: names in model order when ``layers`` are in another order (a checkpoint
    read in natural-sort order), so the first name is the model's. ``tied="each"`` returns the
    layers unchanged."""
    if check_tied(tied) == "each":
        return list(layers), []
    groups: dict[tuple, list[int]] = {}
    for i, layer in enumerate(layers):
        key = memory_key(layer.weight)
        if key is not None:
            groups.setdefault(key, []).append(i)
    if all(len(g) == 1 for g in groups.values()):
        return list(layers), []
    rank = {name: i for i, name in enumerate(order or ())}

    def position(i: int) -> tuple:
        names = [p for p in layers[i].params if p in rank]
        return (rank[names[0]] if names else len(rank), i)

    keep: dict[int, LayerWeights] = {i: layer for i, layer in enumerate(layers)}
    skipped: list[Skip] = []
    for members in groups.values():
        if len(members) == 1:
            continue
        first, *others = sorted(members, key=position)
        aliases = tuple(layers[i].longname for i in others)
        keep[first] = replace(layers[first], aliases=layers[first].aliases + aliases)
        for i in others:
            layer = layers[i]
            skipped.append(Skip(layer.layer_id, layer.name, layer.longname,
                                f"tied to {layers[first].longname}", layer.params))
            del keep[i]
    return [keep[i] for i in sorted(keep)], skipped


__all__ = ["TIED_VALUES", "check_tied", "memory_key", "merge_tied"]
