"""Layer extraction: which weights of a model are analysed, as :class:`LayerWeights`.

:func:`extract_layers` accepts a torch module, a Keras 3 model or layer, a mapping
``name -> array`` or a path to checkpoint files; :func:`select_layers` applies the user's
``layers=`` filter and the size limits.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from .base import CONV, CONV_TYPES, LAYER_TYPES, MATRIX, LayerWeights
from .select import select_layers
from .skips import Skip
from .tied import TIED_VALUES

ACCEPTED = (
    "a torch.nn.Module, a Keras 3 model or layer, a mapping name -> array (a state dict), "
    "or a path to .safetensors / torch state-dict files"
)

__all__ = [
    "ACCEPTED", "CONV", "CONV_TYPES", "LAYER_TYPES", "MATRIX", "TIED_VALUES", "LayerWeights",
    "Skip", "extract_layers", "select_layers",
]


def _is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _is_keras(model: Any) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(model, keras.layers.Layer)


def extract_layers(model: Any, *, adapters: str = "effective",
                   tied: str = "once",
                   allow_hparams_types: bool = False) -> tuple[list[LayerWeights], list[Skip]]:
    """Every analysable weight of ``model`` and the layers passed over (with reasons).

    A path is read by :func:`ww_callbacks.checkpoints.open_checkpoint` (the command line's
    reader: one tensor at a time, shard indexes and model folders, weights-only torch loading;
    ``allow_hparams_types`` passed on to it).

    ``adapters`` (torch modules with peft LoRA layers): ``"effective"`` analyses each LoRA
    layer's effective weight, ``"only"`` its update alone, ``"both"`` both (see
    :mod:`.lora`). ``tied``: a weight shared by several modules is analysed ``"once"`` (under
    the first name, the others in ``aliases`` and skipped as "tied to <name>") or ``"each"``
    time, as WeightWatcher does (see :mod:`.tied`). Raises ``TypeError`` naming what is
    accepted when ``model`` is none of those.
    """
    from .tied import check_tied, merge_tied

    check_tied(tied)
    order = None
    if _is_keras(model):  # first: on Keras's torch backend a Keras layer is an nn.Module too
        from .keras_models import keras_layers

        layers, skipped = keras_layers(model)
    elif _is_torch_module(model):
        from .torch_modules import torch_layers

        layers, skipped = torch_layers(model, adapters=adapters)
    elif isinstance(model, (Mapping, str, os.PathLike)):
        from .mappings import mapping_layers

        if isinstance(model, Mapping):
            weights = model
        else:
            from ..checkpoints import open_checkpoint

            weights = open_checkpoint(model, allow_hparams_types=allow_hparams_types)
        layers, skipped = mapping_layers(weights)
        order = getattr(weights, "stored_order", None)  # a checkpoint's own (model) order
    else:
        raise TypeError(f"cannot analyse an object of type {type(model).__name__}: expected "
                        f"{ACCEPTED}")
    layers, tied_skips = merge_tied(layers, tied, order)
    return layers, skipped + tied_skips
