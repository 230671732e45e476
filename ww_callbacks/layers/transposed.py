"""Transposed convolutions of torch (``nn.ConvTranspose1d/2d/3d``).

torch stores a transposed convolution's weight as ``(in, out/groups, *k)``: the layout of the
convolution it is the adjoint of (``Conv(out -> in)``), with the channel axes exchanged. The row
keeps the parameter as stored, in the ``"conv"`` layout: each kernel position gives the
channel-mixing matrix ``W[:, :, pos]`` of that tap, and every matrix is oriented N >= M before its
spectrum is taken, so the axis order of the two channel axes does not change a number. These are
the matrices (transposed) of the equivalent forward convolution ``Conv(in -> out)`` with weight
``W.transpose(0, 1).flip(spatial)``, visited in another order. Keeping the stored layout makes a
state dict of the model give the same rows, and lets policies write matrices back in place.
"""

from __future__ import annotations

from typing import Any

from .base import CONV, CONV1D, CONV2D, CONV3D, LayerWeights

_TYPE_BY_NDIM = {3: CONV1D, 4: CONV2D, 5: CONV3D}


def is_transposed_conv(module: Any) -> bool:
    """True for ``nn.ConvTranspose1d/2d/3d`` (and subclasses)."""
    import torch.nn as nn

    return isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))


def transposed_conv_row(module: Any, longname: str, name: str, layer_id: int,
                        params: tuple[str, ...]) -> LayerWeights | str:
    """The row of one transposed convolution, or the reason it cannot be analysed."""
    weight = getattr(module, "weight", None)
    if weight is None or len(weight.shape) not in _TYPE_BY_NDIM:
        shape = None if weight is None else tuple(weight.shape)
        return f"{type(module).__name__} weight of shape {shape} is not supported"
    return LayerWeights(layer_id, name, longname, _TYPE_BY_NDIM[len(weight.shape)],
                        weight, CONV, params)
