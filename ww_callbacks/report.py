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

Which run: a history holding several runs (a rerun into the same folder) is drawn one run at a
time, the newest by default (``--run RUN_ID``), and the page says so. Which files: only the known
layouts of the supported hosts, found without following symlinks (:mod:`ww_callbacks.run_folder`);
the page lists them, relative to the run folder (the absolute path only with ``--embed-path``).

Charting approach: small inline SVG drawn by ~200 lines of vanilla JavaScript
(``ww_callbacks/assets/report.js``, with ``report.html`` and ``report.css``: package data) from
one inline JSON blob, put together by :mod:`ww_callbacks.page` (script-safe JSON, one-pass
template, a CSP allowing the page's own script and style by hash).
Why not a charting library inlined: Plotly's minified bundle alone is ~3.5 MB and Vega +
Vega-Lite ~1 MB, over the 1.5 MB budget or most of it before any data; the charts needed here are
a heatmap, polylines and bars, which SVG draws directly. Data is rounded to 3 decimals, so 100
layers x 200 analyses is ~0.2 MB of JSON and the page is built in well under a second
(measured in ``bench/report_size.py``). Nothing is fetched: no CDN, no fonts, no images.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .bands import BAND_COLOURS, NO_FIT, OVER, TRAP_COLOUR, UNDER, WELL
from .history_reader import HISTORY_FILE, HISTORY_FORMAT, HistoryError, read_history_file
from .page import asset, build_page
from .powerlaw import OVER_TRAINED_ALPHA, UNDER_TRAINED_ALPHA
from .run_folder import MAX_ENTRIES, MAX_METRICS_CSV, RunFiles, run_files

DEFAULT_REPORT = "ww_report.html"
#: Most analyses and spectra steps kept per ESD layer (the page stays small).
ESD_STEPS = 6
ESD_LAYERS = 24
POLICY_PREFIXES = ("ww_lr_scale/", "ww_traps_removed/", "ww/stop_reason")


class ReportError(ValueError):
    """A run folder or history that cannot be reported on; one line saying what was expected."""


# ----------------------------------------------------------------------------- history


def find_history(run_dir: str | os.PathLike) -> Path:
    """The history file of a run: ``RUN_DIR/ww_history.jsonl``, the only one below RUN_DIR (a
    bounded walk that follows no symlink: :mod:`ww_callbacks.run_folder`), or ``RUN_DIR``
    itself when it is a file."""
    path = Path(run_dir)
    if not path.exists():
        raise ReportError(f"{path}: no such file or folder (expected a run's log folder holding "
                          f"{HISTORY_FILE})")
    if not path.is_dir():
        return path  # a file (the reader refuses what is not a regular file)
    if (path / HISTORY_FILE).is_file():
        return path / HISTORY_FILE
    found = run_files(path).histories
    if len(found) == 1:
        return found[0]
    if not found:
        raise ReportError(f"{path}: no {HISTORY_FILE} in this folder or below (expected the "
                          "log folder of a run watched by ww_callbacks)")
    raise ReportError(f"{path}: {len(found)} histories below it ({found[0].parent}, "
                      f"{found[1].parent}, ...): name one run's folder")


def read_run(path: str | os.PathLike,
             run: str | list[str] | None = None) -> tuple[list[dict], list[str]]:
    """The analysis records of one run of a history (folder or file): the newest run, or the
    one whose writer has run id ``run`` (a unique prefix will do; a list: the first of them this
    history holds, else the newest); and the notes the page shows (several runs in the file,
    lines skipped). Raises :class:`ReportError` when no record can be used: an empty history,
    one that is not a ww_callbacks history, one written by a newer version, an unknown
    ``run``."""
    file = find_history(path)
    try:
        read = read_history_file(file)
    except HistoryError as err:
        raise ReportError(str(err)) from None
    if not read.records:
        if read.newer:
            reason = next(p for p in read.problems if "history format" in p)
            raise ReportError(f"{file}: written by a newer ww_callbacks ({reason})")
        if read.skipped:
            raise ReportError(f"{file}: no readable analysis record ({read.skipped} line(s) "
                              f"skipped; first: {read.problems[0]})")
        if read.other:
            raise ReportError(f"{file}: not a ww_callbacks history (no line is an analysis "
                              "record with 'step' and 'layers')")
        raise ReportError(f"{file}: the history is empty (no analysis recorded yet)")
    runs = read.runs()
    if isinstance(run, list):
        run = next((r for r in run if read.select(r) is not None), None)
    chosen = read.select(run)
    if chosen is None:
        raise ReportError(f"{file}: no run {run!r} in this history (its runs: "
                          f"{'; '.join(r.describe() for r in runs)})")
    notes = []
    if len(runs) > 1:
        notes.append(f"This history holds {len(runs)} runs ({'; '.join(r.describe() for r in runs)}"
                     f"); shown: run {chosen.run_id or '(no writer)'}"
                     f"{' (the newest)' if chosen.run_id == runs[-1].run_id else ''}. Choose "
                     "one with --run RUN_ID.")
    if read.summary():
        notes.append(read.summary() + ".")
    return sorted(chosen.records, key=lambda r: r["step"]), notes


def read_history(path: str | os.PathLike, run: str | None = None) -> list[dict]:
    """The analysis records of one run of a history (:func:`read_run` without its notes)."""
    return read_run(path, run)[0]


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


def _event_accumulators(files: RunFiles) -> list[Any]:
    if not files.event_folders:
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accs = []
    for folder in files.event_folders:
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
        columns = [str(c) for c in pd.read_csv(file, nrows=0).columns]
        if file.stat().st_size > MAX_METRICS_CSV or not any(map(_is_validation, columns)):
            return {}  # a data set or an unrelated table, not a metrics log
        if file.name != "metrics.csv" and columns[:1] != ["epoch"]:
            return {}  # not a Keras CSVLogger file (its first column is the epoch)
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


def run_metrics(files: RunFiles, accs: list[Any], steps: list[int], epochs: list,
                means: dict[str, list[float]]) -> list[dict]:
    """The run's validation metrics with their rank correlation to the ww means."""
    found: dict[str, dict] = {}
    for acc in accs:
        for tag, points in _tb_scalars(acc).items():
            if _is_validation(tag) and points:
                found.setdefault(f"{tag}", {"source": "TensorBoard events", "by": "step",
                                            "x": [p[0] for p in points],
                                            "y": [p[1] for p in points]})
    for file in files.csv_files:
        for name, series in _csv_metrics(file).items():
            found.setdefault(name, series)
    # every checkpoint-N/ of a Trainer holds the log so far: the longest is the whole run's
    for file in files.trainer_states:
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


def report_data(run_dir: str | os.PathLike, *, run: str | None = None,
                embed_path: bool = False) -> dict:
    """Everything the page draws, as one JSON-ready dict (the one place the report's data is
    built): one run of the history (the newest, or ``run``), the files read (relative to the
    run folder), the run folder's name (its absolute path only with ``embed_path``)."""
    from ._version import __version__

    records, notes = read_run(run_dir, run)
    history = find_history(run_dir)
    root = Path(run_dir)
    root = root.parent if root.is_file() else root
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
    files = run_files(root)
    if files.truncated:
        notes.append(f"The run folder holds more than {MAX_ENTRIES} entries: the files after "
                     "those were not looked at.")
    try:
        accs = _event_accumulators(files)
    except ImportError:
        accs = []
        files.event_folders = []
        notes.append("TensorBoard is not installed: the run's event files were not read.")
    metrics = run_metrics(files, accs, steps, epochs, means)
    sources = [files.relative(history)]
    sources += [f"{files.relative(folder)}/{EVENTS_GLOB}" for folder in files.event_folders]
    sources += [files.relative(f) for f in files.csv_files + files.trainer_states]
    return {
        "title": f"ww_callbacks report: {root.resolve().name}",
        "run_dir": str(root.resolve()) if embed_path else root.resolve().name,
        "sources": sources,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "steps": steps, "epochs": epochs, "layers": layers,
        "alpha": alpha, "traps": traps, "means": means,
        "esd": esd_data(accs, records, layers),
        "policies": policy_events(accs, records),
        "metrics": metrics,
        "bands": {"over": OVER_TRAINED_ALPHA, "under": UNDER_TRAINED_ALPHA,
                  "colours": {"over": BAND_COLOURS[OVER], "well": BAND_COLOURS[WELL],
                              "under": BAND_COLOURS[UNDER], "none": BAND_COLOURS[NO_FIT],
                              "trap": TRAP_COLOUR}},
        "notes": notes,
    }


EVENTS_GLOB = "events.out.tfevents.*"


def report_page(data: dict) -> str:
    """The HTML page drawing ``data`` (:func:`report_data`)."""
    return build_page("report.html", title=data["title"], css=asset("report.css"), data=data,
                      js=asset("report.js"))


def write_report(run_dir: str | os.PathLike, path: str | os.PathLike | None = None, *,
                 run: str | None = None, embed_path: bool = False) -> Path:
    """Write the HTML report of the run in ``run_dir`` (its log folder, or the history file) to
    ``path`` (default ``RUN_DIR/ww_report.html``); returns the path written. ``run``: which run
    of a history holding several (a writer's run id; default the newest); ``embed_path``: show
    the run folder's absolute path on the page (default: its name only).

    Raises :class:`ReportError` (a ``ValueError``) for a missing folder, no / empty history, a
    history written by a newer version or an unknown ``run``."""
    data = report_data(run_dir, run=run, embed_path=embed_path)
    if path is None:
        root = Path(run_dir)
        path = (root.parent if root.is_file() else root) / DEFAULT_REPORT
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report_page(data), encoding="utf-8")
    return out


__all__ = ["HISTORY_FORMAT", "ReportError", "find_history", "read_history", "read_run",
           "report_data", "spearman", "write_report"]
