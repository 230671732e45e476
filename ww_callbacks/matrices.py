"""Turn a :class:`LayerWeights` into the scaled stack of N x M matrices whose spectrum is analysed.

Convolutions give one matrix per kernel position (``rf`` slices), each multiplied by
``sqrt(1/2)`` when the eigenvalues are pooled (``pool=True``, WeightWatcher's ``conv2d_norm``) or by
``sqrt(rf/2)`` when each slice is its own row (``pool=False``), as the reference does.
Every slice is oriented so that N >= M, so ``X = W^T W`` is the small M x M Gram matrix.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .arrays import is_torch_tensor, plain_to_numpy, torch_to_float
from .layers.base import CONV, LayerWeights
from .layers.composite import is_composite

__all__ = ["conv_scale", "from_oriented_stack", "is_torch_tensor", "layer_stack",
           "oriented_stack", "to_numpy", "torch_to_float"]


def conv_scale(rf: int, pool: bool) -> float:
    """The factor every convolution slice is multiplied by before its spectrum is taken."""
    return math.sqrt(0.5) if pool else math.sqrt(rf / 2.0)


def to_numpy(weight: Any) -> np.ndarray:
    """The weight as a numpy float32/float64 array; float16 and bfloat16 are upcast to float32.
    A composite weight (LoRA, a difference from a base) is combined here, in float64."""
    if is_composite(weight):
        return weight.to_numpy()
    return plain_to_numpy(weight)


def oriented_stack(weight: Any, layout: str) -> Any:
    """An ``(S, N, M)`` view of ``weight`` (numpy or torch) with N >= M, unscaled."""
    shape = tuple(weight.shape)
    if layout == CONV:
        out_ch, in_ch = shape[0], shape[1]
        rf = math.prod(shape[2:])
        stack = weight.reshape(out_ch, in_ch, rf)
        stack = stack.permute(2, 0, 1) if is_torch_tensor(stack) else stack.transpose(2, 0, 1)
        # now (rf, out, in)
    else:
        out_ch, in_ch = shape
        stack = weight[None]
    if out_ch < in_ch:
        stack = stack.transpose(1, 2) if is_torch_tensor(stack) else stack.transpose(0, 2, 1)
    return stack


def layer_stack(layer: LayerWeights, *, pool: bool = True) -> np.ndarray:
    """Float64 ``(S, N, M)`` matrices of ``layer``, scaled as the reference scales them."""
    stack = oriented_stack(to_numpy(layer.weight), layer.layout).astype(np.float64)
    if layer.layout == CONV:
        stack *= conv_scale(stack.shape[0], pool)
    return stack


def from_oriented_stack(stack: np.ndarray, shape: tuple[int, ...], layout: str) -> np.ndarray:
    """The inverse of :func:`oriented_stack` (numpy): an ``(S, N, M)`` stack back to a weight of
    ``shape`` as stored (used to write changed matrices back into a layer)."""
    if layout == CONV:
        out_ch, in_ch = shape[0], shape[1]
    else:
        out_ch, in_ch = shape
    if out_ch < in_ch:
        stack = stack.transpose(0, 2, 1)
    # now (S, out, in)
    if layout == CONV:
        return np.ascontiguousarray(stack.transpose(1, 2, 0)).reshape(shape)
    return np.ascontiguousarray(stack[0])
