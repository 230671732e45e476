"""Find the analysable weights of a ``torch.nn.Module``.

Numbering and types follow WeightWatcher 0.7.7 (``layer_id`` = index in ``named_modules()``,
type by ``isinstance`` or class-name substring), plus what the reference misses:
``nn.MultiheadAttention`` input projections (split into Q, K and V), ``Conv1d``/``Conv3d``
(per kernel-position slices), HF GPT-2 ``Conv1D`` (a 2-D dense matrix), recurrent layers
(:mod:`.recurrent`), transposed convolutions (:mod:`.transposed`) and peft LoRA layers
(:mod:`.lora`). Every parameter no row reads is listed as skipped with its reason.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .base import CONV, CONV1D, CONV2D, CONV3D, DENSE, EMBEDDING, MATRIX, LayerWeights
from .skips import Skip

_CONV_NDIM = {CONV1D: 3, CONV2D: 4, CONV3D: 5}


def _type_of(module: Any) -> str | None:
    """Reference-compatible layer type of a module, or None when it holds no analysable weight."""
    import torch.nn as nn

    typestr = str(type(module)).lower()
    if isinstance(module, nn.Linear) or "linear" in typestr:
        return DENSE
    if isinstance(module, nn.Conv1d) or "conv1d" in typestr:
        return CONV1D
    if isinstance(module, nn.Conv2d) or "conv2d" in typestr:
        return CONV2D
    if isinstance(module, nn.Conv3d) or "conv3d" in typestr:
        return CONV3D
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or "embedding" in typestr:
        return EMBEDDING
    return None


def _weight_of(module: Any) -> Any:
    """The module's weight tensor (quantized modules expose it as a method), or None."""
    weight = getattr(module, "weight", None)
    if callable(weight) and not hasattr(weight, "shape"):
        try:
            weight = weight()
        except Exception:  # a packed or exotic weight we cannot read: skip the layer
            return None
    return weight if hasattr(weight, "shape") else None


def _split_qkv(weight: Any, prefix: str, name: str, layer_id: int) -> list[LayerWeights]:
    """Split a packed ``(3E, E)`` in-projection into its Q, K and V matrices."""
    rows = weight.shape[0] // 3
    return [
        LayerWeights(layer_id, f"{name}.{part}_proj", f"{prefix}.{part}_proj", DENSE,
                     weight[i * rows:(i + 1) * rows], MATRIX)
        for i, part in enumerate("qkv")
    ]


def _attention_weights(module: Any, longname: str, name: str, layer_id: int) -> list[LayerWeights]:
    """Q, K, V projection matrices of an ``nn.MultiheadAttention`` (out_proj is its own module)."""
    packed = getattr(module, "in_proj_weight", None)
    if packed is not None:
        return _split_qkv(packed, longname, name, layer_id)
    out = []
    for part in "qkv":
        weight = getattr(module, f"{part}_proj_weight", None)
        if weight is not None:
            out.append(LayerWeights(layer_id, f"{name}.{part}_proj", f"{longname}.{part}_proj",
                                    DENSE, weight, MATRIX))
    return out


def module_layers(layer_id: int, longname: str, module: Any,
                  weight: Any = None) -> tuple[list[LayerWeights], Skip | None]:
    """The analysable weights of one module (several for an attention's Q, K, V), or the reason
    it is passed over. ``weight``: the tensor to use instead of the module's own (a sharded
    model's full copy or a shape-only stand-in; an attention module takes a dict attribute ->
    tensor, see :func:`weight_attributes`)."""
    import torch.nn as nn

    name = longname.split(".")[-1] if longname else ""
    if isinstance(module, nn.MultiheadAttention):
        if weight is None:
            return _attention_weights(module, longname, name, layer_id), None
        if "in_proj_weight" in weight:
            return _split_qkv(weight["in_proj_weight"], longname, name, layer_id), None
        return [LayerWeights(layer_id, f"{name}.{part}_proj", f"{longname}.{part}_proj", DENSE,
                             weight[f"{part}_proj_weight"], MATRIX)
                for part in "qkv" if f"{part}_proj_weight" in weight], None
    the_type = _type_of(module)
    if the_type is None:
        return [], None
    if weight is None:
        weight = _weight_of(module)
    if weight is None:
        if getattr(module, "weight", None) is not None:
            return [], Skip(layer_id, name, longname, "weight could not be read")
        return [], None
    ndim = len(weight.shape)
    if the_type in _CONV_NDIM and ndim == 2:
        # HF GPT-2 ``Conv1D`` stores a plain (in, out) dense matrix.
        return [LayerWeights(layer_id, name, longname, DENSE, weight, MATRIX)], None
    if the_type in _CONV_NDIM and ndim == _CONV_NDIM[the_type]:
        return [LayerWeights(layer_id, name, longname, the_type, weight, CONV)], None
    if the_type in (DENSE, EMBEDDING) and ndim == 2:
        return [LayerWeights(layer_id, name, longname, the_type, weight, MATRIX)], None
    reason = f"{the_type} weight of shape {tuple(weight.shape)} is not supported"
    return [], Skip(layer_id, name, longname, reason)


def weight_attributes(module: Any) -> list[str]:
    """The parameter attributes :func:`module_layers` reads from ``module`` (none when it holds
    no analysable weight)."""
    import torch.nn as nn

    if isinstance(module, nn.MultiheadAttention):
        if getattr(module, "in_proj_weight", None) is not None:
            return ["in_proj_weight"]
        return [f"{part}_proj_weight" for part in "qkv"
                if getattr(module, f"{part}_proj_weight", None) is not None]
    if _type_of(module) is None or getattr(module, "weight", None) is None:
        return []
    return ["weight"]


def _unread_reason(module: Any, pname: str, param: Any) -> str:
    """Why a parameter no row reads is passed over, in words."""
    cls = type(module).__name__
    shape = tuple(int(d) for d in param.shape)
    if len(shape) < 2:
        what = "bias" if "bias" in pname else "normalisation scale" \
            if "norm" in cls.lower() else "vector"
        return f"{len(shape)}-D parameter ({what} of {cls})"
    if "norm" in cls.lower():
        return f"parameter of normalisation layer {cls}"
    return f"{cls}.{pname} of shape {shape}: layer type not supported"


def torch_layers(model: Any, *, adapters: str = "effective") -> tuple[list[LayerWeights],
                                                                      list[Skip]]:
    """All analysable weights of a torch module, and everything passed over with the reason.

    Every parameter of the model ends up either in a row's ``params`` or in a :class:`Skip`
    (biases, normalisation scales and other 1-D parameters included), so nothing is dropped
    silently. ``adapters``: how peft LoRA layers are analysed (see :mod:`ww_callbacks.layers.lora`).
    Wrappers (DDP, FSDP units, ``torch.compile``, ...) are seen through: names and ids are those
    of the bare model, the same a sharded analysis and the policies use.
    """
    import torch.nn as nn

    from .lora import check_adapters, is_lora_layer, lora_rows
    from .recurrent import torch_recurrent_rows
    from .transposed import is_transposed_conv, transposed_conv_row
    from .wrappers import bare_modules

    check_adapters(adapters)
    modules = list(bare_modules(model))
    param_names: dict[int, str] = {}  # id(param) -> its name in the bare model
    owner: dict[int, tuple[int, str, Any]] = {}  # id(param) -> (layer_id, param name, module)
    for layer_id, (longname, module) in enumerate(modules):
        for pname, param in module.named_parameters(recurse=False):
            if id(param) not in param_names:
                param_names[id(param)] = f"{longname}.{pname}" if longname else pname
                owner[id(param)] = (layer_id, pname, module)
    layers: list[LayerWeights] = []
    skipped: list[Skip] = []
    inside_lora: set[int] = set()  # modules a LoRA layer owns (base_layer, lora_A.x, ...)

    def names(*tensors: Any) -> tuple[str, ...]:
        return tuple(param_names[id(t)] for t in tensors if id(t) in param_names)

    for layer_id, (longname, module) in enumerate(modules):
        if id(module) in inside_lora:
            continue
        name = longname.split(".")[-1] if longname else ""
        if is_lora_layer(module):
            inside_lora.update(id(m) for m in module.modules())
            rows, skips = lora_rows(module, longname, name, layer_id, adapters, param_names)
            layers.extend(rows)
            skipped.extend(skips)
            continue
        if isinstance(module, nn.RNNBase):
            layers.extend(torch_recurrent_rows(module, longname, name, layer_id, param_names))
            continue
        if is_transposed_conv(module):
            row = transposed_conv_row(module, longname, name, layer_id, names(module.weight))
            if isinstance(row, str):
                skipped.append(Skip(layer_id, name, longname, row, names(module.weight)))
            else:
                layers.append(row)
            continue
        rows, skip = module_layers(layer_id, longname, module)
        if isinstance(module, nn.MultiheadAttention):
            packed = getattr(module, "in_proj_weight", None)
            for row in rows:
                part = row.longname.rsplit(".", 1)[-1][0]  # "q_proj" -> "q"
                tensor = packed if packed is not None else getattr(module, f"{part}_proj_weight")
                layers.append(replace(row, params=names(tensor)))
            continue
        raw = getattr(module, "weight", None)
        params = names(raw) if hasattr(raw, "shape") else ()
        layers.extend(replace(row, params=params) for row in rows)
        if skip is not None:
            skipped.append(replace(skip, params=params))
    listed = {p for row in layers for p in row.params} | {p for s in skipped for p in s.params}
    for pid, full in param_names.items():
        if full in listed:
            continue
        layer_id, pname, module = owner[pid]
        short = full.split(".")[-1]
        param = getattr(module, pname)
        skipped.append(Skip(layer_id, short, full, _unread_reason(module, pname, param), (full,)))
    return layers, skipped
