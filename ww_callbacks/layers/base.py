"""The unit every extractor produces: one weight tensor of one layer, plus its geometry.

Extractors (torch modules, Keras models, name -> array mappings) only *find* weights and say how
to read them; turning a weight into float64 matrices happens later, in :mod:`ww_callbacks.matrices`,
so that skipped layers are never copied or converted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Layer types a row can carry in the ``layer_type`` column.
DENSE = "dense"
CONV1D = "conv1d"
CONV2D = "conv2d"
CONV3D = "conv3d"
EMBEDDING = "embedding"
LSTM = "lstm"
GRU = "gru"
RNN = "rnn"
LORA = "lora"
LAYER_TYPES = (DENSE, CONV1D, CONV2D, CONV3D, EMBEDDING, LSTM, GRU, RNN, LORA)
CONV_TYPES = (CONV1D, CONV2D, CONV3D)

#: ``layout`` values. ``"matrix"``: a 2-D array in any orientation. ``"conv"``: a convolution
#: kernel in torch order ``(out, in, *kernel)``; extractors of other frameworks transpose to it.
MATRIX = "matrix"
CONV = "conv"


@dataclass(frozen=True)
class LayerWeights:
    """One analysable weight of a model, not yet converted.

    ``weight`` is the framework's own array (numpy array or torch tensor), never copied here.
    ``layer_id`` follows the reference's numbering (torch: index in ``named_modules()``, root = 0).
    ``name`` is the last dotted part of ``longname``; ``longname`` is unique within a model.
    ``params``: the names of the model's parameters this row reads (torch: as
    ``named_parameters()`` lists them; mappings: the keys), so that every parameter not read by
    any row can be listed as skipped. ``weight`` may also be a composite (a LoRA layer's
    ``W0 + scaling * B @ A``, a difference from a base model, see :mod:`.composite`), turned into
    one array only when the matrices are built. ``aliases``: the longnames of other modules that
    share this very weight (tied weights, see :mod:`.tied`), analysed once under this row.
    """

    layer_id: int
    name: str
    longname: str
    layer_type: str
    weight: Any
    layout: str = MATRIX
    params: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the weight as stored."""
        return tuple(int(s) for s in self.weight.shape)

    def geometry(self) -> tuple[int, int, int]:
        """``(N, M, rf)``: each slice is N x M with N >= M; ``rf`` slices (kernel positions)."""
        shape = self.shape
        if self.layout == CONV:
            out_ch, in_ch = shape[0], shape[1]
            rf = math.prod(shape[2:]) if len(shape) > 2 else 1
        else:
            if len(shape) != 2:
                raise ValueError(f"{self.longname}: a matrix layer needs a 2-D weight, got {shape}")
            out_ch, in_ch = shape
            rf = 1
        return max(out_ch, in_ch), min(out_ch, in_ch), rf
