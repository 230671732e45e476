"""One self-contained HTML report of a watched training run: ``ww-callbacks report RUN_DIR`` and
:func:`write_report`.

What it shows, from the run's ``ww_history.jsonl`` (and, where the run kept them, its TensorBoard
events, Lightning ``metrics.csv``, Hugging Face ``trainer_state.json`` or Keras ``CSVLogger``
file): the alpha heatmap (layer x analysis, hover values), the correlation flow (alpha against
layer order) with a slider over the analyses, each layer's alpha over time with the 2 and 6
bands, the correlation-traps timeline, ESD histograms where spectra were kept (TensorBoard's
``ww_esd/`` histograms, or ``spectra`` in a history record), what the policies did and when
(``ww_lr_scale/``, ``ww_traps_removed/``, ``ww/stop_reason``; the history does not record them,
the TensorBoard events do) and the run's validation metrics with their Spearman rank correlation
with ``ww/alpha_mean`` and ``ww/alpha_weighted_mean`` (with the number of pairs).

Charting approach: small inline SVG drawn by ~200 lines of vanilla JavaScript from one inline JSON
blob. Why not a charting library inlined: Plotly's minified bundle alone is ~3.5 MB and Vega +
Vega-Lite ~1 MB, over the 1.5 MB budget or most of it before any data; the charts needed here are
a heatmap, polylines and bars, which SVG draws directly. Data is rounded to 3 decimals, so 100
layers x 200 analyses is ~0.2 MB of JSON and the page is built in well under a second
(measured in ``bench/report_size.py``). Nothing is fetched: no CDN, no fonts, no images.
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .bands import BAND_COLOURS, NO_FIT, OVER, TRAP_COLOUR, UNDER, WELL
from .powerlaw import OVER_TRAINED_ALPHA, UNDER_TRAINED_ALPHA

#: The newest history format this reader understands (a record without ``format`` is 1).
HISTORY_FORMAT = 1
DEFAULT_REPORT = "ww_report.html"
#: Most analyses and spectra steps kept per ESD layer (the page stays small).
ESD_STEPS = 6
ESD_LAYERS = 24
POLICY_PREFIXES = ("ww_lr_scale/", "ww_traps_removed/", "ww/stop_reason")
#: Larger CSV files are not read as metric logs (a data set saved in the run folder).
MAX_METRICS_CSV = 50_000_000
#: How deep below RUN_DIR metric files and event files are looked for.
SEARCH_DEPTH = 4


class ReportError(ValueError):
    """A run folder or history that cannot be reported on; one line saying what was expected."""


# ----------------------------------------------------------------------------- history


def find_history(run_dir: str | os.PathLike) -> Path:
    """The history file of a run: ``RUN_DIR/ww_history.jsonl``, the only one below RUN_DIR, or
    ``RUN_DIR`` itself when it is a file."""
    from .history import HISTORY_FILE

    path = Path(run_dir)
    if not path.exists():
        raise ReportError(f"{path}: no such file or folder (expected a run's log folder holding "
                          f"{HISTORY_FILE})")
    if path.is_file():
        return path
    if (path / HISTORY_FILE).is_file():
        return path / HISTORY_FILE
    found = sorted(_walk(path, HISTORY_FILE))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ReportError(f"{path}: no {HISTORY_FILE} in this folder or below (expected the "
                          "log folder of a run watched by ww_callbacks)")
    raise ReportError(f"{path}: {len(found)} histories below it ({found[0].parent}, "
                      f"{found[1].parent}, ...): name one run's folder")


def _walk(root: Path, pattern: str, depth: int = SEARCH_DEPTH) -> list[Path]:
    """Files matching ``pattern`` at most ``depth`` folders below ``root``."""
    out = []
    for level in range(depth + 1):
        out.extend(p for p in root.glob("/".join(["*"] * level + [pattern])) if p.is_file())
    return out


def read_history(path: str | os.PathLike) -> list[dict]:
    """The analysis records of a run (folder or history file), checked: raises
    :class:`ReportError` for an empty history, one that is not a ww_callbacks history, or one
    written by a newer version. A torn last line (a crash mid-write) and JSON objects that are
    not analyses (metadata a later version may add) are passed over."""
    file = find_history(path)
    records, other = [], 0
    try:
        with open(file, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"{file}: cannot be read: {getattr(err, 'strerror', None) or err}") \
            from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                continue  # torn tail
            raise ReportError(f"{file}: line {number} is not JSON (expected one analysis "
                              "record per line)") from None
        if not isinstance(record, dict) or "step" not in record or "layers" not in record:
            other += 1  # not an analysis (a later writer's metadata line, say): passed over
            continue
        version = record.get("format", 1)
        if not isinstance(version, int) or version > HISTORY_FORMAT:
            raise ReportError(f"{file}: written by a newer ww_callbacks (history format "
                              f"{version}; this version reads up to {HISTORY_FORMAT}): upgrade "
                              "ww_callbacks")
        records.append(record)
    if not records and other:
        raise ReportError(f"{file}: not a ww_callbacks history (no line is an analysis record "
                          "with 'step' and 'layers')")
    if not records:
        raise ReportError(f"{file}: the history is empty (no analysis recorded yet)")
    return records


# ----------------------------------------------------------------------------- run metrics


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation of two equally long sequences (NaN pairs dropped; average
    ranks for ties); NaN with fewer than 3 pairs or a constant side."""
    a, b = pd.Series(x, dtype=float), pd.Series(y, dtype=float)
    keep = a.notna() & b.notna() & np.isfinite(a) & np.isfinite(b)
    a, b = a[keep].rank(), b[keep].rank()
    if len(a) < 3 or a.nunique() < 2 or b.nunique() < 2:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def _is_validation(name: str) -> bool:
    lowered = name.lower()
    return not lowered.startswith("ww") and any(
        key in lowered for key in ("val", "eval", "test"))


def _event_accumulators(run_dir: Path) -> list[Any]:
    event_dirs = sorted({p.parent for p in _walk(run_dir, "events.out.tfevents.*")})
    if not event_dirs:
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accs = []
    for folder in event_dirs:
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0,
                                                           "histograms": ESD_STEPS * 50})
        acc.Reload()
        accs.append(acc)
    return accs


def _tb_scalars(acc: Any) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of one events folder: ``tag -> [(step, value)]`` (scalars written as
    ``simple_value`` and tf.summary's scalar tensors both)."""
    out: dict[str, list[tuple[int, float]]] = {}
    tags = acc.Tags()
    for tag in tags.get("scalars", []):
        out[tag] = [(int(e.step), float(e.value)) for e in acc.Scalars(tag)]
    if tags.get("tensors"):
        from tensorboard.util import tensor_util

        for tag in tags["tensors"]:
            points = []
            for e in acc.Tensors(tag):
                arr = tensor_util.make_ndarray(e.tensor_proto)
                if arr.size == 1 and arr.dtype.kind in "fiu":
                    points.append((int(e.step), float(arr.reshape(()))))
            if points:
                out.setdefault(tag, points)
    return out


def _csv_metrics(file: Path) -> dict[str, dict]:
    """Validation columns of a Lightning ``metrics.csv`` (has ``step``) or a Keras
    ``CSVLogger`` file (``epoch`` only)."""
    try:
        if file.stat().st_size > MAX_METRICS_CSV or not any(
                _is_validation(str(c)) for c in pd.read_csv(file, nrows=0).columns):
            return {}  # a data set or an unrelated table, not a metrics log
        frame = pd.read_csv(file)
    except (OSError, ValueError, csv.Error, UnicodeDecodeError):
        return {}
    by = "step" if "step" in frame.columns else "epoch" if "epoch" in frame.columns else None
    if by is None:
        return {}
    out = {}
    source = "Lightning metrics.csv" if by == "step" else "Keras CSVLogger"
    for col in frame.columns:
        if col in ("step", "epoch") or not _is_validation(col):
            continue
        part = frame[[by, col]].apply(pd.to_numeric, errors="coerce").dropna()
        if len(part):
            out[col] = {"source": f"{source} ({file.name})", "by": by,
                        "x": part[by].astype(int).tolist(), "y": part[col].astype(float).tolist()}
    return out


def _trainer_state_metrics(file: Path) -> dict[str, dict]:
    try:
        history = json.loads(file.read_text(encoding="utf-8")).get("log_history", [])
    except (OSError, ValueError, AttributeError):
        return {}
    series: dict[str, dict] = {}
    for entry in history:
        if not isinstance(entry, dict) or "step" not in entry:
            continue
        for key, value in entry.items():
            if key.startswith("eval_") and isinstance(value, (int, float)) and \
                    not key.endswith(("_runtime", "_per_second")):
                s = series.setdefault(key, {"source": "Hugging Face trainer_state.json",
                                            "by": "step", "x": [], "y": []})
                s["x"].append(int(entry["step"]))
                s["y"].append(float(value))
    return series


def _align(metric: dict, steps: list[int], epochs: list[int | None],
           means: dict[str, list[float]]) -> dict:
    """Pair each metric point with an analysis (same epoch for epoch-indexed metrics, else the
    analysis nearest in step, each analysis used once) and rank-correlate."""
    frame = pd.DataFrame({"x": metric["x"], "y": metric["y"]}).drop_duplicates("x", keep="last")
    ww = pd.DataFrame({"step": steps, "epoch": epochs, **means}).reset_index(names="k")
    if metric["by"] == "epoch":
        ww = ww.dropna(subset=["epoch"]).drop_duplicates("epoch", keep="last")
        pairs = frame.merge(ww, left_on="x", right_on="epoch")
    else:
        pairs = pd.merge_asof(frame.sort_values("x"), ww.sort_values("step"), left_on="x",
                              right_on="step", direction="nearest")
        pairs["gap"] = (pairs["x"] - pairs["step"]).abs()
        pairs = pairs.sort_values("gap", kind="stable").drop_duplicates("k")
    out = {"n": int(len(pairs))}
    for key, column in (("rho_alpha", "ww/alpha_mean"),
                        ("rho_weighted", "ww/alpha_weighted_mean")):
        out[key] = _num(spearman(pairs["y"], pairs[column]), 4) if len(pairs) else None
    return out


def run_metrics(run_dir: Path, accs: list[Any], steps: list[int], epochs: list,
                means: dict[str, list[float]]) -> list[dict]:
    """The run's validation metrics with their rank correlation to the ww means."""
    found: dict[str, dict] = {}
    for acc in accs:
        for tag, points in _tb_scalars(acc).items():
            if _is_validation(tag) and points:
                found.setdefault(f"{tag}", {"source": "TensorBoard events", "by": "step",
                                            "x": [p[0] for p in points],
                                            "y": [p[1] for p in points]})
    for file in sorted(_walk(run_dir, "*.csv")):
        for name, series in _csv_metrics(file).items():
            found.setdefault(name, series)
    # every checkpoint-N/ of a Trainer holds the log so far: the longest is the whole run's
    for file in sorted(_walk(run_dir, "trainer_state.json")):
        for name, series in _trainer_state_metrics(file).items():
            if name not in found or len(series["x"]) > len(found[name]["x"]):
                found[name] = series
    out = []
    for name, series in found.items():
        entry = {"name": name, **series, "y": [_num(v, 5) for v in series["y"]]}
        entry.update(_align(series, steps, epochs, means))
        out.append(entry)
    return out


def policy_events(accs: list[Any], records: list[dict]) -> list[dict]:
    """What the policies did and when: every change of a policy scalar (from the TensorBoard
    events, or ``scalars`` in history records when a history keeps them)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for tag, value in (record.get("scalars") or {}).items():
            if tag.startswith(POLICY_PREFIXES) and isinstance(value, (int, float)):
                series.setdefault(tag, []).append((int(record["step"]), float(value)))
    for acc in accs:
        for tag, points in _tb_scalars(acc).items():
            if tag.startswith(POLICY_PREFIXES):
                series.setdefault(tag, points)
    events = []
    for tag, points in series.items():
        last = 0.0 if tag == "ww/stop_reason" else None
        for step, value in sorted(points):
            if value != last and not (tag.startswith("ww_lr_scale/") and last is None
                                      and value == 1.0):
                events.append({"step": step, "tag": tag, "value": _num(value, 4),
                               "from": None if last is None else _num(last, 4)})
            last = value
    events.sort(key=lambda e: (e["step"], e["tag"]))
    return events


# ----------------------------------------------------------------------------- spectra


def _hist(evals: np.ndarray, bins: int = 30) -> dict | None:
    ev = np.asarray(evals, dtype=float)
    ev = ev[np.isfinite(ev) & (ev > 0)]
    if ev.size < 2:
        return None
    counts, edges = np.histogram(np.log10(ev), bins=bins)
    return {"edges": [_num(e, 4) for e in edges], "counts": counts.astype(int).tolist()}


def esd_data(accs: list[Any], records: list[dict], layers: list[str]) -> dict[str, list[dict]]:
    """Log10-eigenvalue histograms per layer at up to :data:`ESD_STEPS` analyses: from history
    records holding ``spectra``, else from TensorBoard's ``ww_esd/`` histograms."""
    out: dict[str, list[dict]] = {}
    with_spectra = [r for r in records if isinstance(r.get("spectra"), dict) and r["spectra"]]
    picks = _spread(len(with_spectra), ESD_STEPS)
    for i in picks:
        rec = with_spectra[i]
        for name, evals in rec["spectra"].items():
            h = _hist(np.asarray(evals, dtype=float))
            if h and name in layers:
                out.setdefault(name, []).append({"step": int(rec["step"]), **h})
    if out:
        return dict(list(out.items())[:ESD_LAYERS])
    for acc in accs:
        for tag in acc.Tags().get("histograms", []):
            if not tag.startswith("ww_esd/") or len(out) >= ESD_LAYERS:
                continue
            name = tag[len("ww_esd/"):]
            events = acc.Histograms(tag)
            for i in _spread(len(events), ESD_STEPS):
                h = events[i].histogram_value
                limits = list(h.bucket_limit)
                counts = list(h.bucket)
                if len(limits) < 2:
                    continue
                lo = [h.min] + limits[:-1]
                edges = [_num(min(max(x, h.min), h.max), 4) for x in lo] + [_num(h.max, 4)]
                out.setdefault(name, []).append(
                    {"step": int(events[i].step), "edges": edges,
                     "counts": [int(c) for c in counts]})
    return out


def _spread(n: int, k: int) -> list[int]:
    """Up to ``k`` indices spread evenly over ``range(n)``, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


# ----------------------------------------------------------------------------- page data


def _num(value: Any, digits: int = 3) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return round(v, digits) if math.isfinite(v) else None


def report_data(run_dir: str | os.PathLike) -> dict:
    """Everything the page draws, as one JSON-ready dict."""
    from ._version import __version__

    records = read_history(run_dir)
    root = Path(run_dir)
    root = root.parent if root.is_file() else root
    records.sort(key=lambda r: r["step"])
    order: dict[str, tuple] = {}
    for r in records:
        for row in r["layers"]:
            name = str(row.get("longname"))
            order.setdefault(name, (row.get("layer_id", 0) or 0, len(order)))
    layers = sorted(order, key=lambda n: order[n])
    index = {n: i for i, n in enumerate(layers)}
    alpha, traps = [], []
    for r in records:
        row_alpha: list[float | None] = [None] * len(layers)
        row_traps: list[int | None] | None = [None] * len(layers) if r.get("randomized") \
            else None
        for row in r["layers"]:
            i = index[str(row.get("longname"))]
            if row.get("status", "success") == "success":
                row_alpha[i] = _num(row.get("alpha"))
            if row_traps is not None and row.get("rand_num_spikes") is not None:
                v = _num(row.get("rand_num_spikes"), 0)
                row_traps[i] = None if v is None else int(v)
        alpha.append(row_alpha)
        traps.append(row_traps)
    steps = [int(r["step"]) for r in records]
    epochs = [r.get("epoch") for r in records]
    means = {key: [_num((r.get("summary") or {}).get(key), 4) for r in records]
             for key in ("ww/alpha_mean", "ww/alpha_weighted_mean")}
    notes = []
    try:
        accs = _event_accumulators(root)
    except ImportError:
        accs = []
        notes.append("TensorBoard is not installed: the run's event files were not read.")
    return {
        "title": f"ww_callbacks report: {root.name}",
        "run_dir": str(root.resolve()),
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "steps": steps, "epochs": epochs, "layers": layers,
        "alpha": alpha, "traps": traps, "means": means,
        "esd": esd_data(accs, records, layers),
        "policies": policy_events(accs, records),
        "metrics": run_metrics(root, accs, steps, epochs, means),
        "bands": {"over": OVER_TRAINED_ALPHA, "under": UNDER_TRAINED_ALPHA,
                  "colours": {"over": BAND_COLOURS[OVER], "well": BAND_COLOURS[WELL],
                              "under": BAND_COLOURS[UNDER], "none": BAND_COLOURS[NO_FIT],
                              "trap": TRAP_COLOUR}},
        "notes": notes,
    }


def write_report(run_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Write the HTML report of the run in ``run_dir`` (its log folder, or the history file) to
    ``path`` (default ``RUN_DIR/ww_report.html``); returns the path written.

    Raises :class:`ReportError` (a ``ValueError``) for a missing folder, no / empty history or a
    history written by a newer version."""
    data = report_data(run_dir)
    if path is None:
        root = Path(run_dir)
        path = (root.parent if root.is_file() else root) / DEFAULT_REPORT
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    page = (_PAGE.replace("__CSP__", CSP).replace("__TITLE__", html.escape(data["title"]))
            .replace("__CSS__", _CSS).replace("__DATA__", blob).replace("__JS__", _JS))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


# ----------------------------------------------------------------------------- the page

#: The pages (report, compare) may run their own inline script and style and fetch nothing.
CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="__CSP__">
<title>__TITLE__</title><style>__CSS__</style></head>
<body><header><h1 id="title"></h1><p id="meta"></p></header>
<section id="sec-summary"><h2>Summary</h2><div id="summary"></div></section>
<section id="sec-heatmap"><h2>Alpha per layer and analysis</h2>
<p class="hint">Rows: layers in model order; columns: analyses. Colour: the alpha band
(over-trained &lt; 2, well-trained 2-6, under-trained &gt; 6, grey: no fit). Hover for values.</p>
<div id="heatmap" class="chart"></div></section>
<section id="sec-flow"><h2>Correlation flow</h2>
<p class="hint">Alpha against layer order at one analysis (faint: the first analysis).</p>
<label>analysis <input type="range" id="flow-step" min="0" value="0"> <span id="flow-label">
</span></label><div id="flow" class="chart"></div></section>
<section id="sec-curves"><h2>Alpha over time, per layer</h2><div id="curves"></div></section>
<section id="sec-traps"><h2>Correlation traps</h2><div id="traps" class="chart"></div></section>
<section id="sec-esd"><h2>Empirical spectral densities</h2><div id="esd" class="chart"></div>
</section>
<section id="sec-policies"><h2>Policies</h2><div id="policies"></div></section>
<section id="sec-metrics"><h2>The run's own metrics</h2><div id="metrics"></div></section>
<div id="tip"></div>
<script type="application/json" id="ww-data">__DATA__</script>
<script>__JS__</script></body></html>
"""

_CSS = """body{font-family:system-ui,sans-serif;margin:16px 24px;color:#222;max-width:1200px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd}
.hint,.note{color:#666;font-size:12px}.chart svg{display:block}text{font-size:11px;fill:#333}
#curves{display:flex;flex-wrap:wrap;gap:6px}#curves figure{margin:0}
#curves figcaption{font-size:10px;width:180px;overflow:hidden;white-space:nowrap}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:2px 6px}
#tip{position:fixed;pointer-events:none;background:#fff;border:1px solid #888;padding:2px 6px;
font-size:12px;display:none}"""

_JS = r"""
(function () {
"use strict";
const D = JSON.parse(document.getElementById("ww-data").textContent);
const NS = "http://www.w3.org/2000/svg";
const C = D.bands.colours;
function el(tag, attrs, parent, text) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}
function svg(parent, w, h, id) {
  const s = el("svg", {width: w, height: h, viewBox: "0 0 " + w + " " + h, id: id});
  parent.appendChild(s);
  return s;
}
function band(a) {
  if (a === null || a === undefined) return "none";
  return a < D.bands.over ? "over" : a > D.bands.under ? "under" : "well";
}
function colour(a) { return C[band(a)]; }
function shade(a) {
  if (a === null) return 1;
  if (a < D.bands.over) return 0.55 + 0.45 * Math.min(1, (D.bands.over - a) / 1.0);
  if (a > D.bands.under) return 0.55 + 0.45 * Math.min(1, (a - D.bands.under) / 6.0);
  return 0.45 + 0.55 * (1 - Math.abs(a - 4) / 2);
}
function fmt(v, d) { return v === null || v === undefined ? "-" : Number(v).toFixed(d); }
const tip = document.getElementById("tip");
function showTip(ev, text) {
  tip.style.display = "block"; tip.textContent = text;
  tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px";
}
function hideTip() { tip.style.display = "none"; }
function note(parent, text) {
  const p = document.createElement("p"); p.className = "note"; p.textContent = text;
  parent.appendChild(p);
}
const T = D.steps.length, L = D.layers.length;
let ymax = 8;
for (const row of D.alpha) for (const a of row) if (a !== null && a > ymax) ymax = a;
ymax = Math.min(ymax, 30) * 1.05;

function axisY(s, y, x0, x1, maxv) {
  for (let v = 0; v <= maxv; v += (maxv > 16 ? 4 : 2)) {
    el("text", {x: x0 - 4, y: y(v) + 4, "text-anchor": "end"}, s, String(v));
    el("line", {x1: x0, x2: x1, y1: y(v), y2: y(v), stroke: "#eee"}, s);
  }
}
function bands(s, y, x0, x1, maxv) {
  el("rect", {x: x0, width: x1 - x0, y: y(D.bands.over), height: y(0) - y(D.bands.over),
              fill: C.over, opacity: 0.1}, s);
  if (maxv > D.bands.under)
    el("rect", {x: x0, width: x1 - x0, y: y(maxv), height: y(D.bands.under) - y(maxv),
                fill: C.under, opacity: 0.1}, s);
}

function drawTitle() {
  document.getElementById("title").textContent = D.title;
  document.getElementById("meta").textContent = D.run_dir + " - " + T + " analyses, " + L +
    " layers, steps " + D.steps[0] + " to " + D.steps[T - 1] + " - written " + D.created +
    " by ww_callbacks " + D.version;
  const last = D.alpha[T - 1], counts = {over: 0, well: 0, under: 0, none: 0};
  for (const a of last) counts[band(a)]++;
  const box = document.getElementById("summary");
  note(box, "Last analysis (step " + D.steps[T - 1] + "): ww/alpha_mean " +
    fmt(D.means["ww/alpha_mean"][T - 1], 3) + ", ww/alpha_weighted_mean " +
    fmt(D.means["ww/alpha_weighted_mean"][T - 1], 3) + "; layers over-trained " + counts.over +
    ", well-trained " + counts.well + ", under-trained " + counts.under + ", no fit " +
    counts.none + ".");
  for (const n of D.notes) note(box, n);
}

function drawHeatmap() {
  const box = document.getElementById("heatmap");
  const cw = Math.max(2, Math.min(40, 900 / T)), ch = Math.max(3, Math.min(18, 640 / L));
  const left = 8, topPad = 4, w = left + cw * T + 8, h = topPad + ch * L + 24;
  const s = svg(box, w, h, "heatmap-svg");
  const g = el("g", {}, s);
  for (let t = 0; t < T; t++) {
    const row = D.alpha[t];
    for (let l = 0; l < L; l++) {
      const a = row[l];
      el("rect", {x: (left + t * cw).toFixed(1), y: (topPad + l * ch).toFixed(1),
                  width: cw.toFixed(2), height: ch.toFixed(2), fill: colour(a),
                  "fill-opacity": shade(a).toFixed(2), class: "cell"}, g);
    }
  }
  el("text", {x: left, y: h - 6}, s, "step " + D.steps[0]);
  el("text", {x: w - 8, y: h - 6, "text-anchor": "end"}, s, "step " + D.steps[T - 1]);
  s.addEventListener("mousemove", function (ev) {
    const r = s.getBoundingClientRect();
    const t = Math.floor((ev.clientX - r.left - left) / cw);
    const l = Math.floor((ev.clientY - r.top - topPad) / ch);
    if (t < 0 || t >= T || l < 0 || l >= L) { hideTip(); return; }
    showTip(ev, D.layers[l] + " @ step " + D.steps[t] + ": alpha " + fmt(D.alpha[t][l], 3) +
      " (" + band(D.alpha[t][l]) + ")");
  });
  s.addEventListener("mouseleave", hideTip);
}

function drawFlow() {
  const box = document.getElementById("flow");
  const w = 900, h = 320, x0 = 40, x1 = w - 10, y0 = h - 30, y1 = 10;
  const s = svg(box, w, h, "flow-svg");
  const x = i => x0 + (x1 - x0) * (L > 1 ? i / (L - 1) : 0.5);
  const y = v => y0 - (y0 - y1) * Math.min(v, ymax) / ymax;
  bands(s, y, x0, x1, ymax); axisY(s, y, x0, x1, ymax);
  el("text", {x: (x0 + x1) / 2, y: h - 8, "text-anchor": "middle"}, s, "layer (model order)");
  const first = el("polyline", {fill: "none", stroke: "#bbb", "stroke-width": 1}, s);
  const line = el("polyline", {fill: "none", stroke: "#333", "stroke-width": 1.5,
                               id: "flow-line"}, s);
  const dots = el("g", {}, s);
  const pts = row => row.map((a, i) => a === null ? null : x(i).toFixed(1) + "," +
                                y(a).toFixed(1)).filter(p => p !== null).join(" ");
  first.setAttribute("points", pts(D.alpha[0]));
  const slider = document.getElementById("flow-step"), label = document.getElementById(
    "flow-label");
  slider.max = T - 1;
  function show(t) {
    line.setAttribute("points", pts(D.alpha[t]));
    while (dots.firstChild) dots.removeChild(dots.firstChild);
    D.alpha[t].forEach((a, i) => {
      if (a === null) return;
      const c = el("circle", {cx: x(i), cy: y(a), r: 3, fill: colour(a)}, dots);
      el("title", {}, c, D.layers[i] + ": " + fmt(a, 3));
    });
    label.textContent = "step " + D.steps[t] + (D.epochs[t] === null ? "" : ", epoch " +
      D.epochs[t]) + " (" + (t + 1) + "/" + T + ")";
    s.setAttribute("data-step", D.steps[t]);
  }
  slider.addEventListener("input", () => show(Number(slider.value)));
  slider.value = T - 1;
  show(T - 1);
}

function drawCurves() {
  const box = document.getElementById("curves");
  const w = 180, h = 70, x0 = 4, x1 = w - 4, y0 = h - 4, y1 = 4;
  const s0 = D.steps[0], s1 = D.steps[T - 1];
  const x = st => x0 + (x1 - x0) * (s1 > s0 ? (st - s0) / (s1 - s0) : 0.5);
  const y = v => y0 - (y0 - y1) * Math.min(v, ymax) / ymax;
  D.layers.forEach((name, l) => {
    const fig = document.createElement("figure");
    const cap = document.createElement("figcaption");
    const lastA = D.alpha[T - 1][l];
    cap.textContent = name + " (" + fmt(lastA, 2) + ")"; cap.title = name;
    fig.appendChild(cap); box.appendChild(fig);
    const s = svg(fig, w, h);
    s.setAttribute("class", "curve");
    bands(s, y, x0, x1, ymax);
    const pts = [];
    for (let t = 0; t < T; t++) { const a = D.alpha[t][l];
      if (a !== null) pts.push(x(D.steps[t]).toFixed(1) + "," + y(a).toFixed(1)); }
    el("polyline", {points: pts.join(" "), fill: "none", stroke: colour(lastA),
                    "stroke-width": 1.5, class: "curve-line"}, s);
    el("rect", {x: x0, y: y1, width: x1 - x0, height: y0 - y1, fill: "none", stroke: "#ccc"}, s);
  });
}

function drawTraps() {
  const box = document.getElementById("traps");
  const rand = [];
  D.traps.forEach((row, t) => { if (row !== null) rand.push(t); });
  if (!rand.length) { note(box, "No analysis of this run was randomised, so traps were not " +
    "looked for (the watcher's traps_every)."); return; }
  let total = 0;
  const ch = Math.max(3, Math.min(14, 480 / L)), cw = Math.max(6, Math.min(30, 860 / rand.length));
  const w = Math.max(520, 40 + cw * rand.length + 10), h = ch * L + 30;
  const s = svg(box, w, h, "traps-svg");
  rand.forEach((t, k) => {
    D.traps[t].forEach((n, l) => {
      if (n === null || n <= 0) return;
      total += n;
      const c = el("circle", {cx: 40 + (k + 0.5) * cw, cy: (l + 0.5) * ch,
        r: Math.min(ch, cw) / 2 * Math.min(1, 0.4 + 0.2 * Math.sqrt(n)), fill: C.trap,
        class: "trap"}, s);
      el("title", {}, c, D.layers[l] + " @ step " + D.steps[t] + ": " + n + " trap(s)");
    });
  });
  el("text", {x: 40, y: h - 8}, s, "randomised analyses: step " + D.steps[rand[0]] + " to " +
     D.steps[rand[rand.length - 1]]);
  note(box, rand.length + " randomised analyses, " + total + " trap(s) found in all (dots: " +
       "layer x analysis, larger = more traps).");
}

function drawEsd() {
  const box = document.getElementById("esd");
  const names = Object.keys(D.esd);
  if (!names.length) { note(box, "This run kept no spectra (neither in its history nor as " +
    "TensorBoard ww_esd/ histograms)."); return; }
  const sel = document.createElement("select"); sel.id = "esd-layer";
  for (const n of names) { const o = document.createElement("option"); o.textContent = n;
    sel.appendChild(o); }
  box.appendChild(sel);
  const w = 900, h = 260, x0 = 40, x1 = w - 10, y0 = h - 30, y1 = 10;
  const s = svg(box, w, h, "esd-svg");
  function show() {
    while (s.firstChild) s.removeChild(s.firstChild);
    const hs = D.esd[sel.value];
    let lo = Infinity, hi = -Infinity, cmax = 1;
    for (const e of hs) { lo = Math.min(lo, e.edges[0]); hi = Math.max(hi, e.edges[
      e.edges.length - 1]); for (const c of e.counts) cmax = Math.max(cmax, c); }
    const x = v => x0 + (x1 - x0) * (hi > lo ? (v - lo) / (hi - lo) : 0.5);
    const y = c => y0 - (y0 - y1) * Math.log10(1 + c) / Math.log10(1 + cmax);
    hs.forEach((e, k) => {
      const grey = Math.round(200 - 200 * (hs.length > 1 ? k / (hs.length - 1) : 1));
      const stroke = k === hs.length - 1 ? "#000" : "rgb(" + grey + "," + grey + "," + grey + ")";
      const pts = [];
      e.counts.forEach((c, i) => { pts.push(x(e.edges[i]).toFixed(1) + "," + y(c).toFixed(1));
        pts.push(x(e.edges[i + 1]).toFixed(1) + "," + y(c).toFixed(1)); });
      const p = el("polyline", {points: pts.join(" "), fill: "none", stroke: stroke,
                                class: "esd-line"}, s);
      el("title", {}, p, "step " + e.step);
    });
    el("text", {x: (x0 + x1) / 2, y: h - 8, "text-anchor": "middle"}, s,
       "log10 eigenvalue (histogram, log counts); darker = later: steps " +
       hs.map(e => e.step).join(", "));
    el("line", {x1: x0, x2: x1, y1: y0, y2: y0, stroke: "#333"}, s);
    for (let k = 0; k <= 4; k++) { const v = lo + (hi - lo) * k / 4;
      el("text", {x: x(v), y: y0 + 12, "text-anchor": "middle"}, s, v.toFixed(2)); }
  }
  sel.addEventListener("change", show);
  show();
}

function drawPolicies() {
  const box = document.getElementById("policies");
  if (!D.policies.length) { note(box, "No policy action found (policies log ww_lr_scale/, " +
    "ww_traps_removed/ and ww/stop_reason to the run's TensorBoard events)."); return; }
  const table = document.createElement("table"); table.id = "policy-table";
  table.innerHTML = "<tr><th>step</th><th>what</th><th>from</th><th>to</th></tr>";
  for (const e of D.policies) {
    const tr = document.createElement("tr");
    for (const v of [e.step, e.tag, e.from === null ? "" : e.from, e.value]) {
      const td = document.createElement("td"); td.textContent = String(v); tr.appendChild(td); }
    table.appendChild(tr);
  }
  box.appendChild(table);
}

function drawMetrics() {
  const box = document.getElementById("metrics");
  const w = 900, h = 240, x0 = 40, x1 = w - 60, y0 = h - 30, y1 = 10;
  const s = svg(box, w, h, "means-svg");
  const s0 = D.steps[0], s1 = D.steps[T - 1];
  const x = st => x0 + (x1 - x0) * (s1 > s0 ? (st - s0) / (s1 - s0) : 0.5);
  const series = [["ww/alpha_mean", "#000"], ["ww/alpha_weighted_mean", "#E69F00"]];
  let lo = Infinity, hi = -Infinity;
  for (const [k] of series) for (const v of D.means[k]) if (v !== null) {
    lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (!(hi > lo)) { lo -= 1; hi += 1; }
  const y = v => y0 - (y0 - y1) * (v - lo) / (hi - lo);
  series.forEach(([k, c], i) => {
    const pts = [];
    D.means[k].forEach((v, t) => { if (v !== null) pts.push(x(D.steps[t]).toFixed(1) + "," +
      y(v).toFixed(1)); });
    el("polyline", {points: pts.join(" "), fill: "none", stroke: c, "stroke-width": 1.5,
                    class: "mean-line"}, s);
    el("text", {x: x0 + 4, y: y1 + 12 + 13 * i, fill: c}, s, k + " (" + fmt(lo, 2) + " to " +
       fmt(hi, 2) + ")");
  });
  for (const e of D.policies) {
    const l = el("line", {x1: x(e.step), x2: x(e.step), y1: y1, y2: y0, stroke: C.trap,
                          "stroke-dasharray": "3,3"}, s);
    el("title", {}, l, "step " + e.step + ": " + e.tag + " -> " + e.value);
  }
  const colours = ["#0072B2", "#009E73", "#D55E00", "#CC79A7", "#56B4E9"];
  D.metrics.forEach((m, i) => {
    let a = Infinity, b = -Infinity;
    for (const v of m.y) if (v !== null) { a = Math.min(a, v); b = Math.max(b, v); }
    if (!(b > a)) { a -= 1; b += 1; }
    const xs = m.by === "epoch" ? m.x.map(e => { const t = D.epochs.lastIndexOf(e);
      return t < 0 ? null : D.steps[t]; }) : m.x;
    const pts = [];
    m.y.forEach((v, k) => { if (v !== null && xs[k] !== null) pts.push(x(xs[k]).toFixed(1) +
      "," + (y0 - (y0 - y1) * (v - a) / (b - a)).toFixed(1)); });
    const c = colours[i % colours.length];
    el("polyline", {points: pts.join(" "), fill: "none", stroke: c, "stroke-dasharray": "5,2",
                    class: "metric-line"}, s);
    note(box, m.name + " (" + m.source + ", dashed, own scale " + fmt(a, 3) + " to " +
      fmt(b, 3) + "): Spearman rank correlation with ww/alpha_mean " + fmt(m.rho_alpha, 3) +
      ", with ww/alpha_weighted_mean " + fmt(m.rho_weighted, 3) + " (n = " + m.n +
      " analyses paired with a " + m.name + " value)");
  });
  if (!D.metrics.length) note(box, "No validation metric found in this folder (TensorBoard " +
    "events, Lightning metrics.csv, Hugging Face trainer_state.json, Keras CSVLogger).");
}

const parts = [["title", drawTitle], ["heatmap", drawHeatmap], ["flow", drawFlow],
               ["curves", drawCurves], ["traps", drawTraps], ["esd", drawEsd],
               ["policies", drawPolicies], ["metrics", drawMetrics]];
const drawn = [];
for (const [name, fn] of parts) { fn(); drawn.push(name); }
document.body.setAttribute("data-drawn", drawn.join(" "));
})();
"""

__all__ = ["HISTORY_FORMAT", "ReportError", "find_history", "read_history", "report_data",
           "spearman", "write_report"]
