"""The framework-free watcher: snapshot on the training thread, analyse in the background,
record, then deliver to sinks and policies on the training thread.

The integrations (Lightning, Keras, plain torch, Hugging Face) drive its subclass
:class:`~ww_callbacks.session.WatchSession`, which adds the cadence, waiting, the sinks built from
options and resuming; used directly, call :meth:`Watcher.snapshot`, :meth:`Watcher.poll` and
:meth:`Watcher.close`. Everything slow happens in the
:class:`~ww_callbacks.worker.BackgroundWorker`; the policies are driven through a
:class:`~ww_callbacks.policies.policy_set.PolicySet`.
Each result goes to the history file first; then the policies decide on it (in the worker, see
:mod:`ww_callbacks.policies`), then the sinks get it with the policies' values; the policies act
on the model on the training thread, at :meth:`Watcher.poll`.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .analysis import NON_FINITE, AnalysisCancelled, InitialBase, analyze_layers
from .devices import resolve_analysis_device
from .esd import ESD_EVERY, EsdSchedule, compact_spectra
from .faults import LOG, FaultReporter, Retrying, WatcherWarning
from .history import HISTORY_FILE, HistoryWriter, read_records
from .layers import extract_layers, select_layers
from .layers.tied import check_tied
from .options import MAX_EVALS, MAX_N, MIN_EVALS
from .policies.base import Policy, Target
from .policies.policy_set import PolicySet
from .results import AnalysisResult, Snapshot
from .scalars import DROPPED, MODEL_PREFIX, layer_scalars, model_summary
from .shared_arrays import SegmentPool, shareable
from .sinks import Sink, in_worker, reopen_of
from .snapshot import Snapshotter
from .worker import (
    DEFAULT_ANALYSIS_IN,
    DEFAULT_MAX_DUTY,
    BackgroundWorker,
    check_analysis_in,
    resolve_max_duty,
)

#: How long ``close(final=False)`` (an exception, Ctrl-C) lets the analysis in flight finish
#: before cancelling it, and how long it then waits for the worker to stop between two layers;
#: together under 1 s. Past that the daemon thread is abandoned (it ends on its own; what it
#: finished is kept). Measured: a 2000x2000 layer takes ~2 s on one core, so waiting for it
#: made Ctrl-C take as long as the whole analysis (14 s in the issue).
INTERRUPT_GRACE_S = 0.5
INTERRUPT_STOP_S = 0.3


_LIVE: weakref.WeakSet = weakref.WeakSet()
_EXIT_HOOK: list[bool] = []  # [True] once the exit hook is registered


def _register_exit_hook() -> None:
    """Register :func:`_close_all_at_exit` once, when the first watcher is made (importing this
    module registers nothing)."""
    if not _EXIT_HOOK:
        _EXIT_HOOK.append(True)
        atexit.register(_close_all_at_exit)


def _close_all_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    failed = getattr(sys, "last_type", None) is not None  # the script died of an exception
    for watcher in list(_LIVE):
        watcher.close(timeout=5.0, deliver=False, final=not failed)


class Watcher:
    """Watches one model: snapshots, background analysis, history, sinks and policies.

    ``log_dir``: where ``ww_history.jsonl`` is written (None: no file). ``traps_every``: every
    k-th analysis also randomises the weights to count correlation traps (0: never).
    ``strict``: re-raise a failed analysis on the training thread instead of warning.
    ``blas_threads``: BLAS threads of the worker. ``max_duty``: the largest share of time the
    worker may spend analysing, in its own CPU time, its first analysis (one-time costs) not
    counted; it rests in between, and a snapshot that arrives meanwhile waits for it, so runs
    whose analyses fit in the cadence at that share are analysed entirely. The default
    ``"auto"`` is 0.5 (half a core on average) when training runs on the CPU and no limit when
    the weights are on a GPU; None: no limit. Whatever the limit, every requested snapshot is
    analysed unless the analysis cannot keep up: then the newest wins and the others are
    counted in ``ww/snapshots_dropped`` (without being copied, see :meth:`snapshot`); the first
    (initial weights) and the last (final weights) are always analysed. Analysis
    options (``layers``, ``min_evals``, ``max_evals``, ``max_N``, ``mp_fit``, ``fix_fingers``,
    ``analysis_device``, ``seed``, ``adapters``, ``tied``) are those of
    :func:`ww_callbacks.analyze`;
    ``analysis_device="auto"`` (default): the GPU the model trains on, else the CPU
    (:mod:`ww_callbacks.devices`); ``"cpu"`` keeps the analysis off the GPU.
    ``base="initial"``: analyse ``W - W_initial``, the update since the first snapshot (see
    :class:`~ww_callbacks.analysis.InitialBase`); None: the weights themselves.
    ``keep_spectra`` (default True): keep the eigenvalues for pictures and the stored ESDs;
    ``esd_every``: the compact ESDs of every layer (:mod:`ww_callbacks.esd`) go to
    ``ww_spectra.jsonl`` next to the history at the first analysis, every ``esd_every``-th one
    (0: not on a cadence), when a layer gains a trap or changes band, and at the final one.

    ``policies`` (:mod:`ww_callbacks.policies`) decide on each result in the worker and act at
    :meth:`poll` on ``target`` (a :class:`~ww_callbacks.policies.base.Target` the integration
    makes for its framework, e.g. :class:`~ww_callbacks.integrations.torch_target.TorchTarget`).

    ``distributed``: the watcher runs on every rank of a torch process group and each snapshot is
    a collective (:mod:`ww_callbacks.distributed.session`): each rank analyses its share of the
    layers, rank 0 records, delivers and runs the policies. None (default): only when the
    weights are sharded (FSDP, FSDP2, tensor parallel, ZeRO-3), which one rank cannot read alone.
    """

    def __init__(self, *, log_dir: str | os.PathLike | None = None, sinks: Sequence[Sink] = (),
                 policies: Sequence[Policy] = (), layers: Any = None,
                 min_evals: int = MIN_EVALS, max_evals: int = MAX_EVALS, max_N: int = MAX_N,
                 traps_every: int = 1,
                 mp_fit: bool = False, fix_fingers: str | None = None,
                 analysis_device: Any = "auto",
                 blas_threads: int | None = 1, strict: bool = False, keep_spectra: bool = True,
                 esd_every: int = ESD_EVERY, seed: int = 0,
                 max_duty: float | str | None = DEFAULT_MAX_DUTY,
                 target: Target | None = None, adapters: str = "effective",
                 base: str | None = None, distributed: bool | None = None,
                 tied: str = "once", analysis_in: str = DEFAULT_ANALYSIS_IN):
        if base not in (None, "initial"):
            raise ValueError(f"base must be None or 'initial', not {base!r}")
        self.distributed = distributed
        self.analysis_in = check_analysis_in(analysis_in)
        self._segments: SegmentPool | None = None  # shared memory of the analysis process
        #: Snapshots copied (the training thread's copies), analysed or not: at most the
        #: analyses plus one (see :meth:`snapshot`).
        self.copies = 0
        self._dist: Any = None  # a DistributedSnapshots when snapshots are collectives
        self.sinks = list(sinks)
        #: The policies, driven as one (:class:`~ww_callbacks.policies.policy_set.PolicySet`).
        self.policies = PolicySet(policies, strict=strict)
        self.policies.reset()  # a new watcher is a new run
        self.target = target
        self.strict = strict
        self.traps_every = traps_every
        self._select = dict(layers=layers, min_evals=min_evals, max_evals=max_evals, max_N=max_N)
        self.analysis_device = analysis_device
        self._analysis = dict(mp_fit=mp_fit, fix_fingers=fix_fingers, device=None, seed=seed,
                              keep_spectra=keep_spectra)
        #: When the compact ESDs go to the history's sidecar (:mod:`ww_callbacks.esd`).
        self._esd = EsdSchedule(esd_every)
        self._adapters = adapters
        self._tied = check_tied(tied)
        self._base = InitialBase() if base == "initial" else None
        self.skipped: list = []  # the Skip records of the watched model (what is not analysed)
        self.blas_threads = blas_threads
        self.max_duty = max_duty
        self.history: HistoryWriter | None = None
        #: Failures of the history and the sinks, grouped by cause (see :mod:`.faults`).
        self.faults = FaultReporter()
        self._outputs: dict[int, Retrying] = {}
        self._cancel = threading.Event()  # set by close(final=False): stop between layers
        self._warned_nothing = False  # "no layer to analyse", once
        self._warned_non_finite = False  # "NaN/Inf in the weights", once
        self.set_log_dir(log_dir)
        self._snapshotter: Snapshotter | None = None
        self._model_ref: Any = None
        self._worker: BackgroundWorker | None = None
        self._sink_failures: deque[str] = deque()
        self.snapshots_taken = 0
        self.results_delivered = 0
        self._dropped_before = 0  # drops of earlier (resumed) runs
        self._snapshot_dropped = 0  # GPU snapshots with no free buffer
        self._skipped = 0  # due snapshots not copied: the worker would not have got to them
        self._skipped_call: tuple | None = None  # (model, step, epoch, randomize) of the last
        self._last_due: float | None = None  # monotonic time of the last snapshot() call
        self.last_result: AnalysisResult | None = None
        self.last_step = -1
        self._last_snapshot_step: int | None = None
        _register_exit_hook()
        _LIVE.add(self)

    # ------------------------------------------------------------------ setup

    def set_log_dir(self, log_dir: str | os.PathLike | None) -> None:
        """Write the history into ``log_dir`` from now on (integrations learn it late)."""
        if self.history is not None:
            self.history.close()
        self.history = HistoryWriter(Path(log_dir) / HISTORY_FILE) if log_dir else None
        if self.history is not None:
            self.history.open()  # a second watcher on this folder is warned now

    @property
    def layer_selection(self) -> dict[str, Any]:
        """The layer-selection options (``layers``, ``min_evals``, ``max_evals``, ``max_N``), for
        a policy target that must act on the same layers as the analysis."""
        return dict(self._select)

    @property
    def history_path(self) -> Path | None:
        """The history file, or None when the watcher keeps no file."""
        return self.history.path if self.history else None

    @property
    def dropped(self) -> int:
        """Snapshots dropped because the worker was busy (``ww/snapshots_dropped``)."""
        worker = self._worker.dropped if self._worker else 0
        discarded = self._dist.discarded if self._dist is not None else 0
        return self._dropped_before + worker + self._snapshot_dropped + self._skipped + discarded

    def _in_process(self, snapshotter: Snapshotter | None) -> bool:
        """Whether analyses go to a child process (:mod:`ww_callbacks.process_worker`):
        ``analysis_in="process"``, or ``"auto"`` when training and analysis run on the CPU."""
        if self.analysis_in == "thread" or self._dist is not None:
            return False
        if self.analysis_in == "process":
            return True
        return not (snapshotter is not None and snapshotter.uses_cuda) \
            and self._analysis["device"] is None

    def _process_options(self, snapshot: Snapshot) -> dict | None:
        """``analyze_layers``' options for the analysis process; None: analyse here (a base to
        subtract, an analysis on a torch device)."""
        if self._base is not None or self._analysis["device"] is not None:
            return None
        options = {k: v for k, v in self._analysis.items() if k != "device"}
        return {**options, "skipped": list(self.skipped), "cancelled": None}

    def _ensure_worker(self) -> BackgroundWorker:
        if self._worker is None:
            on_gpu = self._snapshotter is not None and self._snapshotter.uses_cuda
            max_duty = resolve_max_duty(self.max_duty, on_gpu=on_gpu)
            if self._in_process(self._snapshotter):
                from .process_worker import ProcessWorker

                self._worker = ProcessWorker(self._analyse, options=self._process_options,
                                             record=self._record, cancelled=self._cancel.is_set,
                                             blas_threads=self.blas_threads, max_duty=max_duty)
            else:
                self._worker = BackgroundWorker(self._analyse, blas_threads=self.blas_threads,
                                                max_duty=max_duty)
        return self._worker

    def _shared_for(self, snapshotter: Snapshotter) -> Snapshotter:
        """Let ``snapshotter`` write into shared memory when the analysis runs in a process."""
        if snapshotter.shared is None and self._in_process(snapshotter):
            if self._segments is None:
                self._segments = SegmentPool()
            snapshotter.shared = self._segments if shareable(snapshotter.layers) else None
        return snapshotter

    def _snapshotter_for(self, model: Any) -> Snapshotter:
        """Layers are chosen once per torch model (its parameters are updated in place); for
        other models (Keras, mappings) the weights are read again at every snapshot."""
        is_torch = hasattr(model, "named_modules") and hasattr(model, "parameters")
        is_keras = type(model).__module__.startswith("keras")
        if (is_torch and not is_keras and self._snapshotter is not None
                and self._model_ref is not None and self._model_ref() is model):
            return self._snapshotter
        self._analysis["device"] = resolve_analysis_device(model, self.analysis_device)
        if is_torch and not is_keras:
            from .distributed.detect import collective_snapshots

            if collective_snapshots(model, self.distributed):
                from .distributed.session import DistributedSnapshots

                self._dist = DistributedSnapshots(model, self._select, self._analysis,
                                                  adapters=self._adapters, base=self._base)
                self._snapshotter = self._dist
                self._model_ref = weakref.ref(model)
                return self._dist
        found, skipped = extract_layers(model, adapters=self._adapters, tied=self._tied)
        kept, filtered = select_layers(found, self._select["layers"],
                                       min_evals=self._select["min_evals"],
                                       max_evals=self._select["max_evals"],
                                       max_N=self._select["max_N"])
        if not kept and not self._warned_nothing:
            self._warned_nothing = True
            passed = "; ".join(f"{s.longname}: {s.reason}" for s in (skipped + filtered)[:8])
            warnings.warn(f"ww_callbacks: {type(model).__name__} has no layer to analyse (none "
                          f"supported within the limits min_evals={self._select['min_evals']}, "
                          f"max_evals={self._select['max_evals']}, max_N={self._select['max_N']}"
                          f"{'; passed over: ' + passed if passed else ''}); its analyses "
                          "have no layers and NaN means", WatcherWarning, stacklevel=4)
        self.skipped = skipped + filtered
        snapshotter = self._shared_for(Snapshotter(kept))
        if is_torch and not is_keras:
            self._snapshotter = snapshotter
            self._model_ref = weakref.ref(model)
        return snapshotter

    # ------------------------------------------------------------------ training thread

    def snapshot(self, model: Any, step: int, epoch: int | None = None, *,
                 randomize: bool | None = None, force: bool = False) -> bool:
        """Copy the weights of ``model`` now and queue them for analysis; returns False when the
        snapshot was not taken (the same step was just taken, no free GPU buffer, or the worker
        would not get to it before the next due snapshot replaces it). Never waits for the
        analysis.

        Nothing is copied for a snapshot that would be dropped: the worker predicts from the
        cost of its recent analyses (:meth:`BackgroundWorker.accepts`) and the time since the
        previous call whether it is free before the next call; if not, this one is counted in
        :attr:`dropped` at no cost to the training thread. While the run's first analysis is in
        flight (its cost unknown) snapshots are copied and the newest wins. If the newest call was
        skipped so, :meth:`wait_idle` and :meth:`close` (``final=True``) take it after all: a
        caller that waits gets it analysed, and the final weights always are.

        A distributed watcher decides with every rank at once instead (a collective): the
        snapshot is skipped on every rank while some rank's worker is busy, unless ``force``
        (e.g. the final weights)."""
        if not self.is_new_step(step):
            return False  # these weights are already queued or analysed (e.g. last epoch = end)
        again = self._skipped_call is not None and self._skipped_call[1] == step
        if randomize is None:
            randomize = (self._skipped_call[3] if again else bool(self.traps_every)
                         and self.snapshots_taken % self.traps_every == 0)
        now = time.monotonic()
        interval = None if self._last_due is None else now - self._last_due
        self._last_due = now
        self.last_step = max(self.last_step, step)
        if self._dist is not None:  # (set by the run's first snapshot, always copied)
            return self._copy_and_submit(model, step, epoch, randomize, force=force)
        if (self.snapshots_taken and self._worker is not None
                and not self._worker.accepts(interval)):
            # the next due snapshot would replace this one before the worker gets to it: no copy
            if not again:
                self.snapshots_taken += 1
                self._skipped += 1
            self._skipped_call = (model, step, epoch, randomize)
            return False
        if again:  # a second call for a skipped step (e.g. last epoch = end): taken now
            self.snapshots_taken -= 1
            self._skipped -= 1
        self._skipped_call = None
        return self._copy_and_submit(model, step, epoch, randomize)

    def _copy_and_submit(self, model: Any, step: int, epoch: int | None,
                         randomize: bool, force: bool = False) -> bool:
        """Copy the weights and hand them to the worker (``snapshot`` decided it is worth it;
        a distributed watcher decides here, with every rank)."""
        snapshotter = self._snapshotter_for(model)
        if self._dist is not None:  # collective: finished parts to rank 0, which decides
            ready = self._worker is None or self._worker.idle
            merged, take = self._dist.exchange(ready=ready,
                                               force=force or self.snapshots_taken == 0)
            self._record_merged(merged)
            if not take:  # the same on every rank
                self._snapshot_dropped += 1
                return False
        snap = snapshotter.take(step, epoch, randomize)
        if snap is None:
            self._snapshot_dropped += 1
            return False
        step = snap.step  # (distributed: rank 0's step)
        self.copies += 1
        self.last_step = max(self.last_step, step)
        first = self.snapshots_taken == 0  # the initial weights of a run: never replaced
        self.snapshots_taken += 1
        self._last_snapshot_step = step
        self.policies.on_snapshot(step, self.target)
        # distributed: a forced snapshot (the final weights) is queued, not put in place of a
        # pending one, which the other ranks may analyse
        self._ensure_worker().submit(snap, keep=first or (force and self._dist is not None))
        return True

    def _take_skipped(self, before_step: int | None = None) -> None:
        """Copy and queue the last due snapshot that :meth:`snapshot` skipped, if it is of the
        newest step (no step since, so the weights are still those of that step). With
        ``before_step`` (a snapshot of that step comes next), a skipped snapshot of another step
        is forgotten instead: the model no longer holds its weights, the new one replaces it."""
        skipped, self._skipped_call = self._skipped_call, None
        if (skipped is None or skipped[1] != self.last_step or self._cancel.is_set()
                or (before_step is not None and skipped[1] != before_step)):
            return
        self._skipped -= 1
        self.snapshots_taken -= 1
        self._copy_and_submit(*skipped)

    def is_new_step(self, step: int) -> bool:
        """False when the weights of ``step`` were the last ones snapshotted (already queued or
        analysed: the end of training right after an epoch's snapshot, extra micro-batches of
        gradient accumulation, the start of a run resumed at an analysed step). The one
        "already taken" check of every integration."""
        return step != self._last_snapshot_step

    def before_optimizer_step(self) -> None:
        """GPU only: order the next optimizer step after the last snapshot's copy."""
        if self._snapshotter is not None and self._snapshotter.uses_cuda:
            self._snapshotter.before_optimizer_step()

    def poll(self, step: int | None = None) -> list[AnalysisResult]:
        """Deliver finished analyses to the sinks, report failed ones, and let the policies act
        on the model (``step``: the optimizer step just finished, for ramps). Cheap when there
        is nothing new: call it between optimizer steps, from any frequent hook."""
        results = self._handle(*self._worker.drain()) if self._worker is not None else []
        skipped = self._skipped_call
        if (skipped is not None and step is not None and skipped[1] == step
                and self._worker is not None and self._worker.idle):
            self._take_skipped(step)  # the worker freed before the weights changed: take them
        if self.policies:
            self._act(step)
        return results

    def _act(self, step: int | None) -> None:
        if self.target is None:
            return
        self.policies.act(self.target, step)
        self._report_sink_failures()

    def _handle(self, results: list[AnalysisResult], errors: list) -> list[AnalysisResult]:
        for err in errors:
            if isinstance(err.error, AnalysisCancelled):
                continue  # training was interrupted: nobody waits for this analysis
            message = f"ww_callbacks: the analysis of step {err.step} failed: {err.error!r}"
            if self.strict:
                raise RuntimeError(message + "\n" + err.traceback) from err.error
            warnings.warn(message, WatcherWarning, stacklevel=3)
        results = [r for r in results if isinstance(r, AnalysisResult)]  # not ranks' parts
        for result in results:
            self._deliver(result)
        self._report_sink_failures()
        return results

    def _record_merged(self, results: list[AnalysisResult]) -> None:
        """A distributed watcher's merged analyses: rank 0 records and delivers them; on the
        other ranks only the policies decide on them (the same decisions as on rank 0)."""
        for result in results:
            if self._dist.rank == 0:
                self._record(result)
                self._deliver(result)
                continue
            self.policies.on_result(result)
            self.results_delivered += 1
            self.last_result = result

    def _scalars(self, result: AnalysisResult) -> dict[str, float]:
        return {**result.summary, DROPPED: float(self.dropped),
                **layer_scalars(result.details), **self.policies.scalars()}

    def model_scalars(self) -> dict[str, float]:
        """The model-level ``ww/`` values of the latest delivered analysis (the policies' ones
        included) with the current ``ww/snapshots_dropped``; empty before the first. What
        integrations add to their epoch logs and monitors."""
        result = self.last_result
        if result is None:
            return {}
        values = {**(result.scalars or result.summary), DROPPED: float(self.dropped)}
        return {k: float(v) for k, v in values.items()
                if k.startswith(MODEL_PREFIX) and v is not None}

    def _output(self, key: Any, name: str, reopen: Any = None, consequence: str = "") -> Retrying:
        """The retrying wrapper of one output (the history or a sink), made on first use."""
        output = self._outputs.get(id(key))
        if output is None:
            output = self._outputs[id(key)] = Retrying(name, self.faults, reopen=reopen,
                                                       consequence=consequence)
        return output

    def _write(self, sink: Sink, result: AnalysisResult, scalars: dict[str, float]) -> None:
        """Write to one sink; a failure is reported once per cause (as a warning on the training
        thread), retried at the next result (after ``sink.reopen()`` when the sink has one) and
        never stops training nor loses data (the history has it)."""
        where = f"the history in {self.history_path} has every result" \
            if self.history_path else ""
        self._output(sink, f"sink {type(sink).__name__}", reopen_of(sink),
                     where)(sink.write, result, scalars)

    def _warn_non_finite(self, result: AnalysisResult) -> None:
        """One warning, the first time weights with NaN or Inf are analysed: which layers, at
        which step (their rows are ``failed``; later analyses say so in the history)."""
        if self._warned_non_finite or "warning" not in result.details.columns:
            return
        bad = result.details.loc[result.details["warning"] == NON_FINITE, "longname"]
        if len(bad):
            self._warned_non_finite = True
            names = ", ".join(map(str, bad.unique()[:10])) + (" ..." if bad.nunique() > 10 else "")
            warnings.warn(f"ww_callbacks: the weights of {bad.nunique()} layer(s) contain NaN or "
                          f"Inf at step {result.step}: {names}; training has diverged there (not "
                          "reported again)", WatcherWarning, stacklevel=5)

    def _deliver(self, result: AnalysisResult) -> None:
        self._warn_non_finite(result)
        scalars = result.scalars or self._scalars(result)
        for sink in self.sinks:
            if not in_worker(sink):
                self._write(sink, result, scalars)
        self._report_sink_failures()
        self.results_delivered += 1
        self.last_result = result

    def _report_sink_failures(self) -> None:
        self._sink_failures.extend(self.policies.failures)
        self.policies.failures.clear()
        self._sink_failures.extend(self.faults.pop_messages())
        while self._sink_failures:
            warnings.warn(self._sink_failures.popleft(), WatcherWarning, stacklevel=4)

    def wait_idle(self, timeout: float = 60.0, *, before_step: int | None = None) -> bool:
        """Block until the worker has nothing left (for tests, monitored epochs and the end of
        training); the worker skips its ``max_duty`` rest for what is pending now. A due
        snapshot that was skipped because the worker was busy is taken first when it is of the
        newest step (the weights have not changed since): waiting, the caller gets every
        requested step up to now analysed, and its ``state_dict`` agrees with the history.
        ``before_step``: the caller snapshots that step next (see :meth:`_take_skipped`)."""
        self._take_skipped(before_step)
        if self._worker is not None:
            self._worker.skip_rest()
        deadline = time.monotonic() + timeout
        while self._worker is not None and not self._worker.idle:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def collect(self) -> list[AnalysisResult]:
        """A distributed watcher: every rank's finished parts to rank 0 now (a collective: call
        it on every rank at the same point), rather than at the next snapshot; the analyses now
        complete are recorded and delivered (rank 0) and decided on by every rank's policies.
        Nothing for a watcher on one process (its worker records each analysis itself)."""
        if self._dist is None:
            return []
        merged, _ = self._dist.exchange()
        self._record_merged(merged)
        return merged

    def wait_for_result(self, step: int | None = None, timeout: float = 60.0) -> bool:
        """Block until at least one analysis has been delivered (e.g. the initial weights' one,
        before the first epoch's logs); unlike :meth:`wait_idle` it does not wait for the
        snapshots queued after it. ``step``: as for :meth:`poll`."""
        if self._worker is not None:
            self._worker.skip_rest()
        deadline = time.monotonic() + timeout
        while self.last_result is None:
            self.poll(step)
            if self.last_result is not None or self._worker is None or self._worker.idle:
                break
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        self.poll(step)
        return self.last_result is not None

    def close(self, timeout: float | None = 120.0, *, deliver: bool = True,
              final: bool = True) -> None:
        """Stop the worker after it analysed the pending snapshot (``final=False`` drops it,
        e.g. when training failed; the initial weights are analysed either way), deliver what is
        left, close the sinks. Safe to call twice."""
        if final and deliver:  # the run's last call was skipped: its weights are the final ones
            self._take_skipped()
        self._skipped_call = None
        worker = self._worker  # kept until it has finished: its last result counts its drops
        if worker is not None:
            if not final:  # interrupted: return within ~1 s whatever the analysis in flight
                worker.discard_pending()
                grace = INTERRUPT_GRACE_S if timeout is None else min(timeout, INTERRUPT_GRACE_S)
                if not worker.close(grace):
                    self._cancel.set()
                    worker.close(INTERRUPT_STOP_S)  # else abandoned: a daemon, ends by itself
            elif not worker.close(timeout):
                warnings.warn("ww_callbacks: the analysis did not finish in time; its thread is "
                              "left to end on its own", WatcherWarning, stacklevel=2)
            self._worker = None
            self._dropped_before += worker.dropped
            worker.dropped = 0
            if deliver:
                self._handle(*worker.drain())
        if self._dist is not None and deliver and final:  # collective: last parts to rank 0
            # (not after a failure nor at interpreter exit: the other ranks may be gone)
            try:
                merged, _ = self._dist.exchange()
            except RuntimeError as err:  # another rank did not close: report, do not hang
                warnings.warn(f"ww_callbacks: the last analyses could not be collected: {err}",
                              WatcherWarning, stacklevel=2)
            else:
                self._record_merged(merged)
        if deliver and final and self.last_result is not None \
                and (self._dist is None or self._dist.rank == 0):
            self._record_after(self.last_result, final=True)  # the final analysis' ESDs
        if deliver and final and self.policies:
            self.policies.finish(self.target)
            self._report_sink_failures()
        if deliver:
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as err:
                    warnings.warn(f"ww_callbacks: closing sink {type(sink).__name__} failed: "
                                  f"{err!r}", WatcherWarning, stacklevel=2)
        if self._snapshotter is not None:
            self._snapshotter.close()
        if self._segments is not None:
            self._segments.close()
            self._segments = None
        if self.history is not None:
            self.history.close()
        summary = self.faults.summary()
        if summary and deliver:
            LOG.warning(summary)
        _LIVE.discard(self)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(final=exc_type is None)

    # ------------------------------------------------------------------ worker thread

    def _analyse(self, snapshot: Snapshot) -> Any:
        if self._dist is not None:  # this rank's rows only; rank 0 records them once merged
            return self._dist.analyse(snapshot)
        start = time.perf_counter()
        snapshot.ready()
        base = self._base.for_layers(snapshot.layers) if self._base is not None else None
        details = analyze_layers(snapshot.layers, randomize=snapshot.randomize,
                                 progress=False, skipped=self.skipped, base=base,
                                 cancelled=self._cancel.is_set, **self._analysis)
        spectra = details.attrs.pop("spectra", {})
        result = AnalysisResult(snapshot.step, snapshot.epoch, details, model_summary(details),
                                snapshot.wall_time, time.perf_counter() - start,
                                snapshot.randomize, spectra)
        return self._record(result)

    def _record(self, result: AnalysisResult) -> AnalysisResult:
        """History first, then the policies decide, then the in-worker sinks (the worker thread;
        rank 0's training thread for a distributed watcher)."""
        if self.history is not None:  # before any sink or policy sees it; a failure stops neither
            self._output(self.history, f"history {self.history.path}", None,
                         "the results still reach the sinks and policies")(
                self.history.append, result)
        self.policies.on_result(result)
        self._record_after(result)
        result.scalars = self._scalars(result)
        for sink in self.sinks:
            if in_worker(sink):
                self._write(sink, result, result.scalars)
        return result

    def _record_after(self, result: AnalysisResult, *, final: bool = False) -> None:
        """The rest of the record, after the history line of ``result``: the policies' actions
        line (when there are policies) and the compact ESDs on :attr:`_esd`'s schedule (when
        the eigenvalues were kept). A failure is reported like the history's."""
        if self.history is None:
            return
        history = self.history
        write = self._output(history, f"history {history.path}", None,
                             "the results still reach the sinks and policies")
        if self.policies and not final:
            write(history.append_actions, result.step, self.policies.actions())
        if result.spectra and self._esd.due(result, final=final) \
                and self._esd.stored_step != result.step:
            self._esd.stored_step = int(result.step)
            write(history.append_spectra, result.step, compact_spectra(result))

    # ------------------------------------------------------------------ resume

    def resume_from(self, step: int) -> None:
        """Continue the history of an interrupted run at ``step`` when no state dict is at hand
        (Keras ``BackupAndRestore``, Hugging Face checkpoints): analyses recorded after ``step``
        are removed (they are trained again), counters continue from what is left, and a step
        already recorded is not snapshotted again. A distributed watcher: call it on every rank
        (each takes rank 0's counters)."""
        if self.history is not None and self.history.path.exists():
            self.history.truncate_after(step)
            steps = [record["step"] for record in read_records(self.history.path)]
            self.snapshots_taken = len(steps)
            if step in steps:
                self._last_snapshot_step = step
                self.last_step = max(self.last_step, step)
        # rank 0 alone has the history: every rank takes its counters (without this a 2-rank
        # Hugging Face run resumed at an analysed step hung: rank 1 snapshotted it alone)
        if self.distributed:
            self._share_resume_counters()

    def _share_resume_counters(self) -> None:
        """A distributed watcher resuming: rank 0's counters on every rank (a collective)."""
        from .distributed.detect import process_group_size

        if process_group_size() <= 1:
            return
        import torch.distributed as dist

        counters = [(self.snapshots_taken, self._last_snapshot_step, self.last_step)]
        dist.broadcast_object_list(counters, src=0)
        self.snapshots_taken, self._last_snapshot_step, self.last_step = counters[0]

    @property
    def should_stop(self) -> bool:
        """True once a policy asked to stop training (plain loops: ``if watcher.should_stop:
        break``; the integrations stop by themselves)."""
        return self.policies.should_stop

    @property
    def stop_reason(self) -> str | None:
        """Why the policies that asked to stop did so, joined by "; " (None while none did)."""
        return self.policies.stop_reason

    def policy_states(self) -> list[dict]:
        """``state_dict()`` of each policy, in order (for checkpoints)."""
        return self.policies.state_dict()

    def load_policy_states(self, states: Sequence[dict]) -> None:
        """Continue the policies from :meth:`policy_states` of a checkpoint."""
        self.policies.load_state_dict(states)

    @property
    def last_snapshot_step(self) -> int | None:
        """The step of the last snapshot taken (None before the first)."""
        return self._last_snapshot_step

    def state_dict(self) -> dict:
        """What a resumed run needs: counters and the step the checkpoint was taken at."""
        return {"version": 1, "snapshots_taken": self.snapshots_taken,
                "results_delivered": self.results_delivered, "dropped": self.dropped,
                "last_step": self.last_step, "policies": self.policy_states()}

    def load_state_dict(self, state: dict) -> None:
        """Continue counters; analyses recorded after the checkpoint's step are removed from
        the history (the resumed run redoes them), so the history has no duplicates."""
        self.snapshots_taken = int(state.get("snapshots_taken", 0))
        self.results_delivered = int(state.get("results_delivered", 0))
        self._dropped_before = int(state.get("dropped", 0))
        self.last_step = int(state.get("last_step", -1))
        if self.last_step >= 0:  # the checkpoint's last snapshot is not taken again
            self._last_snapshot_step = self.last_step
        self.load_policy_states(state.get("policies", ()))
        if self.history is not None:
            self.history.truncate_after(self.last_step)
