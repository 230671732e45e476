"""The count behind ``ww/snapshots_dropped``: every due snapshot that was not analysed, by why.

One small object instead of counters spread over the session, its worker and the collective
snapshots; :meth:`DropCounts.total` adds the two live counts it does not own (the worker's
replaced snapshots and a distributed run's discarded steps)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DropCounts:
    """Snapshots that were due but not analysed.

    ``earlier``: of earlier runs (a resumed state dict) and of workers already closed;
    ``no_buffer``: not copied because no buffer was free (GPU) or the ranks declined together
    (taken back when the same step is copied after all, e.g. the final weights at close);
    ``skipped``: not copied because the worker would not get to them before the next one."""

    earlier: int = 0
    no_buffer: int = 0
    skipped: int = 0

    def total(self, worker_replaced: int = 0, discarded: int = 0) -> int:
        """Every drop: these counts plus the live worker's replaced snapshots and the steps a
        distributed run discarded (some rank never analysed them)."""
        return self.earlier + self.no_buffer + self.skipped + worker_replaced + discarded
