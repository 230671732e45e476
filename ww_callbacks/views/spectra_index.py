"""Where each layer's stored ESDs lie in a run's ESD sidecar (``ww_spectra.jsonl``), so that the
TensorBoard tab sends the ESDs of the one layer a viewer looks at, not the whole sidecar.

A sidecar line holds every layer's compact ESD of one analysis (``{"step": s, "layers": {name:
esd}}``, :mod:`ww_callbacks.esd`): about 600 B per layer, so 500 layers x 80 stored analyses are
24.5 MB, and the tab used to send all of it on opening (bench RESULTS section 12). A
:class:`SpectraIndex` keeps, per layer, the byte span of its ESD inside each line; it is built
once, incrementally as the file grows (only the bytes after the last indexed line are read and
parsed), and answering a layer reads only that layer's spans. Its memory is bounded
(:data:`INDEX_ENTRIES`); past that the rest of the file is read on demand, a chunk per call.

Lines are parsed with the :mod:`json` module's own scanner (strict: a torn or damaged line is
passed over like the history reader does); layer names are data (dictionary keys), never paths.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import re
from array import array
from json.decoder import scanstring
from typing import Any

#: longest single line taken (a longer one is passed over as unreadable)
MAX_LINE_BYTES = 256 << 20
#: longest layer name indexed or asked for (longer names in a sidecar are not served)
MAX_NAME_CHARS = 4096
#: most (layer, line) spans plus line starts one index keeps: 24 B a span, so ~48 MB at most
#: (500 layers x 4000 stored analyses); past it the rest of the file is read on demand
INDEX_ENTRIES = 2_000_000

_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")


def complete_lines(fd: int, offset: int, size: int, max_bytes: int) -> tuple[bytes, int, bool]:
    """The bytes of the complete lines of the open file ``fd`` (``size`` bytes) after byte
    ``offset``, about ``max_bytes`` of them: ``(bytes, next offset, more now)``. A last line
    without its newline (being written) is left for the next call; a line longer than the chunk
    is read on to its end, one longer than :data:`MAX_LINE_BYTES` passed over."""
    want = min(size - offset, max_bytes)
    data = os.pread(fd, want, offset) if want > 0 else b""
    end = data.rfind(b"\n")
    while end < 0 and offset + len(data) < size and len(data) < MAX_LINE_BYTES:
        more = os.pread(fd, min(max_bytes, size - offset - len(data)), offset + len(data))
        if not more:
            break
        data += more  # one line longer than a chunk: read on to its end
        end = data.rfind(b"\n")
    if end < 0:
        if len(data) >= MAX_LINE_BYTES:  # an absurd line: passed over
            return b"", offset + len(data), True
        return b"", offset, False
    nxt = offset + end + 1
    return data[: end + 1], nxt, nxt < size and want == max_bytes


def _ws(text: str, i: int) -> int:
    return _WS.match(text, i).end()


def layer_spans(line: bytes) -> tuple[int | float, dict[str, tuple[int, int]]] | None:
    """The step of one sidecar line and, per layer, the byte span ``(start, end)`` of its compact
    ESD (a JSON object) inside the line; None when the line is not a stored-ESD line (torn,
    damaged, no ``layers`` object, no finite step). Keys repeated: the last one counts, as for
    :func:`json.loads`."""
    text = line.decode("utf-8", "surrogateescape")
    plain = line.isascii()
    cursor = [0, 0]  # (character, byte) reached: positions only grow, so this stays linear

    def byte(i: int) -> int:
        if plain:
            return i
        cursor[1] += len(text[cursor[0]:i].encode("utf-8", "surrogateescape"))
        cursor[0] = i
        return cursor[1]

    def expect(i: int, char: str) -> int:
        if text[i:i + 1] != char:
            raise ValueError(f"expected {char!r} at {i}")
        return _ws(text, i + 1)

    try:
        step: Any = None
        spans: dict[str, tuple[int, int]] | None = None
        i = expect(_ws(text, 0), "{")
        while True:
            key, i = scanstring(text, _after_quote(text, i))
            i = expect(_ws(text, i), ":")
            if key == "layers" and text[i:i + 1] == "{":
                spans = {}
                i = _ws(text, i + 1)
                if text[i:i + 1] == "}":
                    i += 1
                else:
                    while True:
                        name, i = scanstring(text, _after_quote(text, i))
                        i = expect(_ws(text, i), ":")
                        start = i
                        value, i = _DECODER.raw_decode(text, i)
                        if isinstance(value, dict) and len(name) <= MAX_NAME_CHARS:
                            spans[name] = (byte(start), byte(i))
                        else:
                            spans.pop(name, None)
                        i = _ws(text, i)
                        if text[i:i + 1] == "}":
                            i += 1
                            break
                        i = expect(i, ",")
            else:
                value, i = _DECODER.raw_decode(text, i)
                if key == "step":
                    step = value
                elif key == "layers":
                    spans = None
            i = _ws(text, i)
            if text[i:i + 1] == "}":
                break
            i = expect(i, ",")
        if _ws(text, i + 1) != len(text):
            return None  # something after the object
    except (ValueError, IndexError, RecursionError):
        return None
    finite = (isinstance(step, (int, float)) and not isinstance(step, bool)
              and math.isfinite(step))
    if spans is None or not finite:
        return None
    return step, spans


def _after_quote(text: str, i: int) -> int:
    """The index after the opening quote of the JSON string at ``i``."""
    if text[i:i + 1] != '"':
        raise ValueError(f"expected a string at {i}")
    return i + 1


class SpectraIndex:
    """Per layer, the byte spans of its stored ESDs in one sidecar file (its identity: device
    and inode), built as the file grows. Not thread-safe: the caller holds a lock."""

    def __init__(self, identity: tuple[int, int], *, max_entries: int | None = None):
        self.identity = identity
        self.max_entries = INDEX_ENTRIES if max_entries is None else max_entries
        self.scanned = 0                 # bytes indexed (complete lines)
        self.line_starts = array("q")    # start of every line indexed (the offsets a page holds)
        self.esd_starts = array("q")     # start of every stored-ESD line
        self.steps: list[int | float] = []  # its step
        self.distinct: set[int | float] = set()
        self.layers: dict[str, array] = {}  # name -> flat (ESD line number, start, end)
        self.entries = 0
        self.full = False                # the memory bound is reached: the rest is not indexed
        self.behind = False              # complete lines past `scanned` are left for a next call

    def update(self, fd: int, size: int, max_bytes: int) -> None:
        """Index the complete lines of the open file ``fd`` (``size`` bytes) after
        :attr:`scanned`, about ``max_bytes`` of them."""
        self.behind = False
        if self.full or size <= self.scanned:
            return
        body, nxt, self.behind = complete_lines(fd, self.scanned, size, max_bytes)
        pos = self.scanned
        for line in body.split(b"\n")[:-1]:
            start, pos = pos, pos + len(line) + 1
            self.line_starts.append(start)
            parsed = layer_spans(line)
            if parsed is not None:
                step, spans = parsed
                n = len(self.steps)
                self.esd_starts.append(start)
                self.steps.append(step)
                self.distinct.add(step)
                for name, (s, e) in spans.items():
                    spans_of = self.layers.get(name)
                    if spans_of is None:
                        spans_of = self.layers[name] = array("q")
                    spans_of.extend((n, start + s, start + e))
                self.entries += len(spans)
            if self.entries + len(self.line_starts) >= self.max_entries:
                self.full = True
                self.scanned = pos
                return
        self.scanned = max(nxt, pos)

    def knows(self, offset: int) -> bool:
        """Whether ``offset`` is where a page may stand: 0, the start of an indexed line, the end
        of the index, or past a full index (not checked there)."""
        if offset in (0, self.scanned) or (self.full and offset > self.scanned):
            return True
        i = bisect.bisect_left(self.line_starts, offset)
        return i < len(self.line_starts) and self.line_starts[i] == offset

    @property
    def stored(self) -> int:
        """How many analyses (distinct steps) have stored ESDs in the indexed part."""
        return len(self.distinct)

    def layer(self, fd: int, size: int, name: str, offset: int,
              max_bytes: int) -> tuple[list[dict], int, bool]:
        """The stored ESDs of layer ``name`` in lines starting at or after ``offset``, about
        ``max_bytes`` of them: ``([{"step", "layers": {name: esd}}], next offset, more now)``."""
        records: list[dict] = []
        sent = 0
        spans = self.layers.get(name)
        if spans is not None and offset < self.scanned:
            count = len(spans) // 3
            lo, hi = 0, count  # first span in a line starting at or after `offset`
            while lo < hi:
                mid = (lo + hi) // 2
                if self.esd_starts[spans[3 * mid]] < offset:
                    lo = mid + 1
                else:
                    hi = mid
            for k in range(lo, count):
                n, s, e = spans[3 * k], spans[3 * k + 1], spans[3 * k + 2]
                if sent >= max_bytes:
                    return records, self.esd_starts[n], True
                esd = _load(os.pread(fd, e - s, s))
                sent += e - s
                if esd is not None:
                    records.append({"step": self.steps[n], "layers": {name: esd}})
        if not self.full or size <= max(offset, self.scanned):
            return records, max(offset, self.scanned), self.behind
        # past a full index: read a chunk of the rest (not kept)
        body, nxt, more = complete_lines(fd, max(offset, self.scanned), size, max_bytes)
        for line in body.split(b"\n")[:-1]:
            parsed = layer_spans(line)
            if parsed is not None and name in parsed[1]:
                s, e = parsed[1][name]
                esd = _load(line[s:e])
                if esd is not None:
                    records.append({"step": parsed[0], "layers": {name: esd}})
        return records, nxt, more


def _load(raw: bytes) -> dict | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


__all__ = ["INDEX_ENTRIES", "MAX_LINE_BYTES", "MAX_NAME_CHARS", "SpectraIndex",
           "complete_lines", "layer_spans"]
