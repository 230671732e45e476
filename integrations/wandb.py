"""Weights & Biases sink: the ww scalars and a per-layer table, logged into a W&B run.

Results arrive after the run's own step has moved on (the analysis runs in the background), and
W&B drops rows whose ``step=`` goes backwards. So the sink never passes ``step=``: every row
carries its own x-axis, the step metric (``ww/step`` by default), and the ``ww`` metrics are
bound to it with ``define_metric``::

    run = wandb.init(project="my-project")
    watcher = Watcher(sinks=[WandbSink(run)])

W&B's ``run.log`` is not thread-safe: the :class:`~ww_callbacks.watcher.Watcher` calls sinks
on the training thread, and the sink warns if it is called from another thread than the main one.
"""

from __future__ import annotations

import math
import threading
import warnings
from typing import Any

from ww_callbacks.results import AnalysisResult
from ww_callbacks.tags import wandb_globs
from ww_callbacks.watcher import WatcherWarning

#: The per-layer table's key (bound to the step metric by the ``ww/*`` glob).
TABLE_KEY = "ww/layers"

#: The table's columns, in order; ``num_traps`` only when the analysis counted traps.
TABLE_COLUMNS = ("longname", "layer_type", "N", "M", "alpha", "alpha_weighted", "log_norm",
                 "log_spectral_norm", "stable_rank", "num_traps", "status", "warning")

#: Step metrics that a host logger defines itself (Lightning's ``WandbLogger``, Hugging Face's
#: ``WandbCallback``): the sink binds the ``ww`` metrics to them but does not redefine them.
HOST_STEP_METRICS = frozenset({"trainer/global_step", "train/global_step"})

_INT_COLUMNS = frozenset({"N", "M", "num_traps"})
_STR_COLUMNS = frozenset({"longname", "layer_type", "status", "warning"})


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("WandbSink needs Weights & Biases: pip install ww_callbacks[wandb]") \
            from err
    return wandb


def _cell(column: str, value: Any) -> Any:
    """A plain Python value for a table cell (W&B infers column types from them)."""
    if column in _STR_COLUMNS:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) \
            else str(value)
    try:
        if column in _INT_COLUMNS:
            return int(value)
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class WandbSink:
    """Logs ww results to a Weights & Biases run, from the main thread only (``wandb.log`` is
    not thread-safe).

    ``run``: a W&B run (what ``wandb.init()`` returns, or Lightning's
    ``WandbLogger.experiment``); None uses the active run (``wandb.run``) at the first write.
    ``scalars``: log the ``ww/``, ``ww_alpha/``, ``ww_alpha_weighted/`` and ``ww_traps/``
    scalars (False when the host already logs them, e.g. Lightning through its logger: only the
    table is logged then). ``step_metric``: the x-axis of every ``ww`` metric, logged in each
    row as the analysed step. ``table_every``: log the per-layer table ``ww/layers`` at the
    first write and every ``table_every``-th one after it, and the last result's at
    :meth:`close` (0 or None: never).
    """

    def __init__(self, run: Any = None, *, scalars: bool = True, step_metric: str = "ww/step",
                 table_every: int | None = 5):
        if table_every is not None and (not isinstance(table_every, int) or table_every < 0):
            raise ValueError(f"table_every must be a non-negative int or None, not "
                             f"{table_every!r}")
        self.run = run
        self.scalars = scalars
        self.step_metric = step_metric
        self.table_every = table_every or 0
        self.writes = 0
        self._wandb: Any = None
        self._defined = False
        self._warned_thread = False
        self._untabled: AnalysisResult | None = None  # last result whose table is not logged

    # ------------------------------------------------------------------ setup

    def _resolve_run(self) -> Any:
        """The run to log into: the one given, else the active one (once found, kept)."""
        if self._wandb is None:
            self._wandb = _import_wandb()
        if self.run is None:
            self.run = self._wandb.run
            if self.run is None:
                raise RuntimeError("WandbSink: there is no active W&B run; call wandb.init() "
                                   "first or pass WandbSink(run=...)")
        return self.run

    def _define_metrics(self, run: Any) -> None:
        """Bind every tag family of :mod:`ww_callbacks.tags` (the core's and every policy's) to the
        step metric (once per sink)."""
        if self.step_metric not in HOST_STEP_METRICS:
            run.define_metric(self.step_metric)
        for pattern in wandb_globs():
            run.define_metric(pattern, step_metric=self.step_metric)
        self._defined = True

    def _check_thread(self) -> None:
        if threading.current_thread() is not threading.main_thread() and not self._warned_thread:
            self._warned_thread = True
            warnings.warn("WandbSink.write called from a thread other than the main one: "
                          "wandb.log is not thread-safe; call Watcher.poll() from the training "
                          "loop", WatcherWarning, stacklevel=3)

    # ------------------------------------------------------------------ sink protocol

    def table(self, result: AnalysisResult) -> Any:
        """The ``wandb.Table`` of one result: one row per layer, :data:`TABLE_COLUMNS`."""
        if self._wandb is None:
            self._wandb = _import_wandb()
        details = result.details
        columns = [c for c in TABLE_COLUMNS if c in details.columns]
        data = [[_cell(c, v) for c, v in zip(columns, row, strict=True)]
                for row in details[columns].itertuples(index=False, name=None)]
        return self._wandb.Table(columns=columns, data=data)

    def _table_due(self) -> bool:
        return bool(self.table_every) and self.writes % self.table_every == 0

    def write(self, result: AnalysisResult, scalars: dict[str, float]) -> None:
        """Log one result: ``{step_metric: result.step, **scalars}`` (never ``step=``), plus the
        per-layer table when it is due."""
        self._check_thread()
        run = self._resolve_run()
        if not self._defined:
            self._define_metrics(run)
        row: dict[str, Any] = {self.step_metric: int(result.step)}
        if self.scalars:
            row.update(scalars)
        table_due = self._table_due()
        if table_due:
            row[TABLE_KEY] = self.table(result)
        if self.scalars or table_due:
            run.log(row)
        self.writes += 1  # after a successful log: a failed write is retried with the next one
        self._untabled = None if table_due else result

    def close(self) -> None:
        """Log the last result's table if it was not logged yet. Never finishes the run: the
        run belongs to whoever started it."""
        result, self._untabled = self._untabled, None
        run = self.run
        if (result is None or not self.table_every or run is None
                or getattr(run, "_is_finished", False)):
            return
        self._check_thread()
        run.log({self.step_metric: int(result.step), TABLE_KEY: self.table(result)})
