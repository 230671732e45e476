"""The end of a session in every case: a normal close, an interrupted one (an exception, Ctrl-C),
a host that drops its callback without closing it (a finalizer), and the end of the interpreter
(one exit hook closing every live session, registered when the first session is made).
"""

from __future__ import annotations

import atexit
import sys
import threading
import warnings
import weakref
from typing import Any

from ..faults import WatcherWarning

#: How long ``close(final=False)`` (an exception, Ctrl-C) lets the analysis in flight finish
#: before cancelling it, and how long it then waits for the worker to stop between two layers;
#: together under 1 s. Past that the daemon thread is abandoned (it ends on its own; what it
#: finished is kept). Measured: a 2000x2000 layer takes ~2 s on one core, so waiting for it
#: made Ctrl-C take as long as the whole analysis (14 s in the issue).
INTERRUPT_GRACE_S = 0.5
INTERRUPT_STOP_S = 0.3

#: The sessions not closed yet (closed at interpreter exit).
_LIVE: weakref.WeakSet = weakref.WeakSet()
_EXIT_HOOK: list[bool] = []  # [True] once the exit hook is registered


def register(session: Any) -> None:
    """Close ``session`` at interpreter exit unless it is closed before. The exit hook is
    registered with the first session (importing this module registers nothing)."""
    if not _EXIT_HOOK:
        _EXIT_HOOK.append(True)
        # at the start of the interpreter's shutdown, before every atexit hook: the analysis
        # process's and the shared-memory pools' own hooks (registered at the first snapshot,
        # so run before an atexit hook registered here) closed the pool first, and the final
        # analysis at exit failed ("the segment pool is closed") with the pending one lost
        at_shutdown = getattr(threading, "_register_atexit", None)
        try:
            if at_shutdown is None:
                raise RuntimeError("no threading._register_atexit")
            at_shutdown(_close_all_at_exit)
        except RuntimeError:  # another Python, or registered during shutdown
            atexit.register(_close_all_at_exit)
    _LIVE.add(session)


def unregister(session: Any) -> None:
    """``session`` is closed: nothing left to do at exit."""
    _LIVE.discard(session)


def _close_all_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    failed = getattr(sys, "last_type", None) is not None  # the script died of an exception
    for session in list(_LIVE):
        session.close_at_exit(failed)


def _abandon(session: Any) -> None:
    """Finalizer of a host object dropped while its session still runs (e.g. a failed fit): stop
    the worker without delivering (the history already has every finished result)."""
    session.close(timeout=5.0, deliver=False, final=False)


def finalizer(owner: Any, session: Any) -> weakref.finalize:
    """Stop ``session`` when ``owner`` is garbage-collected before it was closed."""
    return weakref.finalize(owner, _abandon, session)


def stop_worker(worker: Any, timeout: float | None, *, final: bool,
                cancel: threading.Event) -> None:
    """Stop ``worker``: after its pending snapshot (``final``), else (an interruption) within
    ~1 s whatever the analysis in flight (``cancel`` stops it between two layers)."""
    if not final:
        worker.discard_pending()
        grace = INTERRUPT_GRACE_S if timeout is None else min(timeout, INTERRUPT_GRACE_S)
        if not worker.close(grace):
            cancel.set()
            worker.close(INTERRUPT_STOP_S)  # else abandoned: a daemon, ends by itself
    elif not worker.close(timeout):
        warnings.warn("ww_callbacks: the analysis did not finish in time; its thread is "
                      "left to end on its own", WatcherWarning, stacklevel=3)
