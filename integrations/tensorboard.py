"""TensorBoard sink: the ww scalars, a custom-scalars layout, ESD histograms, the HTSR pictures
and alerts.

:class:`TensorBoardSink` is a :class:`~ww_callbacks.sinks.Sink`: the watcher calls
``write(result, scalars)`` for every finished analysis, in its background thread (the sink sets
``in_worker``); the pictures are drawn and written in a thread of the sink
(:class:`~ww_callbacks.picture_queue.PictureQueue`) under a CPU-time budget (``picture_duty``),
so they hold up neither training nor the next analysis; the final frame is drawn after training
has returned (:func:`~ww_callbacks.picture_queue.wait_for_pictures` waits for it). It writes

- ``ww_alpha/<layer>``, ``ww_alpha_weighted/<layer>``, ``ww_traps/<layer>``, the policies'
  families and the ``ww/`` model scalars (``scalars=True``) at ``global_step=result.step``;
- a custom-scalars layout (*Custom Scalars* tab) with one chart per per-layer tag family of
  :mod:`ww_callbacks.tags` that has data (a policy that is not used gets no empty chart; the
  layout is written again when a new family appears) and a "ww model" category;
- ``ww_esd/<layer>``: the spectrum as a histogram of log10 eigenvalues (*Histograms* tab);
- *Images* tab, drawn by :mod:`ww_callbacks.figures` at the :class:`~ww_callbacks.dashboard.
  Dashboard`'s cadence (every ``images_every``-th analysis, when a layer gains a trap or leaves
  the 2-6 band, as the ``picture_duty`` budget allows, and the final analysis at
  :meth:`TensorBoardSink.close`):
  ``ww_plots/alpha_heatmap``, ``ww_plots/correlation_flow``, ``ww_plots/alpha_histogram`` and
  ``ww_esd_plot/<layer>`` (log-log ESD, fitted power law, randomized ESD with MP edge and traps);
- ``ww/alerts`` (*Text* tab) and a console line when a trap appears, a layer crosses alpha 2 or
  6, or NaN/Inf appears.

Set the Scalars' smoothing to 0 in TensorBoard's settings panel: the default 0.6 hides the
step-0 alpha and turns counts into fractions (the layout format cannot set it).

The writer is duck-typed: the default is :class:`~.tensorboard_events.EventWriter` (no torch, no
TensorFlow, so creating a sink never changes the global random state); a
``torch.utils.tensorboard.SummaryWriter`` (what Lightning's ``TensorBoardLogger.experiment`` is),
a ``tensorboardX.SummaryWriter`` or any adapter works if it has ``add_scalar(tag, value,
global_step, walltime=)``, ``add_histogram(tag, values, global_step, walltime=)``,
``add_image(tag, hwc_uint8, global_step, walltime=, dataformats="HWC")``,
``add_custom_scalars(layout)``, ``flush()`` and optionally ``add_text(tag, text, global_step)``
(``close()`` only when the sink created it).

Example::

    from ww_callbacks.integrations.tensorboard import TensorBoardSink
    from ww_callbacks.session import WatchSession

    watcher = WatchSession(log_dir="ww_logs", sinks=[TensorBoardSink(log_dir="ww_logs")])
    # ... watcher.snapshot(model, step) / watcher.poll() in the loop, watcher.close() at the end
    # then: tensorboard --logdir ww_logs
"""

from __future__ import annotations

import math
import os
import re
import socket
import sys
import threading
import warnings
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from ww_callbacks.dashboard import Dashboard, Frame
from ww_callbacks.faults import WatcherWarning
from ww_callbacks.figures import esd_figure, figure_to_rgb, matplotlib_missing
from ww_callbacks.picture_queue import PICTURE_DUTY, PictureQueue
from ww_callbacks.results import AnalysisResult
from ww_callbacks.scalars import MODEL_PREFIX, layer_tag
from ww_callbacks.tags import ALERTS, ESD_HISTOGRAM, ESD_PLOT, SCALAR, families, family_of

from .tensorboard_events import INSTALL_HINT, EventWriter

__all__ = ["ESD_HISTOGRAM", "ESD_PLOT", "INSTALL_HINT", "EventWriter", "TensorBoardSink",
           "default_writer", "esd_figure", "figure_to_rgb", "hf_run_dir", "ww_layout"]

#: Charts of the "ww model" category: title -> tag regexes (``re.match``, as the plugin does).
#: Each mean is drawn with its every-layer twin (``ww/all/...``, the low-evidence layers in).
MODEL_CHARTS: dict[str, list[str]] = {
    "alpha mean": [r"ww/alpha_mean$", r"ww/all/alpha_mean$"],
    "alpha_weighted mean": [r"ww/alpha_weighted_mean$", r"ww/all/alpha_weighted_mean$"],
    "log_norm mean": [r"ww/log_norm_mean$", r"ww/all/log_norm_mean$"],
    "layers over-trained / under-trained / failed / low evidence": [r"ww/layers_.*"],
    "correlation traps": [r"ww/num_traps$"],
    "snapshots dropped": [r"ww/snapshots_dropped$"],
}


def default_writer(log_dir: str | os.PathLike | None = None) -> EventWriter:
    """A new :class:`~.tensorboard_events.EventWriter` in ``log_dir``; None: TensorBoard's usual
    ``runs/<date>_<host>``."""
    if log_dir is None:
        log_dir = os.path.join("runs", datetime.now().strftime("%b%d_%H-%M-%S") + "_"
                               + socket.gethostname())
    return EventWriter(log_dir)


def hf_run_dir(args: Any) -> str | None:
    """The folder of Hugging Face's own TensorBoard run for these ``TrainingArguments``, so the
    ww tags share it with ``train/loss``: ``args.logging_dir`` (transformers < 5),
    ``$TENSORBOARD_LOGGING_DIR``, or the newest ``<output_dir>/runs/*`` holding event files
    (transformers 5 names it by the time its ``TensorBoardCallback`` starts, which is before a
    user's callback). None when none is found."""
    chosen = getattr(args, "logging_dir", None) or os.environ.get("TENSORBOARD_LOGGING_DIR")
    if chosen:
        return os.path.expanduser(str(chosen))
    runs = os.path.join(str(getattr(args, "output_dir", None) or "."), "runs")
    try:
        folders = [os.path.join(runs, name) for name in os.listdir(runs)]
    except OSError:
        return None
    with_events = [f for f in folders if os.path.isdir(f) and any(
        name.startswith("events.out.tfevents.") for name in os.listdir(f))]
    return max(with_events, key=os.path.getmtime) if with_events else None


def ww_layout(extra_model_tags: Any = (), layer_prefixes: Any = None) -> dict[str, dict[str, list]]:
    """The custom-scalars layout (``add_custom_scalars`` format): a "ww layers" category with one
    Multiline chart per per-layer scalar family of :mod:`ww_callbacks.tags` (regex
    ``ww_alpha/.*`` etc.: all layers in one chart), limited to ``layer_prefixes`` when given
    (the families that have data), and a "ww model" category with the ``ww/`` scalars.
    ``extra_model_tags``: ``ww/`` tags not covered by the built-in charts, each given its own
    chart (titled by its family when declared)."""
    layers = {f.title: ["Multiline", [f"{re.escape(f.prefix)}/.*"]]
              for f in families(SCALAR, per_layer=True)
              if layer_prefixes is None or f.prefix in layer_prefixes}
    model = {title: ["Multiline", list(regexes)] for title, regexes in MODEL_CHARTS.items()}
    for tag in extra_model_tags:
        if not any(re.match(rx, tag) for regexes in MODEL_CHARTS.values() for rx in regexes):
            family = family_of(tag)
            title = family.title if family is not None and family.prefix == tag \
                else tag.split("/", 1)[-1]
            model[title] = ["Multiline", [re.escape(tag) + "$"]]
    return {"ww layers": layers, "ww model": model}


class TensorBoardSink:
    """Writes ww results to TensorBoard.

    ``writer``: an :class:`~.tensorboard_events.EventWriter`, a ``SummaryWriter`` (torch's,
    tensorboardX's, Lightning's ``TensorBoardLogger.experiment``) or any object with the same
    methods; None creates an ``EventWriter(log_dir)`` (TensorBoard's own format, no TensorFlow).
    The sink closes only a writer it created (or one handed over with ``owns_writer=True``).
    ``scalars``: log the ww scalars (False when another logger already does, as in Lightning).
    ``histograms_every``: ESD histograms at every k-th write from the first; ``images_every``:
    pictures at the k-th, 2k-th, ... write (the initial weights are not drawn on schedule), when
    a layer gains a trap or leaves the 2-6 band (``plot_on_change``) and the final analysis at
    :meth:`close`; 0: no pictures. ``picture_duty``: the share of wall time the sink's picture
    thread may spend drawing, in its CPU time (frames beyond it are merged into the next one;
    None: draw every frame the cadence asks for; see :mod:`ww_callbacks.picture_queue`).
    ``max_images``: ESD plots per scheduled write, the layers with
    the lowest alpha first (failed fits last). ``layout``: write the custom-scalars layout.
    ``alerts``: write each analysis' alerts to the Text tab (``ww/alerts``) and, with
    ``console_alerts``, print them on stderr.
    ``in_worker``: let the watcher call :meth:`write` in its background thread, right after the
    history, so histograms and pictures never hold up training (the writers are thread-safe);
    pass False for a writer that must stay on the training thread.

    Example::

        from ww_callbacks.integrations.tensorboard import TensorBoardSink
        from ww_callbacks.session import WatchSession

        with WatchSession(sinks=[TensorBoardSink(log_dir="ww_logs")]) as watcher:
            for step in range(1000):
                ...  # one training step
                if step % 100 == 0:
                    watcher.snapshot(model, step)
                watcher.poll()
    """

    def __init__(self, writer: Any = None, *, log_dir: str | os.PathLike | None = None,
                 scalars: bool = True, histograms_every: int = 1, images_every: int = 5,
                 layout: bool = True, max_images: int = 16, in_worker: bool = True,
                 owns_writer: bool | None = None, plot_on_change: bool = True,
                 alerts: bool = True, console_alerts: bool = True,
                 picture_duty: float | None = PICTURE_DUTY):
        for name, value in (("histograms_every", histograms_every),
                            ("images_every", images_every), ("max_images", max_images)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, not {value!r}")
        self._owns_writer = writer is None if owns_writer is None else owns_writer
        self.writer = default_writer(log_dir) if writer is None else writer
        self.scalars = scalars
        self.histograms_every = histograms_every
        self.images_every = images_every
        self.max_images = max_images
        self.layout = layout
        self.alerts = alerts
        self.console_alerts = console_alerts
        self.in_worker = in_worker  # read by the Watcher: which thread calls write()
        self.dashboard = Dashboard(images_every, max_images, plot_on_change)
        self.writes = 0
        self._layout: dict | None = None
        self._seen_tags: set[str] = set()
        self._matplotlib_missing = False
        self._closed = False
        #: The events file opened by the last :meth:`reopen` (None until a fault happens).
        self._fault_file: str | None = None
        #: Draws and writes the pictures in a thread of this sink (see :class:`PictureQueue`);
        #: every use of the writer holds ``_lock``.
        self.pictures = PictureQueue(self._draw, "ww-tensorboard-plots", duty=picture_duty)
        self._lock = threading.Lock()

    @property
    def log_dir(self) -> str | None:
        """The writer's folder, when it says."""
        for name in ("log_dir", "logdir"):
            value = getattr(self.writer, name, None)
            if isinstance(value, str):
                return value
        getter = getattr(self.writer, "get_logdir", None)
        return getter() if callable(getter) else None

    # ------------------------------------------------------------------ Sink protocol

    def write(self, result: AnalysisResult, scalars: dict[str, float]) -> None:
        """Log one analysis at ``global_step=result.step``, then flush the writer. Called by one
        thread at a time (the worker's with ``in_worker``, else the training thread)."""
        n, self.writes = self.writes, self.writes + 1
        self._report_drawn(wait=False)
        with self._lock:
            try:
                frame = self.dashboard.update(result)
                if self.scalars:
                    self._write_scalars(result, scalars)
                if self.layout:
                    self._write_layout(result, scalars)
                if self.histograms_every and n % self.histograms_every == 0:
                    self._write_histograms(result)
                if self.alerts and frame.alerts:
                    self._write_alerts(result, frame)
            finally:
                self.writer.flush()
            self._fault_file = None  # written: a later fault may start one new file again
        if frame.plots:
            self._write_images(result, frame)

    def close(self) -> None:
        """Queue the final analysis' pictures if they were not drawn yet, then let the picture
        thread draw them, flush and close the writer if this sink created it, while training's
        caller goes on (the final frame alone costs a short fit a few %, RESULTS.md 6b). A
        writer the sink was given (Lightning's) is flushed now and left to its owner: the final
        pictures go to a new events file of this sink in the same folder, or, when the writer
        does not say its folder, are drawn before this returns. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            frame = self.dashboard.final()
            if frame is not None and self.dashboard.last is not None:
                self._write_images(self.dashboard.last, frame, keep=True)
            self._report_drawn(wait=False)
        finally:
            with self._lock:
                self._last_flush()
            if self._owns_writer or self._own_final_writer():
                self.pictures.finish(self._finish)
            else:
                self.pictures.close()
                self._finish()

    def _own_final_writer(self) -> bool:
        """Switch to an events file of this sink for the pictures still to draw when the given
        writer says its folder (True), leaving the given writer to its owner."""
        if not self.pictures.pending:
            return False
        log_dir = self.log_dir
        if log_dir is None:
            return False
        with self._lock:
            self.writer = EventWriter(log_dir)
            self._owns_writer = True
        return True

    def _finish(self) -> None:
        """The last step of :meth:`close` (in the picture thread unless it draws synchronously):
        warn about failed pictures, flush, close the writer if the sink owns it."""
        try:
            self._report_drawn(wait=False)
        finally:
            with self._lock:
                self._last_flush()
                if self._owns_writer:
                    self.writer.close()

    def _last_flush(self) -> None:
        """Flush at close: our own writer tries once more whatever its back-off (the events it
        kept while the disk was full go out if there is room now)."""
        if isinstance(self.writer, EventWriter):
            self.writer.flush(force=True)
        else:
            self.writer.flush()

    def reopen(self) -> None:
        """Called by the watcher before it retries a failed write (a full disk). The sink's own
        writer kept the events it could not write and cut its file back to the last complete
        record; the first retry after a working spell continues in one new events file (the
        file that failed may be gone or unwritable for good), and every further retry while the
        disk stays full uses that same file, with the writer's back-off: a disk full for 200
        analyses costs one new file, not 200 (199 files in 200 steps before). A writer the sink
        was given is left to its owner."""
        if not (self._owns_writer and isinstance(self.writer, EventWriter)):
            return
        with self._lock:
            if self._fault_file is not None and self._fault_file == self.writer.path:
                return  # still in the file this fault started: retry it (backing off)
            self.writer.new_file()
            self._fault_file = self.writer.path
            self._layout = None  # written again into the new file

    # ------------------------------------------------------------------ parts

    def _write_scalars(self, result: AnalysisResult, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            value = float(value)
            if math.isfinite(value):  # a NaN mean (every fit failed) has no point to draw
                self.writer.add_scalar(tag, value, global_step=result.step,
                                       walltime=result.wall_time)

    def _write_layout(self, result: AnalysisResult, scalars: Mapping[str, float]) -> None:
        """(Re)write the layout when the tags seen so far need another one."""
        self._seen_tags.update(scalars)
        prefixes = {tag.split("/", 1)[0] for tag in self._seen_tags}
        model_tags = sorted(t for t in self._seen_tags if t.startswith(MODEL_PREFIX))
        layout = ww_layout(model_tags, prefixes)
        if layout == self._layout:
            return
        if isinstance(self.writer, EventWriter):
            self.writer.add_custom_scalars(layout, global_step=result.step)
        else:
            self.writer.add_custom_scalars(layout)
        self._layout = layout

    def _write_histograms(self, result: AnalysisResult) -> None:
        for longname, evals in result.spectra.items():
            ev = np.asarray(evals, dtype=np.float64)
            ev = ev[np.isfinite(ev) & (ev > 0)]
            if ev.size:
                self.writer.add_histogram(layer_tag(ESD_HISTOGRAM, longname), np.log10(ev),
                                          global_step=result.step, walltime=result.wall_time)

    def _write_alerts(self, result: AnalysisResult, frame: Frame) -> None:
        from ww_callbacks.names import terminal

        if self.console_alerts:  # layer names in alerts: no terminal escape, no markdown
            for alert in frame.alerts:
                print(f"ww_callbacks alert: {terminal(alert)}", file=sys.stderr, flush=True)
        add_text = getattr(self.writer, "add_text", None)
        if add_text is not None:
            add_text(ALERTS, "\n\n".join(f"- {alert}" for alert in frame.alerts_markdown),
                     global_step=result.step, walltime=result.wall_time)

    def _write_images(self, result: AnalysisResult, frame: Frame, *, keep: bool = False) -> None:
        """Queue the frame's pictures: drawn and written in this sink's picture thread (``keep``:
        never replaced by a newer frame)."""
        if self._matplotlib_missing or matplotlib_missing("TensorBoardSink", stacklevel=3):
            self._matplotlib_missing = True
            return
        self.pictures.submit(result, frame, keep=keep)

    def _draw(self, result: AnalysisResult, frame: Frame) -> None:
        """Draw one frame and write its pictures (in the picture thread)."""
        images = self.dashboard.render(result, frame)
        with self._lock:
            for tag, image in images.items():
                self.writer.add_image(tag, image, global_step=result.step,
                                      walltime=result.wall_time, dataformats="HWC")
            self.writer.flush()

    def _report_drawn(self, *, wait: bool) -> None:
        """Warn about the frames whose drawing failed (all queued ones, waiting, with ``wait``)."""
        for result, outcome in self.pictures.ready(wait=wait):
            if isinstance(outcome, Exception):
                warnings.warn(f"ww_callbacks: drawing the pictures of step {result.step} "
                              f"failed: {outcome!r}", WatcherWarning, stacklevel=3)
