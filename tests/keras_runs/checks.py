"""The per-check protocol between a backend's script (its own process, KERAS_BACKEND fixed at
import) and the pytest tests that report each check by name.

A script calls :func:`run_checks` with its named checks. They run in order; after each one the
outcomes so far are written to ``OUT_DIR/checks.json`` (so a crash or a timeout still reports the
checks that finished)::

    {"backend": "jax", "checks": {"fit": {"ok": true, "seconds": 12.3, "report": {...}},
                                  "raise": {"ok": false, "error": "Traceback ..."},
                                  "lr_balance": {"skipped": "why"}}}

A failing check does not stop the next ones; the process exits with 1 when one failed.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPORT_NAME = "checks.json"


def run_checks(out: Path, backend: str, checks: list[tuple[str, Callable[[], dict | None]]],
               skipped: dict[str, str] | None = None) -> None:
    """Run ``checks`` (``(name, function returning what it measured)``), write the outcomes to
    ``out / REPORT_NAME`` after each, and exit 1 if one failed. ``skipped``: checks that do not
    apply here, with the reason (reported as skips, never left out silently)."""
    outcomes: dict[str, dict] = {name: {"skipped": why} for name, why in (skipped or {}).items()}
    path = out / REPORT_NAME

    def write() -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"backend": backend, "checks": outcomes}))
        tmp.replace(path)

    failed = False
    for name, check in checks:
        start = time.perf_counter()
        try:
            report = check() or {}
        except Exception:  # any failure: reported to pytest with its traceback
            failed = True
            outcomes[name] = {"ok": False, "error": traceback.format_exc()}
            print(f"check {name} FAILED", file=sys.stderr, flush=True)
        else:
            outcomes[name] = {"ok": True, "seconds": round(time.perf_counter() - start, 2),
                              "report": report}
        write()
    write()
    sys.exit(1 if failed else 0)
