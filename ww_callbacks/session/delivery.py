"""Where each finished analysis goes, in order: the history first, then the policies decide, then
the sinks get it with the policies' values. Every output is retried (:class:`~ww_callbacks.faults.
Retrying`) and never stops training; every warning of the outputs and policies goes through one
funnel onto the training thread (:meth:`Delivery.report`).

Recording (:meth:`Delivery.record`) runs in the worker thread (on rank 0's training thread for a
distributed session): the history line, the policies' decisions, the rest of the record (their
actions line, the compact ESDs on their schedule), the sinks that declare ``in_worker`` and the
other sinks' ``prepare`` (their slow work, e.g. W&B's table rows, off the training thread).
Delivering (:meth:`Delivery.deliver`) runs on the training thread: the other sinks.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..analysis import NON_FINITE, AnalysisCancelled
from ..esd import EsdSchedule, compact_spectra
from ..faults import FaultReporter, Retrying, WatcherWarning
from ..history import HISTORY_FILE, HistoryWriter
from ..names import terminal
from ..policies.policy_set import PolicySet
from ..results import AnalysisResult
from ..scalars import DROPPED, MODEL_PREFIX, layer_scalars
from ..sinks import in_worker, preparer, reopen_of


class Delivery:
    """The outputs of one session: its history file, sinks and policies, with their retries.

    ``dropped``: the session's live ``ww/snapshots_dropped`` count, put in every result's
    scalars. ``strict``: a failed analysis raises on the training thread instead of warning.
    ``esd``: when the compact ESDs go to the history's sidecar (:mod:`ww_callbacks.esd`)."""

    def __init__(self, sinks: Sequence[Any], policies: PolicySet, *, strict: bool,
                 dropped: Callable[[], int], esd: EsdSchedule):
        self.sinks = list(sinks)
        self.policies = policies
        self.strict = strict
        self._dropped = dropped
        self.esd = esd
        self.history: HistoryWriter | None = None
        #: Failures of the history and the sinks, grouped by cause (see :mod:`..faults`).
        self.faults = FaultReporter()
        self._outputs: dict[int, Retrying] = {}
        self._funnel: deque[str] = deque()  # warnings waiting for the training thread
        self._warned_non_finite = False  # "NaN/Inf in the weights", once
        self.results_delivered = 0
        self.last_result: AnalysisResult | None = None

    # ------------------------------------------------------------------ the history file

    def set_log_dir(self, log_dir: str | os.PathLike | None) -> None:
        """Write the history into ``log_dir`` from now on (None: no file)."""
        if self.history is not None:
            self.history.close()
        self.history = HistoryWriter(Path(log_dir) / HISTORY_FILE) if log_dir else None
        if self.history is not None:
            self.history.open()  # a second session on this folder is warned now

    @property
    def history_path(self) -> Path | None:
        """The history file, or None when the session keeps no file."""
        return self.history.path if self.history else None

    # ------------------------------------------------------------------ values

    def scalars(self, result: AnalysisResult) -> dict[str, float]:
        """The ``ww/`` values of ``result``: summary, drops, per-layer and the policies'."""
        return {**result.summary, DROPPED: float(self._dropped()),
                **layer_scalars(result.details), **self.policies.scalars()}

    def model_scalars(self) -> dict[str, float]:
        """The model-level ``ww/`` values of the latest delivered analysis (the policies' ones
        included) with the current ``ww/snapshots_dropped``; empty before the first."""
        result = self.last_result
        if result is None:
            return {}
        values = {**(result.scalars or result.summary), DROPPED: float(self._dropped())}
        return {k: float(v) for k, v in values.items()
                if k.startswith(MODEL_PREFIX) and v is not None}

    # ------------------------------------------------------------------ worker thread

    def record(self, result: AnalysisResult) -> AnalysisResult:
        """History first, then the policies decide, then the in-worker sinks."""
        written = False
        if self.history is not None:  # before any sink or policy sees it; a failure stops neither
            written = self._output(self.history, f"history {self.history.path}", None,
                                   "the results still reach the sinks and policies")(
                self.history.append, result)
        self.policies.on_result(result)
        self.keep_esd(result)  # (the sinks show them too: kept with or without a history)
        if written:  # the actions and ESDs belong to a record the history holds: one failure
            self.record_after(result)  # of the output per lost analysis, not one per line
        result.scalars = self.scalars(result)
        for sink in self.sinks:
            if in_worker(sink):
                self._write(sink, result, result.scalars)
            elif (prepare := preparer(sink)) is not None:
                try:
                    prepare(result)
                except Exception:  # noqa: BLE001 - the protocol: write() does the work then
                    pass
        return result

    def keep_esd(self, result: AnalysisResult, *, final: bool = False) -> bool:
        """Ask :attr:`esd`'s schedule whether the compact ESDs of ``result`` are stored (when
        the eigenvalues were kept; ``final``: the final analysis', asked again at the close)
        and if so set ``result.esd``, which the history's sidecar and the sinks read. True when
        they were set now."""
        if result.spectra and self.esd.due(result, final=final) \
                and self.esd.stored_step != result.step:
            self.esd.stored_step = int(result.step)
            result.esd = compact_spectra(result)
            return True
        return False

    def record_after(self, result: AnalysisResult, *, final: bool = False) -> None:
        """The rest of the record, after the history line of ``result``: the policies' actions
        line (when there are policies) and the compact ESDs :meth:`keep_esd` set (``final``:
        the final analysis' ESDs, asked for again at the close, before the sinks close). A
        failure is reported like the history's."""
        if final and not self.keep_esd(result, final=True):
            return
        if self.history is None:
            return
        history = self.history
        write = self._output(history, f"history {history.path}", None,
                             "the results still reach the sinks and policies")
        if self.policies and not final:
            write(history.append_actions, result.step, self.policies.actions())
        if result.esd:
            write(history.append_spectra, result.step, result.esd)

    # ------------------------------------------------------------------ training thread

    def handle(self, results: list[Any], errors: list) -> list[AnalysisResult]:
        """The worker's finished analyses and errors: errors warned (raised when ``strict``),
        results delivered."""
        for err in errors:
            if isinstance(err.error, AnalysisCancelled):
                continue  # training was interrupted: nobody waits for this analysis
            message = terminal(f"ww_callbacks: the analysis of step {err.step} failed: "
                               f"{err.error!r}")
            if self.strict:
                raise RuntimeError(message + "\n" + err.traceback) from err.error
            warnings.warn(message, WatcherWarning, stacklevel=3)
        results = [r for r in results if isinstance(r, AnalysisResult)]  # not ranks' parts
        for result in results:
            self.deliver(result)
        self.report()
        return results

    def deliver(self, result: AnalysisResult) -> None:
        """The training-thread sinks get ``result``; it becomes the latest delivered one."""
        self._warn_non_finite(result)
        scalars = result.scalars or self.scalars(result)
        for sink in self.sinks:
            if not in_worker(sink):
                self._write(sink, result, scalars)
        self.report()
        self.delivered(result)

    def delivered(self, result: AnalysisResult) -> None:
        """Count ``result`` as delivered (also a distributed session's other ranks, whose
        policies only decide on it)."""
        self.results_delivered += 1
        self.last_result = result

    def report(self) -> None:
        """Warn, on the training thread, what the policies and the outputs reported since."""
        self._funnel.extend(self.policies.failures)
        self.policies.failures.clear()
        self._funnel.extend(self.faults.pop_messages())
        while self._funnel:
            warnings.warn(self._funnel.popleft(), WatcherWarning, stacklevel=4)

    def close_sinks(self, sinks: Sequence[Any] | None = None) -> None:
        """Close ``sinks`` (default: every sink); a failure is warned, never raised."""
        for sink in self.sinks if sinks is None else sinks:
            try:
                sink.close()
            except Exception as err:  # best effort: nothing may stop a cleanup
                warnings.warn(f"ww_callbacks: closing sink {type(sink).__name__} failed: "
                              f"{err!r}", WatcherWarning, stacklevel=3)

    # ------------------------------------------------------------------ internals

    def _output(self, key: Any, name: str, reopen: Any = None, consequence: str = "") -> Retrying:
        """The retrying wrapper of one output (the history or a sink), made on first use."""
        output = self._outputs.get(id(key))
        if output is None:
            output = self._outputs[id(key)] = Retrying(name, self.faults, reopen=reopen,
                                                       consequence=consequence)
        return output

    def _write(self, sink: Any, result: AnalysisResult, scalars: dict[str, float]) -> None:
        """Write to one sink; a failure is reported once per cause (as a warning on the training
        thread), retried at the next result (after ``sink.reopen()`` when the sink has one) and
        never stops training nor loses data (the history has it)."""
        where = f"the history in {self.history_path} has every result" \
            if self.history_path else ""
        self._output(sink, f"sink {type(sink).__name__}", reopen_of(sink), where)(
            sink.write, result, scalars)

    def _warn_non_finite(self, result: AnalysisResult) -> None:
        """One warning, the first time weights with NaN or Inf are analysed: which layers, at
        which step (their rows are ``failed``; later analyses say so in the history)."""
        if self._warned_non_finite or "warning" not in result.details.columns:
            return
        bad = result.details.loc[result.details["warning"] == NON_FINITE, "longname"]
        if len(bad):
            self._warned_non_finite = True
            names = ", ".join(map(terminal, bad.unique()[:10])) + \
                (" ..." if bad.nunique() > 10 else "")
            warnings.warn(f"ww_callbacks: the weights of {bad.nunique()} layer(s) contain NaN or "
                          f"Inf at step {result.step}: {names}; training has diverged there (not "
                          "reported again)", WatcherWarning, stacklevel=5)
