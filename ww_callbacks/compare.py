"""Compare two checkpoints (or two runs' last analyses) layer by layer: ``ww-callbacks compare``.

Layers are matched by ``longname``, without the prefixes wrappers add (``_orig_mod.`` of
``torch.compile``, DDP's ``module.``, ...: :mod:`ww_callbacks.state_dicts`), so a compiled
model's checkpoint matches the run its ``Watcher`` recorded. The table gives each side's alpha,
the difference ``B - A``, each side's band and whether the layer crossed a band; with ``delta``
the update ``B - A`` itself is analysed too (what WeightWatcher calls a ``base_model`` analysis
of a fine-tuned model). The HTML page draws the sides with the shared browser views
(:mod:`ww_callbacks.views`: the report's and the TensorBoard tab's heatmap and flow), one analysis
per side.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .bands import NO_FIT, band
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


def compare_table(table: pd.DataFrame) -> dict:
    """The comparison in the views' slim form (:mod:`ww_callbacks.views.data`), one analysis per
    side, numbered as steps (0: ``A``, 1: ``B`` and, with ``--delta``, 2: ``B - A``; the views
    order analyses by step), so the page draws it with the same heatmap and flow as the report
    and the TensorBoard tab."""
    sides = [("A", "alpha_A"), ("B", "alpha_B")]
    if "alpha_delta" in table.columns:
        sides.append(("B - A", "alpha_delta"))
    layers = [str(n) for n in table["longname"]]
    records = []
    for step, (_, column) in enumerate(sides):
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(float)
        alphas = [round(float(v), 3) if np.isfinite(v) and v > 0 else None for v in values]
        records.append({"step": step, "epoch": None, "a": alphas, "t": [None] * len(layers),
                        "n": [None] * len(layers)})
    return {"layers": layers, "records": records, "actions": [],
            "sides": [label for label, _ in sides]}


def write_compare_html(table: pd.DataFrame, path: str | os.PathLike, *, a: str,
                       b: str, notes: list[str] | None = None) -> Path:
    """A self-contained HTML page of the comparison: the shared views (heatmap and flow) over the
    compared sides and the table (every name escaped; the page's inline style and script
    allowed by their hashes, nothing fetched)."""
    from .page import asset, build_page
    from .views import asset as views_asset
    from .views import page_script

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
Bands: alpha &lt; {OVER_TRAINED_ALPHA:g} over-trained, alpha &gt; {UNDER_TRAINED_ALPHA:g}
under-trained.</p>{extra}
<h2>Alpha per layer: step 0 is A, step 1 is B{", step 2 is B - A" if "alpha_delta" in table.columns
else ""}</h2><div id="heatmap"></div><h2>Correlation flow (the slider moves between A and B)</h2>
<div id="flow"></div>
<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"""
    data = {"crossed": int(table["crossed"].sum()), "layers": len(table),
            "sides": {"A": a, "B": b}, "table": compare_table(table),
            "bands": {"over": OVER_TRAINED_ALPHA, "under": UNDER_TRAINED_ALPHA}}
    page = build_page("compare.html", title="ww-callbacks compare",
                      css=views_asset("views.css").decode("utf-8") + asset("compare.css"),
                      data=data, js=page_script(asset("compare.js")), body=body)
    out = Path(path)
    out.write_text(page, encoding="utf-8")
    return out


__all__ = ["compare", "delta_weights", "is_history", "last_analysis", "layer_band",
           "write_compare_html"]
