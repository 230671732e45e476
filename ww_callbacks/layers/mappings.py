"""Find the analysable weights of a plain mapping ``name -> array`` (a state dict, the contents of
safetensors files) or of checkpoint files on disk.

Rules: 1-D entries (biases, norms) and names containing ``norm`` or ``bias`` are passed over
(and listed as skipped with the reason); 2-D entries are dense matrices (``embedding`` when the
name says ``embed``), a packed ``in_proj_weight`` is split into Q, K and V, torch recurrent
weights ``*.weight_{ih,hh,hr}_l{k}[_reverse]`` into their gates (:mod:`.recurrent`, the same rows
as the module gives); 3-, 4- and 5-D entries are torch-ordered convolution kernels (a transposed
convolution's state dict cannot be told from a convolution's: both give the same matrices).
``layer_id`` is the entry's position in the mapping, counted from 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..state_dicts import find_state_dict, is_tensor, strip_wrappers
from .base import CONV, CONV1D, CONV2D, CONV3D, DENSE, EMBEDDING, MATRIX, LayerWeights
from .recurrent import RECURRENT_KEY, mapping_recurrent_rows
from .skips import Skip
from .torch_modules import _split_qkv

_CONV_BY_NDIM = {3: CONV1D, 4: CONV2D, 5: CONV3D}


def _strip_weight(key: str) -> str:
    for suffix in (".weight", ".kernel", "/kernel"):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def mapping_layers(weights: Mapping[str, Any]) -> tuple[list[LayerWeights], list[Skip]]:
    """All analysable entries of a ``name -> array`` mapping, and the entries passed over. A
    checkpoint dict (``{'model': state_dict, 'optimizer': ...}``, Lightning's, ...) is read
    through the state dict it holds (:func:`ww_callbacks.state_dicts.find_state_dict`); wrapper
    prefixes are removed from the names."""
    if not all(is_tensor(v) for v in weights.values()):
        found = find_state_dict(weights)
        if found.key:
            weights = found.weights
    weights = strip_wrappers(weights)[0]  # the names the Watcher gives (no ``_orig_mod.``)
    layers: list[LayerWeights] = []
    skipped: list[Skip] = []
    for layer_id, (key, value) in enumerate(weights.items()):
        key = str(key)
        longname = _strip_weight(key)
        name = longname.split(".")[-1]
        shape = getattr(value, "shape", None)
        if shape is None:
            skipped.append(Skip(layer_id, name, longname,
                                f"not an array ({type(value).__name__})", (key,)))
            continue
        lowered = key.lower()
        ndim = len(shape)
        if ndim < 2:
            skipped.append(Skip(layer_id, name, longname, f"{ndim}-D parameter", (key,)))
        elif "norm" in lowered or "bias" in lowered:
            skipped.append(Skip(layer_id, name, longname,
                                f"{ndim}-D entry named as a normalisation or bias", (key,)))
        elif ndim == 2 and RECURRENT_KEY.match(key):
            rows = mapping_recurrent_rows(weights, key, layer_id)
            if isinstance(rows, str):
                skipped.append(Skip(layer_id, name, longname, rows, (key,)))
            else:
                layers.extend(rows)
        elif ndim == 2 and key.endswith("in_proj_weight") and shape[0] == 3 * shape[1]:
            prefix = key[: -len(".in_proj_weight")] if "." in key else ""
            layers.extend(replace(row, params=(key,))
                          for row in _split_qkv(value, prefix, prefix.split(".")[-1], layer_id))
        elif ndim == 2:
            kind = EMBEDDING if "embed" in lowered else DENSE
            layers.append(LayerWeights(layer_id, name, longname, kind, value, MATRIX, (key,)))
        elif ndim in _CONV_BY_NDIM:
            layers.append(LayerWeights(layer_id, name, longname, _CONV_BY_NDIM[ndim], value, CONV,
                                       (key,)))
        else:
            skipped.append(Skip(layer_id, name, longname, f"{ndim}-D parameter is not supported",
                                (key,)))
    return layers, skipped
