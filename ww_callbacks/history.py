"""The local record of every analysis: a JSON-lines file in the run's log directory.

The worker appends each result here *before* any sink (TensorBoard, W&B, a logger) sees it, so a
failing sink loses nothing (and a failing history write, e.g. a full disk, does not stop the sinks:
see :mod:`ww_callbacks.faults`). One line per analysis: step, epoch, timings, the model summary,
the per-layer rows and the writer (run id, pid, host); after it, when the run has policies,
an ``"actions"`` line (:meth:`HistoryWriter.append_actions`); the compact ESDs go to the sidecar
:data:`~ww_callbacks.esd.SPECTRA_FILE` (:meth:`HistoryWriter.append_spectra`). A crash can tear
the last line; readers
skip torn lines, and the next append starts on a fresh line. :func:`load_history` reads it back
as a DataFrame.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .esd import SPECTRA_FILE
from .faults import WatcherWarning, not_writable
from .history_reader import (
    HISTORY_FILE,  # noqa: F401 (its home is the reader; imported from here)
    history_path,
    parse_line,
    read_history_file,
    read_regular_file,
)
from .results import AnalysisResult


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
    """The JSON-ready record of one analysis (``min_evals_for_trust``: the threshold below
    which a layer's ``num_evals`` made it low evidence, when the result says)."""
    layers = [{k: _plain(v) for k, v in row.items()}
              for row in result.details.to_dict(orient="records")]
    record = {
        "format": 1,  # bumped on incompatible changes; readers refuse newer (report.py)
        "step": int(result.step),
        "epoch": None if result.epoch is None else int(result.epoch),
        "wall_time": float(result.wall_time),
        "duration_s": float(result.duration_s),
        "randomized": bool(result.randomized),
        "summary": {k: _plain(v) for k, v in result.summary.items()},
    }
    if result.min_evals_for_trust is not None:  # the views mark layers with fewer num_evals
        record["min_evals_for_trust"] = int(result.min_evals_for_trust)
    record["layers"] = layers
    return record


def new_writer_id() -> dict:
    """Who writes: a fresh ``run_id`` (random, from the OS, never the global random state), the
    process id and the host name; stored in every record as ``"writer"``."""
    return {"run_id": uuid.uuid4().hex[:12], "pid": os.getpid(), "host": socket.gethostname()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


#: run_ids of the writers of this process that hold a folder (an owner file naming this pid and
#: a run_id not in here was left behind by a writer that was never closed: stale).
_OPEN_RUNS: set[str] = set()


class HistoryWriter:
    """Appends analyses to ``path`` (created with its folder on first write); thread-safe.

    Each record is one complete line written with a single ``write`` on a file opened for
    appending, so concurrent writers never interleave inside a line, and a crash leaves at worst
    one torn last line. If the file does not end with a newline (a writer killed mid-line, a
    disk that filled up), a newline is written first, so the new record starts on its own line
    and stays readable. Every record says who wrote it (``"writer"``: run id, pid, host).

    :meth:`open` (or else the first write) claims the folder with a small owner file next to the
    history; a second live writer finds it and gets one warning (its records remain
    distinguishable by ``"writer"``). Owner files of dead processes are ignored; :meth:`close`
    removes ours.
    """

    def __init__(self, path: str | os.PathLike, *, writer: dict | None = None):
        self.path = Path(path)
        self.writer = writer or new_writer_id()
        self.owner_path = self.path.with_name(self.path.name + OWNER_SUFFIX)
        self._lock = threading.Lock()
        self._claimed = False
        self._restart_checked = False  # (warn_if_restarted: once)

    def append(self, result: AnalysisResult | dict) -> None:
        """Write one analysis (or an already built record) as one line; raises OSError when the
        write fails (the caller decides what to do; the file stays readable)."""
        record = result if isinstance(result, dict) else result_record(result)
        self._append_line(self.path, {**record, "writer": self.writer})

    def append_actions(self, step: int, actions: dict) -> None:
        """Write what the policies decided on the analysis of ``step`` as an ``"actions"`` line
        after that analysis' record (the policies decide after the history has the record, so
        that a failing policy loses nothing): ``lr_scale`` (layer -> learning-rate scale),
        ``traps_removed`` (layer -> traps removed so far), ``stop_reason`` (None while no
        policy asked to stop). Analysis readers pass these lines over (:func:`read_records`);
        :func:`read_actions` reads them."""
        self._append_line(self.path, {"kind": ACTIONS, "step": int(step), **actions,
                                      "writer": self.writer})

    @property
    def spectra_path(self) -> Path:
        """The sidecar of compact ESDs (:data:`~ww_callbacks.esd.SPECTRA_FILE`) next to the
        history."""
        return self.path.with_name(SPECTRA_FILE)

    def append_spectra(self, step: int, layers: dict[str, dict]) -> None:
        """Write the compact ESDs of the analysis of ``step`` (longname -> compact ESD, see
        :mod:`ww_callbacks.esd`) as one line of the sidecar."""
        self._append_line(self.spectra_path, {"step": int(step), "layers": layers,
                                              "writer": self.writer})

    def _append_line(self, path: Path, record: dict) -> None:
        data = (json.dumps(record, allow_nan=True) + "\n").encode("utf-8")
        with self._lock:
            self._claim()
            try:  # a folder that cannot be made says why (read-only), not "No such file"
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise not_writable(path.parent, err) from err
            # O_NOFOLLOW: a symlink planted under the history's name is refused (ELOOP), not
            # written through
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # a torn tail: start this record on a fresh line
                view = memoryview(data)
                while view:  # one write; more only after a short one (a nearly full disk),
                    view = view[os.write(fd, view):]  # whose next write raises the OS's reason
            finally:
                os.close(fd)

    def truncate_after(self, step: int) -> int:
        """Drop analyses (and their actions and stored ESDs) of steps after ``step`` (a resumed
        run redoes them) and any line the reader skips (torn, damaged, wrong-typed); JSON lines
        without a step are kept. Returns how many history lines were dropped. Atomic (a new file,
        created in the folder with ``mkstemp``, replaces the old one), so a failure leaves the
        old file as it was."""
        with self._lock:
            self._claim()
            dropped = _truncate_file(self.path, step, analyses=True)
            _truncate_file(self.spectra_path, step, analyses=False)
            return dropped

    def warn_if_restarted(self, step: int, stacklevel: int = 3) -> bool:
        """Warn, once per writer, when the history already holds analyses of steps after
        ``step``, this writer's first: a script restarted into the same ``log_dir`` without
        resuming its watcher. True when it warned. (A resumed watcher has cut the history at its
        checkpoint's step first, so it is not warned.)"""
        if self._restart_checked:
            return False
        self._restart_checked = True
        try:
            if not self.path.exists():
                return False
            later = max((r["step"] for r in read_records(self.path)
                         if isinstance(r.get("step"), int)
                         and (r.get("writer") or {}).get("run_id") != self.writer["run_id"]),
                        default=None)
        except (OSError, ValueError):
            return False  # an unreadable history: the reader reports it
        if later is None or later <= step:
            return False
        warnings.warn(
            f"ww_callbacks: {self.path} already holds analyses up to step {later}, and this "
            f"watcher starts at step {step}: the script was restarted without resuming the "
            "watcher. Its records are kept apart by their writer id (the report shows one run: "
            "the newest, or --run RUN_ID). Either continue the history: save ww.state_dict() "
            "in your checkpoint dict and call ww.load_state_dict(checkpoint[...]) when you "
            "resume (the analyses after the checkpoint are then dropped); or give the new run "
            "its own log_dir.", WatcherWarning, stacklevel=stacklevel)
        return True

    # ------------------------------------------------------------------ ownership

    def open(self) -> None:
        """Claim the folder now (the watcher does it when it is given the folder, so a second
        watcher is warned at once); otherwise the first write does it."""
        with self._lock:
            self._claim(stacklevel=5)

    def _claim(self, stacklevel: int = 6) -> None:
        """Write the owner file once (lock held); warn if another live writer holds it."""
        if self._claimed:
            return
        self._claimed = True
        other = _read_owner(self.owner_path)
        if other is not None and other.get("run_id") != self.writer["run_id"] and _live(other):
            warnings.warn(
                f"ww_callbacks: another watcher (run {other.get('run_id')}, pid {other.get('pid')}"
                f" on {other.get('host')}) is writing to {self.path}; both append to it and each "
                f"record's 'writer' says which wrote it. Give each run its own log_dir.",
                WatcherWarning, stacklevel=stacklevel)
            return  # the folder stays theirs; ours is told apart by "writer"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.owner_path, json.dumps(self.writer).encode("utf-8"))
            _OPEN_RUNS.add(self.writer["run_id"])
        except OSError:
            pass  # a full disk: the history write that follows reports it

    def close(self) -> None:
        """Release the folder (remove the owner file if it is ours). Safe to call twice."""
        with self._lock:
            _OPEN_RUNS.discard(self.writer["run_id"])
            owner = _read_owner(self.owner_path)
            if owner is not None and owner.get("run_id") == self.writer["run_id"]:
                try:
                    self.owner_path.unlink()
                except OSError:
                    pass
            self._claimed = False


OWNER_SUFFIX = ".owner"
#: the ``"kind"`` of a history line holding the policies' actions (analysis records have none)
ACTIONS = "actions"


def _truncate_file(path: Path, step: int, *, analyses: bool) -> int:
    """Keep the lines of ``path`` up to ``step`` (see :meth:`HistoryWriter.truncate_after`):
    in the history (``analyses``) the analysis records the reader accepts and the other JSON
    lines (the policies' actions) of steps up to ``step`` or without a step; in the sidecar the
    JSON lines of steps up to ``step``."""
    if not path.exists():
        return 0
    data = read_regular_file(path)
    lines = [ln for ln in data.split(b"\n") if ln.strip()]
    kept = []
    for line in lines:
        kind, value, _ = parse_line(line)
        if analyses and kind == "record":
            keep = value["step"] <= step
        elif kind == "problem" and (analyses or value is None):
            keep = False
        else:  # not an analysis (or a sidecar line): by its step, if it has one
            line_step = value.get("step") if isinstance(value, dict) else None
            keep = value is not None and not (isinstance(line_step, int)
                                               and line_step > step)
            if not analyses:
                keep = keep and isinstance(line_step, int)
        if keep:
            kept.append(line.decode("utf-8", errors="replace").encode("utf-8"))
    if kept == lines and (not data or data.endswith(b"\n")):
        return 0  # nothing to drop: the file is left as it is
    write_atomic(path, b"".join(ln + b"\n" for ln in kept))
    return len(lines) - len(kept)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` by a file holding ``data``: written to a new temporary file created in
    the same folder with ``mkstemp`` (``O_CREAT | O_EXCL``, mode 0600 then 0644), so a symlink
    planted under a predictable ``.tmp`` name in a shared folder is never written through, then
    renamed over ``path`` (a symlink at ``path`` itself is replaced, not followed)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read_owner(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _live(owner: dict) -> bool:
    """Is the writer named by an owner file still running? Another host's cannot be checked:
    taken as live (one warning too many rather than none)."""
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname():
        return True
    if not isinstance(pid, int) or not _pid_alive(pid):
        return False
    if pid == os.getpid():
        return owner.get("run_id") in _OPEN_RUNS
    return True


def read_records(path: str | os.PathLike) -> list[dict]:
    """All analysis records of a history file (or of the folder holding ``ww_history.jsonl``),
    every run's, in file order; unreadable lines (a crash or a full disk mid-write, damaged
    bytes, wrong-typed fields) are skipped and the policies' actions lines passed over
    (:func:`ww_callbacks.history_reader.read_history_file` says which and why)."""
    return read_history_file(path).records


def _read_lines(path: Path) -> list[dict]:
    """The JSON objects with a step of a history or sidecar file (anything else skipped)."""
    records = []
    for line in read_regular_file(path).split(b"\n"):
        if line.strip():
            _, value, _ = parse_line(line)
            if isinstance(value, dict) and "step" in value:
                records.append(value)
    return records


def read_actions(path: str | os.PathLike) -> list[dict]:
    """The policies' actions lines of a history (see :meth:`HistoryWriter.append_actions`), in
    order; an older history has none."""
    return [r for r in _read_lines(history_path(path)) if r.get("kind") == ACTIONS]


def read_spectra(path: str | os.PathLike) -> list[dict]:
    """The stored compact ESDs of a run (its folder, history or sidecar file): one
    ``{"step", "layers"}`` dict per stored analysis; empty when none were stored."""
    path = history_path(path)
    sidecar = path if path.name == SPECTRA_FILE else path.with_name(SPECTRA_FILE)
    if not sidecar.is_file():
        return []
    return [r for r in _read_lines(sidecar) if isinstance(r.get("layers"), dict)]


def load_history(path: str | os.PathLike, *, level: str = "layer",
                 run: str | None = None) -> pd.DataFrame:
    """Read a history back: ``level="layer"`` gives one row per layer per analysis (columns
    ``step``, ``epoch``, ``wall_time`` then the ``analyze`` columns); ``level="model"`` one row
    per analysis with the ``ww/`` summary scalars. Every run's records by default; ``run``: one
    run's (a writer's run id, or ``"newest"``). ``attrs["history_problems"]`` lists the lines
    that were skipped (one line each) and ``attrs["runs"]`` the runs the file holds."""
    if level not in ("layer", "model"):
        raise ValueError(f"level must be 'layer' or 'model', not {level!r}")
    read = read_history_file(path)
    runs = read.runs()
    records = read.records
    if run is not None:
        chosen = read.select(None if run == "newest" else run)
        if chosen is None:
            raise ValueError(f"{read.path}: no run {run!r} (runs: "
                             f"{', '.join(r.run_id for r in runs) or 'none'})")
        records = chosen.records
    if level == "model":
        rows = [{"step": r["step"], "epoch": r.get("epoch"), "wall_time": r.get("wall_time"),
                 "duration_s": r.get("duration_s"), "randomized": r.get("randomized"),
                 **(r.get("summary") or {})} for r in records]
    else:
        rows = [{"step": r["step"], "epoch": r.get("epoch"), "wall_time": r.get("wall_time"),
                 **layer} for r in records for layer in r["layers"]]
    frame = pd.DataFrame(rows)
    frame.attrs["history_problems"] = list(read.problems)
    frame.attrs["runs"] = [r.describe() for r in runs]
    return frame
