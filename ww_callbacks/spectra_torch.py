"""The torch twin of :mod:`ww_callbacks.spectra`: spectra on the device the weights live on (or
the one ``device=`` asks for), for GPUs. Same Gram + ``eigvalsh`` route with the same SVD fallback
for ill-conditioned slices; results come back as numpy float64 so every later step is shared.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .layers.base import CONV, LayerWeights
from .layers.composite import is_composite
from .matrices import conv_scale, oriented_stack, torch_to_float
from .spectra import GRAM_RCOND, Spectrum, summarize_singular_values


def resolve_device(device: Any) -> Any:
    """A ``torch.device`` from a name, a device, or None (CUDA when available, else CPU)."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def torch_dtype(name: str) -> Any:
    """``torch.float64`` or ``torch.float32`` from ``"float64"``/``"float32"``."""
    import torch

    dtypes = {"float64": torch.float64, "float32": torch.float32}
    if name not in dtypes:
        raise ValueError(f"dtype must be 'float64' or 'float32', not {name!r}")
    return dtypes[name]


def torch_layer_stack(layer: LayerWeights, device: Any, dtype: Any, *, pool: bool = True) -> Any:
    """``(S, N, M)`` scaled matrices of ``layer`` as a tensor of ``dtype`` on ``device``."""
    import torch

    weight = layer.weight
    if is_composite(weight):  # LoRA or a difference from a base: combined on the device
        weight = weight.to_torch(device)
    elif not hasattr(weight, "detach"):
        weight = torch.as_tensor(np.asarray(weight))
    weight = torch_to_float(weight).to(device=device)
    stack = oriented_stack(weight, layer.layout).to(dtype)
    if layer.layout == CONV:
        stack = stack * conv_scale(stack.shape[0], pool)
    return stack


def _singular_values(stack: Any) -> Any:
    import torch

    gram = torch.matmul(stack.transpose(1, 2), stack)
    evals = torch.linalg.eigvalsh(gram).clamp_min_(0.0)
    shaky = evals[:, 0] < GRAM_RCOND * evals[:, -1]
    sv = evals.sqrt()
    if bool(shaky.any()):
        sv[shaky] = torch.linalg.svdvals(stack[shaky]).flip(-1)
    return sv


def torch_stack_spectrum(stack: Any) -> Spectrum:
    """The :class:`Spectrum` of a ``(S, N, M)`` tensor stack, computed on its device."""
    import torch

    with torch.no_grad():
        sv = _singular_values(stack).double().cpu().numpy()
    return summarize_singular_values(sv, stack.shape[1])


def torch_shuffled_spectrum(stack: Any, generator: Any, replicas: int = 1) -> np.ndarray:
    """Eigenvalues of element-shuffled copies of each slice, drawn from a private generator."""
    import torch

    S, N, M = stack.shape
    out = []
    with torch.no_grad():
        flat = stack.reshape(S, N * M)
        for _ in range(replicas):
            keys = torch.rand(flat.shape, generator=generator, device=stack.device)
            shuffled = torch.gather(flat, 1, keys.argsort(dim=1)).reshape(S, N, M)
            del keys
            out.append((_singular_values(shuffled) ** 2).double().cpu().numpy().ravel())
    return np.sort(np.concatenate(out))
