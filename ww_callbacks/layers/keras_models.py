"""Find the analysable weights of a Keras 3 model or layer.

The walk is a depth-first pre-order over ``layer._layers`` (nested models, the projections of
``MultiHeadAttention`` and other sublayers included; a layer reached twice is listed once, at its
first place), numbered from 0 with the root as 0, like ``torch.nn.Module.named_modules()``.
``longname`` is the path of layer names below the root joined with ``"."``.

Weights are read *effective*: a LoRA-enabled layer gives ``kernel + (alpha / rank) * A @ B`` and an
``int8``/``int4``-quantized layer gives its dequantized float kernel (``q / scale``, or the
grouped scale/zero-point map of sub-channel ``int4``). They are converted with
``keras.ops.convert_to_numpy``; convolution kernels ``(*k, in, out)`` are then transposed (a view)
to torch order ``(out, in, *k)``.

Each layout the analysis reads has its inverse next to it, for code that writes a changed weight
back (the Keras target of the policies): :func:`einsum_matrix` / :func:`einsum_kernel`,
:func:`conv_weight` / :func:`conv_kernel`, and per layer :func:`to_analysis_layout` /
:func:`from_analysis_layout`. :func:`walk_layers`, :func:`layer_kind` and :func:`layer_row` are
the walk, the classification and the reading of one layer.

Keras is imported lazily, inside the functions, so the package imports without it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from .base import CONV, CONV1D, CONV2D, CONV3D, DENSE, EMBEDDING, MATRIX, LayerWeights
from .skips import Skip

_CONV_TYPE_BY_RANK = {1: CONV1D, 2: CONV2D, 3: CONV3D}

#: ``MultiHeadAttention`` keeps its projections in these attributes; they are walked as children
#: even in a Keras version that does not track them in ``_layers``.
_MHA_SUBLAYERS = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")

#: ``"<input>,<kernel>-><output>"``, the input and output possibly with ``...``.
_EQUATION = re.compile(r"^([A-Za-z.]*),([A-Za-z.]*)->([A-Za-z.]*)$")


class _Unreadable(Exception):
    """A weight that exists but cannot be read as a float array; the message is the reason."""


# --------------------------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------------------------


def _children(layer: Any) -> list[Any]:
    """Direct sublayers of ``layer``, in the order Keras tracks them."""
    import keras

    children = list(getattr(layer, "_layers", None) or [])
    if isinstance(layer, keras.layers.MultiHeadAttention):
        known = {id(child) for child in children}
        for attr in _MHA_SUBLAYERS:
            sub = getattr(layer, attr, None)
            if isinstance(sub, keras.layers.Layer) and id(sub) not in known:
                children.append(sub)
                known.add(id(sub))
    return children


def walk_layers(root: Any) -> Iterator[tuple[int, str, Any]]:
    """``(layer_id, longname, layer)`` for the root and every sublayer, depth-first pre-order.

    A layer object reached twice (shared) is yielded once, at its first place. Longnames are made
    unique by appending ``_1``, ``_2``, ... should two siblings carry the same name.
    """
    seen: set[int] = set()
    used: set[str] = set()
    stack: list[tuple[str, Any]] = [("", root)]
    layer_id = 0
    while stack:
        prefix, layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        longname = prefix
        if longname in used:
            k = 1
            while f"{prefix}_{k}" in used:
                k += 1
            longname = f"{prefix}_{k}"
        used.add(longname)
        yield layer_id, longname, layer
        layer_id += 1
        for child in reversed(_children(layer)):
            child_name = str(getattr(child, "name", type(child).__name__))
            stack.append((f"{longname}.{child_name}" if longname else child_name, child))


# --------------------------------------------------------------------------------------------
# Reading weights
# --------------------------------------------------------------------------------------------


def _to_numpy(value: Any) -> np.ndarray:
    """A Keras variable or backend tensor as a numpy array (a copy)."""
    import keras

    return np.asarray(keras.ops.convert_to_numpy(value))


def _lora_delta(layer: Any, a_attr: str, b_attr: str) -> np.ndarray | None:
    """``(alpha / rank) * A @ B`` of a LoRA-enabled layer, or None when LoRA is off."""
    if not getattr(layer, "lora_enabled", False):
        return None
    a = _to_numpy(getattr(layer, a_attr))
    b = _to_numpy(getattr(layer, b_attr))
    return (layer.lora_alpha / layer.lora_rank) * np.matmul(a, b)


def _dequantize(layer: Any, mode: str, attr: str) -> np.ndarray:
    """The float kernel (``attr="kernel"``) or table (``"embeddings"``) of an int8/int4 layer.

    Mirrors how Keras 3 itself dequantizes in ``call``: ``q / scale`` per output channel (per row
    for an embedding table), the grouped scale and zero point for sub-channel int4, and for
    ``EinsumDense`` the scale brought back to the kernel's layout.
    """
    import keras
    from keras import ops

    is_embedding = attr == "embeddings"
    q = getattr(layer, f"_{attr}")
    scale = getattr(layer, f"{attr}_scale")
    is_einsum = isinstance(layer, keras.layers.EinsumDense)
    if mode == "int4":
        columns = layer._int4_unpacked_column_size if is_einsum else layer._orig_output_dim
        q = keras.quantizers.unpack_int4(q, columns, axis=-1)
        block_size = getattr(layer, "_int4_block_size", None)
        if block_size is not None and block_size != -1:
            from keras.src.quantizers.quantizers import dequantize_with_sz_map

            zero = getattr(layer, f"{attr}_zero")
            weight = dequantize_with_sz_map(ops.cast(q, "float32"), scale, zero, layer.g_idx,
                                            group_axis=-1 if is_embedding else 0)
        elif is_embedding:
            weight = ops.divide(ops.cast(q, "float32"), ops.expand_dims(scale, axis=-1))
        else:
            weight = ops.divide(ops.cast(q, "float32"), scale)
        if is_einsum:
            weight = ops.reshape(weight, layer.original_kernel_shape)
    elif is_embedding:
        weight = ops.divide(ops.cast(q, "float32"), ops.expand_dims(scale, axis=-1))
    elif is_einsum:
        weight = ops.divide(ops.cast(q, "float32"), layer._adjust_scale_for_dequant(scale))
    else:
        weight = ops.divide(ops.cast(q, "float32"), scale)
    return _to_numpy(weight)


def _effective_weight(layer: Any, attr: str) -> np.ndarray:
    """The weight ``layer.<attr>`` as the layer applies it: LoRA merged, quantization undone.

    Raises :class:`_Unreadable` for calibrated GPTQ/AWQ layers and for anything Keras changed.
    """
    mode = getattr(layer, "quantization_mode", None)
    if mode in (None, "float8"):
        # The property merges LoRA itself; float8 keeps a float kernel (only activations and
        # gradients are scaled).
        return _to_numpy(getattr(layer, attr))
    if mode in ("gptq", "awq"):
        if not getattr(layer, f"is_{mode}_calibrated", False):
            return _to_numpy(getattr(layer, attr))  # still the float kernel before calibration
        raise _Unreadable(f"{mode}-quantized {attr}: packed {mode} kernels are not supported")
    if mode not in ("int8", "int4"):
        raise _Unreadable(f"{attr} quantized in unknown mode {mode!r}")
    try:
        weight = _dequantize(layer, mode, attr)
    except Exception as exc:  # a Keras internals change: say so instead of failing the analysis
        raise _Unreadable(f"could not dequantize the {mode} {attr}: {exc}") from exc
    prefix = "lora_embeddings" if attr == "embeddings" else "lora_kernel"
    delta = _lora_delta(layer, f"{prefix}_a", f"{prefix}_b")
    if delta is not None:
        weight = (weight + delta).astype(weight.dtype, copy=False)
    return weight


# --------------------------------------------------------------------------------------------
# Layouts: a kernel as the analysis reads it, and back (each pair side by side)
# --------------------------------------------------------------------------------------------


def _einsum_axes(equation: str, shape: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """``(rows, cols)``: the kernel axes of an ``EinsumDense`` equation that are contracted with
    the input and those carried to the output, each in kernel order; ``ValueError`` with the
    reason when the kernel of ``shape`` does not split so."""
    match = _EQUATION.match(equation.replace(" ", ""))
    if match is None:
        raise ValueError(f"equation {equation!r} is not of the form 'input,kernel->output'")
    inputs, kernel_axes, outputs = match.groups()
    inputs, outputs = inputs.replace("...", ""), outputs.replace("...", "")
    if "." in kernel_axes or "." in inputs or "." in outputs:
        raise ValueError(f"equation {equation!r}: an ellipsis in the kernel is not supported")
    if len(kernel_axes) != len(shape) or len(set(kernel_axes)) != len(kernel_axes):
        raise ValueError(f"equation {equation!r} does not match a kernel of shape {shape}")
    rows = [i for i, c in enumerate(kernel_axes) if c in inputs and c not in outputs]
    cols = [i for i, c in enumerate(kernel_axes) if c in outputs and c not in inputs]
    other = [c for i, c in enumerate(kernel_axes) if i not in rows and i not in cols]
    if other:
        raise ValueError(f"equation {equation!r}: kernel axes {''.join(other)!r} are neither only "
                         "contracted with the input nor only carried to the output")
    if not rows or not cols:
        side = "input" if not rows else "output"
        raise ValueError(f"equation {equation!r}: the kernel has no {side} axis")
    return rows, cols


def einsum_matrix(equation: str, kernel: np.ndarray) -> np.ndarray:
    """An ``EinsumDense`` kernel as a 2-D ``(contracted, output)`` matrix (inverse:
    :func:`einsum_kernel`).

    Kernel axes summed with the input (in the input, not in the output) become the rows, those
    carried to the output (in the output, not in the input) the columns, each group in kernel
    order: ``"abc,cde->abde"`` with kernel ``(c, d, e)`` gives ``(c, d * e)``. Raises
    ``ValueError`` with the reason when the kernel cannot be split so (an axis shared by input and
    output, an axis summed only over the kernel, no axis on one side, a malformed equation).
    """
    rows, cols = _einsum_axes(equation, tuple(kernel.shape))
    n_rows = math.prod(kernel.shape[i] for i in rows)
    n_cols = math.prod(kernel.shape[i] for i in cols)
    return np.transpose(kernel, rows + cols).reshape(n_rows, n_cols)


def einsum_kernel(equation: str, matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`einsum_matrix`: a ``(contracted, output)`` matrix back to the
    ``EinsumDense`` kernel of ``shape``. ``ValueError`` when it does not fit."""
    shape = tuple(int(s) for s in shape)
    rows, cols = _einsum_axes(equation, shape)
    order = rows + cols
    if matrix.size != math.prod(shape):
        raise ValueError(f"weight of shape {matrix.shape} does not fit a kernel of shape {shape}")
    return np.transpose(matrix.reshape(tuple(shape[i] for i in order)), np.argsort(order))


def _conv_axes(rank: int, transposed: bool) -> list[int]:
    """The transpose that takes a Keras convolution kernel to torch order ``(out, in, *k)``:
    ``(*k, in, out)``, or ``(*k, out, in)`` for a transposed convolution."""
    spatial = list(range(rank))
    return [rank, rank + 1, *spatial] if transposed else [rank + 1, rank, *spatial]


def conv_weight(kernel: np.ndarray, *, transposed: bool = False) -> np.ndarray:
    """A Keras ``ConvND`` kernel ``(*k, in, out)`` (``ConvNDTranspose``: ``(*k, out, in)``) in
    torch order ``(out, in, *k)``, the layout of the analysis (a view; inverse:
    :func:`conv_kernel`)."""
    return np.transpose(kernel, _conv_axes(kernel.ndim - 2, transposed))


def conv_kernel(weight: np.ndarray, shape: tuple[int, ...], *,
                transposed: bool = False) -> np.ndarray:
    """The inverse of :func:`conv_weight`: a torch-order ``(out, in, *k)`` weight back to the
    Keras kernel of ``shape``. ``ValueError`` when it does not fit."""
    shape = tuple(int(s) for s in shape)
    axes = _conv_axes(len(shape) - 2, transposed)
    if tuple(weight.shape) != tuple(shape[a] for a in axes):
        raise ValueError(f"weight of shape {weight.shape} does not fit a kernel of shape {shape}")
    return np.transpose(weight, np.argsort(axes))


def to_analysis_layout(layer: Any, kernel: np.ndarray) -> np.ndarray:
    """The kernel (or embedding table) of a ``Dense``, ``Embedding``, ``EinsumDense`` or
    (transposed) convolution as the analysis reads it: 2-D as stored, the
    :func:`einsum_matrix`, or the :func:`conv_weight` (torch order). Inverse:
    :func:`from_analysis_layout`. ``ValueError`` with the reason for any other layer or a kernel
    that does not fit."""
    kind = layer_kind(layer)
    cls, shape = type(layer).__name__, tuple(kernel.shape)
    if kind == "einsum":
        return einsum_matrix(layer.equation, kernel)
    if kind in ("dense", "embedding"):
        if kernel.ndim != 2:
            raise ValueError(f"{cls}: {weight_attr(kind)} of shape {shape} is not 2-D")
        return kernel
    if kind in ("conv", "conv_transpose"):
        rank = kernel.ndim - 2
        if rank not in _CONV_TYPE_BY_RANK or rank != getattr(layer, "rank", rank):
            raise ValueError(f"{cls}: kernel of shape {shape} is not a 1-, 2- or 3-D convolution")
        return conv_weight(kernel, transposed=kind == "conv_transpose")
    raise ValueError(f"{cls}: layer type not supported")


def from_analysis_layout(layer: Any, weight: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`to_analysis_layout`: ``weight`` in the layout of the analysis back
    to the layer's kernel (or embedding table) of ``shape``. ``ValueError`` when it does not
    fit."""
    kind = layer_kind(layer)
    shape = tuple(int(s) for s in shape)
    if kind == "einsum":
        value = einsum_kernel(layer.equation, weight, shape)
    elif kind in ("dense", "embedding"):
        value = weight
    elif kind in ("conv", "conv_transpose"):
        value = conv_kernel(weight, shape, transposed=kind == "conv_transpose")
    else:
        raise ValueError(f"{type(layer).__name__}: layer type not supported")
    if tuple(value.shape) != shape:
        raise ValueError(f"weight of shape {value.shape} does not fit a kernel of shape {shape}")
    return value


# --------------------------------------------------------------------------------------------
# One layer
# --------------------------------------------------------------------------------------------


def layer_kind(layer: Any) -> str | None:
    """What a layer is for this extractor.

    ``"dense"``, ``"einsum"``, ``"embedding"``, ``"conv"``, ``"conv_transpose"``,
    ``"attention"`` (only its sublayers carry weights), ``"depthwise"``, ``"separable"``
    (skipped with a reason), ``"other"`` (some other layer with a ``kernel``: skipped), or None
    (nothing to analyse: normalisation layers and layers without a kernel).
    """
    import keras

    L = keras.layers
    if "norm" in type(layer).__name__.lower():
        return None
    if isinstance(layer, L.MultiHeadAttention):
        return "attention"
    if isinstance(layer, L.EinsumDense):
        return "einsum"
    if isinstance(layer, L.Dense):
        return "dense"
    if isinstance(layer, L.Embedding):
        return "embedding"
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        return "depthwise"
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        return "separable"
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        return "conv_transpose"
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        return "conv"
    try:
        kernel = getattr(layer, "kernel", None)
    except Exception:  # a property that refuses to answer (exotic layer): no kernel to list
        kernel = None
    return "other" if hasattr(kernel, "shape") else None


#: Kinds whose analysed weight is one kernel (or table) :func:`from_analysis_layout` writes back.
WRITABLE_KINDS = ("dense", "einsum", "embedding", "conv", "conv_transpose")


def weight_attr(kind: str) -> str:
    """The attribute holding the analysed weight of a layer of this kind."""
    return "embeddings" if kind == "embedding" else "kernel"


def layer_row(layer: Any, layer_id: int, name: str,
              longname: str) -> LayerWeights | Skip | None:
    """The row (or the skip record, or nothing) one layer contributes, its weight read now (in
    the layout of :func:`to_analysis_layout`)."""
    kind = layer_kind(layer)
    if kind is None:
        return None

    def skip(reason: str) -> Skip:
        return Skip(layer_id, name, longname, reason)

    cls = type(layer).__name__
    if kind == "depthwise":
        return skip(f"{cls}: a depthwise kernel maps each channel on its own (no in x out matrix)")
    if kind == "separable":
        return skip(f"{cls}: separable convolutions (depthwise + pointwise) are not supported")
    if kind == "other":
        return skip(f"{cls}: layer type not supported")
    if not getattr(layer, "built", True):
        return skip(f"{cls} is not built (no weights yet)")
    if kind == "attention":
        return None  # its query/key/value/attention_output sublayers are rows of their own

    attr = weight_attr(kind)
    try:
        weight = _effective_weight(layer, attr)
    except _Unreadable as exc:
        return skip(str(exc))
    if weight.ndim < 2:
        return skip(f"{cls}: {weight.ndim}-D {attr} of shape {tuple(weight.shape)} is not a matrix")
    try:
        analysed = to_analysis_layout(layer, weight)
    except ValueError as exc:
        return skip(str(exc))
    if kind in ("conv", "conv_transpose"):
        conv_type = _CONV_TYPE_BY_RANK[weight.ndim - 2]
        return LayerWeights(layer_id, name, longname, conv_type, analysed, CONV)
    layer_type = EMBEDDING if kind == "embedding" else DENSE
    return LayerWeights(layer_id, name, longname, layer_type, analysed, MATRIX)


def keras_layers(model: Any) -> tuple[list[LayerWeights], list[Skip]]:
    """All analysable weights of a Keras 3 model or layer, and the layers passed over.

    Supported: ``Dense``, ``EinsumDense`` (kernel reshaped to ``(contracted, output)``, which
    covers the ``query``/``key``/``value``/``attention_output`` projections of
    ``MultiHeadAttention``), ``Embedding``, ``Conv1D/2D/3D`` and ``Conv1D/2D/3DTranspose`` (torch
    order ``(out, in, *k)``), with LoRA merged and int8/int4 quantization undone, and the
    recurrent cells of ``LSTM``/``GRU``/``SimpleRNN`` (one row per gate, see
    :mod:`.keras_recurrent`). Skipped with a reason: depthwise and separable convolutions, other
    layers holding a ``kernel`` (ConvLSTM cells, ...), unbuilt layers, unreadable
    (GPTQ/AWQ-packed) kernels, 1-D kernels and einsum kernels that do not split into input and
    output axes. Not listed: normalisation layers and layers
    without a kernel.
    """
    layers: list[LayerWeights] = []
    skipped: list[Skip] = []
    from .keras_recurrent import keras_cell_rows

    for layer_id, longname, layer in walk_layers(model):
        name = str(getattr(layer, "name", ""))
        cell = keras_cell_rows(layer, layer_id, name, longname or name)
        if cell is not None:  # LSTM/GRU/SimpleRNN cells: one row per gate
            if isinstance(cell, Skip):
                skipped.append(cell)
            else:
                layers.extend(cell)
            continue
        row = layer_row(layer, layer_id, name, longname or name)
        if isinstance(row, LayerWeights):
            layers.append(row)
        elif isinstance(row, Skip):
            skipped.append(row)
    return layers, skipped
