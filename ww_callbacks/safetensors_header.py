"""The one validator of safetensors headers (the command line and ``analyze(path)`` both read
through it), with the format's rules as the ``safetensors`` library applies them.

A safetensors file is an 8-byte little-endian header length ``n``, ``n`` bytes of UTF-8 JSON,
then the data buffer. :func:`read_header` accepts a file only when:

- ``n`` is at most :data:`MAX_HEADER_BYTES` (the library's limit, 100 MB) and fits in the file;
- the header is UTF-8, starts with ``{``, is one JSON object (trailing spaces allowed: the
  library pads with them) whose ``__metadata__``, if present, maps strings to strings;
- it lists at most :data:`MAX_ENTRIES` tensors, each an object with a known ``dtype``
  (:data:`DTYPE_BITS`, FP8 and sub-byte formats included), a ``shape`` of non-negative
  integers and ``data_offsets`` ``[begin, end]`` of non-negative integers;
- each tensor's span ``end - begin`` is its element count times its dtype's size;
- the spans, sorted, tile the data buffer exactly: the first begins at 0, each begins where the
  previous ended (no overlap, no aliasing, no gap) and the last ends at the end of the file.

Cost: reading the header and parsing it (linear in ``n``), one sort of the entries, and
products of shapes stopped as soon as they pass the file's size; the data is never read. Before
parsing, the header's ``{`` bytes are counted (every tensor entry needs its own object, so this
bounds the entry count from above) and ``,`` bytes (which bound the number of JSON values), so a
header holding too many entries or values is refused without building them (measured in
``bench/safetensors_header_bench.py``). Every refusal is a :class:`HeaderError` whose message is
one line naming the file and what was expected; no byte of a file that is not a safetensors
file is echoed (not even its announced header length, which is its first 8 bytes).
"""

from __future__ import annotations

import json
import os
import stat
import struct
from dataclasses import dataclass
from typing import IO, Any

#: The safetensors library's limit on the header (``MAX_HEADER_SIZE``, 100 MB).
MAX_HEADER_BYTES = 100_000_000
#: Most tensors one file may list. Real checkpoints hold far fewer per file (the largest public
#: models hold under 100k tensors over all their shards); the limit keeps the parse of a hostile
#: header bounded in memory (a Python dict per entry, ~1 KB).
MAX_ENTRIES = 200_000
#: Most JSON values a header may hold, counted before parsing as its ``,`` bytes (a tensor entry
#: holds about 2 + ndim of them; metadata strings holding commas count too).
MAX_VALUES = 16 * MAX_ENTRIES + 1_000_000
#: Size in bits of every dtype the safetensors format defines (safetensors 0.8: its ``Dtype``).
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}
METADATA_KEY = "__metadata__"
_READ_CHUNK = 1 << 22


class HeaderError(ValueError):
    """A file that is not a valid safetensors file; the message is one line naming the file and
    saying what was expected."""


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a validated header: where its bytes are (absolute offsets in the file)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        """Length of the tensor's data in bytes."""
        return self.end - self.begin


@dataclass(frozen=True)
class Header:
    """A validated safetensors header: the tensors in the file's order (by offset), the
    metadata and where the data buffer starts."""

    tensors: tuple[TensorEntry, ...]
    metadata: dict[str, str]
    data_start: int
    file_size: int


def shown(name: str, limit: int = 80) -> str:
    """A name from a file, quoted and escaped for a one-line message, shortened in the middle."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit // 2] + "..." + text[-limit // 2:]


def open_regular(path: str | os.PathLike) -> IO[bytes]:
    """Open ``path`` for binary reading only if it is a regular file: opened without blocking
    (a FIFO would otherwise wait forever for a writer), then checked with ``fstat`` on the open
    descriptor (no race between the check and the open). Raises :class:`HeaderError` for a
    FIFO, device, socket or folder; ``OSError`` for a missing or unreadable file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise HeaderError(f"{path}: not a regular file ({_kind(mode)}); expected a "
                              "checkpoint file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return word
    return "not a plain file"


def _read_exactly(fh: IO[bytes], length: int, path: Any = None) -> bytes:
    """``length`` bytes from ``fh`` (fewer if the file is shorter), read in chunks. With
    ``path``, the chunks are a header's: refused as soon as they hold more ``{`` or ``,`` than
    the limits allow (:func:`_check_counts`), so a hostile header is not read whole."""
    parts = []
    left = length
    braces = commas = 0
    while left > 0:
        chunk = fh.read(min(left, _READ_CHUNK))
        if not chunk:
            break
        if path is not None:
            braces += chunk.count(b"{")
            commas += chunk.count(b",")
            _check_counts(braces, commas, path)
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _check_counts(braces: int, commas: int, path: Any) -> None:
    """Refuse a header with more objects (``{``: every tensor entry is one) or values (``,``)
    than the limits allow, before parsing it."""
    if braces > MAX_ENTRIES + 2:
        raise HeaderError(f"{path}: safetensors header lists more than {MAX_ENTRIES} tensors "
                          "(this reader's limit per file)")
    if commas > MAX_VALUES:
        raise HeaderError(f"{path}: safetensors header holds more than {MAX_VALUES} JSON "
                          "values (this reader's limit)")


def read_header(path: str | os.PathLike) -> Header:
    """Validate the safetensors file at ``path`` and return its header (see the module's rules).

    Raises :class:`HeaderError` for anything that is not a valid safetensors file, ``OSError``
    when the file cannot be opened."""
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        head = _read_exactly(fh, 8)
        if len(head) < 8:
            raise HeaderError(f"{path}: not a safetensors file (only {size} bytes; expected an "
                              "8-byte header length, a JSON header, then tensor data)")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES:
            raise HeaderError(f"{path}: not a safetensors file this reader accepts (the header "
                              f"length in its first 8 bytes is over the format's limit of "
                              f"{MAX_HEADER_BYTES // 1_000_000} MB)")
        if length > size - 8:
            raise HeaderError(f"{path}: truncated or not a safetensors file (the header length "
                              f"in its first 8 bytes is larger than the file's {size} bytes)")
        raw = _read_exactly(fh, length, path)
    if len(raw) < length:  # the file shrank while it was read
        raise HeaderError(f"{path}: truncated safetensors file (its header is cut short)")
    return parse_header(raw, size, path)


def parse_header(raw: bytes, file_size: int, path: str | os.PathLike = "<bytes>") -> Header:
    """Validate a header's bytes ``raw`` (what follows the 8-byte length) of a file of
    ``file_size`` bytes; the rules and errors of :func:`read_header`."""
    if not raw.startswith(b"{"):
        raise HeaderError(f"{path}: not a safetensors file (its header does not start with "
                          "'{'; expected a JSON object)")
    _check_counts(raw.count(b"{"), raw.count(b","), path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise HeaderError(f"{path}: not a safetensors file (its header is not UTF-8 at byte "
                          f"{err.start})") from None
    try:
        header = json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError as err:
        raise HeaderError(f"{path}: not a safetensors file (its header is not JSON: {err.msg} "
                          f"at character {err.pos})") from None
    except RecursionError:
        raise HeaderError(f"{path}: not a safetensors file (its header nests JSON deeper than "
                          "the format's 3 levels)") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise HeaderError(f"{path}: not a safetensors file (its header holds a value that is "
                          f"not valid JSON here: {str(err).split(':')[0]})") from None
    if not isinstance(header, dict):
        raise HeaderError(f"{path}: not a safetensors file (its header is not a JSON object)")
    metadata = header.pop(METADATA_KEY, None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(
            isinstance(v, str) for v in metadata.values()):
        raise HeaderError(f"{path}: malformed safetensors header ({METADATA_KEY} must map "
                          "strings to strings)")
    if len(header) > MAX_ENTRIES:
        raise HeaderError(f"{path}: safetensors header lists more than {MAX_ENTRIES} tensors "
                          "(this reader's limit per file)")
    data_start = 8 + len(raw)
    data_len = file_size - data_start
    entries = [_entry(path, name, info, data_len) for name, info in header.items()]
    entries.sort(key=lambda e: (e[3], e[4]))
    at = 0
    for name, _, _, begin, end in entries:
        if begin != at:
            what = "overlaps the tensor before it" if begin < at else "leaves a gap before it"
            raise HeaderError(f"{path}: malformed safetensors header (tensor {shown(name)} "
                              f"{what}; expected tensors stored one after the other)")
        at = end
    if at != data_len:
        if at > data_len:
            raise HeaderError(f"{path}: truncated safetensors file (its header lists "
                              f"{data_start + at} bytes, the file has {file_size})")
        raise HeaderError(f"{path}: malformed safetensors file ({data_len - at} bytes after the "
                          "last tensor; expected the tensors to end at the end of the file)")
    tensors = tuple(TensorEntry(name, dtype, shape, data_start + begin, data_start + end)
                    for name, dtype, shape, begin, end in entries)
    return Header(tensors, metadata, data_start, file_size)


def _not_json(literal: str) -> Any:
    """``NaN`` and ``Infinity`` are not JSON (Python's reader accepts them; the format's does
    not)."""
    raise ValueError(f"{literal} is not a JSON value")


def _nonneg_int(value: Any) -> bool:
    return type(value) is int and value >= 0


def _entry(path: Any, name: str, info: Any,
           data_len: int) -> tuple[str, str, tuple[int, ...], int, int]:
    """One header entry checked on its own: (name, dtype, shape, begin, end)."""
    def bad(what: str) -> HeaderError:
        return HeaderError(f"{path}: malformed safetensors header entry {shown(name)} ({what})")

    if not isinstance(info, dict):
        raise bad("expected an object with dtype, shape and data_offsets")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
    if missing:
        raise bad(f"no {', '.join(missing)}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        shown_dtype = shown(dtype, 30) if isinstance(dtype, str) else type(dtype).__name__
        raise bad(f"dtype {shown_dtype} is not a safetensors dtype; expected one of "
                  + ", ".join(DTYPE_BITS))
    if not isinstance(shape, list) or not all(_nonneg_int(s) for s in shape):
        raise bad("shape must be a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_nonneg_int(x) for x in offsets) or offsets[0] > offsets[1]):
        raise bad("data_offsets must be [begin, end], integers with 0 <= begin <= end")
    begin, end = offsets
    if end > data_len:
        raise HeaderError(f"{path}: truncated safetensors file (tensor {shown(name)} ends "
                          f"{end - data_len} bytes past the end of the file)")
    bits = _bits(shape, DTYPE_BITS[dtype], 8 * data_len)
    if bits % 8 or bits // 8 != end - begin:
        expected = ("more bytes than the file holds" if bits > 8 * data_len
                    else f"{bits // 8} bytes" if bits % 8 == 0
                    else f"{bits / 8} bytes (not a whole number: a sub-byte dtype)")
        raise bad(f"{end - begin} bytes for shape {_shape_text(shape)} of {dtype}; expected "
                  f"{expected}")
    return name, dtype, tuple(shape), begin, end


def _bits(shape: list[int], item_bits: int, limit: int) -> int:
    """Element count times ``item_bits``, or ``limit + 1`` as soon as the product passes
    ``limit`` (no product of huge integers is computed)."""
    if 0 in shape:
        return 0
    total = item_bits
    for dim in shape:
        total *= dim
        if total > limit:
            return limit + 1
    return total


def _shape_text(shape: list[int]) -> str:
    text = "[" + ", ".join(str(s) if s < 10**12 else "<huge>" for s in shape[:8])
    return text + (", ...]" if len(shape) > 8 else "]")


def describe(header: Header) -> str:
    """One line summing up a validated header (for messages and the bench)."""
    n = len(header.tensors)
    data = header.file_size - header.data_start
    return f"{n} tensors, {data / 1e6:.1f} MB of data, header of {header.data_start - 8} bytes"


__all__ = ["DTYPE_BITS", "Header", "HeaderError", "MAX_ENTRIES", "MAX_HEADER_BYTES",
           "MAX_VALUES", "TensorEntry", "describe", "open_regular", "parse_header",
           "read_header", "shown"]
