"""One registry of the tag families ww_callbacks logs, so every sink shows the same set.

Each family is a prefix: ``ww_alpha`` stands for ``ww_alpha/<layer>`` (one tag per layer),
``ww`` for the model-level ``ww/...`` scalars, ``ww/stop_reason`` for one model tag. The core
declares its own families here; each policy declares the ones it logs next to its code, with one
:func:`declare` call at import time (``ww_lr_scale`` by
:class:`~ww_callbacks.policies.LayerLRBalancer`, ``ww_traps_removed`` by
:class:`~ww_callbacks.policies.TrapRemoval`, ``ww/stop_reason`` by
:class:`~ww_callbacks.policies.HTSREarlyStopping`). TensorBoard builds its custom-scalars layout
from :func:`families` (one chart per per-layer family that has data) and W&B binds every
:func:`wandb_globs` pattern to its step metric, so a new family shows up in both without touching
either sink.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

SCALAR = "scalar"
IMAGE = "image"
HISTOGRAM = "histogram"
TEXT = "text"
_KINDS = (SCALAR, IMAGE, HISTOGRAM, TEXT)


@dataclass(frozen=True)
class TagFamily:
    """A family of tags. ``prefix``: the tags are ``prefix/<layer>`` when ``per_layer``, else
    ``prefix`` itself (a single tag such as ``ww/stop_reason``) or, for ``ww``, every
    ``ww/...`` model scalar. ``title``: the chart title. ``kind``: scalar, image, histogram or
    text. ``owner``: who logs it ("core" or the policy's class name)."""

    prefix: str
    title: str
    per_layer: bool = True
    kind: str = SCALAR
    owner: str = "core"

    def matches(self, tag: str) -> bool:
        """True when ``tag`` belongs to this family."""
        if self.per_layer or self.prefix == MODEL:
            return tag.startswith(self.prefix + "/")
        return tag == self.prefix


_lock = threading.Lock()
_FAMILIES: dict[str, TagFamily] = {}


def declare(prefix: str, title: str, *, per_layer: bool = True, kind: str = SCALAR,
            owner: str = "core") -> str:
    """Register a tag family and return its prefix (so a module can write
    ``MY_PREFIX = declare("ww_my_thing", "my thing (MyPolicy)", owner="MyPolicy")``).
    Declaring the same family twice is a no-op; a prefix declared with other settings raises."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, not {kind!r}")
    family = TagFamily(prefix, title, per_layer, kind, owner)
    with _lock:
        known = _FAMILIES.get(prefix)
        if known is not None and known != family:
            raise ValueError(f"tag family {prefix!r} is already declared as {known}")
        _FAMILIES[prefix] = family
    return prefix


def families(kind: str | None = None, *, per_layer: bool | None = None) -> list[TagFamily]:
    """The declared families (in declaration order), optionally of one ``kind`` and
    per-layer or not."""
    with _lock:
        found = list(_FAMILIES.values())
    return [f for f in found if (kind is None or f.kind == kind)
            and (per_layer is None or f.per_layer == per_layer)]


def family_of(tag: str) -> TagFamily | None:
    """The family a tag belongs to (the longest matching prefix), or None."""
    best = None
    for family in families():
        if family.matches(tag) and (best is None or len(family.prefix) > len(best.prefix)):
            best = family
    return best


def wandb_globs() -> list[str]:
    """``define_metric`` patterns covering every declared tag: ``prefix/*`` for each top-level
    prefix (``ww/*`` covers ``ww/stop_reason`` and the ``ww/`` text and tables)."""
    tops: list[str] = []
    for family in families():
        top = family.prefix.split("/", 1)[0]
        if top not in tops:
            tops.append(top)
    return [f"{top}/*" for top in tops]


# ---------------------------------------------------------------------- the core's families

#: The model-level scalars ``ww/alpha_mean``, ``ww/num_traps``, ... (see :mod:`.scalars`).
MODEL = declare("ww", "ww model", per_layer=False)
ALPHA = declare("ww_alpha", "alpha (all layers)")
ALPHA_WEIGHTED = declare("ww_alpha_weighted", "alpha_weighted (all layers)")
TRAPS = declare("ww_traps", "correlation traps (all layers)")
#: Spectra as histograms of log10 eigenvalues (TensorBoard's Histograms tab).
ESD_HISTOGRAM = declare("ww_esd", "ESD (log10 eigenvalues)", kind=HISTOGRAM)
#: The randomized ESD on the same bins, where traps were counted (W&B's stored ESDs).
ESD_RAND_HISTOGRAM = declare("ww_esd_rand", "randomized ESD (log10 eigenvalues)",
                             kind=HISTOGRAM)
#: Per-layer log-log ESD plots (Images).
ESD_PLOT = declare("ww_esd_plot", "ESD per layer", kind=IMAGE)
#: Model-level figures: ``ww_plots/alpha_heatmap``, ``ww_plots/correlation_flow``,
#: ``ww_plots/alpha_histogram``.
PLOTS = declare("ww_plots", "ww plots", per_layer=False, kind=IMAGE)
ALPHA_HEATMAP = f"{PLOTS}/alpha_heatmap"
CORRELATION_FLOW = f"{PLOTS}/correlation_flow"
ALPHA_HISTOGRAM = f"{PLOTS}/alpha_histogram"
#: The alert texts of each analysis (TensorBoard's Text tab).
ALERTS = declare("ww/alerts", "ww alerts", per_layer=False, kind=TEXT)

__all__ = ["ALERTS", "ALPHA", "ALPHA_HEATMAP", "ALPHA_HISTOGRAM", "ALPHA_WEIGHTED",
           "CORRELATION_FLOW", "ESD_HISTOGRAM", "ESD_PLOT", "ESD_RAND_HISTOGRAM", "HISTOGRAM",
           "IMAGE", "MODEL", "PLOTS", "SCALAR", "TEXT", "TRAPS", "TagFamily", "declare",
           "families", "family_of", "wandb_globs"]
