"""The HTSR pictures, framework-free: shared by TensorBoard, W&B and the command line.

- :func:`esd_figure`: one layer's log-log ESD with its fitted power law, xmin and xmax, and where
  traps were counted, the randomized ESD with its Marchenko-Pastur bulk edge and trap spikes;
- :func:`correlation_flow_figure`: alpha against layer depth at one step;
- :func:`alpha_histogram_figure`: alpha across layers at one step;
- :func:`alpha_heatmap_figure`: layers x analysed steps, coloured by band, traps marked;
- :func:`save_analysis_figures`: all of them as PNG files (what ``ww-callbacks analyze --plots``
  writes).

The bands, their colours and the few-eigenvalues caveat come from :mod:`ww_callbacks.bands`, as in
the HTML report. matplotlib is imported lazily and only its object API is used with an Agg canvas:
pyplot is never imported and the user's backend and rc state are left alone. Figures turn into
RGB arrays (:func:`figure_to_rgb`) or PNG bytes (:func:`figure_to_png`).
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
    BAND_COLOURS,
    FEW_EIGENVALUES,
    NO_FIT,
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

#: Sizes (inches at :data:`DPI`): the ESD per layer and the model-level figures.
ESD_SIZE = (7.6, 4.4)
SUMMARY_SIZE = (8.0, 4.4)
DPI = 100


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


def esd_figure(evals: Any, alpha: float, xmin: float, xmax: float, title: str = "", *,
               rand_evals: Any = None, bulk_max: float | None = None,
               num_traps: int | None = None, num_pl_spikes: int | None = None,
               bins: int = 80, figsize: tuple[float, float] = (5.0, 3.6),
               dpi: int = 80) -> Figure:
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
    zero, one value) gives a figure saying so instead of raising.
    """
    fig = _figure(figsize, dpi)
    # fixed margins (a layout engine would triple the rendering time); the legend sits to the
    # right of the axes, never over the curves
    ax = fig.add_axes((0.09, 0.12, 0.6, 0.78))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("log10 eigenvalue λ", fontsize=8)
    ax.set_ylabel("log10 density", fontsize=8)
    ax.tick_params(labelsize=7)
    ev = _positive(evals)
    if ev.size == 0:
        ax.text(0.5, 0.5, "no positive eigenvalues", ha="center", va="center",
                transform=ax.transAxes)
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
    ax.plot(centres, log_density, color=BAND_COLOURS[UNDER], marker="o", markersize=2.5,
            linewidth=1.2, label=f"ESD ({ev.size} eigenvalues)")
    if rand.size:
        ax.plot(centres, _log_density(rand, log_edges), color="#E69F00", linewidth=1.0,
                alpha=0.9, label="randomized ESD")
        edge = _float(bulk_max)
        if math.isfinite(edge) and edge > 0:
            ax.axvline(math.log10(edge), color="#E69F00", linestyle="-.", linewidth=1.0,
                       label=f"MP bulk edge (log10 λ={math.log10(edge):.2f})")
        k = int(num_traps) if num_traps is not None and _float(num_traps) > 0 else 0
        if k:
            spikes = np.sort(rand)[-k:]
            for i, spike in enumerate(spikes):
                ax.axvline(math.log10(spike), color=TRAP_COLOUR, linewidth=2.0, alpha=0.9,
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
                    linestyle="--", linewidth=1.5, label=f"power law α={alpha:.2f}")
        ax.axvline(math.log10(xmin), color=BAND_COLOURS[WELL], linestyle=":",
                   label=f"xmin (log10 λ={math.log10(xmin):.2f})")
        ax.axvline(math.log10(end), color=BAND_COLOURS[NO_FIT], linestyle=":",
                   label=f"xmax (log10 λ={math.log10(end):.2f})")
        tail = None if num_pl_spikes is None else int(_float(num_pl_spikes))
        if tail is not None and 0 <= tail < FEW_EIGENVALUES:
            ax.text(0.02, 0.03, f"caution: α fitted on {tail} eigenvalues "
                    f"(< {FEW_EIGENVALUES})", transform=ax.transAxes, fontsize=8,
                    color=BAND_COLOURS[OVER], ha="left", va="bottom")
    else:
        ax.text(0.5, 0.92, "power-law fit failed", ha="center", va="top",
                transform=ax.transAxes, color=BAND_COLOURS[OVER])
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig


def layer_esd_figure(row: Mapping[str, Any], evals: Any, rand_evals: Any = None, *,
                     step: int | None = None, figsize: tuple[float, float] = ESD_SIZE,
                     dpi: int = DPI) -> Figure:
    """:func:`esd_figure` of one row of an analysis (its ``alpha``, ``xmin``, ``xmax``,
    ``num_pl_spikes``, ``rand_bulk_max``, ``rand_num_spikes``), titled with the layer, step,
    alpha and band."""
    alpha = _float(row.get("alpha"))
    name = names.figure(row.get("longname") or "root", 60)  # plain text: no mathtext
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


def _traps(table: pd.DataFrame) -> np.ndarray:
    if "rand_num_spikes" not in table.columns:
        return np.zeros(len(table), dtype=bool)
    return table["rand_num_spikes"].to_numpy(dtype=np.float64, na_value=0.0) > 0


def _band_background(ax: Any, top: float) -> None:
    ax.axhspan(0, OVER_TRAINED_ALPHA, color=BAND_COLOURS[OVER], alpha=0.08, linewidth=0)
    ax.axhspan(OVER_TRAINED_ALPHA, UNDER_TRAINED_ALPHA, color=BAND_COLOURS[WELL], alpha=0.08,
               linewidth=0)
    ax.axhspan(UNDER_TRAINED_ALPHA, max(top, UNDER_TRAINED_ALPHA + 1), color=BAND_COLOURS[UNDER],
               alpha=0.08, linewidth=0)
    for level in (OVER_TRAINED_ALPHA, UNDER_TRAINED_ALPHA):
        ax.axhline(level, color="#555555", linestyle="--", linewidth=0.8)


def _short(name: str, width: int = 18) -> str:
    """A layer name as a tick label: plain text (no mathtext), cut in the middle."""
    return names.figure(name or "root", width)


def correlation_flow_figure(details: pd.DataFrame, *, step: int | None = None,
                            first: pd.DataFrame | None = None, first_step: int | None = None,
                            figsize: tuple[float, float] = SUMMARY_SIZE,
                            dpi: int = DPI) -> Figure:
    """Alpha against layer depth (model order) at one step: points coloured by band over the
    < 2 / 2-6 / > 6 bands, failed fits as grey crosses on the floor, layers holding a
    correlation trap ringed, and the ``first`` analysis (e.g. the initial weights) drawn faintly
    for comparison."""
    fig = _figure(figsize, dpi)
    ax = fig.add_axes((0.08, 0.22, 0.9, 0.68))
    table = _layer_table(details)
    alphas, traps = _fit_alphas(table), _traps(table)
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
    colours = [BAND_COLOURS[band(a)] for a in alphas[finite]]
    ax.scatter(x[finite], alphas[finite], c=colours, s=28, zorder=3, label="alpha")
    if traps.any():
        t = traps & finite
        ax.scatter(x[t], alphas[t], s=110, facecolors="none", edgecolors=TRAP_COLOUR,
                   linewidths=2.0, zorder=4, label="correlation trap")
    failed = ~finite
    if failed.any():
        ax.scatter(x[failed], np.full(int(failed.sum()), 0.2), marker="x",
                   color=BAND_COLOURS[NO_FIT], s=40, zorder=3, label="fit failed")
    ax.set_ylim(0, top)
    ax.set_xlim(-0.5, max(len(table) - 0.5, 0.5))
    ax.set_ylabel("alpha", fontsize=8)
    names = [_short(n) for n in table["longname"]]
    if len(names) <= 40:
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=6)
    else:
        ax.set_xlabel("layer (model order)", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    where = f" at step {step}" if step is not None else ""
    ax.set_title(f"correlation flow{where}: alpha by layer depth "
                 f"(bands < {OVER_TRAINED_ALPHA:g} / {OVER_TRAINED_ALPHA:g}–"
                 f"{UNDER_TRAINED_ALPHA:g} / > {UNDER_TRAINED_ALPHA:g})", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", framealpha=0.85)
    return fig


def alpha_histogram_figure(details: pd.DataFrame, *, step: int | None = None,
                           figsize: tuple[float, float] = SUMMARY_SIZE,
                           dpi: int = DPI) -> Figure:
    """The histogram of alpha across layers at one step (WeightWatcher's view for comparing
    models), bars coloured by band, bands at 2 and 6, counts per band in the title."""
    fig = _figure(figsize, dpi)
    ax = fig.add_axes((0.08, 0.13, 0.9, 0.77))
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
                transform=ax.transAxes)
    for level in (OVER_TRAINED_ALPHA, UNDER_TRAINED_ALPHA):
        ax.axvline(level, color="#555555", linestyle="--", linewidth=0.8)
    ax.set_xlabel("alpha", fontsize=8)
    ax.set_ylabel("layers", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.yaxis.get_major_locator().set_params(integer=True)
    where = f" at step {step}" if step is not None else ""
    ax.set_title(f"alpha across {len(alphas)} layers{where}: {counts[OVER]} < 2, "
                 f"{counts[WELL]} in 2–6, {counts[UNDER]} > 6"
                 + (f", {failed} failed" if failed else ""), fontsize=9)
    return fig


def alpha_heatmap_figure(layers: Sequence[str], steps: Sequence[int], alphas: Any,
                         traps: Any = None, *, figsize: tuple[float, float] = SUMMARY_SIZE,
                         dpi: int = DPI) -> Figure:
    """Layers (rows, model order) x analysed steps (columns), each cell coloured by the band of
    its alpha (< 2 / 2-6 / > 6, grey: no fit), with the alpha written in when the cells are
    large enough and correlation traps marked with a dot. ``alphas`` and ``traps``:
    ``(len(layers), len(steps))`` arrays (NaN: no fit or not analysed)."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    fig = _figure(figsize, dpi)
    alphas = np.asarray(alphas, dtype=np.float64).reshape(len(layers), len(steps))
    ax = fig.add_axes((0.2, 0.14, 0.78, 0.76))
    codes = np.where(np.isfinite(alphas) & (alphas > 0),
                     np.where(alphas < OVER_TRAINED_ALPHA, 0,
                              np.where(alphas > UNDER_TRAINED_ALPHA, 2, 1)), 3)
    cmap = ListedColormap([BAND_COLOURS[OVER], BAND_COLOURS[WELL], BAND_COLOURS[UNDER],
                           BAND_COLOURS[NO_FIT]])
    ax.imshow(codes, aspect="auto", interpolation="nearest", cmap=cmap,
              norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5, 3.5], cmap.N))
    rows, cols = codes.shape
    if rows * cols <= 300:
        for i in range(rows):
            for j in range(cols):
                if np.isfinite(alphas[i, j]) and alphas[i, j] > 0:
                    ax.text(j, i, f"{alphas[i, j]:.1f}", ha="center", va="center", fontsize=6,
                            color="white")
    if traps is not None:
        t = np.asarray(traps, dtype=bool).reshape(rows, cols)
        if t.any():
            ti, tj = np.nonzero(t)
            ax.scatter(tj + 0.32, ti - 0.25, s=18, color=TRAP_COLOUR, edgecolors="white",
                       linewidths=0.5, zorder=3, label="correlation trap")
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(-0.27, 1.13),
                      framealpha=0.85)
    ax.set_yticks(range(rows), [_short(n, 24) for n in layers], fontsize=6 if rows > 20 else 7)
    shown = np.unique(np.linspace(0, cols - 1, min(cols, 12)).round().astype(int)) if cols else []
    ax.set_xticks(list(shown), [str(steps[j]) for j in shown], fontsize=7)
    ax.set_xlabel("step", fontsize=8)
    ax.set_title(f"alpha by layer and step: orange < {OVER_TRAINED_ALPHA:g}, green "
                 f"{OVER_TRAINED_ALPHA:g}–{UNDER_TRAINED_ALPHA:g}, blue > "
                 f"{UNDER_TRAINED_ALPHA:g}, grey no fit", fontsize=9)
    return fig


def heatmap_data(history: pd.DataFrame) -> tuple[list[str], list[int], np.ndarray, np.ndarray]:
    """Layers (model order), steps, alphas and traps of a per-layer history DataFrame
    (:func:`ww_callbacks.load_history`'s default, one row per layer and step)."""
    ordered = _layer_table(history.sort_values("step", kind="stable"))
    layers = list(ordered["longname"])
    steps = sorted(int(s) for s in history["step"].unique())
    alphas = np.full((len(layers), len(steps)), np.nan)
    traps = np.zeros((len(layers), len(steps)), dtype=bool)
    row_of = {name: i for i, name in enumerate(layers)}
    col_of = {step: j for j, step in enumerate(steps)}
    fitted = history.copy()
    fitted["_alpha"] = _fit_alphas(fitted)
    fitted["_trap"] = _traps(fitted)
    for name, step, alpha, trap in zip(fitted["longname"], fitted["step"], fitted["_alpha"],
                                       fitted["_trap"], strict=True):
        i, j = row_of[name], col_of[int(step)]
        alphas[i, j] = alpha
        traps[i, j] = bool(trap)
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


__all__ = ["DPI", "ESD_SIZE", "SUMMARY_SIZE", "alpha_heatmap_figure", "alpha_histogram_figure",
           "correlation_flow_figure", "esd_figure", "figure_to_png", "figure_to_rgb",
           "heatmap_data", "layer_esd_figure", "rgb_to_png", "save_analysis_figures"]
