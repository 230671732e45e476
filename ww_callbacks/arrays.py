"""Array helpers every layer of the package uses, in a leaf module (it imports nothing of
ours): is it a torch tensor, a torch tensor as float, a plain array as numpy. Composite weights
(:mod:`ww_callbacks.layers.composite`) and the matrices (:mod:`ww_callbacks.matrices`) both build
on it, so neither imports the other for them."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_torch_tensor(x: Any) -> bool:
    """True for a torch tensor, without importing torch when the caller never did."""
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def torch_to_float(weight: Any) -> Any:
    """A detached torch tensor in float32 or float64 (half, bfloat16, quantized: upcast)."""
    import torch

    t = weight.detach()
    if t.is_quantized:
        t = t.dequantize()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return t


def plain_to_numpy(weight: Any) -> np.ndarray:
    """A plain weight (a torch tensor or anything numpy reads, not a composite) as a numpy
    float32/float64 array; float16 and bfloat16 are upcast to float32."""
    if is_torch_tensor(weight):
        return torch_to_float(weight).cpu().numpy()
    arr = np.asarray(weight)
    if arr.dtype == np.float64 or arr.dtype == np.float32:
        return arr
    if arr.dtype.kind not in "fiub" and arr.dtype.name != "bfloat16":
        raise TypeError(f"weights of dtype {arr.dtype} cannot be analysed")
    return arr.astype(np.float32)
