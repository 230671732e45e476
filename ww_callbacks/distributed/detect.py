"""Is a call a collective? Decided without importing torch (or torch.distributed) ourselves."""

from __future__ import annotations

import sys
from typing import Any


def process_group_size() -> int:
    """The default process group's world size; 1 when torch.distributed was never imported or
    no group is initialized."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return 1
    return int(dist.get_world_size())


def process_group_rank() -> int:
    """This process's rank in the default process group; 0 without one."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return 0
    return int(dist.get_rank())


def wants_collective(model: Any) -> bool:
    """True when ``analyze(model)`` must run as a collective: ``model`` is a torch module and a
    process group of more than one rank is initialized (its weights may be sharded, and even
    replicated ones are analysed once, split across ranks)."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(model, torch.nn.Module):
        return False
    return process_group_size() > 1


def is_sharded(model: Any) -> bool:
    """True when some weight of the torch module ``model`` is split across ranks: a DTensor
    (FSDP2, tensor parallel), an FSDP1 unit or a DeepSpeed ZeRO-3 parameter."""
    for module in model.modules():
        if type(module).__name__ == "FullyShardedDataParallel":
            return True
    dtensor = getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)
    for param in model.parameters():
        if (dtensor is not None and isinstance(param, dtensor)) or hasattr(param, "ds_tensor"):
            return True
    return False


def on_every_rank(distributed: bool | None = None) -> bool:
    """Whether an integration (a training loop, Lightning, Hugging Face) runs its watch session
    on every rank, with collective snapshots: ``distributed`` when given, else whenever a
    process group of more than one rank is initialized. Sharded weights need it (one rank cannot
    read them alone); replicated ones (DDP) get it too, so that each rank analyses its share of
    the layers and rank 0 alone records them. The one place this is decided."""
    if distributed is None:
        return process_group_size() > 1
    return bool(distributed)


def collective_snapshots(model: Any, distributed: bool | None) -> bool:
    """Whether a watcher's snapshots of ``model`` are collectives: ``distributed`` when given
    (True needs a process group of more than one rank), else only for sharded weights."""
    if process_group_size() <= 1:
        return False
    if distributed is not None:
        return bool(distributed)
    return is_sharded(model)
