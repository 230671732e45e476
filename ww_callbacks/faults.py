"""What the watcher does when its own outputs fail (a full disk, a sink that raises).

Two promises, kept here in one place for the history file and every sink:

- **Warn once per cause, count the rest.** :class:`FaultReporter` groups failures by *what*
  failed and *why* (``No space left on device`` is one cause however many records it costs), so
  a full disk gives one warning, not one per analysis; :meth:`FaultReporter.summary` (shown by
  the watcher at close) says how many writes each cause cost and whether the output recovered.
- **Retry, and recover by itself.** :class:`Retrying` wraps one output: after a failure the next
  write is tried again anyway (nothing is switched off for good); an output that needs to start
  afresh after a failure (TensorBoard: a new events file, since the old one may end in a torn
  record) gets its ``reopen()`` called before the retry. A failed write never stops the others:
  the history failing does not take a result away from the sinks or policies.

The sink-side contract (``reopen``) is optional: a sink with a method ``reopen(self) -> None``
has it called, on the thread that writes to the sink, before the first write after a failed one;
it should drop whatever handle failed (closing it quietly) and open a new one, and may itself
raise (then the failure is counted under its cause and ``reopen`` is tried again next time).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Where recoveries and the closing count of failures go (the first failure of each cause is a
#: :class:`WatcherWarning`; repeating it as warnings would flood training's output).
LOG = logging.getLogger("ww_callbacks")


class WatcherWarning(UserWarning):
    """A problem of the watcher (a failed analysis, a failing sink) that training survives."""


def cause_of(err: BaseException) -> str:
    """A short, stable description of why ``err`` happened, used to group failures: the
    operating system's message for OS errors (``No space left on device``, ``File too large``)
    whatever the file, the class and message otherwise. TensorFlow's ``ResourceExhaustedError()``
    (its message is often empty) is followed to the OS error it wraps when there is one."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:  # the OS error under wrappers
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return os.strerror(current.errno)
        current = current.__cause__ or current.__context__
    text = str(err).strip()
    if isinstance(err, OSError) and err.errno is None and not text:
        return type(err).__name__
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def not_writable(path: str | os.PathLike, err: OSError) -> OSError:
    """``err`` (from creating a folder or file at ``path``) as an error that names the problem:
    a read-only file system or a folder without write permission is called read-only (before,
    a read-only ``log_dir`` surfaced as "No such file or directory" of a file below it)."""
    import errno

    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OSError(err.errno, f"{os.fspath(path)} is read-only ({os.strerror(err.errno)}); "
                                  "give a writable log_dir")
    return err


@dataclass
class _Cause:
    first_error: str
    count: int = 0
    reported: bool = False


@dataclass
class _Output:
    causes: dict[str, _Cause] = field(default_factory=dict)
    failing: bool = False  # the last write failed
    recovered: int = 0  # times a write succeeded again after failures


class FaultReporter:
    """Collects the failures of the watcher's outputs, grouped by (output, cause); thread-safe
    (the history and in-worker sinks fail in the worker thread, the others on the training
    thread). The first failure of each cause queues a warning that the training thread shows
    with :meth:`pop_messages` (so it appears where training can see it); a recovery and the
    closing :meth:`summary` go to the ``ww_callbacks`` logger."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outputs: dict[str, _Output] = {}
        self._messages: list[str] = []

    def failed(self, output: str, err: BaseException, *, consequence: str = "") -> None:
        """Record one failed write of ``output`` (e.g. ``"history"``, ``"sink TensorBoardSink"``);
        the first failure of each cause queues a warning naming the cause."""
        cause = cause_of(err)
        with self._lock:
            state = self._outputs.setdefault(output, _Output())
            state.failing = True
            entry = state.causes.setdefault(cause, _Cause(repr(err)))
            entry.count += 1
            if not entry.reported:
                entry.reported = True
                tail = f"; {consequence}" if consequence else ""
                self._messages.append(f"ww_callbacks: {output} failed: {cause} "
                                      f"({entry.first_error}){tail}; it is retried at every "
                                      f"write and this cause is not reported again (counts at "
                                      f"close)")

    def succeeded(self, output: str) -> None:
        """Record a successful write; after failures this logs one "recovered" message."""
        with self._lock:
            state = self._outputs.get(output)
            if state is None or not state.failing:
                return
            state.failing = False
            state.recovered += 1
            lost = sum(c.count for c in state.causes.values())
        LOG.warning("ww_callbacks: %s works again (%d failed write(s) so far)", output, lost)

    def is_failing(self, output: str) -> bool:
        """True when the last write of ``output`` failed."""
        with self._lock:
            state = self._outputs.get(output)
            return bool(state and state.failing)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{output: {cause: failed writes}}``."""
        with self._lock:
            return {name: {cause: c.count for cause, c in state.causes.items()}
                    for name, state in self._outputs.items() if state.causes}

    def pop_messages(self) -> list[str]:
        """The warnings queued since the last call (to be shown on the training thread)."""
        with self._lock:
            messages, self._messages = self._messages, []
        return messages

    def summary(self) -> str | None:
        """One line per output that failed: how many writes each cause cost and whether it works
        again; None when nothing failed."""
        counts = self.counts()
        if not counts:
            return None
        parts = []
        with self._lock:
            for name, causes in counts.items():
                state = self._outputs[name]
                status = "still failing" if state.failing else "recovered"
                what = ", ".join(f"{n} x {cause}" for cause, n in causes.items())
                parts.append(f"{name}: {what} ({status})")
        return "ww_callbacks: failed writes during this run: " + "; ".join(parts)


class Retrying:
    """Calls one output's write with the reporter's bookkeeping: a failure is recorded (never
    raised), the next write retries, calling ``reopen`` first when the output has one."""

    def __init__(self, name: str, reporter: FaultReporter, *, reopen: Callable[[], Any] | None,
                 consequence: str = ""):
        self.name = name
        self.reporter = reporter
        self._reopen = reopen
        self._consequence = consequence
        self._needs_reopen = False

    def __call__(self, write: Callable[..., Any], *args: Any) -> bool:
        """``write(*args)``; True when it (and the ``reopen`` before it, if due) succeeded."""
        try:
            if self._needs_reopen and self._reopen is not None:
                self._reopen()
            self._needs_reopen = False
            write(*args)
        except Exception as err:
            self._needs_reopen = True
            self.reporter.failed(self.name, err, consequence=self._consequence)
            return False
        self.reporter.succeeded(self.name)
        return True


__all__ = ["WatcherWarning", "FaultReporter", "Retrying", "cause_of", "not_writable"]
