"""Old home of the watch session: the ``Watcher`` class was merged into
:class:`ww_callbacks.session.WatchSession`, and the ``Sink`` protocol lives in
:mod:`ww_callbacks.sinks`. The old names (``Watcher``, ``Sink``, the names it imported) still
import from here, with a :class:`DeprecationWarning` once per name.
"""

from __future__ import annotations

from ._moved import moved_names

_SESSION = "ww_callbacks.session"
__getattr__ = moved_names(__name__, {
    "Watcher": f"{_SESSION}:WatchSession", "Sink": "ww_callbacks.sinks",
    "in_worker": "ww_callbacks.sinks", "reopen_of": "ww_callbacks.sinks",
    "INTERRUPT_GRACE_S": f"{_SESSION}.lifecycle", "INTERRUPT_STOP_S": f"{_SESSION}.lifecycle",
    "WatcherWarning": "ww_callbacks.faults", "LOG": "ww_callbacks.faults",
    "FaultReporter": "ww_callbacks.faults", "Retrying": "ww_callbacks.faults",
    "Policy": "ww_callbacks.policies.base", "Target": "ww_callbacks.policies.base",
    "PolicySet": "ww_callbacks.policies.policy_set",
    "DEFAULT_MAX_DUTY": "ww_callbacks.worker", "BackgroundWorker": "ww_callbacks.worker",
    "resolve_max_duty": "ww_callbacks.worker", "Snapshot": "ww_callbacks.results",
    "analyze_layers": "ww_callbacks.analysis", "InitialBase": "ww_callbacks.session.host_copies",
    "AnalysisCancelled": "ww_callbacks.analysis", "NON_FINITE": "ww_callbacks.analysis",
    "Snapshotter": "ww_callbacks.snapshot", "HISTORY_FILE": "ww_callbacks.history",
    "HistoryWriter": "ww_callbacks.history", "MIN_EVALS": "ww_callbacks.options",
    "MAX_EVALS": "ww_callbacks.options", "MAX_N": "ww_callbacks.options",
    "DROPPED": "ww_callbacks.scalars", "MODEL_PREFIX": "ww_callbacks.scalars",
})
