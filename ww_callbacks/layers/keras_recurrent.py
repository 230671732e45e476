"""Recurrent cells of Keras 3 (``LSTMCell``, ``GRUCell``, ``SimpleRNNCell``: the cells inside
``LSTM``, ``GRU``, ``SimpleRNN``, ``RNN(cell)`` and ``Bidirectional``), one dense matrix per gate.

Keras concatenates the gates along the last axis: ``kernel`` is ``(in, G*H)`` and
``recurrent_kernel`` ``(H, G*H)``, gates in Keras's order, read from its source
(``keras/src/layers/rnn``): LSTM i, f, c, o (input, forget, cell, output: the same as torch);
GRU z, r, h (update, reset, new: *not* torch's r, z, n order); SimpleRNN one matrix. Rows are
named ``<cell longname>.kernel.<gate>`` and ``<cell longname>.recurrent_kernel.<gate>``, with
``layer_type`` ``lstm``/``gru``/``rnn``. Keras is imported lazily.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import GRU, LSTM, MATRIX, RNN, LayerWeights
from .skips import Skip

#: Keras gate names per cell, in the order Keras concatenates them.
KERAS_GATES = {"LSTMCell": ("input", "forget", "cell", "output"),
               "GRUCell": ("update", "reset", "new"), "SimpleRNNCell": ()}
_TYPE = {"LSTMCell": LSTM, "GRUCell": GRU, "SimpleRNNCell": RNN}


def _cell_class(layer: Any) -> str | None:
    """The Keras cell class ``layer`` is (or subclasses), or None."""
    import keras

    for cls_name in KERAS_GATES:
        cls = getattr(keras.layers, cls_name, None)
        if cls is not None and isinstance(layer, cls):
            return cls_name
    return None


def keras_cell_rows(layer: Any, layer_id: int, name: str,
                    longname: str) -> list[LayerWeights] | Skip | None:
    """The gate matrices of a Keras recurrent cell, a :class:`Skip` when it cannot be read, or
    None when ``layer`` is not a recurrent cell."""
    cls_name = _cell_class(layer)
    if cls_name is None:
        return None
    if not getattr(layer, "built", True):
        return Skip(layer_id, name, longname, f"{type(layer).__name__} is not built (no weights "
                    "yet)")
    import keras

    gates = KERAS_GATES[cls_name]
    rows: list[LayerWeights] = []
    for attr in ("kernel", "recurrent_kernel"):
        weight = np.asarray(keras.ops.convert_to_numpy(getattr(layer, attr)))
        if weight.ndim != 2 or (gates and weight.shape[1] % len(gates)):
            return Skip(layer_id, name, longname,
                        f"{type(layer).__name__}.{attr} of shape {weight.shape} is not "
                        f"{max(len(gates), 1)} stacked gate matrices")
        if not gates:
            rows.append(LayerWeights(layer_id, f"{name}.{attr}", f"{longname}.{attr}",
                                     _TYPE[cls_name], weight, MATRIX))
            continue
        width = weight.shape[1] // len(gates)
        rows.extend(LayerWeights(layer_id, f"{name}.{attr}.{gate}", f"{longname}.{attr}.{gate}",
                                 _TYPE[cls_name], weight[:, i * width:(i + 1) * width], MATRIX)
                    for i, gate in enumerate(gates))
    return rows
