"""The few collectives of the distributed analysis: a handshake that fails instead of hanging
when a rank does not take part, and the gathering of every rank's rows."""

from __future__ import annotations

import itertools
import os
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

#: Seconds a rank waits for the others to enter a collective analysis before it raises
#: (``WW_CALLBACKS_DIST_TIMEOUT`` overrides it).
DEFAULT_TIMEOUT = float(os.environ.get("WW_CALLBACKS_DIST_TIMEOUT", "300"))

_SEQUENCE = itertools.count()
_NAMES: dict[int, str] = {}  # sequence number -> what, of the last handshakes (to delete keys)


class CollectiveError(RuntimeError):
    """A collective analysis could not run on every rank (one rank did not call it, or failed)."""


def rank_and_size() -> tuple[int, int]:
    """This process's rank and the world size (0, 1 without a process group)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def handshake(what: str, timeout: float | None = None) -> None:
    """Return once every rank has called ``handshake`` for the same ``what`` (the n-th call of
    each rank is matched with the n-th of the others); raise :class:`CollectiveError` after
    ``timeout`` seconds otherwise, so a call made on one rank only fails with a clear message
    instead of hanging in the first all-gather. Uses the default group's key-value store."""
    import torch.distributed as dist

    rank, world = rank_and_size()
    if world == 1:
        return
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    sequence = next(_SEQUENCE)
    key = f"ww_callbacks/{what}/{sequence}"
    try:
        store = dist.distributed_c10d._get_default_store()
    except Exception:  # no store (e.g. a custom backend): fall back on a barrier, when it has one
        if dist.get_backend() == "gloo":
            try:
                dist.monitored_barrier(timeout=timedelta(seconds=timeout))
            except RuntimeError as err:
                raise CollectiveError(_message(what, rank, world, timeout)) from err
        return
    if store.add(key, 1) == world:
        store.set(key + "/all", "1")
    try:
        store.wait([key + "/all"], timedelta(seconds=timeout))
    except Exception as err:
        raise CollectiveError(_message(what, rank, world, timeout)) from err
    done = _NAMES.pop(sequence - 2, None)
    if rank == 0 and done is not None:  # every rank is past the handshake before the last one
        old = f"ww_callbacks/{done}/{sequence - 2}"
        try:
            store.delete_key(old)
            store.delete_key(old + "/all")
        except Exception:  # a store without delete_key: the keys stay (a few bytes each)
            pass
    _NAMES[sequence] = what


def _message(what: str, rank: int, world: int, timeout: float) -> str:
    return (f"ww_callbacks: {what} is a collective under a process group of {world} ranks: every "
            f"rank must call it (rank {rank} waited {timeout:g} s for the others). Call it on "
            f"every rank (a Watcher: make one on every rank, or pass distributed=False when the "
            f"weights are replicated), or analyse a full state dict on one rank (e.g. "
            f"analyze(model.module.state_dict()) for DDP).")


def run_everywhere(work: Callable[[], Any]) -> list[Any]:
    """Run ``work()`` here and return every rank's result, in rank order. An exception on any rank
    is raised on every rank (as :class:`CollectiveError`), so no rank waits forever for one that
    failed."""
    import torch.distributed as dist

    rank, world = rank_and_size()
    try:
        mine: tuple[Any, str | None] = (work(), None)
    except Exception as err:
        mine = (None, f"{err!r}\n{traceback.format_exc()}")
    if world == 1:
        everyone = [mine]
    else:
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
    failures = [f"rank {r}: {error}" for r, (_, error) in enumerate(everyone) if error]
    if failures:
        raise CollectiveError("ww_callbacks: the distributed analysis failed on "
                              + "\n".join(failures))
    return [value for value, _ in everyone]
