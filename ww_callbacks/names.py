"""Names from a model or a file (layer names, metric columns, paths) made safe for where they are
shown: one home for the escaping, so every output uses the same rules.

A layer name is whatever ``nn.Module.add_module`` or a checkpoint's keys say: it can hold
terminal escape sequences (set the title, clear the screen), markdown (images, links), matplotlib
mathtext (``$\\frac$`` kills the figure) or be 300 characters long.

- :func:`terminal`: control and format characters (C0, DEL, C1, bidi overrides, line and
  paragraph separators) written as ``\\xNN`` / ``\\uNNNN``; the rest unchanged.
- :func:`markdown`: :func:`terminal`, then every markdown and HTML special character
  backslash-escaped (TensorBoard's Text tab renders markdown: no image, link or tag survives).
- :func:`figure`: plain text for matplotlib (``$`` escaped, so no mathtext), shortened to
  ``width`` characters by :func:`shorten_name`.
- :func:`shorten_name`: a dotted layer name shortened so that its end (the layer's role) and its
  block number stay: ``bert.encoder.layer.11.attention.output.dense`` in 24 characters is
  ``…layer.11…output.dense``, not ``bert.encode…utput.dense`` (which two blocks share).
- :func:`file_stem`: a file name part made of ``[A-Za-z0-9._-]``, at most 80 characters, and
  unique among the names already used (a short hash of the full name when needed).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

#: Characters escaped for a terminal besides the categories Cc and Cf.
_SEPARATORS = {"\u2028", "\u2029", "\u0085"}
_MARKDOWN = set("\\`*_{}[]()#+-.!|<>&~=:\"'")
FILE_STEM_MAX = 80


def _escape_char(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 \
        else f"\\U{code:08x}"


def terminal(text: object) -> str:
    """``text`` with control and format characters escaped (safe to print on a terminal)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(_escape_char(ch) if ch in _SEPARATORS or
                   unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch
                   for ch in text)


def markdown(text: object) -> str:
    """``text`` as literal markdown (for TensorBoard's Text tab): control characters escaped,
    every markdown/HTML special character backslash-escaped."""
    return "".join("\\" + ch if ch in _MARKDOWN else ch for ch in terminal(text))


def shorten_middle(text: str, width: int) -> str:
    """``text`` cut in the middle to at most ``width`` characters (``…`` marks the cut): the
    start and the end of a layer name (its block and its role) stay readable."""
    if width < 3 or len(text) <= width:
        return text[:max(width, 0)] if width < 3 else text
    keep = width - 1
    head = keep // 2
    return text[:head] + "…" + text[len(text) - (keep - head):]


_PART_SEPARATOR = re.compile(r"([./])")


def _joined(parts: list[str], seps: list[str], kept: set[int]) -> str:
    """The kept parts in order: neighbours joined by their separator, a run of dropped parts
    replaced by ``…``."""
    out = ""
    for i, part in enumerate(parts):
        if i not in kept:
            continue
        if i == 0:
            out = part
        elif i - 1 in kept:
            out += seps[i - 1] + part
        else:
            out += "…" + part
    return out


def shorten_name(text: str, width: int) -> str:
    """A layer name cut to at most ``width`` characters by dropping whole parts (between ``.``
    or ``/``), each dropped run shown as ``…``. Kept first: the last part (the layer's role);
    then the last all-digit part (the block number) with the part before it (``layer.11``,
    ``h.3``; else the last part ending in a digit, ``block_1``); then the parts after the
    block from the end backwards; then those before it from the start. Names without parts,
    or whose last part alone is too long, are cut in the middle (:func:`shorten_middle`)."""
    if width < 3 or len(text) <= width:
        return shorten_middle(text, width)
    tokens = _PART_SEPARATOR.split(text)
    parts, seps = tokens[0::2], tokens[1::2]
    last = len(parts) - 1
    if last == 0:
        return shorten_middle(text, width)
    numbered = [i for i in range(last) if parts[i].isdigit()]  # torch: layer.11, h.3
    labelled = [i for i in range(last) if parts[i][-1:].isdigit()]  # Keras: block_1, h_3
    order = [last]
    if numbered or labelled:
        block = numbered[-1] if numbered else labelled[-1]
        order += [block, block - 1] if numbered and block > 0 else [block]
        order += [i for i in range(last - 1, block, -1)] + list(range(block))
    else:
        order += [0] + list(range(last - 1, 0, -1))
    kept: set[int] = set()
    for i in dict.fromkeys(order):  # (in order, once each)
        if len(_joined(parts, seps, kept | {i})) <= width:
            kept.add(i)
        elif i == last:
            return shorten_middle(text, width)
    return _joined(parts, seps, kept)


def figure(text: object, width: int | None = None) -> str:
    """``text`` as a plain matplotlib label: control characters escaped, shortened to ``width``
    (:func:`shorten_name`: the end and the block number stay), ``$`` escaped so mathtext never
    parses it."""
    plain = terminal(text)
    if width is not None:
        plain = shorten_name(plain, width)
    return plain.replace("$", "\\$")


def file_stem(name: object, used: set[str] | None = None) -> str:
    """A file-name part for ``name``: ``[A-Za-z0-9._-]`` only, at most :data:`FILE_STEM_MAX`
    characters, never ``.`` or ``..``; when it had to change the name (or is already in
    ``used``, compared case-insensitively), it ends with 8 hex digits of the name's hash. The
    result is added to ``used``."""
    name = str(name) if name not in (None, "") else "root"
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)
    taken = used if used is not None else set()
    if safe != name or len(safe) > FILE_STEM_MAX or safe.strip(".") == "" or \
            safe.lower() in taken:
        digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        safe = f"{safe[:FILE_STEM_MAX - 9]}_{digest}"
        while safe.lower() in taken:  # two names with one hash prefix: practically never
            digest = hashlib.sha1((safe + "+").encode()).hexdigest()[:8]
            safe = f"{safe[:FILE_STEM_MAX - 9]}_{digest}"
    taken.add(safe.lower())
    return safe


__all__ = ["FILE_STEM_MAX", "figure", "file_stem", "markdown", "shorten_middle", "shorten_name",
           "terminal"]
