"""The one background thread that analyses snapshots, with a bounded hand-over.

The training thread calls :meth:`BackgroundWorker.submit`, which never blocks on the analysis:
there is one pending slot, and a snapshot that arrives while another is still pending replaces it
(the stale one is dropped and counted). Memory is therefore bounded by two snapshots whatever the
number of steps. Results and errors wait in queues for the training thread to collect them
(:meth:`drain`), so sinks and policies run where the training libraries expect them.

``max_duty`` (None: off) bounds the share of time the worker spends analysing, in the worker's
own CPU time (``time.thread_time()``, so waiting for the CPU or for a GPU copy is not counted):
after an analysis that used c CPU seconds it rests c * (1/max_duty - 1) seconds before the next
one. The first analysis of a worker is exempt (it carries one-time costs: imports, allocator and
BLAS warm-up). A rest delays the next analysis rather than dropping it: a snapshot that arrives
meanwhile waits in the slot, so a run whose analyses fit in its cadence at that share is analysed
entirely; only when the analyses (plus rests) cannot keep up does the newest snapshot win.
Closing skips the rest, so the final snapshot is always analysed.

:meth:`BackgroundWorker.accepts` tells the training thread, before it copies anything, whether a
snapshot taken now would be analysed or replaced by the next one; the watcher skips the copy of a
snapshot that would be replaced (see :meth:`~ww_callbacks.session.WatchSession.snapshot`).

The thread lives only while there is work: it ends ``linger`` seconds after its last analysis and
a new one starts with the next snapshot. So a training run that dies without telling us (Keras
has no exception hook) leaves no thread behind once its last analysis is done.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .options import ANALYSIS_IN
from .results import AnalysisResult, Snapshot

#: ``max_duty``'s default: :data:`CPU_MAX_DUTY` when training runs on the CPU, off (None) when the
#: watched weights live on a GPU (the analysis then only competes with the data loaders).
DEFAULT_MAX_DUTY = "auto"
#: What ``"auto"`` means on the CPU: the worker uses at most half a core on average, in its own
#: CPU time, beyond its first analysis. Analyses that fit in the cadence at that share (each
#: needing at most half the time between two snapshots) are all done.
CPU_MAX_DUTY = 0.5


#: ``analysis_in``'s default: a child process when training and analysis run on the CPU (measured:
#: bench/interference.py), a thread when the weights or the analysis are on a GPU (the analysis
#: then mostly waits for the GPU, and its CUDA tensors stay in the training process).
DEFAULT_ANALYSIS_IN = "auto"
#: Environment variable that sets what ``analysis_in="auto"`` means for every session of a
#: process ("process" or "thread"), e.g. to keep analyses in the training process under a
#: debugger or for a test that patches the analysis.
ANALYSIS_IN_ENV = "WW_CALLBACKS_ANALYSIS_IN"


def check_analysis_in(value: str) -> str:
    """``analysis_in`` as given (``"auto"`` as :data:`ANALYSIS_IN_ENV` says, when set), or a
    clear error."""
    if value not in ANALYSIS_IN:
        raise ValueError(f"analysis_in must be one of {ANALYSIS_IN}, not {value!r}")
    if value == "auto":
        forced = os.environ.get(ANALYSIS_IN_ENV, "").strip().lower()
        if forced in ("process", "thread"):
            return forced
    return value


def resolve_max_duty(max_duty: float | str | None, *, on_gpu: bool) -> float | None:
    """The share the worker is held to: ``"auto"`` becomes :data:`CPU_MAX_DUTY` on the CPU and
    None (no limit) on a GPU; a number or None is taken as given."""
    if max_duty == "auto":
        return None if on_gpu else CPU_MAX_DUTY
    if max_duty is not None and (isinstance(max_duty, str) or not 0 < max_duty <= 1):
        raise ValueError(f"max_duty must be 'auto', None or in (0, 1], not {max_duty!r}")
    return max_duty


#: :meth:`BackgroundWorker.accepts` copies a snapshot when the worker is predicted free before
#: this many intervals: training steps and analyses vary in time (a loaded 2-core machine showed
#: intervals varying 3x), and a wasted copy costs less than a requested analysis lost.
ACCEPT_MARGIN = 2.0

#: An analysis running past its estimated time (slowed by the training threads on the same
#: cores) is taken to need at least this share of the estimate more, not to end right now.
#: Measured reason: with "ends now", a 6 x Linear(1024) loop on 2 cores copied 76 of 100 due
#: steps during one overdue analysis (1.75 ms each) only for the next copy to replace them.
OVERDUE_REMAINDER = 0.25


@dataclass(frozen=True)
class WorkerError:
    """An exception raised while analysing the snapshot of ``step``."""

    step: int
    error: BaseException
    traceback: str


#: The analysis thread's nice value (per thread, Linux); the child process uses the same.
THREAD_NICE = 10


class BackgroundWorker:
    """Runs ``analyse(snapshot)`` in one daemon thread, newest snapshot first.

    ``blas_threads`` caps the BLAS threads (threadpoolctl) while it analyses, and ``nice`` lowers
    the thread's scheduling priority (Linux: per-thread nice value; elsewhere ignored), so that
    the worker takes the cores training leaves idle instead of slowing it down. None leaves
    either alone.
    """

    def __init__(self, analyse: Callable[[Snapshot], AnalysisResult], *,
                 blas_threads: int | None = 1, name: str = "ww-worker", linger: float = 1.0,
                 nice: int | None = THREAD_NICE, max_duty: float | None = None):
        if max_duty is not None and not 0 < max_duty <= 1:
            raise ValueError(f"max_duty must be in (0, 1] or None, not {max_duty!r}")
        self._analyse = analyse
        self._blas_threads = blas_threads
        self._cond = threading.Condition()
        self._pending: Snapshot | None = None
        self._kept: deque[Snapshot] = deque()  # submitted with keep=True: never replaced
        self._busy = False
        self._closing = False
        self._results: deque[AnalysisResult] = deque()
        self._errors: deque[WorkerError] = deque()
        self.dropped = 0
        self.has_news = False  # set by the worker with each result/error: a lock-free check
        self._name = name
        self._linger = linger
        self._nice = nice
        self._max_duty = max_duty
        self._rest_until = 0.0
        self._analyses = 0  # finished analyses (the first carries one-time costs)
        self._busy_since = 0.0
        self._wall_estimate: float | None = None  # wall time of the last analysis but the first
        self._rest_estimate = 0.0  # the rest that followed it
        self._thread: threading.Thread | None = None
        self._cpu = 0.0  # CPU seconds of the last analysis

    def _start_thread(self) -> None:
        """Start the thread if none runs (call with the lock held)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    # ------------------------------------------------------------ training thread

    def submit(self, snapshot: Snapshot, *, keep: bool = False) -> None:
        """Hand a snapshot over; replaces (and counts as dropped) a still pending one, unless
        that one was submitted with ``keep=True`` (the initial weights of a run): those are
        queued and always analysed, first."""
        with self._cond:
            if self._closing:
                snapshot.done()
                raise RuntimeError("the worker is closed")
            if keep:
                self._kept.append(snapshot)
            else:
                stale, self._pending = self._pending, snapshot
                if stale is not None:
                    self.dropped += 1
                    stale.done()
            self._start_thread()
            self._cond.notify()

    def accepts(self, interval: float | None) -> bool:
        """Would a snapshot submitted now be analysed, given that the next one comes in
        ``interval`` seconds (None: unknown)? Only then is it worth copying. True when the
        worker is free now, or predicted free (from the wall time of its recent analyses)
        before the next one arrives. False while a snapshot waits in the slot (this one would
        replace a copy not yet analysed), and while the worker is busy and its cost is unknown
        (its first analyses): the caller skips the copy and takes the newest skipped step when
        the worker frees, so copies stay at most the analyses plus one in every regime.
        Measured reason: accepting while the cost was unknown copied 268 snapshots for 2
        analyses (5.2 ms per due step on a 6 x Linear(1024) loop, bench/dropped_snapshot_cost.py).
        """
        with self._cond:
            if self._closing:
                return True
            if self._pending is not None:
                return False
            now = time.monotonic()
            queued = len(self._kept) + (1 if self._busy else 0)
            if not queued and now >= self._rest_until:
                return True
            estimate = self._wall_estimate
            if estimate is None or interval is None:
                return False
            free = now
            if self._busy:
                free = max(now + OVERDUE_REMAINDER * estimate,
                           self._busy_since + estimate) + self._rest_estimate
            free += len(self._kept) * (estimate + self._rest_estimate)
            return max(free, self._rest_until) < now + ACCEPT_MARGIN * interval

    def drain(self) -> tuple[list[AnalysisResult], list[WorkerError]]:
        """Results and errors produced since the last call."""
        if not self.has_news:
            return [], []
        with self._cond:
            self.has_news = False
            results, errors = list(self._results), list(self._errors)
            self._results.clear()
            self._errors.clear()
        return results, errors

    @property
    def idle(self) -> bool:
        """True when nothing is pending or being analysed."""
        with self._cond:
            return self._pending is None and not self._kept and not self._busy

    @property
    def alive(self) -> bool:
        """True while a thread runs (it ends by itself when idle)."""
        with self._cond:
            return self._thread is not None

    def close(self, timeout: float | None = None) -> bool:
        """Analyse what is pending, then stop. Returns False if the thread is still running after
        ``timeout`` seconds (it is a daemon: it never keeps the process alive)."""
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def skip_rest(self) -> None:
        """Analyse what is pending without the ``max_duty`` rest (someone waits for it)."""
        with self._cond:
            self._rest_until = 0.0
            self._cond.notify_all()

    def discard_pending(self) -> None:
        """Drop the pending snapshot, if any (used when training fails: no final analysis).
        Snapshots submitted with ``keep=True`` (the initial weights) are still analysed."""
        with self._cond:
            stale, self._pending = self._pending, None
        if stale is not None:
            stale.done()

    # ------------------------------------------------------------ worker thread

    def _next(self) -> Snapshot | None:
        """The next snapshot, or None when the thread should end (closing with nothing left,
        or idle for ``linger`` seconds); then the thread is deregistered under the lock, so a
        concurrent submit starts a new one. A snapshot waits out the ``max_duty`` rest first
        (not when closing); an idle thread does not stay alive to rest."""
        with self._cond:
            while True:
                if self._pending is None and not self._kept and not self._closing:
                    self._cond.wait_for(
                        lambda: self._pending is not None or self._kept or self._closing,
                        timeout=self._linger)
                if self._pending is None and not self._kept:
                    self._thread = None
                    return None
                while not self._closing and time.monotonic() < self._rest_until:
                    self._cond.wait(timeout=self._rest_until - time.monotonic())
                if self._kept:
                    snapshot = self._kept.popleft()
                else:
                    snapshot, self._pending = self._pending, None
                if snapshot is not None:  # (discard_pending may have emptied the slot)
                    self._busy = True
                    self._busy_since = time.monotonic()
                    return snapshot

    def _lower_priority(self) -> None:
        if not self._nice or not hasattr(os, "setpriority"):
            return
        try:  # on Linux a thread id is a valid PRIO_PROCESS target and only this thread changes
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self._nice)
        except OSError:
            pass

    def _analyse_one(self, snapshot: Snapshot, limiter: Any) -> AnalysisResult:
        """Analyse one snapshot in this thread; sets ``self._cpu`` to the CPU seconds used (what
        ``max_duty`` rests after). :class:`~ww_callbacks.process_worker.ProcessWorker`
        analyses in its child process instead."""
        cpu_start = time.thread_time()
        try:
            if limiter is not None:
                with limiter.limit(limits=self._blas_threads, user_api="blas"):
                    return self._analyse(snapshot)
            return self._analyse(snapshot)
        finally:
            self._cpu = time.thread_time() - cpu_start

    def _run(self) -> None:
        if sys.platform.startswith("linux"):
            self._lower_priority()
        limiter = None
        if self._blas_threads is not None:
            from threadpoolctl import ThreadpoolController

            limiter = ThreadpoolController()
        while True:
            snapshot = self._next()
            if snapshot is None:
                return
            start = time.monotonic()
            self._cpu = 0.0
            try:
                result = self._analyse_one(snapshot, limiter)
            except BaseException as err:  # kept for the training thread, never lost
                with self._cond:
                    self._errors.append(WorkerError(snapshot.step, err, traceback.format_exc()))
                    self.has_news = True
            else:
                with self._cond:
                    self._results.append(result)
                    self.has_news = True
            finally:
                snapshot.done()
                cpu = self._cpu
                with self._cond:
                    self._busy = False
                    self._analyses += 1
                    if self._analyses > 1:  # the first one's one-time costs count nowhere
                        self._wall_estimate = time.monotonic() - start
                        if self._max_duty is not None:
                            self._rest_estimate = cpu * (1 / self._max_duty - 1)
                            self._rest_until = time.monotonic() + self._rest_estimate
                    self._cond.notify_all()
