"""The HTSR pictures, framework-free: shared by TensorBoard, W&B and the command line.

- :func:`esd_figure`: one layer's log-log ESD with its fitted power law, xmin and xmax, and where
  traps were counted, the randomized ESD with its Marchenko-Pastur bulk edge and trap spikes;
- :func:`correlation_flow_figure`: alpha against layer depth at one step;
- :func:`alpha_histogram_figure`: alpha across layers at one step;
- :func:`alpha_heatmap_figure`: layers x analysed steps on a continuous alpha colour scale (2
  and 6 marked on it), trap counts marked;
- :func:`save_analysis_figures`: all of them as PNG files (what ``ww-callbacks analyze --plots``
  writes).

The bands, their colours and the few-eigenvalues caveat come from :mod:`ww_callbacks.bands`, as in
the HTML report. matplotlib is imported lazily and only its object API is used with an Agg canvas:
pyplot is never imported and the user's backend and rc state are left alone. Figures turn into
RGB arrays (:func:`figure_to_rgb`) or PNG bytes (:func:`figure_to_png`).

Readable without the HTSR tab: TensorBoard's Images cards show a picture about
:data:`CARD_WIDTH_PX` pixels wide (scaled down unless "Show actual image size" is ticked), so every
text is sized against the picture's width: at least :data:`MIN_TEXT_PX` pixels high on such a
card (:data:`FONT` points on a :data:`WIDTH`-inch figure), and :data:`DPI` keeps the full-size
picture sharp. Layer labels keep their end and block number (:func:`ww_callbacks.names.
shorten_name`). Low-evidence layers (fewer eigenvalues than the run's ``min_evals_for_trust``)
are drawn distinctly: hollow points in the flow, grey labels with their count in the heatmap.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import names
from .bands import (
    ALPHA_SCALE,
    ALPHA_SCALE_RANGE,
    BAND_COLOURS,
    FEW_EIGENVALUES,
    NO_FIT,
    NO_FIT_CELL,
    OVER,
    OVER_TRAINED_ALPHA,
    TRAP_COLOUR,
    UNDER,
    UNDER_TRAINED_ALPHA,
    WELL,
    band,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

#: The width of a picture on one of TensorBoard's Images cards (pixels, the default layout).
CARD_WIDTH_PX = 360
#: The smallest text height wanted on such a card (pixels).
MIN_TEXT_PX = 8
#: Every figure's width (inches); the heights vary with what is drawn.
WIDTH = 6.0
#: Font sizes (points): titles, and everything else (labels, ticks, legends, notes). At
#: ``WIDTH`` inches, 10 points are 2.3% of the width: 8.3 pixels on a 360-pixel card.
TITLE_FONT = 11.0
FONT = 10.0
#: Sizes (inches at :data:`DPI`): the ESD per layer and the model-level figures (the heatmap
#: grows with the number of layers, in steps of :data:`HEIGHT_STEP`). Sizes are multiples of
#: half an inch, so that they are whole pixels at :data:`DPI` (Agg truncates).
ESD_SIZE = (WIDTH, 4.5)
SUMMARY_SIZE = (WIDTH, 4.5)
HEIGHT_STEP = 0.5
#: Pixels per inch: 900 pixels wide, sharp when opened at full size.
DPI = 150
#: Characters of a layer label (in the middle of a name, whole parts are left out).
LABEL_CHARS = 24


def matplotlib_missing(owner: str, stacklevel: int = 2) -> bool:
    """True when matplotlib cannot be imported, after a warning that ``owner`` (a sink) draws
    no pictures; its caller remembers the answer, so the warning comes once per sink."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        import warnings

        from .faults import WatcherWarning

        warnings.warn(f"ww_callbacks: matplotlib is not installed, so {owner} draws no pictures "
                      "(pip install matplotlib)", WatcherWarning, stacklevel=stacklevel + 1)
        return True
    return False


def _figure(figsize: tuple[float, float], dpi: int) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """Render a figure with Agg into an ``(height, width, 3)`` uint8 array (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def rgb_to_png(image: np.ndarray) -> bytes:
    """PNG bytes of an ``(h, w, 3)`` uint8 array."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def figure_to_png(fig: Figure) -> bytes:
    """Render a figure into PNG bytes."""
    return rgb_to_png(figure_to_rgb(fig))


def _positive(evals: Any) -> np.ndarray:
    ev = np.asarray(evals, dtype=np.float64).ravel()
    return ev[np.isfinite(ev) & (ev > 0)]


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _log_density(ev: np.ndarray, log_edges: np.ndarray) -> np.ndarray:
    """log10 of the histogram density of ``ev`` on the (log10) edges; NaN for empty bins."""
    edges = 10.0 ** log_edges
    counts, _ = np.histogram(ev, bins=edges)
    density = counts / (max(ev.size, 1) * np.diff(edges))
    with np.errstate(divide="ignore"):
        out = np.log10(density)
    out[~np.isfinite(out)] = np.nan
    return out


# ----------------------------------------------------------------------------- ESD per layer


def _title(fig: Figure, text: str) -> None:
    """The figure's title, from its left edge (a long title is never centred off the page)."""
    fig.text(0.012, 0.985, text, ha="left", va="top", fontsize=TITLE_FONT)


def esd_figure(evals: Any, alpha: float, xmin: float, xmax: float, title: str = "", *,
               rand_evals: Any = None, bulk_max: float | None = None,
               num_traps: int | None = None, num_pl_spikes: int | None = None,
               bins: int = 80, figsize: tuple[float, float] = ESD_SIZE,
               dpi: int = DPI) -> Figure:
    """One layer's empirical spectral density, WeightWatcher-style, on log-log axes.

    ``evals``: the layer's eigenvalues; ``alpha``, ``xmin``, ``xmax``: its power-law fit (the
    ``analyze`` columns). Draws log10 of the histogram density on log-spaced bins (about
    2 sqrt(n), at most ``bins``) against log10 of the eigenvalue as a line through the bin
    centres, the power law ``x^-alpha`` from ``xmin`` to ``xmax`` (slope -alpha, scaled to the
    histogram at ``xmin``), and ``xmin`` and ``xmax`` as vertical lines labelled in the axis'
    own units (log10 λ). The axes are linear in log10 units: matplotlib's log-scale ticks would
    double the rendering time.

    Where traps were counted, ``rand_evals`` (the shuffled weight's eigenvalues) is overlaid,
    with its Marchenko-Pastur bulk edge ``bulk_max`` (``rand_bulk_max``) and its ``num_traps``
    largest eigenvalues (``rand_num_spikes``, the correlation traps) marked. A fit resting on
    fewer than :data:`~ww_callbacks.bands.FEW_EIGENVALUES` tail eigenvalues (``num_pl_spikes``)
    carries a caveat. A failed fit (``alpha=-1``, NaN) or a degenerate spectrum (empty, all
    zero, one value) gives a figure saying so instead of raising. The legend sits under the
    axes, in two columns, never over the curves.
    """
    fig = _figure(figsize, dpi)
    height = figsize[1]
    # fixed margins (a layout engine would triple the rendering time), in inches: the title
    # above, the x label and a legend of up to 4 rows below
    bottom, top = 1.5 / height, 1 - 0.42 / height
    ax = fig.add_axes((0.12, bottom, 0.84, top - bottom))
    _title(fig, title)
    ax.set_xlabel("log10 eigenvalue λ", fontsize=FONT, labelpad=2)
    ax.set_ylabel("log10 density", fontsize=FONT)
    ax.tick_params(labelsize=FONT)
    ev = _positive(evals)
    if ev.size == 0:
        ax.text(0.5, 0.5, "no positive eigenvalues", ha="center", va="center",
                transform=ax.transAxes, fontsize=FONT)
        return fig
    rand = _positive(rand_evals) if rand_evals is not None else np.empty(0)
    both = np.concatenate([ev, rand]) if rand.size else ev
    lo, hi = float(both.min()), float(both.max())
    if hi <= lo * (1 + 1e-9):  # a single distinct value: give the bins some width
        lo, hi = lo / 1.5, hi * 1.5
    nbins = int(np.clip(2 * math.sqrt(ev.size), 10, bins))  # ~2 sqrt(n): few empty bins
    log_edges = np.linspace(math.log10(lo), math.log10(hi), nbins + 1)
    centres = (log_edges[:-1] + log_edges[1:]) / 2
    log_density = _log_density(ev, log_edges)
    ax.plot(centres, log_density, color=BAND_COLOURS[UNDER], marker="o", markersize=3,
            linewidth=1.4, label=f"ESD ({ev.size} eigenvalues)")
    if rand.size:
        ax.plot(centres, _log_density(rand, log_edges), color="#E69F00", linewidth=1.2,
                alpha=0.9, label="randomized ESD")
        edge = _float(bulk_max)
        if math.isfinite(edge) and edge > 0:
            ax.axvline(math.log10(edge), color="#E69F00", linestyle="-.", linewidth=1.2,
                       label=f"MP bulk edge (log10 λ={math.log10(edge):.2f})")
        k = int(num_traps) if num_traps is not None and _float(num_traps) > 0 else 0
        if k:
            spikes = np.sort(rand)[-k:]
            for i, spike in enumerate(spikes):
                ax.axvline(math.log10(spike), color=TRAP_COLOUR, linewidth=2.2, alpha=0.9,
                           label=f"trap spike{'s' if k > 1 else ''} ({k})" if i == 0 else None)
    alpha, xmin, xmax = _float(alpha), _float(xmin), _float(xmax)
    fit_ok = all(math.isfinite(v) for v in (alpha, xmin)) and alpha > 0 and xmin > 0
    if fit_ok:
        end = xmax if math.isfinite(xmax) and xmax > xmin else float(ev.max())
        finite = np.isfinite(log_density) & (log_edges[1:] > math.log10(xmin))
        if finite.any():
            first = int(np.flatnonzero(finite)[0])
            x = np.array([math.log10(xmin), math.log10(end)])
            ax.plot(x, log_density[first] - alpha * (x - x[0]), color=BAND_COLOURS[OVER],
                    linestyle="--", linewidth=1.8, label=f"power law α={alpha:.2f}")
        ax.axvline(math.log10(xmin), color=BAND_COLOURS[WELL], linestyle=":", linewidth=1.4,
                   label=f"xmin (log10 λ={math.log10(xmin):.2f})")
        ax.axvline(math.log10(end), color=BAND_COLOURS[NO_FIT], linestyle=":", linewidth=1.4,
                   label=f"xmax (log10 λ={math.log10(end):.2f})")
        tail = None if num_pl_spikes is None else int(_float(num_pl_spikes))
        if tail is not None and 0 <= tail < FEW_EIGENVALUES:
            ax.text(0.02, 0.03, f"caution: α fitted on {tail} eigenvalues "
                    f"(< {FEW_EIGENVALUES})", transform=ax.transAxes, fontsize=FONT,
                    color=BAND_COLOURS[OVER], ha="left", va="bottom")
    else:
        ax.text(0.5, 0.92, "power-law fit failed", ha="center", va="top",
                transform=ax.transAxes, color=BAND_COLOURS[OVER], fontsize=FONT)
    below = 0.55 / ((top - bottom) * height)  # 0.55 in under the axes: past the x label
    ax.legend(fontsize=FONT, loc="upper left", bbox_to_anchor=(-0.1, -below), ncol=2,
              borderaxespad=0.0, frameon=False, handlelength=1.6, columnspacing=1.2)
    return fig


def layer_esd_figure(row: Mapping[str, Any], evals: Any, rand_evals: Any = None, *,
                     step: int | None = None, figsize: tuple[float, float] = ESD_SIZE,
                     dpi: int = DPI) -> Figure:
    """:func:`esd_figure` of one row of an analysis (its ``alpha``, ``xmin``, ``xmax``,
    ``num_pl_spikes``, ``rand_bulk_max``, ``rand_num_spikes``), titled with the layer, step,
    alpha and band."""
    alpha = _float(row.get("alpha"))
    name = names.figure(row.get("longname") or "root", 36)  # plain text: no mathtext
    where = f"  step {step}" if step is not None else ""
    title = f"{name}{where}  α={alpha:.2f} ({band(alpha if alpha > 0 else None)})"
    randomized = rand_evals is not None and np.size(rand_evals) > 0
    return esd_figure(evals, alpha, _float(row.get("xmin")), _float(row.get("xmax")), title,
                      rand_evals=rand_evals if randomized else None,
                      bulk_max=row.get("rand_bulk_max") if randomized else None,
                      num_traps=row.get("rand_num_spikes") if randomized else None,
                      num_pl_spikes=row.get("num_pl_spikes"), figsize=figsize, dpi=dpi)


# ----------------------------------------------------------------------------- model-level


def _layer_table(details: pd.DataFrame) -> pd.DataFrame:
    """One row per layer in model order (``layer_id``), slices pooled by their first row."""
    table = details.drop_duplicates("longname")
    if "layer_id" in table.columns:
        table = table.sort_values("layer_id", kind="stable")
    return table.reset_index(drop=True)


def _fit_alphas(table: pd.DataFrame) -> np.ndarray:
    alphas = table["alpha"].to_numpy(dtype=np.float64, na_value=np.nan)
    if "status" in table.columns:
        alphas = np.where(table["status"].to_numpy() == "success", alphas, np.nan)
    alphas[~(alphas > 0)] = np.nan
    return alphas


def _trap_counts(table: pd.DataFrame) -> np.ndarray:
    if "rand_num_spikes" not in table.columns:
        return np.zeros(len(table), dtype=np.int64)
    counts = table["rand_num_spikes"].to_numpy(dtype=np.float64, na_value=0.0)
    return np.where(np.isfinite(counts) & (counts > 0), counts, 0).astype(np.int64)


def _traps(table: pd.DataFrame) -> np.ndarray:
    return _trap_counts(table) > 0


def _band_background(ax: Any, top: float) -> None:
    ax.axhspan(0, OVER_TRAINED_ALPHA, color=BAND_COLOURS[OVER], alpha=0.08, linewidth=0)
    ax.axhspan(OVER_TRAINED_ALPHA, UNDER_TRAINED_ALPHA, color=BAND_COLOURS[WELL], alpha=0.08,
               linewidth=0)
    ax.axhspan(UNDER_TRAINED_ALPHA, max(top, UNDER_TRAINED_ALPHA + 1), color=BAND_COLOURS[UNDER],
               alpha=0.08, linewidth=0)
    for level in (OVER_TRAINED_ALPHA, UNDER_TRAINED_ALPHA):
        ax.axhline(level, color="#555555", linestyle="--", linewidth=0.9)


def _short(name: str, width: int = LABEL_CHARS) -> str:
    """A layer name as a tick label: plain text (no mathtext), its end and block number kept
    (:func:`ww_callbacks.names.shorten_name`)."""
    return names.figure(name or "root", width)


def _every(count: int, room_in: float, per_label_in: float) -> int:
    """Label every k-th of ``count`` ticks so that labels ``per_label_in`` inches apart fit
    in ``room_in`` inches."""
    fits = max(int(room_in / per_label_in), 1)
    return max(math.ceil(count / fits), 1)


def _low_evidence(table: pd.DataFrame, min_evals_for_trust: int | None) -> np.ndarray:
    """Which rows of a layer table have fewer eigenvalues than ``min_evals_for_trust``."""
    if not min_evals_for_trust or "num_evals" not in table.columns:
        return np.zeros(len(table), dtype=bool)
    evals = table["num_evals"].to_numpy(dtype=np.float64, na_value=np.nan)
    return evals < min_evals_for_trust


def correlation_flow_figure(details: pd.DataFrame, *, step: int | None = None,
                            first: pd.DataFrame | None = None, first_step: int | None = None,
                            min_evals_for_trust: int | None = None,
                            figsize: tuple[float, float] = SUMMARY_SIZE,
                            dpi: int = DPI) -> Figure:
    """Alpha against layer depth (model order) at one step: points coloured by band over the
    < 2 / 2-6 / > 6 bands, failed fits as grey crosses on the floor, layers holding a
    correlation trap ringed, low-evidence layers (fewer eigenvalues than
    ``min_evals_for_trust``) as hollow points, and the ``first`` analysis (e.g. the initial
    weights) drawn faintly for comparison. Every layer is named below the axis while the names
    fit; beyond that every k-th."""
    fig = _figure(figsize, dpi)
    width, height = figsize
    table = _layer_table(details)
    labels = [_short(name, 16) for name in table["longname"]]
    # room under the axis for the labels, slanted at 50 degrees (~0.06 in per character)
    below = 0.45 + 0.06 * max((len(label) for label in labels), default=0)
    bottom, top_margin = below / height, 1 - 0.42 / height
    ax = fig.add_axes((0.1, bottom, 0.88, top_margin - bottom))
    alphas, traps = _fit_alphas(table), _traps(table)
    low = _low_evidence(table, min_evals_for_trust)
    x = np.arange(len(table))
    finite = np.isfinite(alphas)
    top = float(np.nanmax(alphas)) * 1.1 if finite.any() else UNDER_TRAINED_ALPHA + 2
    top = max(top, UNDER_TRAINED_ALPHA + 1)
    if first is not None and len(first):
        ftable = _layer_table(first)
        fx = {name: i for i, name in enumerate(table["longname"])}
        pairs = [(fx[n], a) for n, a in zip(ftable["longname"], _fit_alphas(ftable), strict=True)
                 if n in fx and np.isfinite(a)]
        if pairs:
            px, py = zip(*sorted(pairs), strict=True)
            ax.plot(px, py, color="#777777", alpha=0.45, linewidth=1.0, marker=".",
                    label="first analysis" + (f" (step {first_step})" if first_step is not None
                                              else ""))
            top = max(top, max(py) * 1.1)
    _band_background(ax, top)
    ax.plot(x[finite], alphas[finite], color="#333333", linewidth=1.0, alpha=0.7)
    trusted, doubtful = finite & ~low, finite & low
    ax.scatter(x[trusted], alphas[trusted], c=[BAND_COLOURS[band(a)] for a in alphas[trusted]],
               s=36, zorder=3, label="alpha")
    if doubtful.any():
        ax.scatter(x[doubtful], alphas[doubtful], s=36, zorder=3, facecolors="white",
                   edgecolors=[BAND_COLOURS[band(a)] for a in alphas[doubtful]],
                   linewidths=1.5, label=f"< {min_evals_for_trust} eigenvalues")
    if traps.any():
        t = traps & finite
        ax.scatter(x[t], alphas[t], s=130, facecolors="none", edgecolors=TRAP_COLOUR,
                   linewidths=2.2, zorder=4, label="correlation trap")
    failed = ~finite
    if failed.any():
        ax.scatter(x[failed], np.full(int(failed.sum()), 0.2), marker="x",
                   color=BAND_COLOURS[NO_FIT], s=46, zorder=3, label="fit failed")
    ax.set_ylim(0, top)
    ax.set_xlim(-0.5, max(len(table) - 0.5, 0.5))
    ax.set_ylabel("alpha", fontsize=FONT)
    if len(table):
        k = _every(len(table), 0.88 * width, 0.2)  # one 10-point label per 0.2 in
        shown = x[::k]
        ax.set_xticks(shown, [labels[i] for i in shown], rotation=50, ha="right",
                      rotation_mode="anchor", fontsize=FONT)
    ax.tick_params(axis="y", labelsize=FONT)
    where = f" at step {step}" if step is not None else ""
    _title(fig, f"alpha by layer depth{where} (bands < {OVER_TRAINED_ALPHA:g} / "
                f"{OVER_TRAINED_ALPHA:g}–{UNDER_TRAINED_ALPHA:g} / > {UNDER_TRAINED_ALPHA:g})")
    ax.legend(fontsize=FONT, loc="upper left", framealpha=0.85, handletextpad=0.3,
              borderaxespad=0.3)
    return fig


def alpha_histogram_figure(details: pd.DataFrame, *, step: int | None = None,
                           figsize: tuple[float, float] = SUMMARY_SIZE,
                           dpi: int = DPI) -> Figure:
    """The histogram of alpha across layers at one step (WeightWatcher's view for comparing
    models), bars coloured by band, bands at 2 and 6, counts per band in the title."""
    fig = _figure(figsize, dpi)
    height = figsize[1]
    bottom, top_margin = 0.6 / height, 1 - 0.42 / height
    ax = fig.add_axes((0.1, bottom, 0.87, top_margin - bottom))
    table = _layer_table(details)
    alphas = _fit_alphas(table)
    ok = alphas[np.isfinite(alphas)]
    counts = {name: sum(band(a) == name for a in ok) for name in (OVER, WELL, UNDER)}
    failed = int(len(alphas) - len(ok))
    if ok.size:
        hi = max(float(ok.max()), UNDER_TRAINED_ALPHA + 0.5)
        edges = np.arange(0.0, hi + 0.5, 0.25)
        heights, _ = np.histogram(ok, bins=edges)
        mids = (edges[:-1] + edges[1:]) / 2
        ax.bar(mids, heights, width=0.24, color=[BAND_COLOURS[band(m)] for m in mids],
               edgecolor="white", linewidth=0.5)
        ax.set_xlim(0, edges[-1])
    else:
        ax.text(0.5, 0.5, "no layer has a fitted alpha", ha="center", va="center",
                transform=ax.transAxes, fontsize=FONT)
    for level in (OVER_TRAINED_ALPHA, UNDER_TRAINED_ALPHA):
        ax.axvline(level, color="#555555", linestyle="--", linewidth=0.9)
    ax.set_xlabel("alpha", fontsize=FONT, labelpad=1)
    ax.set_ylabel("layers", fontsize=FONT)
    ax.tick_params(labelsize=FONT)
    ax.yaxis.get_major_locator().set_params(integer=True)
    where = f" at step {step}" if step is not None else ""
    _title(fig, f"{len(alphas)} layers{where}: {counts[OVER]} < 2, {counts[WELL]} in 2–6, "
                f"{counts[UNDER]} > 6" + (f", {failed} failed" if failed else ""))
    return fig


def alpha_colormap() -> Any:
    """The continuous alpha colour scale (:data:`~ww_callbacks.bands.ALPHA_SCALE`) as a
    matplotlib colormap over :data:`~ww_callbacks.bands.ALPHA_SCALE_RANGE` (NaN: no fit,
    grey)."""
    from matplotlib.colors import LinearSegmentedColormap

    lo, hi = ALPHA_SCALE_RANGE
    cmap = LinearSegmentedColormap.from_list(
        "ww_alpha", [((a - lo) / (hi - lo), tuple(c / 255 for c in rgb)) for a, rgb in ALPHA_SCALE])
    return cmap.with_extremes(bad=NO_FIT_CELL)


def _text_colour(alpha: float) -> str:
    """Black or white, whichever reads better on the cell colour of ``alpha``."""
    lo, hi = ALPHA_SCALE_RANGE
    x = min(max(alpha, lo), hi)
    for (a0, c0), (a1, c1) in zip(ALPHA_SCALE, ALPHA_SCALE[1:], strict=False):
        if x <= a1:
            f = (x - a0) / (a1 - a0)
            r, g, b = (v0 + f * (v1 - v0) for v0, v1 in zip(c0, c1, strict=True))
            break
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "white"


def alpha_heatmap_figure(layers: Sequence[str], steps: Sequence[int], alphas: Any,
                         traps: Any = None, *, low_evidence: Mapping[str, int] | None = None,
                         figsize: tuple[float, float] | None = None,
                         dpi: int = DPI) -> Figure:
    """Layers (rows, model order) x analysed steps (columns), each cell coloured by its alpha
    on the continuous scale of :func:`alpha_colormap` (grey: no fit), with the scale beside it
    and the band edges 2 and 6 marked on it; the alpha written in when the cells are large
    enough; correlation traps marked in their cells (with their count when the cells are large
    enough) and counted in the title at the last step. ``alphas`` and ``traps``:
    ``(len(layers), len(steps))`` arrays (NaN: no fit or not analysed; traps as counts, or
    booleans). ``low_evidence``: layer -> number of eigenvalues, for the layers with fewer than
    the run's ``min_evals_for_trust`` (grey labels with their count). The figure grows with the
    number of layers (``figsize`` None) so that each row keeps a readable label; past about
    60 rows, every k-th row is labelled."""
    from matplotlib.colors import Normalize

    rows, cols = len(layers), len(steps)
    alphas = np.asarray(alphas, dtype=np.float64).reshape(rows, cols)
    counts = (np.zeros((rows, cols), dtype=np.int64) if traps is None
              else np.asarray(traps).astype(np.int64).reshape(rows, cols))
    row_in = 0.2  # one 10-point label per row
    plot_h = min(max(2.6, rows * row_in), 10.0)
    if figsize is None:
        figsize = (WIDTH, math.ceil((plot_h + 1.25) / HEIGHT_STEP) * HEIGHT_STEP)
    width, height = figsize
    plot_h = height - 1.25
    fig = _figure(figsize, dpi)
    left, right = 2.05 / width, 1 - 0.95 / width
    ax = fig.add_axes((left, 0.62 / height, right - left, plot_h / height))
    cax = fig.add_axes((1 - 0.8 / width, 0.62 / height, 0.14 / width, plot_h / height))
    lo, hi = ALPHA_SCALE_RANGE
    shown = np.where(np.isfinite(alphas) & (alphas > 0), alphas, np.nan)
    image = ax.imshow(np.ma.masked_invalid(shown), aspect="auto", interpolation="nearest",
                      cmap=alpha_colormap(), norm=Normalize(lo, hi))
    bar = fig.colorbar(image, cax=cax, ticks=[1, 2, 4, 6, 8])
    bar.ax.tick_params(labelsize=FONT)
    for edge in (OVER_TRAINED_ALPHA, UNDER_TRAINED_ALPHA):
        bar.ax.axhline(edge, color="black", linewidth=2.0)
    bar.set_label("alpha (bands at 2, 6)", fontsize=FONT, labelpad=2)
    cell_w = (right - left) * width / max(cols, 1)
    cell_h = plot_h / max(rows, 1)
    if cell_w >= 0.42 and cell_h >= 0.19:
        two_lines = counts > 0 if cell_w >= 0.6 and cell_h >= 0.42 else np.zeros_like(counts)
        for i in range(rows):
            for j in range(cols):
                if np.isfinite(shown[i, j]):
                    ax.text(j, i - (0.18 if two_lines[i, j] else 0.0), f"{shown[i, j]:.1f}",
                            ha="center", va="center", fontsize=FONT,
                            color=_text_colour(shown[i, j]))
    trapped = counts > 0
    if trapped.any():
        ti, tj = np.nonzero(trapped)
        if cell_w >= 0.6 and cell_h >= 0.42:  # room for a count under the alpha
            for i, j in zip(ti, tj, strict=True):
                ax.text(j, i + 0.3, f"{counts[i, j]} trap{'s' if counts[i, j] > 1 else ''}",
                        ha="center", va="center", fontsize=FONT, color=TRAP_COLOUR,
                        fontweight="bold")
        else:
            ax.scatter(tj + 0.3, ti - 0.25, s=30, color=TRAP_COLOUR, edgecolors="white",
                       linewidths=0.6, zorder=3)
    low = dict(low_evidence or {})
    k = _every(rows, plot_h, row_in)
    labelled = list(range(0, rows, k))
    suffix = {name: f" ({n})" for name, n in low.items()}
    ax.set_yticks(labelled, [_short(layers[i], LABEL_CHARS - len(suffix.get(layers[i], "")))
                             + suffix.get(layers[i], "") for i in labelled], fontsize=FONT)
    for tick, i in zip(ax.get_yticklabels(), labelled, strict=True):
        if layers[i] in low:
            tick.set_color("#777777")
    picked = np.unique(np.linspace(0, cols - 1, min(cols, 6)).round().astype(int)) if cols \
        else []
    ax.set_xticks(list(picked), [str(steps[j]) for j in picked], fontsize=FONT)
    ax.set_xlabel("step", fontsize=FONT, labelpad=1)
    now = counts[:, -1] if cols else np.zeros(0, dtype=np.int64)
    traps_now = (f"; traps at step {steps[-1]}: {int(now.sum())} in {int((now > 0).sum())} "
                 f"layer{'s' if (now > 0).sum() != 1 else ''}" if trapped.any() else "")
    _title(fig, f"alpha by layer and step{traps_now}")
    if low:  # under the labels, left of the step axis
        fig.text(0.012, 0.1 / height, "grey: (n) too few eigenvalues", ha="left",
                 va="bottom", fontsize=FONT, color="#777777")
    return fig


def heatmap_data(history: pd.DataFrame) -> tuple[list[str], list[int], np.ndarray, np.ndarray]:
    """Layers (model order), steps, alphas and trap counts of a per-layer history DataFrame
    (:func:`ww_callbacks.load_history`'s default, one row per layer and step)."""
    ordered = _layer_table(history.sort_values("step", kind="stable"))
    layers = list(ordered["longname"])
    steps = sorted(int(s) for s in history["step"].unique())
    alphas = np.full((len(layers), len(steps)), np.nan)
    traps = np.zeros((len(layers), len(steps)), dtype=np.int64)
    row_of = {name: i for i, name in enumerate(layers)}
    col_of = {step: j for j, step in enumerate(steps)}
    fitted = history.copy()
    fitted["_alpha"] = _fit_alphas(fitted)
    fitted["_trap"] = _trap_counts(fitted)
    for name, step, alpha, trap in zip(fitted["longname"], fitted["step"], fitted["_alpha"],
                                       fitted["_trap"], strict=True):
        i, j = row_of[name], col_of[int(step)]
        alphas[i, j] = alpha
        traps[i, j] = int(trap)
    return layers, steps, alphas, traps


# ----------------------------------------------------------------------------- files


def save_analysis_figures(details: pd.DataFrame, out_dir: str | os.PathLike,
                          spectra: Mapping[str, Any] | None = None,
                          history: pd.DataFrame | None = None, *,
                          rand_spectra: Mapping[str, Any] | None = None,
                          step: int | None = None) -> list[Path]:
    """Write the pictures of one analysis as PNG files into ``out_dir`` (created) and return
    their paths: ``correlation_flow.png``, ``alpha_histogram.png``, ``esd_<layer>.png`` for each
    layer in ``spectra`` (longname -> eigenvalues; randomized ones from ``rand_spectra``), and
    ``alpha_heatmap.png`` when a per-layer ``history`` DataFrame (``load_history``) is given."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        path = out / name
        path.write_bytes(figure_to_png(fig))
        written.append(path)

    save(correlation_flow_figure(details, step=step), "correlation_flow.png")
    save(alpha_histogram_figure(details, step=step), "alpha_histogram.png")
    if history is not None and len(history):
        layers, steps, alphas, traps = heatmap_data(history)
        save(alpha_heatmap_figure(layers, steps, alphas, traps), "alpha_heatmap.png")
    stems: set[str] = set()  # names that sanitise alike get files of their own
    for row in _layer_table(details).to_dict(orient="records"):
        name = row.get("longname")
        if spectra is not None and name in spectra:
            rand = (rand_spectra or {}).get(name)
            save(layer_esd_figure(row, spectra[name], rand, step=step),
                 f"esd_{names.file_stem(name, stems)}.png")
    return written


__all__ = ["CARD_WIDTH_PX", "DPI", "ESD_SIZE", "FONT", "MIN_TEXT_PX", "SUMMARY_SIZE", "TITLE_FONT",
           "WIDTH", "alpha_colormap", "alpha_heatmap_figure", "alpha_histogram_figure",
           "correlation_flow_figure", "esd_figure", "figure_to_png", "figure_to_rgb",
           "heatmap_data", "layer_esd_figure", "rgb_to_png", "save_analysis_figures"]
