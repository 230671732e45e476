"""The browser views of a run, as real asset files of the package (ES modules and CSS; no
network, no CDN, nothing fetched at run time), shared by the TensorBoard tab
(:mod:`ww_callbacks.integrations.tensorboard_plugin`), the report and ``compare``'s page (which
carry them inline: :func:`page_script`).

ES modules, each importing the others only through relative ``./x.js`` imports; no view fetches
anything: data comes in through the one client-side model of a run, ``AlphaTable``, filled with
the plugin's ``records`` / ``spectra`` answers (the report passes the same answers, built with
``slim_records``). Every view is ``new View(container, table, opts)`` with ``update()`` after
new data, and ``setStep(step)`` / ``selectLayer(name)`` where they apply.

- ``table.js``: ``AlphaTable`` (analyses, stored ESDs, actions, derived alerts), bands, number
  formats.
- ``heatmap.js``: the alpha heatmap (continuous colour scale with 2 and 6 marked, layer names on
  every row elided in the middle with the full name on hover, a step axis, hover with layer,
  step, alpha, traps and number of eigenvalues, fits on too few eigenvalues hatched).
- ``flow.js``: the correlation flow (alpha against layer depth at one analysis; step slider and
  step box).
- ``lines.js``: alpha per layer over the steps (a colour per layer, legend, name filter).
- ``esd.js``: the ESD of a chosen layer and step (fit line, xmin/xmax, randomized ESD, MP edge,
  trap spikes).
- ``alerts.js``: alerts (band changes, new traps) and policy actions on a timeline and a list.
- ``run_views.js``: all of them over one table, linked (``RunViews``).
- ``svg.js``: drawing helpers.
- ``tensorboard_tab.js``: the TensorBoard tab's page (run selector, polling; the only fetching
  module).
- ``views.css``: their style.
- :mod:`ww_callbacks.views.data`: the data they draw, in the one form every page gets.
- :mod:`ww_callbacks.views.spectra_index`: where each layer's stored ESDs lie in the sidecar (the
  tab sends one layer's).
"""

from __future__ import annotations

import re
from importlib import resources

#: the asset files of this package
ASSET_FILES = ("table.js", "svg.js", "heatmap.js", "flow.js", "lines.js", "esd.js", "alerts.js",
               "run_views.js", "tensorboard_tab.js", "views.css")


def asset(name: str) -> bytes:
    """The bytes of one asset file (``name`` among :data:`ASSET_FILES`)."""
    if name not in ASSET_FILES:
        raise ValueError(f"no view asset named {name!r}; there are {', '.join(ASSET_FILES)}")
    return resources.files(__package__).joinpath(name).read_bytes()


_IMPORT = re.compile(r'^import \{[^}]*\} from "\./([a-z_]+\.js)";[ \t]*\n', re.M)
_REEXPORT = re.compile(r"^export \{[^}]*\};[ \t]*\n", re.M)
_EXPORT = re.compile(r"^export (?=(?:async )?(?:function|class|const|let) )", re.M)


def inline_modules(*entries: str) -> str:
    """One module's text holding the view modules ``entries`` and every module they import
    (each once, a module after those it imports), with the relative ``import`` lines and the
    ``export`` keywords taken out: for a page that must carry its scripts inline (the offline
    report puts it in one ``<script type="module">``, followed by the code that fills an
    ``AlphaTable`` and builds ``RunViews``). The modules' top-level names are unique across
    them (tests/test_views.py), so nothing collides."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in path:
            raise ValueError(f"the view modules import each other in a circle: {path}")
        for dep in _IMPORT.findall(asset(name).decode("utf-8")):
            visit(dep, (*path, name))
        order.append(name)

    for entry in entries:
        visit(entry, ())
    parts = []
    for name in order:
        text = _EXPORT.sub("", _REEXPORT.sub("", _IMPORT.sub("", asset(name).decode("utf-8"))))
        parts.append(f"// ---- {name}\n{text}")
    out = "\n".join(parts)
    if "</script" in out.lower():  # cannot happen with these files; never let it into a page
        raise ValueError("a view module holds '</script'")
    return out


def page_script(entry: str) -> str:
    """The one inline script of a page opened from disk (the report, ``compare``'s page: a
    ``file://`` page loads no ES module file): ``entry``, the page's own code written as an ES
    module that imports view modules (``import {A, B} from "./x.js";``), after those modules
    (:func:`inline_modules`) and without its import lines, all inside one function scope (strict
    mode; the page's own names in a block of their own, so they never clash with the views')."""
    deps = _IMPORT.findall(entry)
    body = _IMPORT.sub("", entry)
    if re.search(r"^\s*(import|export)\b", body, re.M):
        raise ValueError('a page script imports only as `import {A, B} from "./x.js";` and '
                         "exports nothing")
    return ('(() => {\n"use strict";\n' + inline_modules(*deps) +
            "\n// ---- the page's own script\n{\n" + body + "}\n})();\n")
