"""Recurrent layers (torch ``nn.LSTM``/``nn.GRU``/``nn.RNN`` and their state dicts): one dense
matrix per gate of every input-to-hidden and hidden-to-hidden weight.

torch stacks the gates along the first axis: ``weight_ih_l{k}[_reverse]`` is ``(G*H, in)`` and
``weight_hh_l{k}[_reverse]`` is ``(G*H, H)`` (``(G*H, proj_size)`` with a projection, which adds
``weight_hr_l{k}`` ``(proj_size, H)``, analysed as one matrix), with ``G`` = 4 for an LSTM (gates
input, forget, cell, output: torch's i, f, g, o), 3 for a GRU (reset, update, new: r, z, n) and 1
for a plain RNN (not split). Each gate block is a view of the parameter, never a copy. Longnames
add the tensor and the gate: ``lstm.weight_hh_l0.forget``, ``gru.weight_ih_l1_reverse.new``,
``rnn.weight_hh_l0``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .base import GRU, LSTM, MATRIX, RNN, LayerWeights

#: Gate names by number of gates, in torch's stacking order.
TORCH_GATES = {4: ("input", "forget", "cell", "output"), 3: ("reset", "update", "new"), 1: ()}
TYPE_BY_GATES = {4: LSTM, 3: GRU, 1: RNN}

#: ``<prefix>.weight_<ih|hh|hr>_l<k>[_reverse]``
RECURRENT_KEY = re.compile(r"^(?:(.*)\.)?weight_(ih|hh|hr)_l(\d+)(_reverse)?$")


def gate_rows(weight: Any, gates: tuple[str, ...], layer_id: int, name: str, longname: str,
              layer_type: str, param: str) -> list[LayerWeights]:
    """One :class:`LayerWeights` per gate block of a gate-stacked ``(G*H, cols)`` weight (the
    whole weight when ``gates`` is empty)."""
    if not gates:
        return [LayerWeights(layer_id, name, longname, layer_type, weight, MATRIX, (param,))]
    rows = int(weight.shape[0]) // len(gates)
    return [LayerWeights(layer_id, f"{name}.{gate}", f"{longname}.{gate}", layer_type,
                         weight[i * rows:(i + 1) * rows], MATRIX, (param,))
            for i, gate in enumerate(gates)]


def torch_recurrent_rows(module: Any, longname: str, name: str, layer_id: int,
                         param_names: Mapping[int, str]) -> list[LayerWeights]:
    """All gate matrices of an ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (every layer and direction).

    ``param_names``: ``id(parameter) -> name`` as the model's ``named_parameters()`` gives it.
    """
    mode = str(getattr(module, "mode", "")).upper()
    n_gates = 4 if mode == "LSTM" else 3 if mode == "GRU" else 1
    gates = TORCH_GATES[n_gates]
    layer_type = TYPE_BY_GATES[n_gates]
    rows: list[LayerWeights] = []
    for pname, param in module.named_parameters(recurse=False):
        match = RECURRENT_KEY.match(pname)
        if match is None:  # biases and anything else: listed as skipped by the caller
            continue
        full = param_names.get(id(param), f"{longname}.{pname}" if longname else pname)
        rlong = f"{longname}.{pname}" if longname else pname
        rname = f"{name}.{pname}" if name else pname
        kind = match.group(2)
        rows.extend(gate_rows(param, () if kind == "hr" else gates, layer_id, rname, rlong,
                              layer_type, full))
    return rows


def mapping_recurrent_rows(weights: Mapping[str, Any], key: str,
                           layer_id: int) -> list[LayerWeights] | str:
    """The gate matrices of one recurrent entry ``<prefix>.weight_<ih|hh|hr>_l<k>[_reverse]`` of a
    state dict, or the reason why it cannot be split (a string).

    The number of gates is read from the shapes: ``hh`` is ``(G*H, H)``, or ``(G*H, P)`` next to
    ``weight_hr`` ``(P, H)``.
    """
    match = RECURRENT_KEY.match(key)
    assert match is not None
    prefix, kind, k, reverse = match.groups()
    stem = f"{prefix}." if prefix else ""
    suffix = f"_l{k}{reverse or ''}"
    value = weights[key]
    longname = key
    name = key[len(stem):] if prefix else key
    name = f"{prefix.split('.')[-1]}.{name}" if prefix else name
    if kind == "hr":
        return gate_rows(value, (), layer_id, name, longname, LSTM, key)
    hh = weights.get(f"{stem}weight_hh{suffix}")
    hr = weights.get(f"{stem}weight_hr{suffix}")
    if hh is None or len(getattr(hh, "shape", ())) != 2:
        return "recurrent weight without its weight_hh partner: gates unknown"
    hidden = int(hr.shape[1]) if hr is not None else int(hh.shape[1])
    stacked = int(value.shape[0])
    if hidden <= 0 or stacked % hidden or stacked // hidden not in TORCH_GATES:
        return f"recurrent weight of shape {tuple(value.shape)}: {stacked} rows are not 1, 3 or " \
               f"4 gates of hidden size {hidden}"
    n_gates = stacked // hidden
    return gate_rows(value, TORCH_GATES[n_gates], layer_id, name, longname,
                     TYPE_BY_GATES[n_gates], key)


__all__ = ["RECURRENT_KEY", "TORCH_GATES", "gate_rows", "mapping_recurrent_rows",
           "torch_recurrent_rows"]
