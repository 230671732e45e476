"""Weights & Biases sink: the ww scalars, one per-layer table across the run, the per-layer alpha
chart, the stored ESDs as histograms, the HTSR pictures and alerts, logged into a W&B run.

What goes where (the table, chart and histograms are built in :mod:`.wandb_panels`):

- ``ww/...``, ``ww_alpha/<layer>``, ``ww_alpha_weighted/<layer>``, ``ww_traps/<layer>``: the
  scalars of every analysis (``scalars=True``);
- ``ww/layers``: ONE table across the run, a row per layer and analysis with a ``step`` column,
  logged in W&B's ``INCREMENTAL`` mode (only the new rows each time);
- ``ww_plots/alpha_by_layer``: every layer's alpha against the analysed step, one line and
  colour per layer with a legend (``wandb.plot.line_series``), at the picture cadence and at
  the end;
- ``ww_esd/<layer>`` (and ``ww_esd_rand/<layer>`` where traps were counted): the compact ESDs
  the session stores on its ``esd_every`` schedule, as ``wandb.Histogram`` of log10
  eigenvalues on their 64 stored bins;
- ``ww_plots/...`` and ``ww_esd_plot/<layer>``: the pictures (below); ``ww/alerts``: the alerts.

Results arrive after the run's own step has moved on (the analysis runs in the background), and
W&B drops rows whose ``step=`` goes backwards. So the sink never passes ``step=``: every row
carries its own x-axis, the step metric (``ww/step`` by default), and the ``ww`` metrics are
bound to it with ``define_metric``::

    run = wandb.init(project="my-project")
    watcher = Watcher(sinks=[WandbSink(run)])

W&B's ``run.log`` is not thread-safe: the :class:`~ww_callbacks.session.WatchSession` calls sinks
on the training thread, and the sink warns if it is called from another thread than the main one.
What is slow is built elsewhere, and the training thread only logs objects that are ready
(measured on the training thread before, RESULTS.md 14: 0.27-0.45 ms per table row, 5 ms per
analysis of 16 layers, 150 ms of 500; 236-606 ms per alpha chart): the table's rows in the
analysis thread (:meth:`WandbSink.prepare`, which the session calls there before it hands the
result to the training thread), the alpha chart in a thread of the sink (logged by a later
``write`` or at ``close``, in a row of its own with its analysed step, like the pictures).
The pictures (the same as TensorBoard's, from :mod:`ww_callbacks.figures`, under the same keys:
``ww_plots/alpha_heatmap``, ``ww_plots/correlation_flow``, ``ww_plots/alpha_histogram``,
``ww_esd_plot/<layer>``) are drawn in a background thread of the sink and logged, as
``wandb.Image``, by the next ``write`` or ``close`` on the training thread, each row with its
analysed step as step metric.

The x-axis: every tag family of :mod:`ww_callbacks.tags` is bound to ``step_metric``. To see the
ww keys on the same axis as your own metrics, log that key in your rows too (e.g.
``run.log({"loss": loss, "ww/step": step})``) or pass the step metric you already log
(``step_metric="trainer/global_step"`` is what Lightning's logger uses).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ww_callbacks.dashboard import Dashboard, Frame
from ww_callbacks.faults import WatcherWarning
from ww_callbacks.figures import matplotlib_missing
from ww_callbacks.names import file_stem
from ww_callbacks.picture_queue import PICTURE_DUTY, PictureQueue
from ww_callbacks.results import AnalysisResult
from ww_callbacks.tags import ALERTS, ESD_HISTOGRAM, ESD_PLOT, wandb_globs

from .wandb_panels import (
    CHART_KEY,
    STEP_COLUMN,
    TABLE_COLUMNS,
    TABLE_KEY,
    LayerTable,
    alpha_chart,
    esd_histograms,
    table_rows,
)

__all__ = ["CHART_GROWTH", "CHART_KEY", "CLOSE_WAIT_S", "HOST_STEP_METRICS", "STEP_COLUMN",
           "TABLE_COLUMNS", "TABLE_KEY", "WandbSink"]

#: Step metrics that a host logger defines itself (Lightning's ``WandbLogger``, Hugging Face's
#: ``WandbCallback``): the sink binds the ``ww`` metrics to them but does not redefine them.
HOST_STEP_METRICS = frozenset({"trainer/global_step", "train/global_step"})

#: The alpha chart is logged again at the picture cadence once the analyses seen grew by this
#: factor since its last log (see :meth:`WandbSink._add_chart`).
CHART_GROWTH = 1.25

#: How long :meth:`WandbSink.close` waits for the charts being built and for the table (whose
#: rows the analysis thread may be adding), as the picture queue waits at exit.
CLOSE_WAIT_S = 60.0


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("WandbSink needs Weights & Biases: pip install ww_callbacks[wandb]") \
            from err
    return wandb


class WandbSink:
    """Logs ww results to a Weights & Biases run, from the main thread only (``wandb.log`` is
    not thread-safe).

    ``run``: a W&B run (what ``wandb.init()`` returns, or Lightning's
    ``WandbLogger.experiment``); None uses the active run (``wandb.run``) at the first write.
    ``scalars``: log the ``ww/``, ``ww_alpha/``, ``ww_alpha_weighted/`` and ``ww_traps/``
    scalars (False when the host already logs them, e.g. Lightning through its logger: the
    table, the ESD histograms and the pictures are logged then). ``step_metric``: the x-axis of
    every ``ww`` metric, logged in each row as the analysed step. ``table_every``: the one
    per-layer table ``ww/layers`` across the run (:class:`~.wandb_panels.LayerTable`: every
    analysis' rows with a ``step`` column, logged as W&B "increments" at the first analysis, then
    every ``table_every`` analyses, less often in long runs, and at :meth:`close`; 0 or None:
    no table). The compact ESDs the session stores (``esd_every``, ``result.esd``) are logged
    as ``wandb.Histogram`` of log10 eigenvalues, ``ww_esd/<layer>`` and, where traps were
    counted, ``ww_esd_rand/<layer>``, in the row of their analysis (the final analysis' at
    :meth:`close`).
    ``images_every``, ``max_images``, ``plot_on_change``: the pictures' cadence, as for
    :class:`~ww_callbacks.integrations.tensorboard.TensorBoardSink` (0: no pictures);
    ``picture_duty``: their CPU-time budget, as there. The final frame is drawn and logged
    before :meth:`close` returns (the run may be finished right after ``fit``). At that cadence
    and at the end, also every layer's alpha as one line chart ``ww_plots/alpha_by_layer``
    (``wandb.plot.line_series``, a colour per layer, a legend; no drawing: it is logged at once).
    ``alerts``: also raise each analysis' alerts (a trap appeared, a layer crossed alpha 2 or 6,
    NaN/Inf) with ``run.alert`` (opt-in: W&B may e-mail them); they are always logged as text
    under ``ww/alerts``. ``console_alerts``: print them on stderr.
    """

    def __init__(self, run: Any = None, *, scalars: bool = True, step_metric: str = "ww/step",
                 table_every: int | None = 5, images_every: int = 5, max_images: int = 16,
                 plot_on_change: bool = True, alerts: bool = False,
                 console_alerts: bool = False, picture_duty: float | None = PICTURE_DUTY):
        if table_every is not None and (not isinstance(table_every, int) or table_every < 0):
            raise ValueError(f"table_every must be a non-negative int or None, not "
                             f"{table_every!r}")
        for name, value in (("images_every", images_every), ("max_images", max_images)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, not {value!r}")
        self.run = run
        self.scalars = scalars
        self.step_metric = step_metric
        self.table_every = table_every or 0
        self.writes = 0
        self._wandb: Any = None
        self._defined = False
        self._warned_thread = False
        #: The one per-layer table of the run (made at the first write when ``table_every``).
        self.layers: LayerTable | None = None
        self._making_table = threading.Lock()
        self._esd_logged: int | None = None  # the step whose ESD histograms were logged last
        self._chart_step: int | None = None  # the step of the latest alpha chart asked for
        self._chart_seen = 0  # the analyses the dashboard had seen then
        #: Builds the alpha charts (:func:`~.wandb_panels.alpha_chart`) in a thread of this
        #: sink, in order; made at the first chart.
        self._chart_builder: ThreadPoolExecutor | None = None
        self._charts: deque[tuple[int, Future]] = deque()  # (step, chart), in order
        self.images_every = images_every
        self.alerts = alerts
        self.console_alerts = console_alerts
        self.dashboard = Dashboard(images_every, max_images, plot_on_change)
        #: Draws the pictures, as PNG files, in a thread of this sink (:class:`PictureQueue`).
        self.pictures = PictureQueue(self._draw, "ww-wandb-plots", duty=picture_duty)
        self._image_dir: tempfile.TemporaryDirectory | None = None
        self._drawn = 0
        self._matplotlib_missing = False
        self._stems: dict[str, str] = {}  # layer name -> its part of the pictures' keys
        self._stems_used: set[str] = set()

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
        """A ``wandb.Table`` of one result alone: one row per layer, :data:`TABLE_COLUMNS` and
        its step (the sink itself logs the rows of every result into one table, ``ww/layers``)."""
        if self._wandb is None:
            self._wandb = _import_wandb()
        return self._wandb.Table(columns=[*TABLE_COLUMNS, STEP_COLUMN], data=table_rows(result))

    def _layer_table(self) -> LayerTable:
        """The run's one table, made once (by the analysis or the training thread)."""
        with self._making_table:
            if self.layers is None:
                if self._wandb is None:
                    self._wandb = _import_wandb()
                self.layers = LayerTable(self._wandb, self.table_every)
            return self.layers

    def prepare(self, result: AnalysisResult) -> None:
        """Add the rows of ``result`` to the table, in the analysis thread (the session calls
        this there, in analysis order, before the result reaches :meth:`write`): W&B's per-row
        type check costs 0.27-0.45 ms per row (RESULTS.md 14), which the training thread no
        longer pays. A failure leaves the rows to :meth:`write`, where it is reported."""
        if not self.table_every:
            return
        try:
            layers = self._layer_table()
            with layers.lock:
                layers.add(result)
        except Exception:  # noqa: BLE001 - write() adds the rows again and reports the failure
            pass

    def write(self, result: AnalysisResult, scalars: dict[str, float]) -> None:
        """Log one result: ``{step_metric: result.step, **scalars}`` (never ``step=``), plus the
        per-layer table's new rows when they are due, the stored ESDs' histograms and, at the
        picture cadence, the alpha chart (built in the sink's thread, logged when ready)."""
        self._check_thread()
        run = self._resolve_run()
        if not self._defined:
            self._define_metrics(run)
        self._log_images(run, wait=False)  # pictures of earlier results that are ready
        self._log_charts(run, wait=False)  # charts built since
        row: dict[str, Any] = {self.step_metric: int(result.step)}
        if self.scalars:
            row.update(scalars)
        locked: Any = None
        if self.table_every:
            layers = self._layer_table()
            # rows added by prepare(): never wait while the analysis thread adds a later
            # result's rows (the table is then logged at a later write); else add them here
            if layers.lock.acquire(blocking=not layers.has(result)):
                locked = layers.lock
                layers.add(result)
                if layers.due():
                    row[TABLE_KEY] = layers.table
        try:
            if result.esd and self._esd_logged != int(result.step):
                row.update(esd_histograms(self._wandb, result.esd))
            if self.dashboard.last is not result:  # not a retry of a failed write
                frame = self.dashboard.update(result)
                if frame.alerts:
                    row[ALERTS] = self._alert(run, frame)
                if frame.plots:
                    self._render(result, frame)
                    self._add_chart(int(result.step))
            self._log(run, row)
        finally:
            if locked is not None:
                locked.release()
        self.writes += 1  # after a successful log: a failed write is retried with the next one

    def close(self) -> None:
        """Draw the final analysis if it was not drawn yet, log the pictures still pending, and
        in one last row the table's rows not logged yet, the final analysis' ESD histograms
        (stored at the close) and the alpha chart up to it. Never finishes the run: the run
        belongs to whoever started it."""
        run = self.run
        try:
            if run is None or getattr(run, "_is_finished", False):
                return
            last = self.dashboard.last
            final = self.dashboard.final()
            if final is not None and last is not None:
                self._render(last, final, keep=True)
            self._log_images(run, wait=True)
            if last is None:
                return
            if self.images_every:
                self._add_chart(int(last.step), final=True)
            self._log_charts(run, wait=True)
            row: dict[str, Any] = {}
            locked: Any = None
            layers = self.layers
            if layers is not None:
                if layers.lock.acquire(timeout=CLOSE_WAIT_S):
                    locked = layers.lock
                    if layers.pending:
                        row[TABLE_KEY] = layers.table
                else:
                    warnings.warn(f"ww_callbacks: the W&B table's last {layers.pending} rows were "
                                  f"not logged: rows still being added after {CLOSE_WAIT_S:g} s",
                                  WatcherWarning, stacklevel=2)
            try:
                if last.esd and self._esd_logged != int(last.step):
                    row.update(esd_histograms(self._wandb, last.esd))
                if row:
                    self._check_thread()
                    self._log(run, {self.step_metric: int(last.step), **row})
            finally:
                if locked is not None:
                    locked.release()
        finally:
            if self._chart_builder is not None:
                self._chart_builder.shutdown(wait=False, cancel_futures=True)
                self._chart_builder = None
            self.pictures.close()
            if self._image_dir is not None:
                self._image_dir.cleanup()
                self._image_dir = None

    def _add_chart(self, step: int, *, final: bool = False) -> None:
        """Have the alpha chart up to ``step`` built (in the sink's thread; logged by
        :meth:`_log_charts`) unless it was asked for at that step.
        Each log rewrites the chart's whole table (up to 10 000 points, 55 B each measured
        with 25-character layer names): at the picture cadence it is logged only once the
        analyses seen grew by :data:`CHART_GROWTH` since its last log, so a run logs it
        O(log n) times (24 times for 2 000 analyses at ``images_every=5``, 5.7 MB for 16
        layers) instead of n / 5 times (401 times, 185 MB; ``bench/wandb_outputs.py``)."""
        seen = self.dashboard.seen
        if self._chart_step != step and (final or seen >= CHART_GROWTH * self._chart_seen):
            self._chart_seen = seen
            self._chart_step = step
            args = (self._wandb, self.dashboard, None, step)
            try:
                if self._chart_builder is None:
                    self._chart_builder = ThreadPoolExecutor(
                        1, thread_name_prefix="ww-wandb-chart")
                future = self._chart_builder.submit(alpha_chart, *args)
            except RuntimeError:  # a sink closed at interpreter exit: no new thread, build here
                future = Future()
                try:
                    future.set_result(alpha_chart(*args))
                except Exception as err:  # noqa: BLE001 - reported by _log_charts
                    future.set_exception(err)
            self._charts.append((step, future))

    def _log_charts(self, run: Any, *, wait: bool) -> None:
        """Log the alpha charts that are built, in order, each in a row of its own with its
        analysed step (``wait``: all of them, waiting at most :data:`CLOSE_WAIT_S`)."""
        deadline = time.monotonic() + CLOSE_WAIT_S
        while self._charts:
            step, future = self._charts[0]
            if not future.done():
                left = deadline - time.monotonic()
                if not wait or left <= 0:
                    return
                try:
                    future.result(timeout=left)
                except Exception:  # noqa: BLE001 - timeout or failure: said below
                    pass
                if not future.done():
                    warnings.warn(f"ww_callbacks: the W&B alpha chart of step {step} was not "
                                  f"built after {CLOSE_WAIT_S:g} s; not logged", WatcherWarning,
                                  stacklevel=3)
                    self._charts.clear()
                    return
            self._charts.popleft()
            error = future.exception()
            if error is not None:  # a chart never stops training nor the scalars
                warnings.warn(f"ww_callbacks: building the W&B alpha chart of step {step} "
                              f"failed: {error!r}", WatcherWarning, stacklevel=3)
                continue
            chart = future.result()
            if chart is not None:
                run.log({self.step_metric: step, CHART_KEY: chart})

    def _log(self, run: Any, row: dict[str, Any]) -> None:
        """``run.log(row)`` (when it holds more than the step), then note what it logged."""
        if len(row) <= 1:
            return
        run.log(row)
        step = int(row[self.step_metric])
        if TABLE_KEY in row and self.layers is not None:
            self.layers.logged()
        if any(key.startswith(ESD_HISTOGRAM + "/") for key in row):
            self._esd_logged = step

    # ------------------------------------------------------------------ alerts and pictures

    def _alert(self, run: Any, frame: Frame) -> str:
        """The alerts' text (logged under ``ww/alerts``); raised with ``run.alert`` when asked."""
        from ww_callbacks.names import terminal

        text = "\n".join(frame.alerts)
        if self.console_alerts:
            for alert in frame.alerts:
                print(f"ww_callbacks alert: {terminal(alert)}", file=sys.stderr, flush=True)
        if self.alerts:
            run.alert(title=f"ww_callbacks: step {frame.step}", text=text,
                      level=self._wandb.AlertLevel.WARN)
        return text

    def _render(self, result: AnalysisResult, frame: Frame, *, keep: bool = False) -> None:
        """Queue the frame's pictures for drawing (logged by a later write or at close)."""
        if self._matplotlib_missing or matplotlib_missing("WandbSink", stacklevel=4):
            self._matplotlib_missing = True
            return
        if self._image_dir is None:
            self._image_dir = tempfile.TemporaryDirectory(prefix="ww_wandb_")
        self.pictures.submit(result, frame, keep=keep)

    def _draw(self, result: AnalysisResult, frame: Frame) -> dict[str, str]:
        """Render the frame's pictures into PNG files (in the queue's thread): ``tag -> path``."""
        self._drawn += 1
        folder = os.path.join(self._image_dir.name, f"{self._drawn}_{frame.step}")
        return _draw(self.dashboard, result, frame, folder)

    def _log_images(self, run: Any, *, wait: bool) -> None:
        """Log the pictures that are drawn (all of them, waiting, with ``wait``), in order."""
        for result, paths in self.pictures.ready(wait=wait):
            if isinstance(paths, Exception):  # a picture never stops training nor the scalars
                warnings.warn(f"ww_callbacks: drawing the pictures of step {result.step} "
                              f"failed: {paths!r}", WatcherWarning, stacklevel=4)
                continue
            if paths:
                run.log({self.step_metric: int(result.step),
                         **{self._media_key(tag): self._wandb.Image(path)
                            for tag, path in paths.items()}})

    def _media_key(self, tag: str) -> str:
        """The W&B key of a picture: W&B writes it to ``media/images/<key>_<step>_<id>.png``, so
        a layer's name in ``ww_esd_plot/<layer>`` becomes a file-name part
        (:func:`~ww_callbacks.names.file_stem`: ``[A-Za-z0-9._-]``, at most 80 characters, a
        hash where it had to change; a 300-character name failed the write with ``File name
        too long``), the same one for a layer all run long. Plain names stay as they are."""
        prefix = ESD_PLOT + "/"
        if not tag.startswith(prefix):
            return tag
        name = tag[len(prefix):]
        stem = self._stems.get(name)
        if stem is None:
            stem = self._stems[name] = file_stem(name, self._stems_used)
        return prefix + stem


def _draw(dashboard: Dashboard, result: AnalysisResult, frame: Frame,
          folder: str) -> dict[str, str]:
    """Render the frame's pictures into PNG files in ``folder``: ``tag -> path``."""
    from ww_callbacks.figures import rgb_to_png

    os.makedirs(folder, exist_ok=True)
    paths = {}
    for i, (tag, image) in enumerate(dashboard.render(result, frame).items()):
        path = os.path.join(folder, f"{i}.png")
        with open(path, "wb") as file:
            file.write(rgb_to_png(image))
        paths[tag] = path
    return paths
