"""Integrations of ww_callbacks with training libraries (Lightning, Keras, plain PyTorch, Hugging
Face) and dashboards (TensorBoard, W&B); installed as ``ww_callbacks.integrations``.

Importing the package registers the dashboards' sink factories with the core
(:mod:`ww_callbacks.sinks`), so every session builds them from the same options
(``tensorboard``, ``tensorboard_options``, ``wandb``, ``wandb_options``). Each factory imports
its module only when a sink is made.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ww_callbacks.sinks import register_sink_factory


def _tensorboard_sink(value: Any, log_dir: str | os.PathLike | None,
                      options: Mapping[str, Any]) -> Any:
    """``tensorboard=True``: event files in ``log_dir`` (none without a folder); a writer
    object (``SummaryWriter``, ...): written into, and left open."""
    from .tensorboard import TensorBoardSink

    if value is True:
        return None if log_dir is None else TensorBoardSink(log_dir=log_dir, **options)
    return TensorBoardSink(value, **options)


def _wandb_sink(value: Any, log_dir: str | os.PathLike | None,
                options: Mapping[str, Any]) -> Any:
    """``wandb=True``: the active run (``wandb.run`` at the first write); a run object: that
    run."""
    from .wandb import WandbSink

    return WandbSink(None if value is True else value, **options)


register_sink_factory("tensorboard", _tensorboard_sink)
register_sink_factory("wandb", _wandb_sink)
