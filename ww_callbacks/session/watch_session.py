"""One watch session: everything a host needs from the core, so that a host (the Lightning, Keras
and Hugging Face callbacks, the plain-torch :class:`~ww_callbacks.integrations.torch.Watcher`)
only translates its hooks into calls here. Used directly, call :meth:`WatchSession.snapshot`,
:meth:`WatchSession.poll` and :meth:`WatchSession.close`.

A :class:`WatchSession` snapshots on the training thread, analyses in the background
(:class:`~ww_callbacks.worker.BackgroundWorker`), and hands each result to the history first,
then to the policies, then to the sinks. It is made of parts with one job each:

- :class:`~.admission.Admission`: when a due snapshot is copied, skipped or taken after all;
- :class:`~.host_copies.HostCopies`: which layers are copied, and by what (collective snapshots
  for weights sharded over ranks);
- :class:`~.delivery.Delivery`: the history, policies and sinks, their retries and warnings;
- :class:`~.drops.DropCounts`: what ``ww/snapshots_dropped`` counts;
- :class:`~.state.Resumable`: ``state_dict`` / ``load_state_dict`` / ``resume`` / portable state;
- :mod:`~.lifecycle`: the live registry, the exit hook and the finalizer;

and it owns the cadence (:class:`~ww_callbacks.cadence.Cadence`: :meth:`begin`,
:meth:`step_end`, :meth:`epoch_end` and :meth:`end` snapshot when due, never twice at one step),
when training waits (``wait``, :data:`ww_callbacks.options.Wait`), the sinks built from options
(``tensorboard``, ``wandb``; :mod:`ww_callbacks.sinks`) and the policy target (:meth:`use_target`).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._moved import deprecated_method
from ..analysis import analyze_layers
from ..cadence import Cadence
from ..esd import ESD_EVERY, EsdSchedule
from ..faults import LOG, FaultReporter, WatcherWarning
from ..history import HistoryWriter
from ..options import (
    MAX_EVALS,
    MAX_N,
    MIN_EVALS,
    MIN_EVALS_FOR_TRUST,
    Wait,
    check_option,
    check_wait,
)
from ..policies.base import Policy, Target
from ..policies.policy_set import PolicySet
from ..results import AnalysisResult, Snapshot
from ..scalars import summarized_result
from ..sinks import Sink, in_worker, open_sinks
from ..worker import (
    DEFAULT_ANALYSIS_IN,
    DEFAULT_MAX_DUTY,
    BackgroundWorker,
    resolve_max_duty,
)
from . import lifecycle
from .admission import Admission
from .delivery import Delivery
from .drops import DropCounts
from .host_copies import HostCopies, InitialBase
from .state import Resumable

#: How long a snapshot or an epoch end waits for an analysis when ``wait`` asks for it.
WAIT_TIMEOUT_S = 600.0


class WatchSession(Resumable):
    """Watches one model: snapshots, background analysis, history, sinks and policies.

    ``log_dir``: where ``ww_history.jsonl`` is written (None: no file). ``cadence``: when to
    snapshot (default: every epoch, plus the initial and final weights). ``wait``: ``"never"``
    (default), ``"epoch"`` or ``"always"`` (see :data:`ww_callbacks.options.Wait`).
    ``tensorboard``: True (event files in ``log_dir``), a writer to write into (left open) or
    False; ``wandb``: True (the active run), a run, or None; ``tensorboard_options`` /
    ``wandb_options``: keyword arguments of those sinks. ``sinks``: more sinks (the host's and the
    user's: objects, names or ``(name, options)``, see :mod:`ww_callbacks.sinks`), after those.
    ``get_model``: a function returning the model, for hosts where reading it has a cost (Keras on
    JAX syncs its state): called only when a snapshot is due.

    ``traps_every``: every k-th analysis also randomises the weights to count correlation traps
    (0: never). ``strict``: re-raise a failed analysis on the training thread instead of warning.
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
    ``min_evals_for_trust`` (default 50): layers with fewer eigenvalues are low evidence, left
    out of the ``ww/`` means (see :mod:`ww_callbacks.scalars`; 0: every layer, as
    WeightWatcher's summary).
    ``base="initial"``: analyse ``W - W_initial``, the update since the first snapshot (see
    :class:`~.host_copies.InitialBase`); None: the weights themselves.
    ``keep_spectra`` (default True): keep the eigenvalues for pictures and the stored ESDs;
    ``esd_every``: the compact ESDs of every layer (:mod:`ww_callbacks.esd`) go to
    ``ww_spectra.jsonl`` next to the history at the first analysis, every ``esd_every``-th one
    (0: not on a cadence), when a layer gains a trap or changes band, and at the final one;
    the sinks get them as ``result.esd`` (W&B logs them as histograms), with or without a history.

    ``policies`` (:mod:`ww_callbacks.policies`) decide on each result in the worker and act at
    :meth:`poll` on ``target`` (a :class:`~ww_callbacks.policies.base.Target` the host makes
    for its framework, e.g. :class:`~ww_callbacks.integrations.torch_target.TorchTarget`).

    ``distributed``: the session runs on every rank of a torch process group and each snapshot
    is a collective (:mod:`ww_callbacks.distributed.snapshots`): each rank analyses its share of
    the layers, rank 0 records, delivers and runs the policies. None (default): only when the
    weights are sharded (FSDP, FSDP2, tensor parallel, ZeRO-3), which one rank cannot read alone.
    """

    def __init__(self, *, cadence: Cadence | None = None, wait: Wait = "never",
                 log_dir: str | os.PathLike | None = None, sinks: Sequence[Sink] = (),
                 tensorboard: Any = False, tensorboard_options: Mapping[str, Any] | None = None,
                 wandb: Any = None, wandb_options: Mapping[str, Any] | None = None,
                 get_model: Callable[[], Any] | None = None,
                 policies: Sequence[Policy] = (), layers: Any = None,
                 min_evals: int = MIN_EVALS, max_evals: int = MAX_EVALS, max_N: int = MAX_N,
                 traps_every: int = 1, mp_fit: bool = False, fix_fingers: str | None = None,
                 analysis_device: Any = "auto", blas_threads: int | None = 1,
                 strict: bool = False, keep_spectra: bool = True, esd_every: int = ESD_EVERY,
                 seed: int = 0, max_duty: float | str | None = DEFAULT_MAX_DUTY,
                 target: Target | None = None, adapters: str = "effective",
                 base: str | None = None, distributed: bool | None = None, tied: str = "once",
                 analysis_in: str = DEFAULT_ANALYSIS_IN,
                 min_evals_for_trust: int = MIN_EVALS_FOR_TRUST):
        self.cadence = cadence if cadence is not None else Cadence()
        self.wait = check_wait(wait)
        if base not in (None, "initial"):
            raise ValueError(f"base must be None or 'initial', not {base!r}")
        #: The sinks this session built from its options and names (it closes them in every
        #: case); ``sinks`` may name them (:mod:`ww_callbacks.sinks`).
        all_sinks, self.built_sinks = open_sinks(sinks, log_dir, aliases={
            "tensorboard": (tensorboard, tensorboard_options), "wandb": (wandb, wandb_options)})
        self.get_model = get_model
        self.distributed = distributed
        #: The policies, driven as one (:class:`~ww_callbacks.policies.policy_set.PolicySet`).
        self.policies = PolicySet(policies, strict=strict)
        self.policies.reset()  # a new session is a new run
        self.target = target
        self.strict = strict
        self.blas_threads = blas_threads
        self.max_duty = max_duty
        self.drops = DropCounts()
        self.admission = Admission(traps_every, self.drops)
        self._declined_step: int | None = None  # the step of the last due call not copied
        self.copier = HostCopies(
            dict(layers=layers, min_evals=min_evals, max_evals=max_evals, max_N=max_N),
            dict(mp_fit=mp_fit, fix_fingers=fix_fingers, device=None, seed=seed,
                 keep_spectra=keep_spectra),
            adapters=adapters, tied=tied, base=InitialBase() if base == "initial" else None,
            distributed=distributed, analysis_device=analysis_device, analysis_in=analysis_in,
            min_evals_for_trust=check_option("min_evals_for_trust", min_evals_for_trust))
        self.delivery = Delivery(all_sinks, self.policies, strict=strict,
                                 dropped=lambda: self.dropped, esd=EsdSchedule(esd_every))
        self.delivery.set_log_dir(log_dir)
        self._worker: BackgroundWorker | None = None
        self._cancel = threading.Event()  # set by close(final=False): stop between layers
        self._finalizer: weakref.finalize | None = None
        self._closed = False
        #: What to do at interpreter exit if the session is still open (``exit_close(failed)``,
        #: set by a host that can still analyse the final weights then; None: stop quietly).
        self.exit_close: Callable[[bool], None] | None = None
        lifecycle.register(self)

    # ------------------------------------------------------------------ setup and views

    def set_log_dir(self, log_dir: str | os.PathLike | None) -> None:
        """Write the history into ``log_dir`` from now on (hosts learn it late)."""
        self.delivery.set_log_dir(log_dir)

    def use_target(self, factory: Callable[..., Target]) -> None:
        """Make the policies' target with ``factory(**layer_selection)`` (the host's: its
        framework's model, optimizers and schedulers); nothing without policies."""
        if self.policies:
            self.target = factory(**self.layer_selection)

    def bind(self, owner: Any) -> None:
        """Stop this session when ``owner`` (the host's callback) is garbage-collected before
        :meth:`close` (the host ran no end hook, e.g. training raised). ``owner`` must not be
        referenced by the session."""
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = lifecycle.finalizer(owner, self)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def waits_at_epochs(self) -> bool:
        """True when epoch snapshots wait (``wait`` is ``"epoch"`` or ``"always"``)."""
        return self.wait != "never"

    @property
    def layer_selection(self) -> dict[str, Any]:
        """The layer-selection options (``layers``, ``min_evals``, ``max_evals``, ``max_N``), for
        a policy target that must act on the same layers as the analysis."""
        return dict(self.copier.select)

    @property
    def analysis_device(self) -> Any:
        """Where the analysis runs, as asked (``"auto"``, ``"cpu"``, a device)."""
        return self.copier.analysis_device

    @property
    def traps_every(self) -> int:
        """Every k-th analysis also counts correlation traps (0: never)."""
        return self.admission.traps_every

    @property
    def sinks(self) -> list[Sink]:
        """Every sink: the built ones, then the host's and the user's."""
        return self.delivery.sinks

    @property
    def history(self) -> HistoryWriter | None:
        """The history writer (None: no file)."""
        return self.delivery.history

    @property
    def history_path(self) -> Path | None:
        """The history file, or None when the session keeps no file."""
        return self.delivery.history_path

    @property
    def faults(self) -> FaultReporter:
        """Failures of the history and the sinks, grouped by cause (see :mod:`..faults`)."""
        return self.delivery.faults

    @property
    def skipped(self) -> list:
        """The Skip records of the watched model (what is not analysed)."""
        return self.copier.skipped

    @property
    def snapshots_taken(self) -> int:
        """Snapshots taken so far (or skipped because the worker was busy), resumed ones too."""
        return self.admission.snapshots_taken

    @property
    def last_step(self) -> int:
        """The newest step a snapshot was asked for (-1: none)."""
        return self.admission.last_step

    @property
    def last_snapshot_step(self) -> int | None:
        """The step of the last snapshot taken (None before the first)."""
        return self.admission.last_snapshot_step

    @property
    def results_delivered(self) -> int:
        """Analyses delivered so far, resumed ones too."""
        return self.delivery.results_delivered

    @property
    def last_result(self) -> AnalysisResult | None:
        """The latest delivered analysis (None before the first)."""
        return self.delivery.last_result

    @property
    def dropped(self) -> int:
        """Snapshots dropped because the worker was busy (``ww/snapshots_dropped``)."""
        collective = self.copier.collective
        return self.drops.total(self._worker.dropped if self._worker else 0,
                                collective.discarded if collective is not None else 0)

    @property
    def copies(self) -> int:
        """Snapshots copied (the training thread's copies), analysed or not: at most the
        analyses plus one (see :meth:`snapshot`)."""
        return self.admission.copies

    @property
    def analysis_in(self) -> str:
        """Where analyses run: ``"thread"``, ``"process"`` or ``"auto"``."""
        return self.copier.analysis_in

    @property
    def _segments(self) -> Any:
        """The shared memory of the analysis process (None: none)."""
        return self.copier.segments

    @property
    def _dist(self) -> Any:
        """The collective snapshots of a distributed session (None on one process)."""
        return self.copier.collective

    @property
    def should_stop(self) -> bool:
        """True once a policy asked to stop training (plain loops: ``if session.should_stop:
        break``; the hosts stop by themselves)."""
        return self.policies.should_stop

    @property
    def stop_reason(self) -> str | None:
        """Why the policies that asked to stop did so, joined by "; " (None while none did)."""
        return self.policies.stop_reason

    def model_scalars(self) -> dict[str, float]:
        """The model-level ``ww/`` values of the latest delivered analysis (the policies' ones
        included) with the current ``ww/snapshots_dropped``; empty before the first. What hosts
        add to their epoch logs and monitors."""
        return self.delivery.model_scalars()

    def is_new_step(self, step: int) -> bool:
        """False when the weights of ``step`` were the last ones snapshotted (already queued or
        analysed: the end of training right after an epoch's snapshot, extra micro-batches of
        gradient accumulation, the start of a run resumed at an analysed step). The one
        "already taken" check of every host."""
        return self.admission.is_new_step(step)

    # ------------------------------------------------------------------ cadence

    def _model(self, model: Any) -> Any:
        if model is None and self.get_model is not None:
            return self.get_model()
        return model

    def take(self, step: int, epoch: int | None = None, model: Any = None, *,
             settle: bool = False, force: bool = False) -> bool:
        """Snapshot the weights of ``step`` unless they were just taken. ``settle``: first wait
        until the previous analysis is done, so that this snapshot replaces none (``wait=
        "always"`` does it for every snapshot, and delivers that analysis first). ``force``: a
        distributed session takes it even while a rank's worker is busy (the final weights)."""
        if self._closed or not self.is_new_step(step):
            return False
        if self.wait == "always":
            self.wait_idle(WAIT_TIMEOUT_S, before_step=step)
            self.poll(step)
        elif settle:
            self.wait_idle(WAIT_TIMEOUT_S, before_step=step)
        model = self._model(model)
        if model is None:  # (a host hook without the model)
            return False
        return self.snapshot(model, step, epoch, force=force)

    def begin(self, step: int, epoch: int | None = None, model: Any = None) -> None:
        """Training starts (or resumes) at ``step``: the initial weights, when the cadence asks
        (not again when resuming at a step already analysed)."""
        if self.cadence.on_train_start:
            self.take(step, epoch, model)

    def step_end(self, step: int, epoch: int | None = None, model: Any = None) -> bool:
        """After optimizer step ``step``: snapshot when the step is due."""
        return self.cadence.step_due(step) and self.take(step, epoch, model)

    def epoch_end(self, step: int, epoch: int, model: Any = None) -> None:
        """End of epoch ``epoch`` (from 0) at ``step``: snapshot when the epoch is due (with
        ``wait``, after the previous analysis, and then wait for this one: on every rank, for a
        distributed session, whose ranks' parts are then merged), then deliver."""
        if self.cadence.epoch_due(epoch):
            self.take(step, epoch, model, settle=self.waits_at_epochs)
            if self.waits_at_epochs:
                self.wait_idle(WAIT_TIMEOUT_S)
                # distributed: this rank's part waits here until the next snapshot's exchange;
                # fetch every rank's now, so the epoch's decision is on the epoch's weights
                self.collect()
        self.poll(step)

    def end(self, step: int, epoch: int | None = None, model: Any = None) -> None:
        """Training ended: the final weights (when the cadence asks), then :meth:`close`, which
        waits for every analysis, delivers, lets the policies finish and closes the sinks."""
        if self.cadence.on_train_end:
            self.take(step, epoch, model, force=True)
        self.close(final=True)

    def decision(self, step: int | None = None, *, settle: bool = False) -> dict[str, Any]:
        """What the host acts on and logs at an epoch end: ``should_stop`` and ``stop_reason``
        (the policies'), ``metrics`` (the ``ww/`` values of the latest delivered analysis, see
        :meth:`model_scalars`; empty before the first) and ``step``, the step that analysis is of
        (-1: none yet). ``settle``: when a policy has asked to stop, first deliver the result it
        decided on (so its ``ww/stop_reason`` is in the values), and before any result, wait for
        the first (the initial weights')."""
        stop = self.should_stop
        if settle and stop:  # decided in the worker: its result may still be queued
            self.wait_idle()
            self.poll(step)
        elif settle and self.last_result is None:
            self._wait_first_result(step)
        result = self.last_result
        return {"should_stop": stop, "stop_reason": self.stop_reason,
                "metrics": self.model_scalars(),
                "step": -1 if result is None else int(result.step)}

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
        :attr:`dropped` at no cost to the training thread (:class:`~.admission.Admission`). While
        the run's first analysis is in flight (its cost unknown) snapshots are copied and the
        newest wins. If the newest call was skipped so, :meth:`wait_idle` and :meth:`close`
        (``final=True``) take it after all: a caller that waits gets it analysed, and the final
        weights always are.

        A distributed session decides with every rank at once instead (a collective): the
        snapshot is skipped on every rank while some rank's worker is busy, unless ``force``
        (e.g. the final weights)."""
        if not self.is_new_step(step):
            return False  # these weights are already queued or analysed (e.g. last epoch = end)
        collective = self.copier.collective is not None  # (set by the first snapshot, copied)
        call = self.admission.admit(model, step, epoch, randomize, self._worker, collective)
        if call is None:
            return False
        return self._copy_and_submit(*call, force=force and collective)

    def _copy_and_submit(self, model: Any, step: int, epoch: int | None,
                         randomize: bool, force: bool = False) -> bool:
        """Copy the weights and hand them to the worker (``snapshot`` decided it is worth it;
        a distributed session decides here, with every rank)."""
        snapshotter = self.copier.for_model(model)
        collective = self.copier.collective
        if collective is not None:  # collective: finished parts to rank 0, which decides
            ready = self._worker is None or self._worker.idle
            merged, take = collective.exchange(ready=ready,
                                               force=force or self.snapshots_taken == 0)
            self._record_merged(merged)
            if not take:  # the same on every rank
                self._not_copied(step)
                return False
        snap = snapshotter.take(step, epoch, randomize)
        if snap is None:
            self._not_copied(step)
            return False
        if self._declined_step == step:  # declined before, copied now (the final weights at
            self.drops.no_buffer -= 1  # close, forced): analysed, so no longer a drop
        self._declined_step = None
        step = snap.step  # (distributed: rank 0's step)
        first = self.admission.taken(step)  # the initial weights of a run: never replaced
        if first and self.history is not None:  # a restart into a used log_dir: say so, once
            self.history.warn_if_restarted(step, stacklevel=6)
        self.policies.on_snapshot(step, self.target)
        # distributed: a forced snapshot (the final weights) is queued, not put in place of a
        # pending one, which the other ranks may analyse
        self._ensure_worker().submit(snap, keep=first or (force and collective is not None))
        return True

    def _not_copied(self, step: int) -> None:
        """Count a due snapshot of ``step`` that was not copied (no free buffer, or the ranks
        declined it together), once: a later copy of the same step (e.g. the final weights,
        forced at close) takes the count back."""
        if self._declined_step != step:
            self.drops.no_buffer += 1
            self._declined_step = step

    def _take_skipped(self, before_step: int | None = None) -> None:
        """Copy and queue the last due snapshot that :meth:`snapshot` skipped, if it is of the
        newest step (see :meth:`~.admission.Admission.take_skipped`)."""
        call = self.admission.take_skipped(before_step, self._cancel.is_set())
        if call is not None:
            self._copy_and_submit(*call)

    def before_optimizer_step(self) -> None:
        """GPU only: order the next optimizer step after the last snapshot's copy."""
        self.copier.before_optimizer_step()

    def poll(self, step: int | None = None) -> list[AnalysisResult]:
        """Deliver finished analyses to the sinks, report failed ones, and let the policies act
        on the model (``step``: the optimizer step just finished, for ramps). Cheap when there
        is nothing new: call it between optimizer steps, from any frequent hook."""
        results = self.delivery.handle(*self._worker.drain()) if self._worker is not None else []
        skipped = self.admission.skipped_call
        if (skipped is not None and step is not None and skipped.step == step
                and self._worker is not None and self._worker.idle):
            self._take_skipped(step)  # the worker freed before the weights changed: take them
        if self.policies and self.target is not None:
            self.policies.act(self.target, step)
            self.delivery.report()
        return results

    def _record_merged(self, results: list[AnalysisResult]) -> None:
        """A distributed session's merged analyses: rank 0 records and delivers them; on the
        other ranks only the policies decide on them (the same decisions as on rank 0)."""
        for result in results:
            if self.copier.collective.rank == 0:
                self.delivery.record(result)
                self.delivery.deliver(result)
                continue
            self.policies.on_result(result)
            self.delivery.delivered(result)

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

    def _wait_first_result(self, step: int | None = None, timeout: float = 60.0) -> bool:
        """Block until at least one analysis has been delivered (the initial weights', before
        the first epoch's logs: :meth:`decision` with ``settle``); unlike :meth:`wait_idle`, the
        one public way to wait, it does not wait for the snapshots queued after it. ``step``: as
        for :meth:`poll`."""
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

    def wait_for_result(self, step: int | None = None, timeout: float = 60.0) -> bool:
        """Deprecated: :meth:`decision` with ``settle=True`` waits for the first result, and
        :meth:`wait_idle` is the way to wait for the analyses asked for so far."""
        deprecated_method("wait_for_result", "wait_idle() or decision(settle=True)")
        return self._wait_first_result(step, timeout)

    def collect(self) -> list[AnalysisResult]:
        """A distributed session: every rank's finished parts to rank 0 now (a collective: call
        it on every rank at the same point), rather than at the next snapshot; the analyses now
        complete are recorded and delivered (rank 0) and decided on by every rank's policies.
        Nothing for a session on one process (its worker records each analysis itself)."""
        if self.copier.collective is None:
            return []
        merged, _ = self.copier.collective.exchange()
        self._record_merged(merged)
        return merged

    # ------------------------------------------------------------------ worker thread

    def _ensure_worker(self) -> BackgroundWorker:
        if self._worker is None:
            copier = self.copier
            max_duty = resolve_max_duty(self.max_duty, on_gpu=copier.uses_cuda)
            if copier.in_process(copier.snapshotter):
                from ..process_worker import ProcessWorker

                self._worker = ProcessWorker(self._analyse, options=copier.process_options,
                                             record=self.delivery.record,
                                             cancelled=self._cancel.is_set,
                                             blas_threads=self.blas_threads, max_duty=max_duty,
                                             start_in_background=copier.analysis_in == "auto")
            else:
                self._worker = BackgroundWorker(self._analyse, blas_threads=self.blas_threads,
                                                max_duty=max_duty)
        return self._worker

    def _analyse(self, snapshot: Snapshot) -> Any:
        collective = self.copier.collective
        if collective is not None:  # this rank's rows only; rank 0 records them once merged
            return collective.analyse(snapshot)
        start = time.perf_counter()
        snapshot.ready()
        base = self.copier.base
        base = base.for_layers(snapshot.layers) if base is not None else None
        details = analyze_layers(snapshot.layers, randomize=snapshot.randomize,
                                 progress=False, skipped=self.copier.skipped, base=base,
                                 cancelled=self._cancel.is_set, **self.copier.analysis)
        spectra = details.attrs.pop("spectra", {})
        result = summarized_result(snapshot.step, snapshot.epoch, details,
                                   wall_time=snapshot.wall_time,
                                   duration_s=time.perf_counter() - start,
                                   randomized=snapshot.randomize, spectra=spectra,
                                   min_evals_for_trust=self.copier.min_evals_for_trust)
        return self.delivery.record(result)

    # ------------------------------------------------------------------ shutdown

    def close(self, timeout: float | None = 120.0, *, deliver: bool = True,
              final: bool = True) -> None:
        """Stop the worker after it analysed the pending snapshot (``final=False`` drops it,
        e.g. when training failed; the initial weights are analysed either way), deliver what is
        left, let the policies finish, close the sinks. Without ``deliver`` (a finalizer, the
        end of the interpreter) only the built sinks that are safe to close from any thread
        (``in_worker``: the TensorBoard writers) are closed, so no file stays open. Safe to call
        twice."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._closed:
            return
        self._closed = True
        if final and deliver:  # the run's last call was skipped: its weights are the final ones
            self._take_skipped()
        self.admission.skipped_call = None
        worker = self._worker  # kept until it has finished: its last result counts its drops
        if worker is not None:
            lifecycle.stop_worker(worker, timeout, final=final, cancel=self._cancel)
            self._worker = None
            self.drops.earlier += worker.dropped
            worker.dropped = 0
            if deliver:
                self.delivery.handle(*worker.drain())
        collective = self.copier.collective
        if collective is not None and deliver and final:  # collective: last parts to rank 0
            # (not after a failure nor at interpreter exit: the other ranks may be gone)
            try:
                merged, _ = collective.exchange()
            except RuntimeError as err:  # another rank did not close: report, do not hang
                warnings.warn(f"ww_callbacks: the last analyses could not be collected: {err}",
                              WatcherWarning, stacklevel=2)
            else:
                self._record_merged(merged)
        if deliver and final and self.last_result is not None \
                and (collective is None or collective.rank == 0):
            self.delivery.record_after(self.last_result, final=True)  # the final analysis' ESDs
        if deliver and final and self.policies:
            self.policies.finish(self.target)
            self.delivery.report()
        if deliver:
            self.delivery.close_sinks()
        self.copier.close()
        if self.history is not None:
            self.history.close()
        summary = self.faults.summary()
        if summary and deliver:
            LOG.warning(summary)
        lifecycle.unregister(self)
        if not deliver:  # (no other thread writes them any more)
            self.delivery.close_sinks([s for s in self.built_sinks if in_worker(s)])

    def close_at_exit(self, failed: bool) -> None:
        """The interpreter exits and this session was not closed. With an :attr:`exit_close`
        (a host that can still read the final weights: the torch ``Watcher``), that; else stop
        the worker (after its pending snapshot unless the script ``failed``) without
        delivering: the history already has every finished result."""
        if self.exit_close is not None and not self._closed:
            self.exit_close(failed)
        else:
            self.close(timeout=5.0, deliver=False, final=not failed)

    def __enter__(self) -> WatchSession:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(final=exc_type is None)
