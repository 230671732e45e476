"""The local record of every analysis: a JSON-lines file in the run's log directory.

The worker appends each result here *before* any sink (TensorBoard, W&B, a logger) sees it, so a
failing sink loses nothing. One line per analysis: step, epoch, timings, the model summary and the
per-layer rows. :func:`load_history` reads it back as a DataFrame.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .results import AnalysisResult

HISTORY_FILE = "ww_history.jsonl"


def _plain(value: Any) -> Any:
    """JSON-ready Python scalars from numpy/pandas ones."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value  # NaN and inf are written as JSON's NaN / Infinity, which json reads back
    return str(value)


def result_record(result: AnalysisResult) -> dict:
    """The JSON-ready record of one analysis."""
    layers = [{k: _plain(v) for k, v in row.items()}
              for row in result.details.to_dict(orient="records")]
    return {
        "format": 1,  # bumped on incompatible changes; readers refuse newer (report.py)
        "step": int(result.step),
        "epoch": None if result.epoch is None else int(result.epoch),
        "wall_time": float(result.wall_time),
        "duration_s": float(result.duration_s),
        "randomized": bool(result.randomized),
        "summary": {k: _plain(v) for k, v in result.summary.items()},
        "layers": layers,
    }


class HistoryWriter:
    """Appends analyses to ``path`` (created with its folder on first write); thread-safe."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, result: AnalysisResult) -> None:
        """Write one analysis and flush it to the operating system."""
        line = json.dumps(result_record(result), allow_nan=True)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    def truncate_after(self, step: int) -> int:
        """Drop analyses of steps after ``step`` (a resumed run redoes them); returns how many."""
        with self._lock:
            if not self.path.exists():
                return 0
            lines = self.path.read_text(encoding="utf-8").splitlines()
            kept = [ln for ln in lines if ln.strip() and json.loads(ln)["step"] <= step]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
            os.replace(tmp, self.path)
            return len(lines) - len(kept)


def _history_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path / HISTORY_FILE if path.is_dir() else path


def read_records(path: str | os.PathLike) -> list[dict]:
    """All analysis records of a history file (or of the folder holding ``ww_history.jsonl``);
    a torn last line (a crash mid-write) is ignored."""
    records = []
    with open(_history_path(path), encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def load_history(path: str | os.PathLike, *, level: str = "layer") -> pd.DataFrame:
    """Read a history back: ``level="layer"`` gives one row per layer per analysis (columns
    ``step``, ``epoch``, ``wall_time`` then the ``analyze`` columns); ``level="model"`` one row
    per analysis with the ``ww/`` summary scalars."""
    records = read_records(path)
    if level == "model":
        rows = [{"step": r["step"], "epoch": r["epoch"], "wall_time": r["wall_time"],
                 "duration_s": r["duration_s"], "randomized": r["randomized"], **r["summary"]}
                for r in records]
        return pd.DataFrame(rows)
    if level != "layer":
        raise ValueError(f"level must be 'layer' or 'model', not {level!r}")
    rows = [{"step": r["step"], "epoch": r["epoch"], "wall_time": r["wall_time"], **layer}
            for r in records for layer in r["layers"]]
    return pd.DataFrame(rows)
