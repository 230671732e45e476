"""Deltas: analyse ``W - W_base`` per layer (WeightWatcher's ``base_model``), e.g. what a
fine-tune changed, or (``Watcher(base="initial")``) what training changed since its start.

Layers are paired by ``longname``; when the model's longnames carry a wrapper's prefix (a peft
model's ``base_model.model.``), leading dotted parts are dropped until a base layer matches. A layer
with no partner in the base, or a partner of another shape, is not analysed and is listed as
skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from .base import LayerWeights
from .composite import difference
from .skips import Skip


def _partner(longname: str, base: Mapping[str, Any]) -> str | None:
    """The base longname paired with ``longname`` (exact, else without leading dotted parts)."""
    parts = longname.split(".")
    for start in range(len(parts)):
        candidate = ".".join(parts[start:])
        if candidate in base:
            return candidate
    return None


def subtract_base(layers: list[LayerWeights],
                  base: Mapping[str, Any]) -> tuple[list[LayerWeights], list[Skip]]:
    """``layers`` with each weight replaced by ``weight - base[longname]`` (a lazy
    :class:`~ww_callbacks.layers.composite.Difference`), and the layers that have no usable
    partner in ``base`` (``longname -> weight``, in the same layout as the layer's) as skips."""
    kept: list[LayerWeights] = []
    skipped: list[Skip] = []
    for layer in layers:
        partner = _partner(layer.longname, base)
        if partner is None:
            skipped.append(Skip(layer.layer_id, layer.name, layer.longname,
                                "no layer of this name in base=", layer.params))
            continue
        try:
            weight = difference(layer.weight, base[partner])
        except ValueError as err:
            skipped.append(Skip(layer.layer_id, layer.name, layer.longname,
                                f"base= layer {partner}: {err}", layer.params))
            continue
        kept.append(replace(layer, weight=weight))
    return kept, skipped


def base_weights(layers: list[LayerWeights]) -> dict[str, Any]:
    """``longname -> weight`` of extracted base layers (references, not copies)."""
    return {layer.longname: layer.weight for layer in layers}
