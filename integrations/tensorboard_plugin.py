"""The "HTSR" tab inside TensorBoard: a plugin (TensorBoard's ``tensorboard_plugins`` entry point,
declared in setup.cfg) that shows the runs under ``--logdir`` holding a ``ww_history.jsonl`` with
a live alpha heatmap, read from the history itself (not from event files).

Routes, under ``data/plugin/htsr/``:

- ``runs``: the runs (folders relative to the logdir) that hold a history; a bounded walk
  (:data:`MAX_DEPTH` levels, :data:`MAX_DIRS` folders) that follows no symlink and takes only
  regular files. Written by Lightning, Keras, the torch ``Watcher``, Hugging Face or ``analyze``
  alike: what matters is the file.
- ``records?run=R&offset=O``: the analyses after byte ``O`` of the run's history in the slim form
  the views need (:func:`ww_callbacks.views.data.slim_records`: per layer alpha, traps, number
  of eigenvalues), with ``next`` (the offset to ask for next time) and ``more`` (more is there
  now). Only the bytes after ``O`` are read, at
  most :data:`CHUNK_BYTES` per call, so a poll never re-reads a large history; a torn last line
  (a record being written) is not passed: ``next`` stays before it. A history that became
  shorter than ``O`` (a resumed run truncated it) answers ``reset``.
- ``spectra?run=R&offset=O``: the stored compact ESDs (``ww_spectra.jsonl``), likewise, every
  layer's. ``spectra?run=R&layer=L&offset=O``: only layer ``L``'s (its exact longname, at most
  :data:`~ww_callbacks.views.spectra_index.MAX_NAME_CHARS` characters, compared as data), in the
  sidecar's lines from byte ``O`` on (``O=0``: all stored so far), with ``stored``, how many
  analyses have stored ESDs; what the tab asks for (the layer its ESD view shows, then that
  layer's new ones at each poll). Served through an index of each layer's byte spans built once
  as the sidecar grows (:class:`~ww_callbacks.views.spectra_index.SpectraIndex`: a poll parses
  only the new lines; bounded memory; kept for :data:`MAX_INDEXES` runs); an ``O`` that is no
  line start of the file (a resumed run rewrote it) or past its end answers ``reset``.
- ``index.js`` (the page), and each module and style sheet of :mod:`ww_callbacks.views` by its
  own name (``heatmap.js``, ``flow.js``, ...): package files (no network, nothing fetched
  elsewhere).

The run names a request gives are looked up among the runs found; nothing else is opened.
"""

from __future__ import annotations

import json
import math
import os
import stat
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from ww_callbacks.esd import SPECTRA_FILE
from ww_callbacks.history import HISTORY_FILE
from ww_callbacks.views import ASSET_FILES, asset
from ww_callbacks.views.data import finite, slim_records, spectra_record
from ww_callbacks.views.spectra_index import MAX_NAME_CHARS, SpectraIndex, complete_lines

PLUGIN_NAME = "htsr"
#: deepest folder level below the logdir searched for histories
MAX_DEPTH = 6
#: most folders looked at in one walk (a huge logdir is cut, not walked for minutes)
MAX_DIRS = 20000
#: seconds a walk's result is kept (the page asks every few seconds)
RUNS_TTL_S = 5.0
#: most bytes of a history read by one ``records`` call (the page asks again while ``more``)
CHUNK_BYTES = 8 << 20
#: history bytes whose slim answers are kept in memory (about 1/27 of that in memory: the slim
#: form of 675 MB of history is 25 MB, bench/tensorboard_tab.py)
CACHE_BYTES = 4 << 30
#: runs whose ESD sidecar index (:class:`~ww_callbacks.views.spectra_index.SpectraIndex`) is
#: kept (the least recently asked is dropped first)
MAX_INDEXES = 4
#: route -> (package file of ww_callbacks.views, content type): the page (``index.js``) and every
#: module it imports (by its own name: the modules import each other as ``./x.js``)
ASSETS = {"index.js": ("tensorboard_tab.js", "text/javascript"),
          **{name: (name, "text/css" if name.endswith(".css") else "text/javascript")
             for name in ASSET_FILES}}


def find_runs(logdir: str | os.PathLike, *, max_depth: int = MAX_DEPTH,
              max_dirs: int = MAX_DIRS) -> dict[str, Path]:
    """Run name (folder relative to ``logdir``, ``"."`` for the logdir itself) -> history file,
    for every folder under ``logdir`` holding a regular ``ww_history.jsonl``; symlinks are
    neither followed nor taken."""
    root = Path(logdir)
    runs: dict[str, Path] = {}
    seen = 0
    stack = [(root, 0)]
    while stack and seen < max_dirs:
        folder, depth = stack.pop()
        seen += 1
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if depth < max_depth:
                        stack.append((Path(entry.path), depth + 1))
                elif entry.name == HISTORY_FILE and entry.is_file(follow_symlinks=False):
                    runs[folder.relative_to(root).as_posix()] = Path(entry.path)
            except OSError:
                continue
    return dict(sorted(runs.items()))


def read_after(path: Path, offset: int, *, max_bytes: int = CHUNK_BYTES) -> dict:
    """The complete lines of ``path`` after byte ``offset`` (at most about ``max_bytes``):
    ``{"lines": [...], "next": offset after the last complete line, "more": bool, "reset":
    bool}``. A last line without its newline (being written) is left for the next call. The
    file is opened without following a symlink and must be a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return {"lines": [], "next": 0, "more": False, "reset": offset > 0}
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return {"lines": [], "next": 0, "more": False, "reset": False}
        size = info.st_size
        if offset > size:  # truncated (a resumed run): start again
            return {"lines": [], "next": 0, "more": size > 0, "reset": True}
        body, nxt, more = complete_lines(fd, offset, size, max_bytes)
        lines = body.decode("utf-8", errors="replace").splitlines()
        return {"lines": lines, "next": nxt, "more": more, "reset": False}
    finally:
        os.close(fd)


def _encode(body: dict) -> str:
    """The JSON of an answer (NaN and infinities of a hand-made file as null)."""
    try:
        return json.dumps(body, allow_nan=False, separators=(",", ":"))
    except ValueError:  # JSON.parse would refuse NaN
        return json.dumps(finite(body), separators=(",", ":"))


class HtsrPlugin(base_plugin.TBPlugin):
    """The HTSR tab: runs holding a ww_callbacks history, served incrementally (see the module's
    documentation)."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext):
        self._logdir = context.logdir or ""
        self._runs: dict[str, Path] = {}
        self._runs_at = -math.inf
        self._lock = threading.Lock()
        self._cache: dict[tuple, dict] = {}
        self._encoded: dict[int, str] = {}  # id of a cached answer -> its JSON
        self._cached_bytes = 0
        self._indexes: OrderedDict[str, SpectraIndex] = OrderedDict()  # run -> its sidecar's
        self._index_lock = threading.Lock()

    # ------------------------------------------------------------------ TensorBoard's API

    def get_plugin_apps(self) -> dict:
        return {"/runs": self._serve_runs, "/records": self._serve_records,
                "/spectra": self._serve_spectra,
                **{f"/{name}": self._serve_asset for name in ASSETS}}

    def is_active(self) -> bool:
        # a run may start writing after TensorBoard: the tab is always offered when there is
        # a logdir (the page says when no run holds a history yet)
        return bool(self._logdir)

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="HTSR",
                                            disable_reload=True)

    # ------------------------------------------------------------------ data

    def runs(self) -> dict[str, Path]:
        """The runs found under the logdir (walked again after :data:`RUNS_TTL_S`)."""
        with self._lock:
            now = time.monotonic()
            if now - self._runs_at > RUNS_TTL_S and self._logdir:
                self._runs = find_runs(self._logdir)
                self._runs_at = now
            return dict(self._runs)

    def _run_path(self, run: str | None) -> Path | None:
        if run is None:
            return None
        path = self.runs().get(run)
        if path is None:  # a run that appeared since the last walk
            with self._lock:
                self._runs_at = -math.inf
            path = self.runs().get(run)
        return path

    @staticmethod
    def _offset(request: wrappers.Request) -> int | None:
        raw = request.args.get("offset", "0")
        if not raw.isdigit() or len(raw) > 18:
            return None
        return int(raw)

    def records(self, run: str, offset: int) -> dict | None:
        """The ``records`` answer (None: no such run)."""
        path = self._run_path(run)
        if path is None:
            return None
        try:
            identity = os.stat(path, follow_symlinks=False)
        except OSError:
            identity = None
        key = None if identity is None else (run, identity.st_dev, identity.st_ino, offset)
        with self._lock:
            cached = self._cache.get(key) if key is not None else None
        if cached is not None and identity.st_size >= cached["next"]:
            return cached
        chunk = read_after(path, offset, max_bytes=CHUNK_BYTES)
        answer = {"run": run, "offset": offset, "next": chunk["next"], "more": chunk["more"],
                  "reset": chunk["reset"], **slim_records(chunk["lines"])}
        if key is not None and chunk["more"] and not chunk["reset"]:
            self._remember(key, answer, chunk["next"] - offset)
        return answer

    def _remember(self, key: tuple, answer: dict, size: int) -> None:
        """Keep a full chunk's answer: the bytes of an append-only file from ``offset`` to
        ``next`` never change, so a reload or a second viewer gets it without parsing again (the
        file's identity is in the key: a resumed run's rewritten history is another file). At
        most :data:`CACHE_BYTES` of history bytes are covered; then nothing more is kept."""
        with self._lock:
            if self._cached_bytes + size <= CACHE_BYTES:
                self._cache[key] = answer
                self._encoded[id(answer)] = _encode(answer)
                self._cached_bytes += size

    def spectra(self, run: str, offset: int, layer: str | None = None) -> dict | None:
        """The ``spectra`` answer (None: no such run): the sidecar's records as stored, or with
        ``layer`` only that layer's stored ESDs (:meth:`layer_spectra`)."""
        path = self._run_path(run)
        if path is None:
            return None
        if layer is not None:
            return self.layer_spectra(run, path.with_name(SPECTRA_FILE), layer, offset)
        chunk = read_after(path.with_name(SPECTRA_FILE), offset)
        records = []
        for line in chunk["lines"]:
            try:
                record = spectra_record(json.loads(line))
            except ValueError:
                continue
            if record is not None:
                records.append(record)
        return {"run": run, "offset": offset, "next": chunk["next"], "more": chunk["more"],
                "reset": chunk["reset"], "records": records}

    def layer_spectra(self, run: str, sidecar: Path, layer: str, offset: int) -> dict:
        """The stored ESDs of one layer in the sidecar's lines from byte ``offset`` on, through
        the run's :class:`SpectraIndex` (built once and extended as the file grows, so a poll
        reads only the new lines and that layer's spans): ``records`` (``{"step", "layers":
        {layer: esd}}``), ``next``, ``more``, ``reset`` (the file is shorter than ``offset`` or
        ``offset`` is no line start of it: rewritten by a resumed run) and ``stored`` (how many
        analyses have stored ESDs, any layer)."""
        answer = {"run": run, "layer": layer, "offset": offset, "next": 0, "more": False,
                  "reset": False, "records": [], "stored": 0}
        try:
            fd = os.open(sidecar, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:  # none stored yet
            return {**answer, "reset": offset > 0}
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return answer
            size = info.st_size
            identity = (info.st_dev, info.st_ino)
            with self._index_lock:
                index = self._indexes.get(run)
                if index is None or index.identity != identity or size < index.scanned:
                    index = self._indexes[run] = SpectraIndex(identity)  # new or rewritten
                self._indexes.move_to_end(run)
                while len(self._indexes) > MAX_INDEXES:
                    self._indexes.popitem(last=False)
                index.update(fd, size, CHUNK_BYTES)
                if offset > size or not index.knows(offset):
                    return {**answer, "reset": True, "more": size > 0, "stored": index.stored}
                records, nxt, more = index.layer(fd, size, layer, offset, CHUNK_BYTES)
                return {**answer, "next": nxt, "more": more, "records": records,
                        "stored": index.stored}
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ routes

    @wrappers.Request.application
    def _serve_runs(self, request: wrappers.Request) -> Any:
        runs = self.runs()
        return http_util.Respond(request, {"runs": list(runs)}, "application/json")

    def _serve_incremental(self, request: wrappers.Request, what: str) -> Any:
        offset = self._offset(request)
        if offset is None:
            return http_util.Respond(request, {"error": "offset must be a byte offset"},
                                     "application/json", code=400)
        extra = {}
        if what == "spectra" and "layer" in request.args:
            extra["layer"] = request.args["layer"]
            if len(extra["layer"]) > MAX_NAME_CHARS:
                return http_util.Respond(request, {"error": "layer name too long"},
                                         "application/json", code=400)
        body = getattr(self, what)(request.args.get("run"), offset, **extra)
        if body is None:
            return http_util.Respond(request, {"error": "no such run"}, "application/json",
                                     code=404)
        with self._lock:
            data = self._encoded.get(id(body))  # a cached answer (kept alive: ids not reused)
        return http_util.Respond(request, data or _encode(body), "application/json")

    @wrappers.Request.application
    def _serve_records(self, request: wrappers.Request) -> Any:
        return self._serve_incremental(request, "records")

    @wrappers.Request.application
    def _serve_spectra(self, request: wrappers.Request) -> Any:
        return self._serve_incremental(request, "spectra")

    @wrappers.Request.application
    def _serve_asset(self, request: wrappers.Request) -> Any:
        name = request.path.rsplit("/", 1)[-1]
        if name not in ASSETS:
            return http_util.Respond(request, "not found", "text/plain", code=404)
        file, content_type = ASSETS[name]
        return http_util.Respond(request, asset(file), content_type)
