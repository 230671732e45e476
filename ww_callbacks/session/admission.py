"""When a due snapshot is copied, skipped, or taken after all (the training thread's decision).

A snapshot the worker would not get to before the next due one replaces it is not copied: it is
counted as skipped (:class:`~.drops.DropCounts`) at no cost to training. The newest skipped call
is remembered, so that a caller who waits (:meth:`WatchSession.wait_idle
<ww_callbacks.session.WatchSession.wait_idle>`) or closes gets it analysed after all, as long as
the weights have not changed since (no newer step).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from .drops import DropCounts


class DueCall(NamedTuple):
    """One due snapshot: what to copy and how to analyse it."""

    model: Any
    step: int
    epoch: int | None
    randomize: bool


class Admission:
    """The counters of snapshots asked for and taken, and the decision for each due one.

    ``traps_every``: every k-th snapshot (by :attr:`snapshots_taken`) is also randomised to count
    correlation traps (0: never). ``drops``: where skipped snapshots are counted."""

    def __init__(self, traps_every: int, drops: DropCounts):
        self.traps_every = traps_every
        self.drops = drops
        self.snapshots_taken = 0  # snapshots taken or skipped (a skipped one is due, not lost)
        self.copies = 0  # snapshots copied, analysed or not (at most the analyses plus one)
        self.last_step = -1  # the newest step a snapshot was asked for
        self.last_snapshot_step: int | None = None  # the step of the last snapshot taken
        self.skipped_call: DueCall | None = None  # the newest due call that was not copied
        self._last_due: float | None = None  # monotonic time of the last due call

    def is_new_step(self, step: int) -> bool:
        """False when the weights of ``step`` were the last ones snapshotted."""
        return step != self.last_snapshot_step

    def admit(self, model: Any, step: int, epoch: int | None, randomize: bool | None,
              worker: Any, collective: bool) -> DueCall | None:
        """The call to copy now, or None when it is skipped: the worker (``worker``, None before
        the first snapshot) predicts it is busy until the next due call (the interval since the
        previous call stands for the next one). A second call for a skipped step takes it back.
        ``collective``: the ranks decide together when copying (never skipped here)."""
        again = self.skipped_call is not None and self.skipped_call.step == step
        if randomize is None:
            randomize = (self.skipped_call.randomize if again else bool(self.traps_every)
                         and self.snapshots_taken % self.traps_every == 0)
        now = time.monotonic()
        interval = None if self._last_due is None else now - self._last_due
        self._last_due = now
        self.last_step = max(self.last_step, step)
        call = DueCall(model, step, epoch, randomize)
        if collective:
            return call
        if self.snapshots_taken and worker is not None and not worker.accepts(interval):
            # the next due snapshot would replace this one before the worker gets to it: no copy
            if not again:
                self.snapshots_taken += 1
                self.drops.skipped += 1
            self.skipped_call = call
            return None
        if again:  # a second call for a skipped step (e.g. last epoch = end): taken now
            self.snapshots_taken -= 1
            self.drops.skipped -= 1
        self.skipped_call = None
        return call

    def taken(self, step: int) -> bool:
        """A snapshot of ``step`` was copied and queued; True when it is the run's first (the
        initial weights, never replaced)."""
        self.copies += 1
        self.last_step = max(self.last_step, step)
        first = self.snapshots_taken == 0
        self.snapshots_taken += 1
        self.last_snapshot_step = step
        return first

    def take_skipped(self, before_step: int | None = None,
                     cancelled: bool = False) -> DueCall | None:
        """The last skipped call, to copy now, if it is of the newest step (no step since, so the
        model still holds its weights); forgotten otherwise, and with ``before_step`` (a snapshot
        of that step comes next) when it is of another step, or when ``cancelled``."""
        skipped, self.skipped_call = self.skipped_call, None
        if (skipped is None or skipped.step != self.last_step or cancelled
                or (before_step is not None and skipped.step != before_step)):
            return None
        self.drops.skipped -= 1
        self.snapshots_taken -= 1
        return skipped
