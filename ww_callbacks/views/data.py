"""What the browser views draw, in one form for every page that shows them: the TensorBoard tab
(its ``records`` and ``spectra`` routes) and the HTML report (one inline blob). Framework-free:
the report imports it without TensorBoard.

The slim form of history lines (``slim_records``, fed to ``AlphaTable`` in ``table.js``):
``layers`` (names in order of first appearance) and per analysis ``step``, ``epoch`` and, aligned
with ``layers``, ``a`` (alpha; None for no fit or absent), ``t`` (traps; None where traps were not
counted) and ``n`` (eigenvalues); the policies' ``actions`` lines as they are (without their
writer); ``min_evals_for_trust`` (the fewest eigenvalues a fit is trusted on) where a record
states it. The stored ESDs (``ww_spectra.jsonl``) are passed as ``{"step", "layers"}`` records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..history_reader import is_actions, parse_line


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _alpha(row: dict, digits: int | None) -> float | None:
    alpha = _number(row.get("alpha"))
    ok = row.get("status", "success") == "success" and alpha is not None and alpha > 0
    if not ok:
        return None
    return alpha if digits is None else round(alpha, digits)


def slim_form(records: Iterable[dict], actions: Iterable[dict] = (), *,
              digits: int | None = None) -> dict:
    """The slim form (see the module's documentation) of analysis records the history reader
    accepted and of actions lines; ``digits``: alphas rounded (the report's page stays small),
    None keeps them as written."""
    layers: list[str] = []
    index: dict[str, int] = {}
    columns = []
    trust = None
    for record in records:
        stated = record.get("min_evals_for_trust")
        if isinstance(stated, int) and not isinstance(stated, bool) and stated >= 0:
            trust = stated
        cells: dict[int, tuple] = {}
        for row in record["layers"]:
            if not isinstance(row, dict) or not isinstance(row.get("longname"), str):
                continue
            name = row["longname"]
            i = index.get(name)
            if i is None:
                i = index[name] = len(layers)
                layers.append(name)
            if i not in cells:  # a sliced layer: its first row
                traps = _number(row.get("rand_num_spikes"))
                evals = _number(row.get("num_evals"))
                cells[i] = (_alpha(row, digits),
                            None if traps is None else int(traps) if traps > 0 else 0,
                            None if evals is None else int(evals))
        columns.append((record["step"], record.get("epoch"), cells))
    blank = (None, None, None)
    out = []
    for step, epoch, cells in columns:
        values = [cells.get(i, blank) for i in range(len(layers))]
        out.append({"step": step, "epoch": epoch, "a": [v[0] for v in values],
                    "t": [v[1] for v in values], "n": [v[2] for v in values]})
    answer = {"layers": layers, "records": out,
              "actions": [{k: v for k, v in a.items() if k != "writer"} for a in actions]}
    if trust is not None:
        answer["min_evals_for_trust"] = trust
    return answer


def slim_records(lines: Iterable[str]) -> dict:
    """The slim form of history lines read as they are (the TensorBoard tab's chunks): torn or
    foreign lines are counted in ``skipped``; the one history reader's rules
    (:func:`ww_callbacks.history_reader.parse_line`)."""
    records, actions, skipped = [], [], 0
    for line in lines:
        if not line.strip():
            continue
        kind, record, _ = parse_line(line.encode("utf-8"))
        if kind == "other" and is_actions(record):
            actions.append(record)
        elif kind == "record":
            records.append(record)
        else:
            skipped += 1
    return {**slim_form(records, actions), "skipped": skipped}


def finite(value: Any) -> Any:
    """``value`` (JSON-ready: dicts, lists, scalars) with NaN and infinities as None: what a
    browser's JSON.parse reads (a hand-made or damaged history may hold them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def spectra_record(value: Any) -> dict | None:
    """One sidecar line (parsed) as the views take it, ``{"step", "layers"}``, or None when it
    is not a stored-ESD line."""
    if isinstance(value, dict) and isinstance(value.get("layers"), dict):
        return {"step": value.get("step"), "layers": value["layers"]}
    return None


__all__ = ["finite", "slim_form", "slim_records", "spectra_record"]
