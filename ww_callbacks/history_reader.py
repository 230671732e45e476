"""The one reader of ``ww_history.jsonl``, used by every consumer (``load_history``, the
watcher's resume, ``report``, ``compare``, the command line).

A history is written by processes that can be killed mid-line, by disks that fill up and
recover, by a rerun into the same folder and, for a shared log folder, by someone else. So the
reader never raises on what it finds inside the file: every line is either an analysis record
(kept), a JSON object that is not an analysis (passed over: metadata a later version may add) or
a problem (skipped and counted, with a one-line reason): a torn or non-JSON line, a record whose
fields have the wrong type (a NaN, infinite or string step, a string ``format``, ...), a record
of a newer history format. Bytes that are not UTF-8 are replaced (and said). Its cost is linear in
the file's size (one ``json.loads`` per line; nesting too deep for the parser is a problem, not a
``RecursionError``).

Records keep their ``writer`` (run id, pid, host). :meth:`HistoryRead.runs` groups them into
runs: a writer whose first step comes after the last step so far continues the run (a resume),
one that starts at or before it (a restart without resume, a second watcher) begins a new run.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HISTORY_FILE = "ww_history.jsonl"
#: The newest history format this reader understands (a record without ``format`` is 1).
HISTORY_FORMAT = 1
#: How many problem lines are kept word for word (the rest are counted).
MAX_PROBLEMS = 20
#: Steps are TensorBoard's int64 steps.
MAX_STEP = 2**63 - 1

_NUMBER_FIELDS = ("wall_time", "duration_s", "min_evals_for_trust")
_LAYER_NUMBERS = ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "N", "M",
                  "num_evals", "num_traps", "rand_num_spikes", "layer_id", "xmin", "xmax", "D",
                  "sigma", "stable_rank", "mp_softrank", "spectral_norm", "num_spikes")
_LAYER_TEXTS = ("longname", "name", "layer_type", "status", "warning")


class HistoryError(ValueError):
    """A history that cannot be read at all (missing, not a regular file, unreadable)."""


@dataclass
class Run:
    """The records of one run: one writer, or several when each resumed the last."""

    run_id: str
    writers: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    last_step: int = -1

    def describe(self) -> str:
        """``run ID: N analyses, steps A-B``."""
        steps = [r["step"] for r in self.records]
        return (f"run {self.run_id or '(no writer)'}: {len(steps)} analyses, steps "
                f"{min(steps)}-{max(steps)}")


@dataclass
class HistoryRead:
    """What :func:`read_history_file` found: the analysis records (file order) and the lines it
    could not use."""

    path: Path
    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped: int = 0
    newer: int = 0
    other: int = 0
    replaced: int = 0
    #: the policies' ``"kind": "actions"`` lines (file order; every run's)
    actions: list[dict] = field(default_factory=list)

    def _problem(self, number: int, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"line {number}: {text}")

    def summary(self) -> str:
        """One line saying what was skipped or replaced, or ``""`` when nothing was."""
        if not self.skipped and not self.replaced:
            return ""
        parts = []
        if self.skipped:
            parts.append(f"{self.skipped} line(s) skipped")
        if self.replaced:
            parts.append(f"{self.replaced} line(s) with bytes that are not UTF-8 replaced")
        first = f" (first: {self.problems[0]})" if self.problems else ""
        return f"{self.path.name}: {', '.join(parts)}{first}"

    def runs(self) -> list[Run]:
        """The records grouped into runs, oldest first (see the module's docstring)."""
        runs: list[Run] = []
        by_writer: dict[str, Run] = {}
        for record in self.records:
            wid = writer_of(record)
            run = by_writer.get(wid)
            if run is None:
                if runs and record["step"] > runs[-1].last_step and wid not in by_writer:
                    run = runs[-1]  # starts after the last step so far: a resume
                else:
                    run = Run(run_id=wid)
                    runs.append(run)
                run.writers.append(wid)
                by_writer[wid] = run
            run.records.append(record)
            run.last_step = max(run.last_step, record["step"])
        return runs

    def select(self, run_id: str | None = None) -> Run | None:
        """The run holding writer ``run_id`` (a unique prefix is enough), or the newest; None
        when there is no record or no such run."""
        runs = self.runs()
        if not runs:
            return None
        if run_id is None:
            return runs[-1]
        exact = [r for r in runs if run_id in r.writers]
        if exact:
            return exact[0]
        prefix = [r for r in runs if any(w.startswith(run_id) for w in r.writers if w)]
        return prefix[0] if len(prefix) == 1 else None


def history_path(path: str | os.PathLike) -> Path:
    """``path/ww_history.jsonl`` for a folder, else ``path``."""
    path = Path(path)
    return path / HISTORY_FILE if path.is_dir() else path


def read_regular_file(file: Path) -> bytes:
    """The whole file, opened without following a FIFO or device into a hang: regular files
    only."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise HistoryError(f"{file}: cannot be read: {err.strerror or err}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise HistoryError(f"{file}: not a regular file (expected a ww_callbacks history)")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    except OSError as err:
        raise HistoryError(f"{file}: cannot be read: {err.strerror or err}") from None
    finally:
        os.close(fd)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_record(record: dict) -> str | None:
    """Why an analysis record (a dict with ``step`` and ``layers``) cannot be used, or None."""
    version = record.get("format", 1)
    if not _is_int(version):
        return f"'format' is {_show(version)}, not an integer"
    if version > HISTORY_FORMAT:
        return (f"history format {version}; this version reads up to {HISTORY_FORMAT} "
                "(written by a newer ww_callbacks: upgrade it)")
    step = record["step"]
    if not _is_int(step):
        return f"'step' is {_show(step)}, not an integer"
    if not 0 <= step <= MAX_STEP:
        return f"'step' {_show(step)} is out of range (0 to 2**63-1)"
    epoch = record.get("epoch")
    if epoch is not None and not _is_int(epoch):
        return f"'epoch' is {_show(epoch)}, not an integer or null"
    for key in _NUMBER_FIELDS:
        if key in record and record[key] is not None and not _is_number(record[key]):
            return f"'{key}' is {_show(record[key])}, not a number"
    if "randomized" in record and not isinstance(record["randomized"], bool):
        return f"'randomized' is {_show(record['randomized'])}, not true or false"
    for key in ("summary", "scalars", "spectra"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            return f"'{key}' is {_show(record[key])}, not an object"
    writer = record.get("writer")
    if writer is not None and not (isinstance(writer, dict) and
                                   isinstance(writer.get("run_id", ""), str)):
        return f"'writer' is {_show(writer)}, not an object with a text run_id"
    layers = record["layers"]
    if not isinstance(layers, list):
        return f"'layers' is {_show(layers)}, not a list"
    for i, row in enumerate(layers):
        if not isinstance(row, dict):
            return f"layer {i} is {_show(row)}, not an object"
        for key in _LAYER_NUMBERS:
            if key in row and row[key] is not None and not _is_number(row[key]):
                return f"layer {i}: '{key}' is {_show(row[key])}, not a number"
        for key in _LAYER_TEXTS:
            if key in row and row[key] is not None and not isinstance(row[key], str):
                return f"layer {i}: '{key}' is {_show(row[key])}, not text"
    return None


def parse_line(raw: bytes) -> tuple[str, Any, str]:
    """One line: ``("record", dict, "")``; ``("other", value, "")`` for JSON that is not an
    analysis (the policies' ``"kind": "actions"`` lines, metadata); ``("problem", value or
    None, reason)`` for a line that is not JSON or an analysis record with bad fields. The
    reason names no byte of the line."""
    text = raw.decode("utf-8", errors="replace")
    try:
        value = json.loads(text)
    except RecursionError:
        return "problem", None, "nested too deeply to be a history record"
    except ValueError:
        return "problem", None, "not JSON (a torn or damaged line)"
    if not isinstance(value, dict) or "step" not in value or "layers" not in value or \
            "kind" in value:
        return "other", value, ""
    reason = check_record(value)
    if reason is not None:
        return "problem", value, reason
    return "record", value, ""


def is_actions(value: Any) -> bool:
    """Is ``value`` (one parsed history line) a policies' actions line with a step?"""
    return isinstance(value, dict) and value.get("kind") == "actions" and \
        _is_int(value.get("step"))


def writer_of(line: dict) -> str:
    """The run id of the writer of a history or sidecar line (``""`` when it names none)."""
    writer = line.get("writer")
    run_id = writer.get("run_id", "") if isinstance(writer, dict) else ""
    return run_id if isinstance(run_id, str) else ""


def read_history_file(path: str | os.PathLike) -> HistoryRead:
    """Every analysis record of a history file (or of the folder holding one), with what was
    skipped. Raises :class:`HistoryError` only when the file itself cannot be read."""
    file = history_path(path)
    data = read_regular_file(file)
    out = HistoryRead(path=file)
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            out.replaced += 1
            out._problem(number, "bytes that are not UTF-8 replaced")
        kind, record, reason = parse_line(raw)
        if kind == "record":
            out.records.append(record)
        elif kind == "other":
            out.other += 1
            if is_actions(record):
                out.actions.append(record)
        else:
            out.skipped += 1
            if record is not None and "history format" in reason:
                out.newer += 1
            out._problem(number, reason)
    return out


__all__ = ["HISTORY_FORMAT", "HistoryError", "HistoryRead", "Run", "check_record",
           "history_path", "is_actions", "parse_line", "read_history_file", "read_regular_file",
           "writer_of"]
