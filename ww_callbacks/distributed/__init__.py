"""Sharded and replicated training (FSDP, FSDP2, tensor parallelism, DeepSpeed ZeRO-3, DDP).

Every rank computes the same assignment of the watched weights to ranks from their global shapes
(:mod:`.ownership`, no communication), each weight's full matrix is assembled on its owner only
(:mod:`.gather`), each rank analyses what it owns, and the rows travel back (:mod:`.collective`).
:func:`analyze_distributed` is what ``ww_callbacks.analyze(model)`` runs under a process group of
more than one rank.

Only :mod:`.detect` may be imported without torch: the rest is imported when used, so
``import ww_callbacks`` never imports ``torch.distributed``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ShardedLayers", "analyze_distributed", "assign_owners", "wants_collective"]


def __getattr__(name: str) -> Any:
    if name == "wants_collective":
        from .detect import wants_collective

        return wants_collective
    if name == "assign_owners":
        from .ownership import assign_owners

        return assign_owners
    if name == "ShardedLayers":
        from .gather import ShardedLayers

        return ShardedLayers
    if name == "analyze_distributed":
        from .analyze import analyze_distributed

        return analyze_distributed
    raise AttributeError(name)
