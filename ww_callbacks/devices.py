"""Where the analysis runs: ``analysis_device="auto"`` (the default) means the GPU the model
trains on, else the CPU (numpy, float64)."""

from __future__ import annotations

import sys
from typing import Any

AUTO = "auto"


def training_device(model: Any) -> Any:
    """The CUDA device of the first parameter of a torch module that lives on one, else None."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(model, torch.nn.Module):
        return None
    for param in model.parameters():
        if param.device.type == "cuda":
            return param.device
    return None


def resolve_analysis_device(model: Any, device: Any) -> Any:
    """The ``device=`` to analyse ``model`` with: ``"auto"`` becomes its training GPU, or None
    (numpy on the CPU; spectra of weights already on a GPU are still taken there); anything
    else is kept (``"cpu"`` keeps the analysis off the GPU: numpy when given as None)."""
    if isinstance(device, str) and device == AUTO:
        return training_device(model)
    return device
