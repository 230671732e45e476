"""Live watching of a model trained on several ranks: snapshots as collectives, each rank's
worker analysing its own layers, rows brought to rank 0 at the next snapshot or at the end.

:class:`DistributedSnapshots` stands in for the :class:`~ww_callbacks.snapshot.Snapshotter` of
:class:`~ww_callbacks.session.WatchSession` when the session runs on every rank:

- :meth:`~DistributedSnapshots.take` (training thread, every rank, same point): a handshake (a
  rank that does not take part makes the others raise instead of hang), rank 0's step broadcast,
  then the owned layers' full matrices gathered (:class:`~.gather.ShardedLayers`);
- :meth:`~DistributedSnapshots.analyse` (each rank's background worker): the owned rows only;
- :meth:`~DistributedSnapshots.exchange` (training thread, every rank, at the next snapshot and
  at close): finished parts go to rank 0, which merges the complete
  :class:`~ww_callbacks.results.AnalysisResult` s (every rank's part of a step present) and
  broadcasts them: rank 0 records and delivers them, every rank's policies decide on them (so
  early stopping stops every rank and learning-rate multipliers are the same everywhere). A
  step some rank never analysed (its worker dropped the snapshot for a newer one, or failed) is
  discarded and counted in :attr:`discarded`. Training never waits for an analysis, only for
  the parts already finished.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..analysis import columns_for
from ..options import MIN_EVALS_FOR_TRUST
from ..results import AnalysisResult, Snapshot
from ..scalars import summarized_result
from .analyze import analyze_owned, merge_rows
from .collective import handshake, rank_and_size
from .gather import watched_layers


@dataclass
class Part:
    """One rank's rows of one snapshot."""

    step: int
    epoch: int | None
    rows: pd.DataFrame
    spectra: dict[str, np.ndarray]
    wall_time: float
    duration_s: float
    randomized: bool


@dataclass
class _Waiting:
    parts: dict[int, Part] = field(default_factory=dict)


class DistributedSnapshots:
    """Snapshots, analysis parts and their exchange for one model on every rank (see the module
    docstring). ``select``: the watcher's layer selection (``layers``, ``min_evals``,
    ``max_evals``, ``max_N``); ``analysis``: its analysis options (those of
    :func:`ww_callbacks.analysis.analyze_layers`); ``adapters``: as for
    :func:`ww_callbacks.analyze` (replicated weights only); ``base``: an
    :class:`~ww_callbacks.session.host_copies.InitialBase` (``WatchSession(base="initial")``:
    each rank keeps its owned layers' first weights); ``timeout``: seconds a rank waits for the
    others at a snapshot or exchange before raising; ``min_evals_for_trust``: the merged
    summary's threshold (:func:`~ww_callbacks.scalars.model_summary`)."""

    uses_cuda = False  # copies are synchronous (collectives on the training thread)

    def __init__(self, model: Any, select: dict, analysis: dict, *, device: Any = "cpu",
                 timeout: float | None = None, adapters: str = "effective", base: Any = None,
                 min_evals_for_trust: int = MIN_EVALS_FOR_TRUST):
        self.rank, self.world_size = rank_and_size()
        self.sharded = watched_layers(model, select.get("layers"), adapters=adapters,
                                      min_evals=select.get("min_evals", 8),
                                      max_evals=select.get("max_evals", 15000),
                                      max_N=select.get("max_N", 50000))
        self.base = base
        self.layers = self.sharded.layers
        self.analysis = dict(analysis)
        self.min_evals_for_trust = min_evals_for_trust
        self.device = device
        self.timeout = timeout
        self._lock = threading.Lock()
        self._finished: dict[int, Part] = {}  # analysed here, not yet sent
        self._analysed: set[int] = set()
        self._abandoned: list[int] = []  # taken here but never analysed (dropped, failed)
        self._positions: dict[int, list[int]] = {}
        self._waiting: dict[int, _Waiting] = {}  # rank 0: step -> parts received
        self._given_up: set[int] = set()
        self.discarded = 0  #: steps (rank 0) given up because some rank never analysed them
        self.gathered_bytes = 0  #: bytes of full matrices assembled at the last snapshot

    # ------------------------------------------------------------------ training thread

    def take(self, step: int, epoch: int | None, randomize: bool) -> Snapshot:
        """Collective: agree on rank 0's step and trap flag, gather the owned layers."""
        import torch.distributed as dist

        handshake("a watcher snapshot", self.timeout)
        agreed = [(step, epoch, randomize)]
        dist.broadcast_object_list(agreed, src=0)
        step, epoch, randomize = agreed[0]
        owned = self.sharded.gather(self.device)
        self.gathered_bytes = self.sharded.gathered_bytes
        with self._lock:
            self._positions[step] = [position for position, _ in owned]
        return Snapshot(step, epoch, [layer for _, layer in owned], randomize, time.time(),
                        release=lambda: self._released(step))

    def exchange(self, *, ready: bool = True,
                 force: bool = False) -> tuple[list[AnalysisResult], bool]:
        """Collective: every rank's finished parts to rank 0, which merges the steps now complete
        (oldest first) and decides whether the snapshot about to be taken is taken: only when
        every rank's worker is ``ready`` (idle) or some rank asks to ``force`` it (the initial
        and final weights). So no rank's worker replaces a pending snapshot another rank
        analyses (the step would be lost), and no weights are gathered in vain. Every rank gets
        the analyses and the decision (rank 0 records and delivers the analyses, every rank's
        policies decide on them, so they decide the same everywhere)."""
        import torch.distributed as dist

        handshake("a watcher exchange", self.timeout)
        with self._lock:
            mine = (list(self._finished.values()), list(self._abandoned), ready, force)
            self._finished.clear()
            self._abandoned.clear()
        everyone: list[Any] | None = [None] * self.world_size if self.rank == 0 else None
        dist.gather_object(mine, everyone, dst=0)
        done: list[Any] = [None]
        if self.rank == 0:
            take = any(f for *_, f in everyone) or all(r for _, _, r, _ in everyone)
            done = [(self._complete(everyone), take)]
        dist.broadcast_object_list(done, src=0)  # every rank's policies see the same analyses
        return done[0]

    def _complete(self, everyone: list[Any]) -> list[AnalysisResult]:
        """Rank 0: file the parts received; the steps now complete, merged, oldest first."""
        for rank, (parts, abandoned, *_) in enumerate(everyone):
            for part in parts:
                if part.step not in self._given_up:
                    self._waiting.setdefault(part.step, _Waiting()).parts[rank] = part
            for step in abandoned:
                if step not in self._given_up:
                    self._given_up.add(step)
                    self._waiting.pop(step, None)
                    self.discarded += 1
        complete = sorted(step for step, w in self._waiting.items()
                          if len(w.parts) == self.world_size)
        return [self._merge(self._waiting.pop(step)) for step in complete]

    # ------------------------------------------------------------------ worker thread

    def analyse(self, snapshot: Snapshot) -> Part:
        """This rank's rows of ``snapshot`` (kept for the next :meth:`exchange`)."""
        start = time.perf_counter()
        snapshot.ready()
        with self._lock:
            positions = self._positions.pop(snapshot.step)
        options = {k: v for k, v in self.analysis.items() if k != "randomize"}
        if self.base is not None:  # the owners never change: each keeps its own layers' base
            options["base"] = self.base.for_layers(snapshot.layers)
        rows = analyze_owned(list(zip(positions, snapshot.layers, strict=True)),
                             randomize=snapshot.randomize, progress=False, **options)
        part = Part(snapshot.step, snapshot.epoch, rows, rows.attrs.pop("spectra", {}),
                    snapshot.wall_time, time.perf_counter() - start, snapshot.randomize)
        with self._lock:
            self._finished[part.step] = part
            self._analysed.add(part.step)
        return part

    def _released(self, step: int) -> None:
        with self._lock:
            self._positions.pop(step, None)
            if step not in self._analysed:
                self._abandoned.append(step)
            self._analysed.discard(step)

    # ------------------------------------------------------------------ rank 0

    def _merge(self, waiting: _Waiting) -> AnalysisResult:
        parts = [waiting.parts[rank] for rank in sorted(waiting.parts)]
        first = parts[0]
        columns = columns_for(randomize=first.randomized, mp_fit=self.analysis.get("mp_fit"),
                              fix_fingers=self.analysis.get("fix_fingers"))
        details = merge_rows([p.rows for p in parts], columns)
        details.attrs["skipped"] = [s.as_dict() for s in self.sharded.skipped]
        spectra: dict[str, np.ndarray] = {}
        for part in parts:
            spectra.update(part.spectra)
        return summarized_result(first.step, first.epoch, details, wall_time=first.wall_time,
                                 duration_s=max(p.duration_s for p in parts),
                                 randomized=first.randomized, spectra=spectra,
                                 min_evals_for_trust=self.min_evals_for_trust)

    def close(self) -> None:
        """Forget what is left."""
        with self._lock:
            self._finished.clear()
            self._positions.clear()
        self._waiting.clear()
        close = getattr(self.sharded, "close", None)
        if close is not None:
            close()
