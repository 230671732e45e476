"""Hugging Face ``peft`` LoRA layers of a torch model.

A LoRA-wrapped ``Linear``, ``Embedding`` or ``Conv1d/2d/3d`` gives, by ``adapters=``:

- ``"effective"`` (default): one row, the weight the layer applies, ``W0 + sum_k s_k * B_k @ A_k``
  over its active adapters (what ``merge_and_unload()`` writes), longname = the LoRA module's;
- ``"only"``: the update ``s_k * B_k @ A_k`` of each active adapter alone, longname
  ``<module>.lora_BA.<adapter>`` (WeightWatcher's ``peft=True`` rows, which leave out ``s_k``);
- ``"both"``: both.

Rows have ``layer_type="lora"`` and a :class:`~ww_callbacks.layers.composite.LoraWeight` weight
that references the live tensors (nothing is copied or combined at extraction); a snapshot copies
the frozen ``W0`` once and the adapters every time. A merged layer (``merge_adapter()``) already
holds the update in ``W0``; disabled adapters leave ``W0``. Not supported, and listed as skipped
with the reason: LoRA variants (DoRA, ...), grouped convolutions, quantized base layers and any
other peft layer type. peft is never imported here: the module is recognised only when the user
already imported it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from .base import CONV, LORA, MATRIX, LayerWeights
from .composite import LORA_CONV, LORA_EMBEDDING, LORA_LINEAR, LoraWeight
from .skips import Skip

ADAPTER_MODES = ("effective", "only", "both")


def is_lora_layer(module: Any) -> bool:
    """True for a peft ``LoraLayer`` (False when peft was never imported)."""
    peft_lora = sys.modules.get("peft.tuners.lora.layer")
    return peft_lora is not None and isinstance(module, peft_lora.LoraLayer)


def check_adapters(adapters: str) -> str:
    """``adapters`` validated (``ValueError`` naming the accepted values)."""
    if adapters not in ADAPTER_MODES:
        raise ValueError(f"adapters must be one of {ADAPTER_MODES}, not {adapters!r}")
    return adapters


def _kind_and_parts(module: Any, adapter: str) -> tuple[str, Any, Any] | str:
    """``(kind, A, B)`` of one adapter, or the reason it cannot be analysed."""
    peft_lora = sys.modules["peft.tuners.lora.layer"]
    variants = getattr(module, "lora_variant", {}) or {}
    if adapter in variants:
        return f"LoRA variant {type(variants[adapter]).__name__} is not supported"
    if getattr(module, "use_dora", {}).get(adapter, False):
        return "DoRA adapters are not supported"
    if isinstance(module, peft_lora.Embedding):
        return LORA_EMBEDDING, module.lora_embedding_A[adapter], module.lora_embedding_B[adapter]
    conv_cls = getattr(peft_lora, "_ConvNd", None)
    if conv_cls is not None and isinstance(module, conv_cls):
        if getattr(module.get_base_layer(), "groups", 1) != 1:
            return "grouped convolution LoRA is not supported"
        b = module.lora_B[adapter].weight
        if any(int(s) != 1 for s in b.shape[2:]):
            return f"LoRA B kernel of shape {tuple(b.shape)} is not 1x1"
        return LORA_CONV, module.lora_A[adapter].weight, b
    if type(module) is peft_lora.Linear:
        return LORA_LINEAR, module.lora_A[adapter].weight, module.lora_B[adapter].weight
    return f"peft {type(module).__name__} layers are not supported"


def lora_rows(module: Any, longname: str, name: str, layer_id: int, adapters: str,
              param_names: Mapping[int, str]) -> tuple[list[LayerWeights], list[Skip]]:
    """The rows of one peft LoRA layer for ``adapters`` (see the module docstring), and the
    parameters passed over with the reason (the frozen base with ``"only"``, unsupported
    adapters)."""
    base_layer = module.get_base_layer()
    base = getattr(base_layer, "weight", None)
    if base is None or not hasattr(base, "shape") or base.dtype.is_floating_point is False:
        return [], [Skip(layer_id, name, longname, f"LoRA base layer {type(base_layer).__name__} "
                         "has no float weight (quantized base layers are not supported)")]

    def names_of(*tensors: Any) -> tuple[str, ...]:
        return tuple(param_names[id(t)] for t in tensors if id(t) in param_names)

    base_name = names_of(base)
    merged = set(getattr(module, "merged_adapters", []) or [])
    active = [] if getattr(module, "disable_adapters", False) else list(module.active_adapters)
    known = set(getattr(module, "scaling", {}))
    rows: list[LayerWeights] = []
    skipped: list[Skip] = []
    parts: dict[str, Any] = {}
    scalings: dict[str, float] = {}
    kind = LORA_LINEAR
    for adapter in [a for a in active if a in known]:
        found = _kind_and_parts(module, adapter)
        if isinstance(found, str):
            return [], [Skip(layer_id, name, longname, found,
                             names_of(base, *_adapter_tensors(module, adapter)))]
        kind, a, b = found
        parts[f"A.{adapter}"], parts[f"B.{adapter}"] = a, b
        scalings[adapter] = float(module.scaling[adapter])
    layout = CONV if kind == LORA_CONV else MATRIX
    shape = tuple(int(s) for s in base.shape)
    fan_in_fan_out = bool(getattr(module, "fan_in_fan_out", False))
    adapter_params = tuple(p for t in parts.values() for p in names_of(t))
    if adapters in ("effective", "both"):
        # merged adapters are already inside W0: adding them again would count them twice
        unmerged = {k: v for k, v in scalings.items() if k not in merged}
        eff_parts = {"base": base, **{f"{ab}.{k}": parts[f"{ab}.{k}"] for k in unmerged
                                       for ab in "AB"}}
        weight = LoraWeight(eff_parts, scalings=unmerged, kind=kind,
                            fan_in_fan_out=fan_in_fan_out, weight_shape=shape)
        rows.append(LayerWeights(layer_id, name, longname, LORA, weight, layout,
                                 base_name + adapter_params))
    if adapters in ("only", "both"):
        for adapter, scale in scalings.items():
            one = {f"A.{adapter}": parts[f"A.{adapter}"], f"B.{adapter}": parts[f"B.{adapter}"]}
            weight = LoraWeight(one, scalings={adapter: scale}, kind=kind,
                                fan_in_fan_out=fan_in_fan_out, weight_shape=shape)
            rows.append(LayerWeights(layer_id, f"{name}.lora_BA.{adapter}",
                                     f"{longname}.lora_BA.{adapter}", LORA, weight, layout,
                                     names_of(*one.values())))
        if adapters == "only" and base_name:
            skipped.append(Skip(layer_id, name, f"{longname}.base_layer", "frozen base weight of "
                                "a LoRA layer (adapters='only' analyses the update alone)",
                                base_name))
    return rows, skipped


def _adapter_tensors(module: Any, adapter: str) -> list[Any]:
    """Every parameter of one adapter (for the skip record of an unsupported one)."""
    out = []
    for attr in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B",
                 "lora_magnitude_vector"):
        holder = getattr(module, attr, None)
        if holder is None or adapter not in holder:
            continue
        item = holder[adapter]
        out.extend(item.parameters() if hasattr(item, "parameters") else [item])
    return out
