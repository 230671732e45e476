"""Each layer's ESD in compact form, computed once for every view (history sidecar, the
TensorBoard tab, pictures, W&B), and the schedule on which a watch session stores it.

A compact ESD is a small JSON-ready dict: a histogram of the eigenvalues on :data:`BINS`
log10-spaced bins (``log10_lo``, ``log10_hi``: the outer edges, the bins are equal in log10;
``counts``), the fitted power law (``alpha``, ``xmin``, ``xmax``, ``num_pl_spikes``), the number
of eigenvalues and, where traps were counted, the randomized ESD's histogram on the same bins
(``rand_counts``), its Marchenko-Pastur bulk edge (``bulk_max``) and the trap spikes (the
``rand_num_spikes`` largest randomized eigenvalues, ``spikes``). Measured: about 600 B per
layer per stored ESD (bench/history_size.py: 16 layers, with traps), against 1.3 KB per layer
per analysis for the history's row: storing them in the history would make its lines 1.45x
longer, so they live in the sidecar :data:`SPECTRA_FILE`.

The sidecar holds one line per stored analysis: ``{"step": s, "layers": {longname: esd}}``,
written after the analysis' history record (its step is in the history). Readers skip torn lines
like the history's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .bands import band

#: the sidecar next to ``ww_history.jsonl``
SPECTRA_FILE = "ww_spectra.jsonl"
#: log10 bins of a compact ESD
BINS = 64
#: analyses between two stored ESDs by default (the TensorBoard pictures' ``images_every``)
ESD_EVERY = 5


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _round(value: Any, digits: int = 6) -> float | None:
    """Six significant digits (what a picture can show), None for NaN/inf (plain JSON)."""
    out = _num(value)
    if not math.isfinite(out):
        return None
    return float(f"{out:.{digits}g}")


def _positive(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr) & (arr > 0)]


def compact_esd(evals: Any, row: Mapping[str, Any] | None = None, rand_evals: Any = None, *,
                bins: int = BINS) -> dict:
    """The compact ESD of one layer: ``evals`` its eigenvalues, ``row`` its row of the analysis
    (``alpha``, ``xmin``, ``xmax``, ``num_pl_spikes``, ``rand_bulk_max``, ``rand_num_spikes``),
    ``rand_evals`` the randomized eigenvalues where traps were counted. Never raises on a
    degenerate spectrum (empty, all zero, one value): its histogram is then empty."""
    row = row or {}
    ev = _positive(evals)
    rand = _positive(rand_evals) if rand_evals is not None else np.empty(0)
    out: dict[str, Any] = {"n": int(np.size(evals)), "alpha": _round(row.get("alpha")),
                           "xmin": _round(row.get("xmin")), "xmax": _round(row.get("xmax")),
                           "num_pl_spikes": _round(row.get("num_pl_spikes"))}
    both = np.concatenate([ev, rand]) if rand.size else ev
    if both.size:
        lo, hi = math.log10(float(both.min())), math.log10(float(both.max()))
        if hi - lo < 1e-9:  # one distinct value: give the bins some width
            lo, hi = lo - 0.1, hi + 0.1
        edges = np.linspace(lo, hi, bins + 1)
        out.update(log10_lo=_round(lo), log10_hi=_round(hi),
                   counts=np.histogram(np.log10(ev), edges)[0].tolist())
        if rand.size:
            out["rand_counts"] = np.histogram(np.log10(rand), edges)[0].tolist()
    else:
        out.update(log10_lo=None, log10_hi=None, counts=[])
    if rand.size:
        k = int(_num(row.get("rand_num_spikes"))) if _num(row.get("rand_num_spikes")) > 0 else 0
        out["bulk_max"] = _round(row.get("rand_bulk_max"))
        out["spikes"] = [_round(v) for v in np.sort(rand)[-k:]] if k else []
    return out


def compact_spectra(result: Any) -> dict[str, dict]:
    """Compact ESDs of every layer of an analysis whose eigenvalues were kept
    (``result.spectra``), keyed by longname (the first row of a sliced layer)."""
    spectra = getattr(result, "spectra", None) or {}
    if not spectra:
        return {}
    details = result.details
    rows = {} if details is None or details.empty else {
        r["longname"]: r for r in details.drop_duplicates("longname").to_dict(orient="records")}
    rand = getattr(result, "rand_spectra", None) or {}
    return {name: compact_esd(evals, rows.get(name), rand.get(name))
            for name, evals in spectra.items()}


def _state(row: Mapping[str, Any]) -> tuple[str, int]:
    alpha = _num(row.get("alpha"))
    ok = row.get("status", "success") == "success" and alpha > 0
    traps = _num(row.get("rand_num_spikes"))
    return band(alpha if ok else None), int(traps) if math.isfinite(traps) and traps > 0 else 0


class EsdSchedule:
    """When a session stores the ESDs: the first analysis, every ``every``-th one (0: only the
    other occasions), an analysis where a layer gains a trap or changes band, and the final
    analysis (the session asks :meth:`due` with ``final=True``)."""

    def __init__(self, every: int = ESD_EVERY):
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 0:
            raise ValueError(f"esd_every must be an integer >= 0 (0: only on changes and at the "
                             f"end), not {every!r}")
        self.every = int(every)
        self.seen = 0
        self.stored_step: int | None = None
        self._states: dict[str, tuple[str, int]] = {}

    def due(self, result: Any, *, final: bool = False) -> bool:
        """Record ``result`` (once per analysis) and say whether its ESDs are stored."""
        details = result.details
        rows = [] if details is None or details.empty else \
            details.drop_duplicates("longname").to_dict(orient="records")
        states = {r["longname"]: _state(r) for r in rows}
        changed = any(name in self._states and (
            state[0] != self._states[name][0] or state[1] > self._states[name][1])
            for name, state in states.items())
        first = self.seen == 0
        self.seen += 1
        self._states = states
        return (first or final or changed
                or bool(self.every and self.seen % self.every == 0))
