"""Building the self-contained HTML pages (``report``, ``compare``) from the package's asset files
(``ww_callbacks/assets/*.html, *.css, *.js``) safely: one home for how data and text enter a page.

- Data goes into a ``<script type="application/json">`` element as JSON in which ``<``, ``>``,
  ``&`` and U+2028/U+2029 are written as ``\\uXXXX`` escapes: no name (``<!--<script>``,
  ``</script>``) can end the element or open a comment, and JSON.parse reads the same text back.
- The template is filled in one pass (``{{NAME}}`` slots): a substituted value is never scanned
  again, so a name holding ``{{JS}}``, ``__JS__`` or ``__DATA__`` is just text.
- The Content-Security-Policy allows exactly the page's own inline script and style by their
  sha256 hashes (no ``'unsafe-inline'``), nothing to fetch, no ``<base>`` and no form target.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from importlib import resources
from typing import Any

_SLOT = re.compile(r"\{\{([A-Z_]+)\}\}")
#: Characters written as ``\\uXXXX`` inside a script element's JSON.
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                   "\u2029": "\\u2029"}
_SCRIPT_UNSAFE = re.compile("[<>&\u2028\u2029]")
#: What may not appear in an inline script's own code (the data is escaped instead).
_SCRIPT_END = re.compile(r"</script|<!--", re.I)


def asset(name: str) -> str:
    """The text of ``ww_callbacks/assets/NAME`` (shipped in the wheel as package data)."""
    return resources.files("ww_callbacks").joinpath("assets", name).read_text(encoding="utf-8")


def script_json(data: Any) -> str:
    """``data`` as JSON that is safe as the whole content of a ``<script>`` element (no NaN:
    missing values must already be None)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return _SCRIPT_UNSAFE.sub(lambda m: _SCRIPT_ESCAPES[m.group(0)], text)


def sha256_source(text: str) -> str:
    """The CSP source expression allowing an inline script or style whose content is ``text``."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def content_security_policy(*, scripts: tuple[str, ...] = (),
                            styles: tuple[str, ...] = ()) -> str:
    """A policy allowing only these inline scripts and styles (by hash) and nothing else."""
    script_src = " ".join(sha256_source(s) for s in scripts) or "'none'"
    style_src = " ".join(sha256_source(s) for s in styles) or "'none'"
    return (f"default-src 'none'; script-src {script_src}; style-src {style_src}; "
            "base-uri 'none'; form-action 'none'")


def fill_template(template: str, values: dict[str, str]) -> str:
    """``template`` with every ``{{NAME}}`` slot replaced by ``values[NAME]`` in one pass (what
    a value holds is never read as a slot). An unknown slot or an unused value raises
    ``KeyError`` (a template and its caller out of step)."""
    used: set[str] = set()

    def fill(match: re.Match) -> str:
        used.add(match.group(1))
        return values[match.group(1)]

    page = _SLOT.sub(fill, template)
    if used != set(values):
        raise KeyError(f"template slots {sorted(used)} != values {sorted(values)}")
    return page


def build_page(template: str, *, title: str, css: str, data: Any | None = None,
               js: str | None = None, body: str | None = None) -> str:
    """A page from the asset ``template`` (slots ``CSP``, ``TITLE``, ``CSS`` and, when given,
    ``DATA``, ``JS``, ``BODY``): the title escaped, the data as script-safe JSON, the CSP hashing
    the page's inline style and script. ``body`` is HTML the caller has escaped."""
    if js is not None and _SCRIPT_END.search(js):
        raise ValueError("a page's script may not hold '</script' or '<!--' (it would end the "
                         "element or change how it is parsed)")
    values = {"CSP": content_security_policy(scripts=(js,) if js is not None else (),
                                             styles=(css,)),
              "TITLE": html.escape(title), "CSS": css}
    if data is not None:
        values["DATA"] = script_json(data)
    if js is not None:
        values["JS"] = js
    if body is not None:
        values["BODY"] = body
    return fill_template(asset(template), values)


__all__ = ["asset", "build_page", "content_security_policy", "fill_template", "script_json",
           "sha256_source"]
