"""One self-contained HTML report of a watched training run: ``ww-callbacks report RUN_DIR`` and
:func:`write_report`.

The report is the shared browser views (:mod:`ww_callbacks.views`: the same ES modules the
TensorBoard tab loads, linked by ``RunViews``) over one file, the run's history: the page embeds
the same data the tab is served (:func:`ww_callbacks.views.data.slim_form` of the chosen run's
analysis records and its policies' ``actions`` lines, and the compact ESDs stored in
``ww_spectra.jsonl``), and the views draw it: the alpha heatmap, the correlation flow with its
step slider, each layer's alpha over the steps, the ESD of a chosen layer and step with its fit,
the alerts and the policies' actions. Older histories without actions lines or stored spectra
say none were stored. Report-only extras: the summary (the last analysis' means and bands; the
run's distinct correlation traps: each layer counted at its largest number of traps, summed
over layers; the layers that had traps) and the run's validation metrics (``val*``/``eval*``
losses and accuracies from the run's TensorBoard events, Lightning ``metrics.csv``, Hugging Face
``trainer_state.json`` or Keras ``CSVLogger`` file) with their Spearman rank correlation with
``ww/alpha_mean`` and ``ww/alpha_weighted_mean``, computed only from :data:`MIN_PAIRS` or more
paired points and shown with their number.

Which run: a history holding several runs (a rerun into the same folder) is drawn one run at a
time, the newest by default (``--run RUN_ID``), and the page says so. Which files: only the known
layouts of the supported hosts, found without following symlinks (:mod:`ww_callbacks.run_folder`);
the page lists them, relative to the run folder (the absolute path only with ``--embed-path``).

The page: ``ww_callbacks/assets/report.{html,css,js}`` (``report.js`` only glues the views to the
data and draws the report-only parts), the views' modules inlined with it into the one page
script (:func:`ww_callbacks.views.page_script`: ``file://`` pages cannot load ES modules from
disk), put together by :mod:`ww_callbacks.page` (script-safe JSON, one-pass template, a CSP
allowing the page's own script and style by hash). Nothing is fetched: no CDN, no fonts, no
images. Alphas are rounded to 3 decimals, so 100 layers x 200 analyses make a page of about
0.35 MB, written in under 1 s (``tests/test_report.py``'s 100 x 200 history).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .bands import BAND_COLOURS, NO_FIT, OVER, TRAP_COLOUR, UNDER, WELL
from .esd import SPECTRA_FILE
from .history import read_spectra
from .history_reader import (
    HISTORY_FILE,
    HISTORY_FORMAT,
    HistoryError,
    HistoryRead,
    Run,
    read_history_file,
    writer_of,
)
from .page import asset, build_page
from .powerlaw import OVER_TRAINED_ALPHA, UNDER_TRAINED_ALPHA
from .run_folder import MAX_ENTRIES, MAX_METRICS_CSV, RunFiles, run_files
from .views import asset as views_asset
from .views import page_script
from .views.data import finite, slim_form, spectra_record

DEFAULT_REPORT = "ww_report.html"
#: Most stored layer ESDs put on the page (about 600 B each: the page stays small); beyond
#: that the stored analyses are thinned evenly, the first and last kept.
MAX_PAGE_ESDS = 800
#: Fewest paired points from which a rank correlation is shown.
MIN_PAIRS = 5
#: The page's own script (``assets/report.js``): it imports the views (:mod:`ww_callbacks.views`)
#: it uses, bundled with it into the page's one script.
PAGE_SCRIPT = "report.js"


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


def _read_chosen(path: str | os.PathLike, run: str | list[str] | None
                 ) -> tuple[Path, HistoryRead, Run, list[str]]:
    """The history file, what the reader found in it, the chosen run and the page's notes
    (see :func:`read_run`)."""
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
    return file, read, chosen, notes


def read_run(path: str | os.PathLike,
             run: str | list[str] | None = None) -> tuple[list[dict], list[str]]:
    """The analysis records of one run of a history (folder or file): the newest run, or the
    one whose writer has run id ``run`` (a unique prefix will do; a list: the first of them this
    history holds, else the newest); and the notes the page shows (several runs in the file,
    lines skipped). Raises :class:`ReportError` when no record can be used: an empty history,
    one that is not a ww_callbacks history, one written by a newer version, an unknown
    ``run``."""
    _, _, chosen, notes = _read_chosen(path, run)
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


#: The first word of a validation metric's name (``val_loss``, ``eval/accuracy``, ...).
VALIDATION_PREFIXES = ("val", "valid", "validation", "eval", "evaluation")
#: Words of which a validation metric's name must hold one: losses, accuracies, errors and
#: the like; never a runtime, a throughput (``samples_per_second``), a step or an epoch count.
METRIC_WORDS = ("loss", "acc", "accuracy", "err", "error", "perplexity", "ppl", "f1", "auc",
                "auroc", "mae", "mse", "rmse", "nll", "precision", "recall", "top1", "top5",
                "bleu", "iou", "wer", "cer")


def is_validation_metric(name: str) -> bool:
    """Is ``name`` a validation metric a user would mean: a ``val*``/``eval*`` loss, accuracy or
    error (``val_loss``, ``val_accuracy``, ``eval_loss``, ``eval/accuracy``), not a runtime, a
    throughput, a step or an epoch (``eval_runtime``, ``eval/samples_per_second``)."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    if len(words) < 2 or words[0] not in VALIDATION_PREFIXES:
        return False
    return any(w in METRIC_WORDS or w.startswith(("loss", "acc")) for w in words[1:])


def _metric_order(name: str) -> tuple:
    """Losses first, then the rest, by name (the one a reader means first)."""
    return ("loss" not in name.lower(), name.lower())


def _event_accumulators(files: RunFiles) -> list[Any]:
    if not files.event_folders:
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accs = []
    for folder in files.event_folders:
        # only the scalars are read (the ESDs and the policies' actions come from the history)
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0,
                                                           "histograms": 1, "images": 1})
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
        if file.stat().st_size > MAX_METRICS_CSV or not any(map(is_validation_metric, columns)):
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
        if col in ("step", "epoch") or not is_validation_metric(col):
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
            if is_validation_metric(key) and isinstance(value, (int, float)) and \
                    not isinstance(value, bool):
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
    out: dict[str, Any] = {"n": int(len(pairs)), "min_pairs": MIN_PAIRS}
    for key, column in (("rho_alpha", "ww/alpha_mean"),
                        ("rho_weighted", "ww/alpha_weighted_mean")):
        enough = int(pairs[column].notna().sum()) >= MIN_PAIRS if len(pairs) else False
        out[key] = _num(spearman(pairs["y"], pairs[column]), 4) if enough else None
    return out


def run_metrics(files: RunFiles, accs: list[Any], steps: list[int], epochs: list,
                means: dict[str, list[float]]) -> list[dict]:
    """The run's validation metrics with their rank correlation to the ww means."""
    found: dict[str, dict] = {}
    for acc in accs:
        for tag, points in _tb_scalars(acc).items():
            if is_validation_metric(tag) and points:
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
    for name, series in sorted(found.items(), key=lambda item: _metric_order(item[0])):
        entry = {"name": name, **series, "y": [_num(v, 5) for v in series["y"]]}
        entry.update(_align(series, steps, epochs, means))
        out.append(entry)
    return out


# ----------------------------------------------------------------------------- spectra


def page_spectra(stored: list[dict], steps: set[int], layers: int) -> tuple[list[dict], str]:
    """The stored ESDs (sidecar records of the run, ``{"step", "layers"}``) put on the page:
    those of analyses the page shows, at most :data:`MAX_PAGE_ESDS` layer ESDs (stored
    analyses thinned evenly, the first and last kept); and a note saying what was kept."""
    records = [r for r in stored if isinstance(r.get("step"), int) and r["step"] in steps]
    if not records:
        return [], ("No ESD stored for this run (its history has no ww_spectra.jsonl: an older "
                    "version, keep_spectra=False, or no analysis kept its eigenvalues).")
    per = max(1, max(len(r["layers"]) for r in records) or layers)
    keep = max(2, MAX_PAGE_ESDS // per)
    picked = [records[i] for i in _spread(len(records), keep)]
    note = f"{len(records)} analyses with stored ESDs"
    if len(picked) < len(records):
        note += f", {len(picked)} of them on this page (evenly spread, first and last kept)"
    return picked, note + "."


def _spread(n: int, k: int) -> list[int]:
    """Up to ``k`` indices spread evenly over ``range(n)``, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def trap_summary(table: dict) -> dict | None:
    """The run's correlation traps, from the slim table: ``distinct`` (each layer counted at
    its largest number of traps over the randomised analyses, summed over layers; a trap seen
    at 361 analyses counts once), ``latest`` (summed over layers at the last randomised
    analysis, ``latest_step``), ``layers`` (layers that ever had one) and ``randomized`` (the
    analyses where traps were counted); None when no analysis counted traps."""
    peak: dict[int, int] = {}
    randomized, latest, latest_step = 0, 0, None
    for record in table["records"]:
        counted = [(i, t) for i, t in enumerate(record["t"]) if t is not None]
        if not counted:
            continue
        randomized += 1
        latest, latest_step = sum(t for _, t in counted), record["step"]
        for i, t in counted:
            peak[i] = max(peak.get(i, 0), t)
    if not randomized:
        return None
    return {"distinct": sum(peak.values()), "latest": latest, "latest_step": latest_step,
            "layers": sum(1 for t in peak.values() if t > 0), "randomized": randomized}


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

    history, read, chosen, notes = _read_chosen(run_dir, run)
    records = sorted(chosen.records, key=lambda r: r["step"])
    root = Path(run_dir)
    root = root.parent if root.is_file() else root
    writers = set(chosen.writers)
    actions = [a for a in read.actions if writer_of(a) in writers]
    # the same data the TensorBoard tab is served: the slim form of the run's records
    table = slim_form(records, actions, digits=3)
    steps = [int(r["step"]) for r in records]
    epochs = [r.get("epoch") for r in records]
    means = {key: [_num((r.get("summary") or {}).get(key), 4) for r in records]
             for key in ("ww/alpha_mean", "ww/alpha_weighted_mean")}
    stored: list[dict | None] = []
    sidecar = history.with_name(SPECTRA_FILE)
    if sidecar.is_symlink():  # a planted link is not followed
        notes.append(f"{SPECTRA_FILE} is a symbolic link: not read.")
    elif sidecar.is_file():
        try:
            stored = [spectra_record(r) for r in read_spectra(history)
                      if writer_of(r) in writers]
        except (OSError, ValueError) as err:  # an unreadable sidecar: said, the rest drawn
            notes.append(f"The stored ESDs could not be read: {err}")
    spectra, spectra_note = page_spectra([r for r in stored if r is not None], set(steps),
                                         len(table["layers"]))
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
    if sidecar.is_file() and not sidecar.is_symlink():
        sources.append(files.relative(sidecar))
    sources += [f"{files.relative(folder)}/{EVENTS_GLOB}" for folder in files.event_folders]
    sources += [files.relative(f) for f in files.csv_files + files.trainer_states]
    return {
        "title": f"ww_callbacks report: {root.resolve().name}",
        "run_dir": str(root.resolve()) if embed_path else root.resolve().name,
        "sources": sources,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "table": table,
        "spectra": {"records": spectra, "note": spectra_note},
        "means": means,
        "traps": trap_summary(table),
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
    data = finite(data)  # NaN in a hand-made actions or sidecar line: null, not a crash
    return build_page("report.html", title=data["title"],
                      css=views_asset("views.css").decode("utf-8") + asset("report.css"),
                      data=data, js=page_script(asset(PAGE_SCRIPT)))


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
