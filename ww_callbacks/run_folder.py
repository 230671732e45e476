"""Which files of a run folder the report reads: a bounded walk that never follows a symlink and
keeps only the layouts the supported hosts write.

A run folder may be someone else's (a shared log folder, a CI artefact) or a home folder given by
mistake, so the walk visits at most :data:`MAX_ENTRIES` entries, :data:`MAX_DEPTH` folders deep,
skips every symlink (file or folder: 40 ``.`` links made the old glob run for minutes) and
reads only:

- ``ww_history.jsonl`` (the watcher's history; the run folder or one below it);
- Lightning: ``metrics.csv`` in the run folder or in ``[NAME/]version_N/`` below it
  (``CSVLogger``), TensorBoard events in the run folder or ``[NAME/]version_N/``;
- Keras: a ``CSVLogger`` file (``*.csv`` whose first column is ``epoch``) in the run folder,
  TensorBoard events in the run folder or its ``train/`` and ``validation/`` folders;
- Hugging Face: ``trainer_state.json`` in the run folder or its ``checkpoint-N/`` folders,
  TensorBoard events in ``runs/NAME/``;
- the torch ``Watcher``: TensorBoard events in its ``log_dir``.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .history_reader import HISTORY_FILE

MAX_DEPTH = 4
MAX_ENTRIES = 20_000
#: Larger CSV files are not read as metric logs (a data set saved in the run folder).
MAX_METRICS_CSV = 50_000_000
EVENTS_PREFIX = "events.out.tfevents."

_VERSION = r"version_\d+"
_EVENT_FOLDERS = re.compile(rf"(|{_VERSION}|[^/]+/{_VERSION}|train|validation|runs/[^/]+)")
_LIGHTNING_CSV = re.compile(rf"(|{_VERSION}/|[^/]+/{_VERSION}/)metrics\.csv")
_TRAINER_STATE = re.compile(r"(|checkpoint-\d+/)trainer_state\.json")


@dataclass
class RunFiles:
    """The files of a run folder the report may read, by kind (paths below ``root``)."""

    root: Path
    histories: list[Path] = field(default_factory=list)
    event_folders: list[Path] = field(default_factory=list)
    csv_files: list[Path] = field(default_factory=list)
    trainer_states: list[Path] = field(default_factory=list)
    truncated: bool = False

    def relative(self, path: Path) -> str:
        """``path`` relative to the run folder (what the page lists)."""
        try:
            return path.relative_to(self.root).as_posix() or "."
        except ValueError:
            return path.name


def walk(root: Path, *, max_depth: int = MAX_DEPTH,
         max_entries: int = MAX_ENTRIES) -> tuple[list[tuple[str, Path]], bool]:
    """Regular files at most ``max_depth`` folders below ``root`` as ``(relative posix path,
    path)``, breadth first, symlinks skipped; and whether ``max_entries`` stopped the walk."""
    out: list[tuple[str, Path]] = []
    seen = 0
    level: list[tuple[str, Path]] = [("", root)]
    for depth in range(max_depth + 1):
        below: list[tuple[str, Path]] = []
        for rel, folder in level:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                seen += 1
                if seen > max_entries:
                    return out, True
                name = f"{rel}{entry.name}"
                try:
                    mode = entry.stat(follow_symlinks=False).st_mode
                except OSError:
                    continue
                if stat.S_ISREG(mode):
                    out.append((name, Path(entry.path)))
                elif stat.S_ISDIR(mode) and depth < max_depth:
                    below.append((name + "/", Path(entry.path)))
        level = below
    return out, False


def run_files(root: Path) -> RunFiles:
    """The known files below ``root`` (see the module's docstring)."""
    found = RunFiles(root=root)
    files, found.truncated = walk(root)
    folders: set[str] = set()
    for rel, path in files:
        parent, _, name = rel.rpartition("/")
        if name == HISTORY_FILE:
            found.histories.append(path)
        elif name.startswith(EVENTS_PREFIX) and _EVENT_FOLDERS.fullmatch(parent):
            if parent not in folders:
                folders.add(parent)
                found.event_folders.append(path.parent)
        elif _LIGHTNING_CSV.fullmatch(rel) or (not parent and name.endswith(".csv")):
            found.csv_files.append(path)
        elif _TRAINER_STATE.fullmatch(rel):
            found.trainer_states.append(path)
    return found


__all__ = ["MAX_DEPTH", "MAX_ENTRIES", "MAX_METRICS_CSV", "RunFiles", "run_files", "walk"]
