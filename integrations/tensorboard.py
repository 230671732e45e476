"""TensorBoard sink: ww scalars, a custom-scalars layout, ESD histograms and ESD plots.

:class:`TensorBoardSink` is a :class:`~ww_callbacks.watcher.Sink`: the watcher calls
``write(result, scalars)`` for every finished analysis, in its background thread (the sink sets
``in_worker``: rendering plots there never holds up training). It writes

- ``ww_alpha/<layer>``, ``ww_alpha_weighted/<layer>``, ``ww_traps/<layer>`` and the ``ww/``
  model scalars (``scalars=True``) at ``global_step=result.step``;
- once, a custom-scalars layout (TensorBoard's *Custom Scalars* tab) putting every layer's alpha
  in one chart, likewise alpha_weighted and traps, plus a "ww model" category;
- ``ww_esd/<layer>``: the spectrum as a histogram of log10 eigenvalues (*Histograms* tab);
- ``ww_esd_plot/<layer>``: a log-log plot of the ESD with its fitted power law (*Images* tab;
  needs matplotlib, rendered off-screen without pyplot).

The writer is duck-typed, so a ``torch.utils.tensorboard.SummaryWriter`` (what Lightning's
``TensorBoardLogger.experiment`` is), a ``tensorboardX.SummaryWriter`` or any adapter works if it
has ``add_scalar(tag, value, global_step, walltime=)``, ``add_histogram(tag, values,
global_step, walltime=)``, ``add_image(tag, hwc_uint8, global_step, walltime=,
dataformats="HWC")``, ``add_custom_scalars(layout)`` and ``flush()`` (``close()`` only when the
sink created it).

Example::

    from ww_callbacks.watcher import Watcher
    from ww_callbacks.integrations.tensorboard import TensorBoardSink

    watcher = Watcher(log_dir="ww_logs", sinks=[TensorBoardSink(log_dir="ww_logs")])
    # ... watcher.snapshot(model, step) / watcher.poll() in the loop, watcher.close() at the end
    # then: tensorboard --logdir ww_logs
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ww_callbacks.policies.lr_balance import LR_SCALE_PREFIX
from ww_callbacks.policies.traps import REMOVED_PREFIX
from ww_callbacks.powerlaw import SUCCESS
from ww_callbacks.results import AnalysisResult
from ww_callbacks.scalars import LAYER_PREFIXES, MODEL_PREFIX, layer_tag
from ww_callbacks.watcher import WatcherWarning

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["EventWriter", "TensorBoardSink", "esd_figure", "figure_to_rgb", "ww_layout"]

INSTALL_HINT = "pip install ww_callbacks[tensorboard]"
#: Tag prefixes of the spectra.
ESD_HISTOGRAM = "ww_esd"
ESD_PLOT = "ww_esd_plot"
#: Charts of the "ww model" category: title -> tag regexes (``re.match``, as the plugin does).
MODEL_CHARTS: dict[str, list[str]] = {
    "alpha mean": [r"ww/alpha_mean$"],
    "alpha_weighted mean": [r"ww/alpha_weighted_mean$"],
    "log_norm mean": [r"ww/log_norm_mean$"],
    "layers over-trained / under-trained / failed": [r"ww/layers_.*"],
    "correlation traps": [r"ww/num_traps$"],
    "snapshots dropped": [r"ww/snapshots_dropped$"],
}
LAYER_CHARTS: dict[str, str] = {  # title -> tag prefix
    "alpha (all layers)": LAYER_PREFIXES["alpha"],
    "alpha_weighted (all layers)": LAYER_PREFIXES["alpha_weighted"],
    "correlation traps (all layers)": LAYER_PREFIXES["rand_num_spikes"],
    "learning-rate multipliers (LayerLRBalancer)": LR_SCALE_PREFIX,
    "trap components removed (TrapRemoval)": REMOVED_PREFIX,
}


def default_writer(log_dir: str | os.PathLike | None = None) -> Any:
    """A new ``torch.utils.tensorboard.SummaryWriter`` in ``log_dir`` (``tensorboardX``'s when
    torch's cannot be imported). ``log_dir=None``: the writer's default (``runs/<date>...``)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as torch_error:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError(
                "TensorBoardSink needs torch.utils.tensorboard (torch and tensorboard) or "
                f"tensorboardX to create a writer: {INSTALL_HINT} (or pass writer=...)"
            ) from torch_error
    return SummaryWriter(log_dir=None if log_dir is None else os.fspath(log_dir))


class EventWriter:
    """The writer interface :class:`TensorBoardSink` uses, written with TensorBoard's own event
    file writer and protocol buffers: no torch, and no TensorFlow ops (which, run from the
    analysis thread, would compete with a TensorFlow training loop). The Keras callback writes
    with it on every backend."""

    def __init__(self, log_dir: str | os.PathLike):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        os.makedirs(log_dir, exist_ok=True)
        self._writer = EventFileWriter(os.fspath(log_dir))

    def _add(self, summary: Any, global_step: int | None, walltime: float | None) -> None:
        import time

        from tensorboard.compat.proto import event_pb2

        event = event_pb2.Event(summary=summary, wall_time=walltime or time.time())
        if global_step is not None:
            event.step = int(global_step)
        self._writer.add_event(event)

    def add_scalar(self, tag: str, value: float, global_step: int | None = None,
                   walltime: float | None = None) -> None:
        from tensorboard.compat.proto import summary_pb2

        self._add(summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag=tag, simple_value=float(value))]), global_step, walltime)

    def add_histogram(self, tag: str, values: Any, global_step: int | None = None,
                      walltime: float | None = None, bins: int = 30, **_: Any) -> None:
        from tensorboard.compat.proto import summary_pb2

        v = np.asarray(values, dtype=np.float64).ravel()
        counts, edges = np.histogram(v, bins=bins)
        hist = summary_pb2.HistogramProto(
            min=float(v.min()), max=float(v.max()), num=float(v.size), sum=float(v.sum()),
            sum_squares=float(np.dot(v, v)), bucket_limit=[float(e) for e in edges[1:]],
            bucket=[float(c) for c in counts])
        self._add(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, histo=hist)]),
                  global_step, walltime)

    def add_image(self, tag: str, image: Any, global_step: int | None = None,
                  walltime: float | None = None, dataformats: str = "HWC") -> None:
        import io

        from PIL import Image
        from tensorboard.compat.proto import summary_pb2

        if dataformats != "HWC":
            raise ValueError("EventWriter.add_image takes HWC images")
        array = np.asarray(image, dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        img = summary_pb2.Summary.Image(height=array.shape[0], width=array.shape[1],
                                        colorspace=array.shape[2],
                                        encoded_image_string=buffer.getvalue())
        self._add(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=img)]),
                  global_step, walltime)

    def add_custom_scalars(self, layout: dict[str, dict[str, list]]) -> None:
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

        # what the custom-scalars plugin reads: one string tensor holding the layout proto
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=[_layout_proto(layout).SerializeToString()],
            tensor_shape=tensor_shape_pb2.TensorShapeProto())
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="custom_scalars"))
        self._add(summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag="custom_scalars__config__", tensor=tensor, metadata=metadata)]), 0, None)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def _layout_proto(layout: dict[str, dict[str, list]]) -> Any:
    """The ``layout_pb2.Layout`` of an ``add_custom_scalars``-style dict."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    return layout_pb2.Layout(category=[
        layout_pb2.Category(title=category, chart=[
            layout_pb2.Chart(title=title,
                             multiline=layout_pb2.MultilineChartContent(tag=list(spec[1])))
            for title, spec in charts.items()])
        for category, charts in layout.items()])


def ww_layout(extra_model_tags: Sequence[str] = ()) -> dict[str, dict[str, list]]:
    """The custom-scalars layout (``add_custom_scalars`` format): a "ww layers" category with one
    Multiline chart per per-layer metric (regex ``ww_alpha/.*`` etc.: all layers in one chart) and
    a "ww model" category with the ``ww/`` scalars. ``extra_model_tags``: ``ww/`` tags not
    covered by the built-in charts, each given its own chart."""
    layers = {title: ["Multiline", [f"{prefix}/.*"]] for title, prefix in LAYER_CHARTS.items()}
    model = {title: ["Multiline", list(regexes)] for title, regexes in MODEL_CHARTS.items()}
    for tag in extra_model_tags:
        if not any(re.match(rx, tag) for regexes in MODEL_CHARTS.values() for rx in regexes):
            model[tag.split("/", 1)[-1]] = ["Multiline", [re.escape(tag) + "$"]]
    return {"ww layers": layers, "ww model": model}


def _positive(evals: Any) -> np.ndarray:
    ev = np.asarray(evals, dtype=np.float64).ravel()
    return ev[np.isfinite(ev) & (ev > 0)]


def esd_figure(evals: Any, alpha: float, xmin: float, xmax: float, title: str = "", *,
               bins: int = 80, figsize: tuple[float, float] = (5.0, 3.6),
               dpi: int = 80) -> Figure:
    """A log-log plot of an empirical spectral density with its fitted power law.

    ``evals``: the eigenvalues of one layer; ``alpha``, ``xmin``, ``xmax``: its fit (as in the
    ``analyze`` columns). Draws log10 of the histogram density of the positive eigenvalues on
    log-spaced bins (about 2 sqrt(n), at most ``bins``) against log10 of the eigenvalue, the
    power law ``x^-alpha`` from ``xmin`` to ``xmax`` (a straight line of slope -alpha, scaled to
    the histogram at ``xmin``), and ``xmin`` as a vertical line. The axes are linear in log10
    units: matplotlib's log-scale ticks would double the rendering time. A failed fit
    (``alpha=-1``, NaN) or a degenerate spectrum (empty, all zero, one value) gives a figure
    saying so instead of raising.

    The figure is a bare ``matplotlib.figure.Figure`` with an Agg canvas: pyplot is not imported
    and the user's backend is left alone. Render it with :func:`figure_to_rgb` or ``savefig``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    # fixed margins: a layout engine would triple the rendering time
    ax = fig.add_axes((0.15, 0.15, 0.8, 0.75))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("log10 eigenvalue λ")
    ax.set_ylabel("log10 density")
    ev = _positive(evals)
    if ev.size == 0:
        ax.text(0.5, 0.5, "no positive eigenvalues", ha="center", va="center",
                transform=ax.transAxes)
        return fig
    lo, hi = float(ev.min()), float(ev.max())
    if hi <= lo * (1 + 1e-9):  # a single distinct value: give the bins some width
        lo, hi = lo / 1.5, hi * 1.5
    bins = int(np.clip(2 * math.sqrt(ev.size), 10, bins))  # ~2 sqrt(n): few empty bins
    log_edges = np.linspace(math.log10(lo), math.log10(hi), bins + 1)
    edges = 10.0 ** log_edges
    counts, _ = np.histogram(ev, bins=edges)
    density = counts / (ev.size * np.diff(edges))
    with np.errstate(divide="ignore"):
        log_density = np.log10(density)
    shown = np.isfinite(log_density)
    floor = float(log_density[shown].min()) - 0.5 if shown.any() else 0.0
    ax.stairs(np.where(shown, log_density, floor), log_edges, baseline=floor, fill=True,
              alpha=0.5, color="tab:blue", label=f"ESD ({ev.size} eigenvalues)")
    fit_ok = all(math.isfinite(v) for v in (alpha, xmin)) and alpha > 0 and xmin > 0
    if fit_ok:
        end = xmax if math.isfinite(xmax) and xmax > xmin else hi
        start = int(np.clip(np.searchsorted(edges, xmin, side="right") - 1, 0, bins - 1))
        nonzero = np.flatnonzero(density[start:] > 0)
        if nonzero.size:
            height = math.log10(float(density[start + nonzero[0]]))
            x = np.array([math.log10(xmin), math.log10(end)])
            ax.plot(x, height - alpha * (x - x[0]), color="tab:red", linestyle="--",
                    label=f"power law α={alpha:.2f}")
        ax.axvline(math.log10(xmin), color="tab:green", linestyle=":",
                   label=f"xmin={xmin:.3g}")
    else:
        ax.text(0.5, 0.92, "power-law fit failed", ha="center", va="top",
                transform=ax.transAxes, color="tab:red")
    ax.legend(fontsize=7, loc="lower left")
    return fig


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """Render a figure with Agg into an ``(height, width, 3)`` uint8 array (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class TensorBoardSink:
    """Writes ww results to TensorBoard.

    ``writer``: a ``SummaryWriter`` (torch's, tensorboardX's, Lightning's
    ``TensorBoardLogger.experiment``) or any object with the same methods; None creates a
    torch ``SummaryWriter(log_dir)``. The sink closes only a writer it created (or one handed
    over with ``owns_writer=True``).
    ``scalars``: log the ww scalars (False when another logger already does, as in Lightning).
    ``histograms_every``: ESD histograms at every k-th write from the first; ``images_every``:
    ESD plots at the k-th, 2k-th, ... write (the initial weights are not plotted); 0: never.
    ``max_images``: ESD plots per write, the layers with the lowest alpha first (failed fits
    last). ``layout``: write the custom-scalars layout once.
    ``in_worker``: let the watcher call :meth:`write` in its background thread, right after the
    history, so histograms and plots never hold up training (torch's and tensorboardX's writers
    are thread-safe: they queue events); pass False for a writer that must stay on the training
    thread.

    Example::

        from ww_callbacks.watcher import Watcher
        from ww_callbacks.integrations.tensorboard import TensorBoardSink

        with Watcher(sinks=[TensorBoardSink(log_dir="ww_logs")]) as watcher:
            for step in range(1000):
                ...  # one training step
                if step % 100 == 0:
                    watcher.snapshot(model, step)
                watcher.poll()
    """

    def __init__(self, writer: Any = None, *, log_dir: str | os.PathLike | None = None,
                 scalars: bool = True, histograms_every: int = 1, images_every: int = 5,
                 layout: bool = True, max_images: int = 16, in_worker: bool = True,
                 owns_writer: bool | None = None):
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
        self.in_worker = in_worker  # read by the Watcher: which thread calls write()
        self.writes = 0
        self._layout_written = False
        self._matplotlib_missing = False
        self._closed = False

    # ------------------------------------------------------------------ Sink protocol

    def write(self, result: AnalysisResult, scalars: dict[str, float]) -> None:
        """Log one analysis at ``global_step=result.step``, then flush the writer. Called by one
        thread at a time (the worker's with ``in_worker``, else the training thread)."""
        n, self.writes = self.writes, self.writes + 1
        try:
            if self.scalars:
                self._write_scalars(result, scalars)
            if self.layout and not self._layout_written:
                tags = [t for t in scalars if t.startswith(MODEL_PREFIX)]
                self.writer.add_custom_scalars(ww_layout(tags))
                self._layout_written = True
            if self.histograms_every and n % self.histograms_every == 0:
                self._write_histograms(result)
            if self.images_every and (n + 1) % self.images_every == 0:
                self._write_images(result)
        finally:
            self.writer.flush()

    def close(self) -> None:
        """Flush; close the writer if this sink created it. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.writer.flush()
        if self._owns_writer:
            self.writer.close()

    # ------------------------------------------------------------------ parts

    def _write_scalars(self, result: AnalysisResult, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            value = float(value)
            if math.isfinite(value):  # a NaN mean (every fit failed) has no point to draw
                self.writer.add_scalar(tag, value, global_step=result.step,
                                       walltime=result.wall_time)

    def _write_histograms(self, result: AnalysisResult) -> None:
        for longname, evals in result.spectra.items():
            ev = _positive(evals)
            if ev.size:
                self.writer.add_histogram(layer_tag(ESD_HISTOGRAM, longname), np.log10(ev),
                                          global_step=result.step, walltime=result.wall_time)

    def _image_rows(self, result: AnalysisResult) -> list[dict]:
        """Rows of the layers to plot: lowest alpha first, failed fits last, at most
        ``max_images``."""
        details = result.details
        if details is None or details.empty or not result.spectra:
            return []
        rows = [row for row in details.to_dict(orient="records")
                if row.get("longname") in result.spectra]

        def key(row: dict) -> tuple[int, float]:
            alpha = row.get("alpha", math.nan)
            ok = row.get("status") == SUCCESS and alpha is not None and math.isfinite(alpha)
            return (0, float(alpha)) if ok else (1, 0.0)

        seen: set[str] = set()
        chosen = []
        for row in sorted(rows, key=key):
            if row["longname"] not in seen:  # pool=False would give one row per slice
                seen.add(row["longname"])
                chosen.append(row)
        return chosen[: self.max_images]

    def _write_images(self, result: AnalysisResult) -> None:
        rows = self._image_rows(result)
        if not rows or self._matplotlib_missing:
            return
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self._matplotlib_missing = True
            warnings.warn("ww_callbacks: matplotlib is not installed, so TensorBoardSink writes "
                          "no ESD plots (pip install matplotlib)", WatcherWarning, stacklevel=3)
            return
        for row in rows:
            longname = row["longname"]
            alpha = _float(row.get("alpha"))
            title = f"{longname or 'root'}  step {result.step}  α={alpha:.2f}"
            fig = esd_figure(result.spectra[longname], alpha, _float(row.get("xmin")),
                             _float(row.get("xmax")), title)
            self.writer.add_image(layer_tag(ESD_PLOT, longname), figure_to_rgb(fig),
                                  global_step=result.step, walltime=result.wall_time,
                                  dataformats="HWC")


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
