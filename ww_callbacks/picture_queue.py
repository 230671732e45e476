"""Where the dashboards' pictures are drawn: :class:`PictureQueue`, one thread per sink, under a
CPU-time budget, and the final frame after training has returned.

Why a budget: a frame (heatmap, correlation flow, histogram and a few ESDs) is ~0.5 s of CPU for
the digits MLP, mostly matplotlib in Python (RESULTS.md 6b), and on a CPU machine whose cores
all train, a drawing thread takes that time from training whatever thread it is in: every frame
the cadence asked for cost a 12-s Lightning fit +49% (6.0 s of wall time for 4.0 s of drawing
CPU, 1.5x). The queue therefore draws a frame only when the CPU time it has spent drawing, plus
its estimate of the frame, stays within ``duty`` of the wall time since the sink started
(:data:`PICTURE_DUTY`: 0.5%, so that at that 1.5x exchange rate the pictures cost training under
1%). A frame that must wait for its turn is merged into the next one (newest wins, its ESD layers
carried over, counted in :attr:`PictureQueue.merged`): a trap that appears is still drawn, at
the next frame the budget allows. A short run draws its final frame only; a long one about one
frame per ``estimate / duty`` seconds (~100 s for the digits MLP).

Why the final frame is drawn after training has returned: it is due when training ends, and on
the fit's clock it alone would cost a 12-s fit 4%. :meth:`PictureQueue.finish` draws it, then
runs the sink's closing step (flush and close the writer), in the queue's thread while the
user's program goes on; the interpreter waits for it at exit (an ``atexit`` hook, interrupted by
Ctrl-C), and :func:`wait_for_pictures` waits for it explicitly (e.g. before reading the event
files back).
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .dashboard import Frame
from .results import AnalysisResult

#: The default share of wall time the picture thread may spend drawing, in its own CPU time.
PICTURE_DUTY = 0.005
#: CPU seconds per picture assumed before the first frame is measured (RESULTS.md 6b: ESD 0.11,
#: flow 0.19, histogram 0.11, heatmap 0.05 s for the digits MLP).
FIRST_ESTIMATE_S = 0.1
#: How long the interpreter waits at exit for pictures still being drawn after training.
EXIT_WAIT_S = 60.0

_FINISHING: set[PictureQueue] = set()
_FINISHING_LOCK = threading.Lock()
_EXITING = False
_EXIT_HOOK: list[bool] = []  # [True] once the exit hook is registered


def wait_for_pictures(timeout: float | None = None) -> bool:
    """Wait until every sink that closed has drawn and written its last pictures (they are
    drawn after training returns, see the module docstring); False on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with _FINISHING_LOCK:
        queues = list(_FINISHING)
    for queue in queues:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not queue.join(left):
            return False
    return True


def _register_exit_hook() -> None:
    """Register :func:`_finish_at_exit` once, when the first queue starts drawing (importing this
    module registers nothing)."""
    with _FINISHING_LOCK:
        if not _EXIT_HOOK:
            _EXIT_HOOK.append(True)
            atexit.register(_finish_at_exit)


def drawing_at_exit() -> list[str]:
    """The names of the queues still drawing their last pictures (what exit waits for)."""
    with _FINISHING_LOCK:
        return sorted(q._name for q in _FINISHING
                      if q._thread is not None and q._thread.is_alive())


def announce_exit_wait(names: list[str]) -> None:
    """Say on stderr, in one line, that the interpreter waits for the final pictures (a process
    that seems to hang ~2 s after training otherwise prints nothing)."""
    print(f"ww_callbacks: drawing the final pictures ({', '.join(names)}) before exit, at most "
          f"{EXIT_WAIT_S:g} s (Ctrl-C skips them)", file=sys.stderr, flush=True)


def _finish_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    global _EXITING
    _EXITING = True  # a sink closed from now on draws its last frame before close returns
    try:
        names = drawing_at_exit()
        if names:
            announce_exit_wait(names)
        wait_for_pictures(EXIT_WAIT_S)
    except KeyboardInterrupt:  # Ctrl-C at exit: leave the pictures, exit now
        pass


def _pictures(frame: Frame) -> int:
    return 3 * bool(frame.summary) + len(frame.esd_layers)


def _merge(older: Frame, newer: Frame, result: AnalysisResult) -> Frame:
    """``newer`` plus the ESDs ``older`` drew off schedule (a layer gained a trap or left the
    2-6 band) that ``result`` can still show; ``older``'s scheduled ESDs give way to newer's."""
    extra = [name for name in older.changed
             if name not in newer.esd_layers and name in result.spectra]
    return Frame(newer.step, list(newer.alerts), older.summary or newer.summary,
                 [*newer.esd_layers, *extra], [*newer.changed, *extra],
                 list(newer.alerts_markdown))


class PictureQueue:
    """Draws a sink's pictures in one thread of its own, in order, under a CPU-time budget, so
    that drawing holds up neither the training thread nor the analysis worker.

    ``draw(result, frame)`` makes the pictures (in the queue's thread; TensorBoard also writes
    them there); the sink hands frames over with :meth:`submit` and takes what is drawn with
    :meth:`ready`. ``duty``: the largest share of wall time (since the queue was made) the thread
    may spend drawing, in its own CPU time; None draws every frame at once. A frame waiting for
    its turn when a newer one comes is merged into it, which keeps the older one's off-schedule
    ESDs (:attr:`merged` counts them); without a budget, only beyond ``max_waiting`` frames.
    Frames submitted with ``keep`` (the final one) and every frame waiting when :meth:`ready`
    waits, :meth:`wait_idle`, :meth:`close` or :meth:`finish` is called are drawn without
    waiting for the budget.
    """

    def __init__(self, draw: Callable[[AnalysisResult, Frame], Any], name: str, *,
                 duty: float | None = PICTURE_DUTY, max_waiting: int | None = None):
        if duty is not None and not 0 < duty <= 1:
            raise ValueError(f"picture duty must be None or in (0, 1], not {duty!r}")
        self._draw = draw
        self._name = name
        self.duty = duty
        #: Frames that may wait besides kept ones: none beyond the newest under a budget (a
        #: frame waiting for its turn is merged into the next), else 4 (a backlog while one is
        #: drawn: the cadence asked for each).
        self.max_waiting = max_waiting if max_waiting is not None else 0 if duty else 4
        self._cond = threading.Condition()
        self._waiting: deque[list] = deque()  # [result, frame, keep]
        self._done: list[tuple[AnalysisResult, Any]] = []
        self._busy = False
        self._flush = False  # draw what waits now, budget or not
        self._stopping = False
        self._then: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self._start = time.monotonic()
        #: Frames merged into a newer one before they were drawn.
        self.merged = 0
        #: Frames drawn, pictures drawn, and the CPU seconds they took (the queue's thread).
        self.frames_drawn = 0
        self.pictures_drawn = 0
        self.cpu_s = 0.0

    # ------------------------------------------------------------------ the sink's side

    def submit(self, result: AnalysisResult, frame: Frame, *, keep: bool = False) -> None:
        """Queue ``frame`` of ``result``; waiting frames beyond ``max_waiting`` merge into the
        frame queued after them."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("the picture queue is closed")
            self._waiting.append([result, frame, keep])
            self._trim()
            self._ensure_thread()
            self._cond.notify_all()

    def _trim(self) -> None:
        """Merge the oldest waiting frames (never a kept one) into their successors while more
        than ``max_waiting`` wait (by position: results hold DataFrames, which == cannot
        compare)."""
        while sum(not item[2] for item in self._waiting) > self.max_waiting:
            oldest = next((i for i, item in enumerate(self._waiting)
                           if not item[2] and i < len(self._waiting) - 1), None)
            if oldest is None:  # only the newest frame waits
                return
            older, newer = self._waiting[oldest], self._waiting[oldest + 1]
            newer[1] = _merge(older[1], newer[1], newer[0])
            del self._waiting[oldest]
            self.merged += 1

    def ready(self, *, wait: bool = False) -> list[tuple[AnalysisResult, Any]]:
        """The frames drawn so far, in order, as ``(result, pictures)``; ``pictures`` is the
        exception when drawing failed. ``wait``: draw every queued frame now and wait for it."""
        if wait:
            self.wait_idle(None)
        with self._cond:
            out, self._done = self._done, []
        return out

    def wait_idle(self, timeout: float | None = 60.0) -> bool:
        """Draw every queued frame now (budget or not) and wait until it is drawn; False on
        timeout. For the end of a run and for tests."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flush = True
            self._cond.notify_all()
            try:
                while self._waiting or self._busy:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
            finally:
                self._flush = self._stopping  # a closing queue keeps drawing without a budget
        return True

    def close(self) -> None:
        """Draw what is queued, stop the thread and wait for it (take the pictures with
        ``ready(wait=True)`` first)."""
        self._stop(None)
        self.join(None)

    def finish(self, then: Callable[[], None] | None = None) -> None:
        """Draw what is queued, then call ``then`` (the sink's closing step), in the queue's
        thread, without waiting: the caller (training) goes on. At interpreter exit this draws
        before returning instead (nothing would wait for it)."""
        if _EXITING:
            self._stop(then)
            self.join(None)
            return
        with _FINISHING_LOCK:
            _FINISHING.add(self)
        self._stop(then)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end after :meth:`close` or :meth:`finish`; False on timeout."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                return False
        with _FINISHING_LOCK:
            _FINISHING.discard(self)
        return True

    @property
    def pending(self) -> bool:
        """True while a frame waits or is being drawn."""
        with self._cond:
            return bool(self._waiting) or self._busy

    @property
    def estimate_s(self) -> float:
        """CPU seconds per picture: measured once a frame was drawn."""
        if self.pictures_drawn:
            return self.cpu_s / self.pictures_drawn
        return FIRST_ESTIMATE_S

    # ------------------------------------------------------------------ the thread

    def _stop(self, then: Callable[[], None] | None) -> None:
        with self._cond:
            if self._stopping:
                return
            self._stopping, self._flush, self._then = True, True, then
            if self._thread is None and then is not None:
                self._ensure_thread()
            self._cond.notify_all()

    def _ensure_thread(self) -> None:
        if self._thread is None:  # daemon: a queue never closed must not keep the process
            _register_exit_hook()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _delay(self, frame: Frame) -> float:
        """Seconds until drawing ``frame`` fits the budget (0: now)."""
        if self.duty is None:
            return 0.0
        need = self.cpu_s + self.estimate_s * _pictures(frame)
        allowed = self.duty * (time.monotonic() - self._start)
        return max(0.0, (need - allowed) / self.duty)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._waiting:
                    if self._stopping:
                        break
                    self._cond.wait()
                    continue
                result, frame, keep = self._waiting[0]
                delay = 0.0 if keep or self._flush else self._delay(frame)
                if delay > 0:
                    self._cond.wait(delay)  # a newer frame, a flush or the budget
                    continue
                self._waiting.popleft()
                self._busy = True
            start = time.thread_time()
            try:
                outcome: Any = self._draw(result, frame)
            except Exception as err:  # a picture never stops training nor the scalars
                outcome = err
            spent = time.thread_time() - start
            with self._cond:
                self._busy = False
                self._done.append((result, outcome))
                self.frames_drawn += 1
                self.pictures_drawn += max(1, _pictures(frame))
                self.cpu_s += spent
                self._cond.notify_all()
        then = self._then
        try:
            if then is not None:
                then()
        except Exception as err:  # the sink's closing step failed: say so, end the thread
            import warnings

            from .faults import WatcherWarning

            warnings.warn(f"ww_callbacks: closing {self._name} failed: {err!r}", WatcherWarning,
                          stacklevel=1)
        finally:
            with _FINISHING_LOCK:
                _FINISHING.discard(self)


__all__ = ["EXIT_WAIT_S", "PICTURE_DUTY", "PictureQueue", "wait_for_pictures"]
