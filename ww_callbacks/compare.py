"""Compare two checkpoints (or two runs' last analyses) layer by layer: ``ww-callbacks compare``.

Layers are matched by ``longname``, without the prefixes wrappers add (``_orig_mod.`` of
``torch.compile``, DDP's ``module.``, ...: :mod:`ww_callbacks.state_dicts`), so a compiled
model's checkpoint matches the run its ``Watcher`` recorded. The table gives each side's alpha,
the difference ``B - A``, each side's band and whether the layer crossed a band; with ``delta``
the update ``B - A`` itself is analysed too (what WeightWatcher calls a ``base_model`` analysis
of a fine-tuned model). The HTML page draws both correlation flows (alpha against layer order)
on one inline SVG chart.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .bands import BAND_COLOURS, NO_FIT, OVER, UNDER, band
from .powerlaw import OVER_TRAINED_ALPHA, SUCCESS, UNDER_TRAINED_ALPHA
from .state_dicts import bare_name


def is_history(path: str | os.PathLike) -> bool:
    """True for a run folder holding ``ww_history.jsonl`` or a ``.jsonl`` history file."""
    from .history_reader import HISTORY_FILE

    path = Path(path)
    return (path.is_dir() and (path / HISTORY_FILE).is_file()) or path.suffix == ".jsonl"


def last_analysis(path: str | os.PathLike, runs: list[str] | None = None,
                  notes: list[str] | None = None) -> pd.DataFrame:
    """The per-layer rows of the last analysis of one run of a history: the run whose writer
    is one of ``runs`` (run ids), else the newest; what the reader has to say about the file
    (several runs, skipped lines) is appended to ``notes``."""
    from .report import read_run

    records, said = read_run(path, list(runs or ()))
    if notes is not None:
        notes.extend(f"{path}: {line}" for line in said)
    return pd.DataFrame(records[-1]["layers"])


class _Difference:
    """``B - A`` of one tensor, computed when the analysis converts it."""

    def __init__(self, a: Any, b: Any):
        self.a, self.b = a, b
        self.shape = tuple(int(s) for s in b.shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        from .matrices import to_numpy

        diff = to_numpy(self.b).astype(np.float64) - to_numpy(self.a).astype(np.float64)
        return diff if dtype is None else diff.astype(dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self)[index]


def delta_weights(a: str | os.PathLike, b: str | os.PathLike) -> dict[str, Any]:
    """Lazy ``B - A`` of every tensor both checkpoints hold with the same shape."""
    from .checkpoints import open_checkpoint

    wa, wb = open_checkpoint(a), open_checkpoint(b)
    return {name: _Difference(wa[name], tensor) for name, tensor in wb.items()
            if name in wa and tuple(wa[name].shape) == tuple(tensor.shape)}


def _side(path: str, analyze_path: Callable[[str], pd.DataFrame], runs: list[str] | None,
          notes: list[str] | None) -> pd.DataFrame:
    details = last_analysis(path, runs, notes) if is_history(path) else analyze_path(path)
    if "status" not in details.columns:
        details = details.assign(status=SUCCESS)
    if "longname" not in details.columns or "alpha" not in details.columns:
        from .checkpoints import CheckpointError

        raise CheckpointError(f"{path}: its analysis has no layers (no longname/alpha)")
    keep = [c for c in ("layer_id", "longname", "alpha", "alpha_weighted", "status")
            if c in details.columns]
    details = details[keep].assign(longname=details["longname"].astype(str).map(bare_name))
    return details.drop_duplicates("longname")


def layer_band(alpha: float, status: str) -> str:
    """The band of one analysed layer (``no fit`` when its fit failed: alpha is -1 then)."""
    return band(alpha) if status == SUCCESS else NO_FIT


def compare(a: str, b: str, *, analyze_path: Callable[[str], pd.DataFrame],
            analyze_delta: Callable[[dict], pd.DataFrame] | None = None,
            delta: bool = False, runs: list[str] | None = None,
            notes: list[str] | None = None) -> pd.DataFrame:
    """One row per layer present in both: ``alpha_A``, ``alpha_B``, ``alpha_diff`` (B - A),
    ``band_A``, ``band_B``, ``crossed``; with ``delta`` also ``alpha_delta`` (alpha of B - A).
    ``analyze_path`` analyses a checkpoint path and ``analyze_delta`` a ``name -> tensor``
    mapping (the command line passes its options; default: ``analyze`` with defaults). A
    history holding several runs gives its newest run's last analysis, or that of the run whose
    id is in ``runs``; ``notes`` (a list) receives what was said about the histories."""
    from .checkpoints import CheckpointError

    left, right = _side(a, analyze_path, runs, notes), _side(b, analyze_path, runs, notes)
    table = left.merge(right, on="longname", suffixes=("_A", "_B"))
    if table.empty:
        raise CheckpointError(f"{a} and {b} have no layer name in common")
    table["alpha_diff"] = table["alpha_B"] - table["alpha_A"]
    table["band_A"] = [layer_band(x, s) for x, s in zip(table["alpha_A"], table["status_A"],
                                                    strict=True)]
    table["band_B"] = [layer_band(x, s) for x, s in zip(table["alpha_B"], table["status_B"],
                                                    strict=True)]
    table["crossed"] = table["band_A"] != table["band_B"]
    if delta:
        if is_history(a) or is_history(b):
            raise CheckpointError("--delta needs two checkpoints (a history keeps no weights)")
        if analyze_delta is None:
            from .front_door import analyze

            def analyze_delta(weights: dict) -> pd.DataFrame:
                return analyze(weights, progress=None)

        diff = analyze_delta(delta_weights(a, b))
        diff = diff[["longname", "alpha", "status"]].rename(
            columns={"alpha": "alpha_delta", "status": "status_delta"})
        table = table.merge(diff, on="longname", how="left")
    order = "layer_id_B" if "layer_id_B" in table.columns else "longname"
    table = table.sort_values(order, kind="stable").reset_index(drop=True)
    cols = ["longname", "alpha_A", "alpha_B", "alpha_diff", "band_A", "band_B", "crossed"]
    if delta:
        cols.append("alpha_delta")
    return table[cols]


# ----------------------------------------------------------------------------- HTML


def _flow_svg(table: pd.DataFrame, series: dict[str, tuple[str, str]]) -> str:
    """An SVG line chart of alpha against layer order for each ``column -> (label, colour)``."""
    width, height, pad = 900, 360, 48
    n = len(table)
    values = np.concatenate([table[c].to_numpy(float) for c in series])
    finite = values[np.isfinite(values) & (values > 0)]
    top = max(float(finite.max()) if finite.size else 8.0, 8.0) * 1.05

    def x(i: float) -> float:
        return pad + (width - 2 * pad) * (i / max(n - 1, 1))

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * (v / top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" id="flow">']
    for lo, hi, name in ((0, OVER_TRAINED_ALPHA, OVER), (UNDER_TRAINED_ALPHA, top, UNDER)):
        parts.append(f'<rect x="{pad}" y="{y(min(hi, top)):.1f}" width="{width - 2 * pad}" '
                     f'height="{y(lo) - y(min(hi, top)):.1f}" fill="{BAND_COLOURS[name]}" '
                     f'opacity="0.12"/>')
    parts.append(f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
                 'stroke="#333"/>')
    for tick in range(0, int(top) + 1, 2):
        parts.append(f'<text x="{pad - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" '
                     f'font-size="11">{tick}</text>')
    for col, (label, colour) in series.items():
        pts = [(x(i), y(v)) for i, v in enumerate(table[col].to_numpy(float))
               if np.isfinite(v) and v > 0]
        if pts:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            parts.append(f'<polyline class="flow-line" points="{path}" fill="none" '
                         f'stroke="{colour}" stroke-width="2"><title>{html.escape(label)}'
                         '</title></polyline>')
    legend_y = 16
    for label, colour in series.values():
        parts.append(f'<text x="{pad}" y="{legend_y}" fill="{colour}" font-size="12">'
                     f'&#9632; {html.escape(label)}</text>')
        legend_y += 14
    parts.append(f'<text x="{width / 2}" y="{height - 10}" text-anchor="middle" font-size="12">'
                 'layer (model order)</text></svg>')
    return "".join(parts)


def write_compare_html(table: pd.DataFrame, path: str | os.PathLike, *, a: str,
                       b: str, notes: list[str] | None = None) -> Path:
    """A self-contained HTML page of the comparison: the flows chart and the table (every name
    escaped; the page's only inline style allowed by its hash, no script to run)."""
    from .page import asset, build_page

    series = {"alpha_A": (f"A: {a}", "#E69F00"), "alpha_B": (f"B: {b}", "#56B4E9")}
    if "alpha_delta" in table.columns:
        series["alpha_delta"] = ("B - A", "#CC79A7")
    rows = []
    for rec in table.to_dict(orient="records"):
        cells = []
        for col in table.columns:
            v = rec[col]
            text = f"{v:.4f}" if isinstance(v, float) else str(v)
            cls = ""
            if col in ("band_A", "band_B"):
                cls = f' class="band-{html.escape(str(v).replace(" ", "-"))}"'
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        cls = ' class="crossed"' if rec["crossed"] else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    extra = "".join(f"<p>{html.escape(n)}</p>" for n in notes or ())
    body = f"""<h1>Layer-by-layer comparison</h1><p>A = {html.escape(a)}<br>B = {html.escape(b)}</p>
<p>{len(table)} layers in common; {int(table["crossed"].sum())} crossed a band (highlighted).
Shaded: alpha &lt; {OVER_TRAINED_ALPHA:g} over-trained, alpha &gt; {UNDER_TRAINED_ALPHA:g}
under-trained.</p>{extra}{_flow_svg(table, series)}
<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"""
    page = build_page("compare.html", title="ww-callbacks compare", css=asset("compare.css"),
                      data={"crossed": int(table["crossed"].sum()), "layers": len(table)},
                      body=body)
    out = Path(path)
    out.write_text(page, encoding="utf-8")
    return out


__all__ = ["compare", "delta_weights", "is_history", "last_analysis", "layer_band",
           "write_compare_html"]
