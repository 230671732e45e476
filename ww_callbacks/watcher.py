"""The framework-free watcher: snapshot on the training thread, analyse in the background,
record, then deliver to sinks and policies on the training thread.

Integrations (Lightning, Keras, plain torch, Hugging Face) decide *when* (see
:class:`~ww_callbacks.cadence.Cadence`) and call :meth:`Watcher.snapshot`, :meth:`Watcher.poll`
and :meth:`Watcher.close`; everything slow happens in the
:class:`~ww_callbacks.worker.BackgroundWorker`.
Each result goes to the history file first, then to the sinks, then to the policies.
"""

from __future__ import annotations

import atexit
import os
import time
import warnings
import weakref
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from .analysis import analyze_layers
from .history import HISTORY_FILE, HistoryWriter, read_records
from .layers import extract_layers, select_layers
from .results import AnalysisResult, Snapshot
from .scalars import DROPPED, layer_scalars, model_summary
from .snapshot import Snapshotter
from .worker import BackgroundWorker


class Sink(Protocol):
    """Receives every result (TensorBoard, W&B, a logger, ...).

    By default on the training thread, from :meth:`Watcher.poll` (W&B and the training
    libraries' loggers want that). A sink whose class sets ``in_worker = True`` (thread-safe
    writers such as TensorBoard's) is called in the worker thread instead, right after the history
    file, so its heavy work (histograms, images) never runs on the training thread.
    """

    def write(self, result: AnalysisResult, scalars: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def _in_worker(sink: Sink) -> bool:
    return bool(getattr(sink, "in_worker", False))


class Policy(Protocol):
    """Acts on results (early stopping, learning rates): see ``ww_callbacks.policies``."""

    def on_result(self, result: AnalysisResult) -> None: ...


class WatcherWarning(UserWarning):
    """A problem of the watcher (a failed analysis, a failing sink) that training survives."""


#: Default share of wall time the analysis thread may use (see ``Watcher(max_duty=...)``).
DEFAULT_MAX_DUTY = 0.02

_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    for watcher in list(_LIVE):
        watcher.close(timeout=5.0, deliver=False)


class Watcher:
    """Watches one model: snapshots, background analysis, history, sinks and policies.

    ``log_dir``: where ``ww_history.jsonl`` is written (None: no file). ``traps_every``: every
    k-th analysis also randomises the weights to count correlation traps (0: never).
    ``strict``: re-raise a failed analysis on the training thread instead of warning.
    ``blas_threads``: BLAS threads of the worker. ``max_duty``: the largest share of wall time
    the worker may spend analysing (it rests in between; snapshots that arrive meanwhile replace
    the pending one): this bounds the cost to training. None: analyse back to back. Analysis
    options (``layers``, ``min_evals``, ``max_evals``, ``max_N``, ``mp_fit``, ``fix_fingers``,
    ``analysis_device``, ``seed``) are those of :func:`ww_callbacks.analyze`.
    """

    def __init__(self, *, log_dir: str | os.PathLike | None = None, sinks: Sequence[Sink] = (),
                 policies: Sequence[Policy] = (), layers: Any = None, min_evals: int = 8,
                 max_evals: int = 15000, max_N: int = 50000, traps_every: int = 1,
                 mp_fit: bool = False, fix_fingers: str | None = None, analysis_device: Any = None,
                 blas_threads: int | None = 1, strict: bool = False, keep_spectra: bool = True,
                 seed: int = 0, max_duty: float | None = DEFAULT_MAX_DUTY):
        self.sinks = list(sinks)
        self.policies = list(policies)
        self.strict = strict
        self.traps_every = traps_every
        self._select = dict(layers=layers, min_evals=min_evals, max_evals=max_evals, max_N=max_N)
        self._analysis = dict(mp_fit=mp_fit, fix_fingers=fix_fingers, device=analysis_device,
                              seed=seed, keep_spectra=keep_spectra)
        self.blas_threads = blas_threads
        self.max_duty = max_duty
        self.history: HistoryWriter | None = None
        self.set_log_dir(log_dir)
        self._snapshotter: Snapshotter | None = None
        self._model_ref: Any = None
        self._worker: BackgroundWorker | None = None
        self._failed_sinks: set[int] = set()
        self._sink_failures: deque[str] = deque()
        self.snapshots_taken = 0
        self.results_delivered = 0
        self._dropped_before = 0  # drops of earlier (resumed) runs
        self._snapshot_dropped = 0  # GPU snapshots with no free buffer
        self.last_result: AnalysisResult | None = None
        self.last_step = -1
        self._last_snapshot_step: int | None = None
        _LIVE.add(self)

    # ------------------------------------------------------------------ setup

    def set_log_dir(self, log_dir: str | os.PathLike | None) -> None:
        """Write the history into ``log_dir`` from now on (integrations learn it late)."""
        self.history = HistoryWriter(Path(log_dir) / HISTORY_FILE) if log_dir else None

    @property
    def history_path(self) -> Path | None:
        """The history file, or None when the watcher keeps no file."""
        return self.history.path if self.history else None

    @property
    def dropped(self) -> int:
        """Snapshots dropped because the worker was busy (``ww/snapshots_dropped``)."""
        worker = self._worker.dropped if self._worker else 0
        return self._dropped_before + worker + self._snapshot_dropped

    def _ensure_worker(self) -> BackgroundWorker:
        if self._worker is None:
            self._worker = BackgroundWorker(self._analyse, blas_threads=self.blas_threads,
                                            max_duty=self.max_duty)
        return self._worker

    def _snapshotter_for(self, model: Any) -> Snapshotter:
        """Layers are chosen once per torch model (its parameters are updated in place); for
        other models (Keras, mappings) the weights are read again at every snapshot."""
        is_torch = hasattr(model, "named_modules") and hasattr(model, "parameters")
        is_keras = type(model).__module__.startswith("keras")
        if (is_torch and not is_keras and self._snapshotter is not None
                and self._model_ref is not None and self._model_ref() is model):
            return self._snapshotter
        found, _ = extract_layers(model)
        kept, _ = select_layers(found, self._select["layers"],
                                min_evals=self._select["min_evals"],
                                max_evals=self._select["max_evals"], max_N=self._select["max_N"])
        snapshotter = Snapshotter(kept)
        if is_torch and not is_keras:
            self._snapshotter = snapshotter
            self._model_ref = weakref.ref(model)
        return snapshotter

    # ------------------------------------------------------------------ training thread

    def snapshot(self, model: Any, step: int, epoch: int | None = None, *,
                 randomize: bool | None = None) -> bool:
        """Copy the weights of ``model`` now and queue them for analysis; returns False when the
        snapshot was not taken (the same step was just taken, or no free GPU buffer). Never
        waits for the analysis."""
        if step == self._last_snapshot_step:
            return False  # these weights are already queued or analysed (e.g. last epoch = end)
        if randomize is None:
            randomize = bool(self.traps_every) and self.snapshots_taken % self.traps_every == 0
        snapshotter = self._snapshotter_for(model)
        snap = snapshotter.take(step, epoch, randomize)
        self.last_step = max(self.last_step, step)
        if snap is None:
            self._snapshot_dropped += 1
            return False
        self.snapshots_taken += 1
        self._last_snapshot_step = step
        self._ensure_worker().submit(snap)
        return True

    def before_optimizer_step(self) -> None:
        """GPU only: order the next optimizer step after the last snapshot's copy."""
        if self._snapshotter is not None and self._snapshotter.uses_cuda:
            self._snapshotter.before_optimizer_step()

    def poll(self) -> list[AnalysisResult]:
        """Deliver finished analyses to sinks and policies; report failed ones. Cheap when
        there is nothing new: call it from any frequent hook."""
        if self._worker is None:
            return []
        return self._handle(*self._worker.drain())

    def _handle(self, results: list[AnalysisResult], errors: list) -> list[AnalysisResult]:
        for err in errors:
            message = f"ww_callbacks: the analysis of step {err.step} failed: {err.error!r}"
            if self.strict:
                raise RuntimeError(message + "\n" + err.traceback) from err.error
            warnings.warn(message, WatcherWarning, stacklevel=3)
        for result in results:
            self._deliver(result)
        self._report_sink_failures()
        return results

    def _scalars(self, result: AnalysisResult) -> dict[str, float]:
        return {**result.summary, DROPPED: float(self.dropped), **layer_scalars(result.details)}

    def _write(self, sink: Sink, result: AnalysisResult, scalars: dict[str, float]) -> None:
        """Write to one sink; a failure is reported once (as a warning on the training thread)
        and never stops training nor loses data (the history has it)."""
        try:
            sink.write(result, scalars)
        except Exception as err:
            if id(sink) in self._failed_sinks:
                return
            self._failed_sinks.add(id(sink))
            where = f" (the history in {self.history_path} has every result)" \
                if self.history_path else ""
            self._sink_failures.append(f"ww_callbacks: sink {type(sink).__name__} failed: "
                                       f"{err!r}{where}; it will be retried silently")

    def _deliver(self, result: AnalysisResult) -> None:
        scalars = self._scalars(result)
        for sink in self.sinks:
            if not _in_worker(sink):
                self._write(sink, result, scalars)
        self._report_sink_failures()
        for policy in self.policies:
            policy.on_result(result)
        self.results_delivered += 1
        self.last_result = result

    def _report_sink_failures(self) -> None:
        while self._sink_failures:
            warnings.warn(self._sink_failures.popleft(), WatcherWarning, stacklevel=4)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until the worker has nothing left (for tests, monitored epochs and the end of
        training); the worker skips its ``max_duty`` rest for what is pending now."""
        if self._worker is not None:
            self._worker.skip_rest()
        deadline = time.monotonic() + timeout
        while self._worker is not None and not self._worker.idle:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float | None = 120.0, *, deliver: bool = True,
              final: bool = True) -> None:
        """Stop the worker after it analysed the pending snapshot (``final=False`` drops it,
        e.g. when training failed), deliver what is left, close the sinks. Safe to call twice."""
        worker, self._worker = self._worker, None
        if worker is not None:
            if not final:
                worker.discard_pending()
            if not worker.close(timeout):
                warnings.warn("ww_callbacks: the analysis did not finish in time; its thread is "
                              "left to end on its own", WatcherWarning, stacklevel=2)
            self._dropped_before += worker.dropped
            worker.dropped = 0
            if deliver:
                self._handle(*worker.drain())
        if deliver:
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as err:
                    warnings.warn(f"ww_callbacks: closing sink {type(sink).__name__} failed: "
                                  f"{err!r}", WatcherWarning, stacklevel=2)
        if self._snapshotter is not None:
            self._snapshotter.close()
        _LIVE.discard(self)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(final=exc_type is None)

    # ------------------------------------------------------------------ worker thread

    def _analyse(self, snapshot: Snapshot) -> AnalysisResult:
        start = time.perf_counter()
        snapshot.ready()
        details = analyze_layers(snapshot.layers, randomize=snapshot.randomize,
                                 progress=False, **self._analysis)
        spectra = details.attrs.pop("spectra", {})
        result = AnalysisResult(snapshot.step, snapshot.epoch, details, model_summary(details),
                                snapshot.wall_time, time.perf_counter() - start,
                                snapshot.randomize, spectra)
        if self.history is not None:
            self.history.append(result)  # before any sink sees it
        worker_sinks = [sink for sink in self.sinks if _in_worker(sink)]
        if worker_sinks:
            scalars = self._scalars(result)
            for sink in worker_sinks:
                self._write(sink, result, scalars)
        return result

    # ------------------------------------------------------------------ resume

    def resume_from(self, step: int) -> None:
        """Continue the history of an interrupted run at ``step`` when no state dict is at hand
        (Keras ``BackupAndRestore``, Hugging Face checkpoints): analyses recorded after ``step``
        are removed (they are trained again), counters continue from what is left, and a step
        already recorded is not snapshotted again."""
        if self.history is None or not self.history.path.exists():
            return
        self.history.truncate_after(step)
        steps = [record["step"] for record in read_records(self.history.path)]
        self.snapshots_taken = len(steps)
        if step in steps:
            self._last_snapshot_step = step
            self.last_step = max(self.last_step, step)

    @property
    def last_snapshot_step(self) -> int | None:
        """The step of the last snapshot taken (None before the first)."""
        return self._last_snapshot_step

    def state_dict(self) -> dict:
        """What a resumed run needs: counters and the step the checkpoint was taken at."""
        return {"version": 1, "snapshots_taken": self.snapshots_taken,
                "results_delivered": self.results_delivered, "dropped": self.dropped,
                "last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        """Continue counters; analyses recorded after the checkpoint's step are removed from
        the history (the resumed run redoes them), so the history has no duplicates."""
        self.snapshots_taken = int(state.get("snapshots_taken", 0))
        self.results_delivered = int(state.get("results_delivered", 0))
        self._dropped_before = int(state.get("dropped", 0))
        self.last_step = int(state.get("last_step", -1))
        if self.history is not None:
            self.history.truncate_after(self.last_step)
