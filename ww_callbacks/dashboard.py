"""What the live dashboards (TensorBoard, W&B) decide and draw for each analysis, in one place.

A :class:`Dashboard` follows the analyses a sink receives, in order, and says for each
(:meth:`Dashboard.update`):

- the **alerts**: a correlation trap appeared in a layer, a layer crossed alpha 2 or 6, NaN/Inf
  appeared in a layer's weights (named layers, the step); alphas are written with as many
  decimals as it takes for the two to differ (never "alpha 2.00 -> 2.00"), and a low-evidence
  layer (fewer eigenvalues than the result's ``min_evals_for_trust``) says on how many
  eigenvalues its fit rests;
- whether the **model-level figures** are due (heatmap, correlation flow, histogram) and **which
  layers' ESDs** to draw: every ``images_every``-th analysis (the lowest alphas first, failed fits
  last, at most ``max_images``), plus, at any analysis, the layers that gained a trap or left the
  2-6 band (``plot_on_change``). The final analysis is drawn by :meth:`Dashboard.final` when the
  sink closes, if it was not drawn already.

:meth:`Dashboard.render` turns that into ``tag -> RGB array`` with :mod:`ww_callbacks.figures`;
the sinks call it in a :class:`~ww_callbacks.picture_queue.PictureQueue`, a thread of their own
(never the training thread, nor the analysis worker), under a CPU-time budget.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .bands import NO_FIT, WELL, band
from .names import markdown
from .results import AnalysisResult
from .scalars import layer_tag
from .tags import ALPHA_HEATMAP, ALPHA_HISTOGRAM, CORRELATION_FLOW, ESD_PLOT

#: What ``analyze`` writes in ``warning`` when a layer's weights are not finite.
NONFINITE_WARNING = "weights contain NaN or Inf"


@dataclass
class Frame:
    """What to show for one analysis: ``alerts`` (texts), ``summary`` (model-level figures
    due), ``esd_layers`` (longnames whose ESD to draw), ``changed`` (those of them drawn because
    the layer gained a trap or left the 2-6 band, not on schedule)."""

    step: int
    alerts: list[str] = field(default_factory=list)
    summary: bool = False
    esd_layers: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    #: The same alerts with the layer names as escaped markdown (TensorBoard's Text tab).
    alerts_markdown: list[str] = field(default_factory=list)

    @property
    def plots(self) -> bool:
        """True when anything is to be drawn."""
        return self.summary or bool(self.esd_layers)


def _rows(result: AnalysisResult) -> list[dict]:
    """One dict per layer (first row of a sliced layer), in model order."""
    details = result.details
    if details is None or details.empty:
        return []
    table = details.drop_duplicates("longname")
    if "layer_id" in table.columns:
        table = table.sort_values("layer_id", kind="stable")
    return table.to_dict(orient="records")


def _alpha(row: dict) -> float:
    try:
        alpha = float(row.get("alpha"))
    except (TypeError, ValueError):
        return math.nan
    return alpha if row.get("status", "success") == "success" and alpha > 0 else math.nan


def _traps(row: dict) -> int:
    try:
        value = float(row.get("rand_num_spikes", 0) or 0)
    except (TypeError, ValueError):
        return 0
    return int(value) if math.isfinite(value) and value > 0 else 0


def _names(names: list[str], quote: Callable[[str], str] = str) -> str:
    return ", ".join(quote(n or "root") for n in names)


def two_alphas(old: float, new: float) -> tuple[str, str]:
    """``old`` and ``new`` with the fewest decimals (at least 2) that tell them apart: a band
    crossing from 2.0000 to 1.9996 reads "2.0000 -> 1.9996", not "2.00 -> 2.00"."""
    for digits in range(2, 16):
        a, b = f"{old:.{digits}f}", f"{new:.{digits}f}"
        if a != b:
            return a, b
    return repr(float(old)), repr(float(new))


def _num_evals(row: dict) -> int | None:
    try:
        value = float(row.get("num_evals"))
    except (TypeError, ValueError):
        return None
    return int(value) if math.isfinite(value) else None


def low_evidence_layers(rows: list[dict], min_evals_for_trust: int | None) -> dict[str, int]:
    """longname -> number of eigenvalues of the rows with fewer than ``min_evals_for_trust``
    (none when it is None or 0)."""
    if not min_evals_for_trust:
        return {}
    out = {}
    for row in rows:
        n = _num_evals(row)
        if n is not None and n < min_evals_for_trust:
            out[row["longname"]] = n
    return out


def thinned(count: int, keep: int) -> list[int]:
    """``keep`` indices (or fewer) spread evenly over ``range(count)``, the first and the last
    included; every index when ``count <= keep``."""
    if count <= keep:
        return list(range(count))
    return [int(i) for i in np.unique(np.linspace(0, count - 1, keep).round().astype(int))]


class Dashboard:
    """Follows the analyses of one run for a sink: alerts, plotting cadence, heatmap data.

    ``images_every``: model-level figures and ESDs at the k-th, 2k-th, ... analysis (the initial
    weights are not drawn on schedule; 0: never draw). ``max_images``: ESDs per analysis on
    schedule. ``plot_on_change``: also draw when a layer gains a trap or leaves the 2-6 band."""

    def __init__(self, images_every: int = 5, max_images: int = 16, plot_on_change: bool = True):
        self.images_every = images_every
        self.max_images = max_images
        self.plot_on_change = plot_on_change
        self.seen = 0
        self.layers: list[str] = []  # model order, first seen first
        self.steps: list[int] = []
        self._alphas: list[dict[str, float]] = []
        self._trap_counts: list[dict[str, int]] = []
        self._counted_traps: dict[str, int] = {}  # of the last analysis that counted traps
        #: Low-evidence layers seen (longname -> eigenvalues), for the heatmap's labels.
        self.low_evidence: dict[str, int] = {}
        self.first: AnalysisResult | None = None
        self.last: AnalysisResult | None = None
        self.last_drawn_step: int | None = None
        self._drawn: Frame | None = None  # what was drawn of the analysis at last_drawn_step
        self._lock = threading.Lock()  # update() on one thread, render() on another (W&B)

    # ------------------------------------------------------------------ decisions

    def update(self, result: AnalysisResult) -> Frame:
        """Record ``result`` and say what to show for it."""
        with self._lock:
            return self._update(result)

    def _update(self, result: AnalysisResult) -> Frame:
        rows = _rows(result)
        alphas = {r["longname"]: _alpha(r) for r in rows}
        traps = {r["longname"]: _traps(r) for r in rows}
        # an analysis without randomisation (traps_every > 1) counted no trap: its zeros say
        # nothing, so new traps are those beyond the last analysis that counted them (else every
        # counting analysis announced the same traps again)
        counted = result.details is not None and "rand_num_spikes" in result.details.columns
        old_traps = (self._counted_traps if counted else traps) if self._alphas else {}
        previous = (self._alphas[-1], old_traps) if self._alphas else None
        if counted:
            self._counted_traps = traps
        frame = Frame(int(result.step))
        low = low_evidence_layers(rows, result.min_evals_for_trust)
        self.low_evidence.update(low)
        frame.alerts = self._alerts(result.step, rows, alphas, traps, previous, low)
        if frame.alerts:  # names are data: escaped for markdown, the alert's own words are not
            frame.alerts_markdown = self._alerts(result.step, rows, alphas, traps, previous,
                                                 low, quote=markdown)
        changed = self._changed(alphas, traps, previous)
        for name in alphas:
            if name not in self.layers:
                self.layers.append(name)
        self.steps.append(int(result.step))
        self._alphas.append(alphas)
        self._trap_counts.append(traps)
        n, self.seen = self.seen, self.seen + 1
        if self.first is None:
            self.first = result
        self.last = result
        if self.images_every and (n + 1) % self.images_every == 0:
            frame.summary = True
            frame.esd_layers = self._scheduled(rows, result)
        if self.images_every and self.plot_on_change and changed:
            frame.summary = True
            frame.changed = [n for n in changed if n in result.spectra]
            frame.esd_layers += [n for n in frame.changed if n not in frame.esd_layers]
        if frame.plots:
            self.last_drawn_step, self._drawn = frame.step, frame
        return frame

    def final(self) -> Frame | None:
        """The frame of the last analysis when it was not drawn yet (at close), else None."""
        if not self.images_every or self.last is None:
            return None
        frame = Frame(int(self.last.step), summary=True)
        frame.esd_layers = self._scheduled(_rows(self.last), self.last)
        drawn = self._drawn if self.last_drawn_step == frame.step else None
        if drawn is not None:  # drawn already, perhaps only the layers that changed
            frame.summary = not drawn.summary
            frame.esd_layers = [n for n in frame.esd_layers if n not in drawn.esd_layers]
        if not frame.plots:
            return None
        self.last_drawn_step = frame.step
        self._drawn = Frame(frame.step, summary=True,
                            esd_layers=frame.esd_layers + (drawn.esd_layers if drawn else []))
        return frame

    def _scheduled(self, rows: list[dict], result: AnalysisResult) -> list[str]:
        """Layers to draw on schedule: lowest alpha first, failed fits last."""
        rows = [r for r in rows if r.get("longname") in result.spectra]

        def key(row: dict) -> tuple[int, float]:
            alpha = _alpha(row)
            return (0, alpha) if math.isfinite(alpha) else (1, 0.0)

        return [r["longname"] for r in sorted(rows, key=key)][: self.max_images]

    @staticmethod
    def _changed(alphas: dict[str, float], traps: dict[str, int],
                 previous: tuple[dict, dict] | None) -> list[str]:
        if previous is None:
            return []
        old_alphas, old_traps = previous
        out = []
        for name, alpha in alphas.items():
            gained_trap = traps.get(name, 0) > old_traps.get(name, 0)
            left_band = band(old_alphas.get(name)) == WELL and band(alpha) not in (WELL, NO_FIT)
            if gained_trap or left_band:
                out.append(name)
        return out

    @staticmethod
    def _alerts(step: int, rows: list[dict], alphas: dict[str, float], traps: dict[str, int],
                previous: tuple[dict, dict] | None, low: dict[str, int],
                quote: Callable[[str], str] = str) -> list[str]:
        alerts = []
        nonfinite = [r["longname"] for r in rows if NONFINITE_WARNING in str(r.get("warning"))]
        if nonfinite:
            alerts.append(f"step {step}: NaN/Inf in the weights of {_names(nonfinite, quote)}")
        old_alphas, old_traps = previous if previous is not None else ({}, {})
        new_traps = [f"{quote(n or 'root')} ({k}"
                     + (f", on {low[n]} eigenvalues" if n in low else "") + ")"
                     for n, k in traps.items() if k > old_traps.get(n, 0)]
        if new_traps:
            alerts.append(f"step {step}: correlation trap{'s' if len(new_traps) > 1 else ''} "
                          f"appeared in {', '.join(new_traps)}")
        if previous is not None:
            for name, alpha in alphas.items():
                old = old_alphas.get(name, math.nan)
                before, now = band(old), band(alpha)
                if before != now and NO_FIT not in (before, now):
                    was, becomes = two_alphas(old, alpha)
                    evidence = f", fit on {low[name]} eigenvalues" if name in low else ""
                    alerts.append(f"step {step}: {quote(name or 'root')} crossed into {now} "
                                  f"(alpha {was} -> {becomes}{evidence})")
        return alerts

    # ------------------------------------------------------------------ pictures

    def heatmap(self, until_step: int | None = None, max_columns: int | None = None
                ) -> tuple[list[str], list[int], np.ndarray, np.ndarray]:
        """Layers, steps, alphas and trap counts of every analysis seen (up to
        ``until_step``); ``max_columns``: at most that many analyses, thinned evenly (the first
        and the latest kept) before the grid is built (the W&B alpha chart keeps 10 000 points:
        building only those columns halves its cost, RESULTS.md 14)."""
        with self._lock:
            keep = [i for i, step in enumerate(self.steps)
                    if until_step is None or step <= until_step]
            if max_columns is not None and len(keep) > max(2, max_columns):
                keep = [keep[i] for i in thinned(len(keep), max(2, max_columns))]
            layers, steps = list(self.layers), [self.steps[i] for i in keep]
            columns = [(self._alphas[i], self._trap_counts[i]) for i in keep]
        alphas = np.array([[a.get(n, math.nan) for a, _ in columns] for n in layers],
                          dtype=np.float64).reshape(len(layers), len(steps))
        traps = np.array([[t.get(n, 0) for _, t in columns] for n in layers],
                         dtype=np.int64).reshape(len(layers), len(steps))
        return layers, steps, alphas, traps

    def render(self, result: AnalysisResult, frame: Frame) -> dict[str, np.ndarray]:
        """``tag -> RGB array`` of the frame's figures (needs matplotlib)."""
        from . import figures

        images: dict[str, Any] = {}
        if frame.summary and result.details is not None and not result.details.empty:
            first = self.first if self.first is not None and self.first is not result else None
            with self._lock:
                low = dict(self.low_evidence)
            images[ALPHA_HEATMAP] = figures.figure_to_rgb(figures.alpha_heatmap_figure(
                *self.heatmap(int(result.step)), low_evidence=low))
            images[CORRELATION_FLOW] = figures.figure_to_rgb(figures.correlation_flow_figure(
                result.details, step=result.step,
                first=None if first is None else first.details,
                first_step=None if first is None else first.step,
                min_evals_for_trust=result.min_evals_for_trust))
            images[ALPHA_HISTOGRAM] = figures.figure_to_rgb(
                figures.alpha_histogram_figure(result.details, step=result.step))
        if frame.esd_layers:
            rows = {r["longname"]: r for r in _rows(result)}
            for name in frame.esd_layers:
                if name in rows and name in result.spectra:
                    fig = figures.layer_esd_figure(rows[name], result.spectra[name],
                                                   result.rand_spectra.get(name),
                                                   step=result.step)
                    images[layer_tag(ESD_PLOT, name)] = figures.figure_to_rgb(fig)
        return images


__all__ = ["Dashboard", "Frame", "NONFINITE_WARNING", "low_evidence_layers", "thinned",
           "two_alphas"]
