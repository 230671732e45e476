"""The analysis in a child process: training keeps its cores and its GIL.

Why (``bench/interference.py``, bench/RESULTS.md section 11): an analysis in a thread of the
training process holds the GIL through the fits' Python code and numpy's small calls, and a
training thread coming back from every torch op (torch releases the GIL in each) waits for it;
niced, the holder is descheduled while it holds it. A child process shares only the cores, and
at nice 10 it takes little of what training uses.

:class:`ProcessWorker` keeps :class:`~ww_callbacks.worker.BackgroundWorker`'s interface and
behaviour (one pending slot, the kept queue, ``accepts``, ``max_duty`` rests measured in the
child's CPU time, ``drain``, ``close``): its thread, the courier, hands each snapshot to one
long-lived child (:mod:`ww_callbacks.process_child`), waits for the result and records it
(history, policies, in-worker sinks) in the training process, in order, exactly as the thread
worker does. The snapshot travels in shared memory (:mod:`ww_callbacks.shared_arrays`): the
training thread's one host copy is written there, and the child reads it in place.

Promises:
- started once per session, on the first snapshot, by the courier (the training thread never
  waits for it); an idle child is kept ``PARKED_S`` seconds after a session closes for the next
  session of the same process (a test suite, a notebook re-running a fit);
- a child that dies (killed, out of memory) is restarted once: the snapshot it held is reported
  as failed (one warning through the usual failure path), nothing else is lost; a second death
  moves the analysis into the training process (thread) for the rest of the session (a child
  found dead between two analyses is replaced the same way, with no snapshot lost);
- ``close(final=False)`` (Ctrl-C, an exception) kills the child if its analysis is not over
  within the grace period (the watcher's ``cancelled`` check);
- no orphan: the child exits when its stdin (held by this process) closes, which the OS does
  whatever ends this process, SIGKILL included;
- ``base="initial"``: the base weights (the first snapshot's) are sent to the child once with
  the first request that needs them and kept there (one more host copy of the watched weights,
  in the child); a restarted child receives them again;
- a snapshot that cannot go through shared memory (composite LoRA weights, GPU tensors, an
  analysis on a torch device) is analysed in the courier thread as before.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .analysis import AnalysisCancelled
from .faults import WatcherWarning
from .layers import LayerWeights
from .options import MIN_EVALS_FOR_TRUST
from .results import AnalysisResult, Snapshot
from .shared_arrays import SharedLayout
from .worker import THREAD_NICE, BackgroundWorker

#: The child's nice value, the analysis thread's (``worker.THREAD_NICE``): low, not the lowest.
#: At nice 19 (weight 15 against training's 1024) a child next to torch's two threads on 2 cores
#: got ~1.5% of a core: 5 of 8 requested snapshots of a CNN with 7.4-s epochs analysed (ratio
#: 1.006); at nice 10, 8 of 8 at 1.004 (bench/RESULTS.md section 13, 2026-12-07).
CHILD_NICE = THREAD_NICE
#: How long an idle child waits, after its session closed, for another session to use it.
PARKED_S = 30.0
#: How often the courier checks for cancellation and a dead child while an analysis runs.
POLL_S = 0.05
#: How long a new child may take to come up (interpreter, numpy, pandas) before it counts as dead.
START_TIMEOUT_S = 120.0
#: Restarts after a death; the next death moves the analysis into the training process.
MAX_RESTARTS = 1
#: Idle children kept for later sessions of the process at most.
MAX_PARKED = 2


class AnalysisProcessDied(RuntimeError):
    """The analysis process ended while analysing a snapshot."""


@dataclass
class AnalysisRequest:
    """What the child needs to analyse one snapshot (the weights stay in shared memory)."""

    step: int
    epoch: int | None
    randomize: bool
    wall_time: float
    layers: list[LayerWeights]  # weight=None: the arrays are in ``layout``
    layout: SharedLayout
    skipped: list = field(default_factory=list)
    options: dict = field(default_factory=dict)
    blas_threads: int | None = 1
    #: The summary's threshold (:func:`~ww_callbacks.scalars.model_summary`).
    min_evals_for_trust: int = MIN_EVALS_FOR_TRUST
    #: ``base="initial"``: the token of the base weights the child subtracts (None: no base),
    #: and those weights themselves when this child has not received them yet (the child keeps
    #: them: they cross once per child, not once per analysis).
    base_token: str | None = None
    base: dict | None = None


def _package_parent() -> str:
    return str(Path(__file__).resolve().parent.parent)


class Child:
    """One analysis process and the connection to it."""

    def __init__(self, *, nice: int = CHILD_NICE, blas_threads: int | None = 1):
        from multiprocessing.connection import Client

        key = os.urandom(32)
        env = dict(os.environ)
        if blas_threads is not None:  # before numpy loads (threadpoolctl limits again per call)
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                env[name] = str(blas_threads)
        code = (f"import sys; sys.path.insert(0, {_package_parent()!r}); "
                "from ww_callbacks.process_child import main; main()")
        options: dict[str, Any] = {}
        if os.name == "nt":
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            # A process group of its own, so Ctrl-C (sent to the terminal's foreground group)
            # reaches the training process only; NOT a session of its own: with the kernel's
            # autogroups (sched_autogroup_enabled, the default on desktop and many VM kernels) a
            # new session is a new scheduling group that gets an equal share of the CPU against
            # the training process whatever its nice value. Measured on this 2-core VM (6.18):
            # a 26-ms training step took 350-415 ms while the child analysed in its own session
            # (nice 1, 10, 19 and SCHED_IDLE alike), 26 ms in the training process's group.
            options["process_group"] = 0
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, close_fds=True, **options)
        try:
            self.proc.stdin.write(key.hex().encode() + b"\n" +
                                  f"{nice} {blas_threads or 0}\n".encode())
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            if not line:
                raise AnalysisProcessDied(f"the analysis process did not start "
                                          f"({_describe(self.proc.wait(5))})")
            address = json.loads(line)
            self.conn = Client(tuple(address) if isinstance(address, list) else address,
                               authkey=key)
        except BaseException:
            self.kill()
            raise
        finally:
            self.proc.stdout.close()
        self.pid = self.proc.pid
        self.base_token: str | None = None  # the base weights it holds (AnalysisRequest.base)
        self._finalizer = weakref.finalize(self, _kill_proc, self.proc)

    def status(self, timeout: float = 30.0) -> dict:
        """The child's pid, nice value and whether it imported torch (call it while no
        analysis is in flight: tests do)."""
        self.conn.send(("status",))
        if not self.conn.poll(timeout):
            raise TimeoutError("the analysis process did not answer")
        return self.conn.recv()[1]

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 2.0) -> None:
        """Ask it to quit; kill it if it does not within ``timeout`` seconds."""
        try:
            self.conn.send(("quit",))
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def kill(self) -> None:
        """End it now (its stdin closes: it exits even if it ignores signals) and reap it."""
        _kill_proc(self.proc)
        conn = getattr(self, "conn", None)
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass


def _kill_proc(proc: subprocess.Popen) -> None:
    try:
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
    except OSError:
        pass
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:
            pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
        pass


def _describe(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


# ---------------------------------------------------------------- children kept between sessions

_PARKED: list[tuple[Child, float, int | None]] = []
_PARKED_LOCK = threading.Lock()
_EXIT_HOOK: list[bool] = []


#: Children being started in the background (``start_in_background``) in this process: one at
#: a time, so that short sessions one after another share one start instead of each starting a
#: child (8 sessions of one snapshot each started 8 children; the next one now takes the parked
#: child, and analyses in its own process while the one start is under way).
_STARTS: list[bool] = []


def _claim_start() -> bool:
    """True (and counted) when no background start is under way in this process."""
    with _PARKED_LOCK:
        if _STARTS:
            return False
        _STARTS.append(True)
        return True


def _end_start() -> None:
    with _PARKED_LOCK:
        if _STARTS:
            _STARTS.pop()


def _park(child: Child, blas_threads: int | None) -> None:
    """Keep an idle, healthy child for the next session of this process (``PARKED_S``); at
    most :data:`MAX_PARKED` are kept, a further one is stopped."""
    with _PARKED_LOCK:
        full = len(_PARKED) >= MAX_PARKED
        if not full:
            _PARKED.append((child, time.monotonic(), blas_threads))
    if full:
        child.stop(0.5)
        return
    with _PARKED_LOCK:
        if not _EXIT_HOOK:  # registered with the first parked child: importing registers none
            _EXIT_HOOK.append(True)
            atexit.register(stop_parked)
    timer = threading.Timer(PARKED_S, _expire)
    timer.daemon = True
    timer.start()


def _unpark(blas_threads: int | None) -> Child | None:
    with _PARKED_LOCK:
        for i, (child, _parked, blas) in enumerate(_PARKED):
            if blas == blas_threads and child.alive():
                del _PARKED[i]
                return child
    return None


def _expire() -> None:
    now = time.monotonic()
    with _PARKED_LOCK:
        old = [entry for entry in _PARKED if now - entry[1] >= PARKED_S - 0.1]
        for entry in old:
            _PARKED.remove(entry)
    for child, _, _ in old:
        child.stop(0.5)


def stop_parked() -> None:
    """Stop the children kept for later sessions (at exit; tests call it too)."""
    with _PARKED_LOCK:
        parked = list(_PARKED)
        _PARKED.clear()
    for child, _, _ in parked:
        child.stop(0.5)


# ---------------------------------------------------------------- the worker


class ProcessWorker(BackgroundWorker):
    """:class:`~ww_callbacks.worker.BackgroundWorker` whose analyses run in a child process.

    ``local``: analyses a snapshot in this process (the thread worker's function), for what
    cannot go to the child. ``options``: the keyword arguments of
    :func:`~ww_callbacks.analysis.analyze_layers` for a snapshot besides its layers, or None
    when it must be analysed locally. ``record``: what the thread worker does after analysing
    (history, policies, in-worker sinks), run in the courier thread. ``cancelled``: checked while
    the child analyses; once True the child is killed and the analysis counts as cancelled.
    ``start_in_background`` (``analysis_in="auto"``): a child that has to start is started in
    a thread of its own while the snapshots due meanwhile are analysed here (a start takes 1-2 s
    of wall time, which skipped the first due steps of a 0.2-s cadence); otherwise
    (``"process"``) every analysis waits for the child.
    """

    def __init__(self, local: Callable[[Snapshot], AnalysisResult], *,
                 options: Callable[[Snapshot], dict | None],
                 record: Callable[[AnalysisResult], AnalysisResult],
                 cancelled: Callable[[], bool] = lambda: False,
                 blas_threads: int | None = 1, name: str = "ww-worker", linger: float = 1.0,
                 max_duty: float | None = None, nice: int = CHILD_NICE,
                 start_in_background: bool = False):
        super().__init__(local, blas_threads=blas_threads, name=name, linger=linger,
                         nice=None, max_duty=max_duty)
        self._options = options
        self._record_result = record
        self._cancelled = cancelled
        self._child_nice = nice
        self._child: Child | None = None
        self._child_lock = threading.Lock()
        self.restarts = 0
        #: The step whose snapshot the child is analysing now (None: none sent).
        self.analysing: int | None = None
        self.in_thread = False  # True after the child died more than MAX_RESTARTS times
        self.started_children = 0
        self.start_seconds: list[float] = []  # wall time of each child start (the starter's)
        #: Snapshots analysed in this process while a child was starting.
        self.analysed_while_starting = 0
        self._starting: threading.Thread | None = None  # a child being started, if any
        self._start_in_background = start_in_background

    @property
    def child_pid(self) -> int | None:
        """The pid of the analysis process (None before the first snapshot and after close)."""
        child = self._child
        return child.pid if child is not None else None

    def _ensure_child(self) -> Child | None:
        """The child, started (or taken from the parked ones) when none runs; None once the
        analysis has moved into this process. A child found dead between two analyses (no
        snapshot lost) counts against the restarts too."""
        with self._child_lock:
            if self._child is not None and not self._child.alive():
                self._child.kill()
                self._child = None
                self.restarts += 1
                if self.restarts > MAX_RESTARTS:
                    self.in_thread = True
            if self.in_thread:
                return None
            if self._child is None:
                self._child = _unpark(self._blas_threads)
            if self._child is None and not self._start_in_background:
                start = time.monotonic()
                self._child = Child(nice=self._child_nice, blas_threads=self._blas_threads)
                self.start_seconds.append(time.monotonic() - start)
                self.started_children += 1
            if self._child is None and self._starting is None and _claim_start():
                # A child takes 0.4 s of CPU and 1-2 s of wall time to start (its imports): the
                # snapshots due meanwhile are analysed here, so a run that fits its cadence is
                # not skipped while it starts (tests/test_cadence.py, 0.2-s steps).
                self._starting = threading.Thread(target=self._start_child, daemon=True,
                                                  name=f"{self._name}-start")
                self._starting.start()
            return self._child

    def _start_child(self) -> None:
        """Start a child (in the starter thread) and hand it over, unless the worker closed
        meanwhile; a child that cannot start moves the analysis into this process, said once."""
        start = time.monotonic()
        try:
            child = Child(nice=self._child_nice, blas_threads=self._blas_threads)
        except Exception as err:  # the analysis goes on here: nothing is lost
            _end_start()
            with self._child_lock:
                self.in_thread = True
                self._starting = None
            warnings.warn(f"ww_callbacks: the analysis process could not start ({err}); the "
                          "analysis runs in the training process", WatcherWarning, stacklevel=2)
            return
        _end_start()
        with self._child_lock:
            self.start_seconds.append(time.monotonic() - start)
            self.started_children += 1
            self._starting = None
            closed = self._closing or self._cancelled()
            if not closed:
                self._child = child
        if closed and self._cancelled():
            child.kill()
        elif closed:  # a session that ended while its child started: the next one takes it
            _park(child, self._blas_threads)  # (killing it made every short session start one)

    def _analyse_one(self, snapshot: Snapshot, limiter: Any) -> AnalysisResult:
        shared = snapshot.shared
        options = self._options(snapshot) if shared is not None and not self.in_thread else None
        if options is None:
            return super()._analyse_one(snapshot, limiter)
        snapshot.ready()
        base = options.pop("base", None)
        request = AnalysisRequest(snapshot.step, snapshot.epoch, snapshot.randomize,
                                  snapshot.wall_time,
                                  [replace(layer, weight=None) for layer in snapshot.layers],
                                  shared, options.pop("skipped", []), options,
                                  self._blas_threads,
                                  options.pop("min_evals_for_trust", MIN_EVALS_FOR_TRUST))
        child = self._ensure_child()
        if child is None:
            if not self.in_thread:
                self.analysed_while_starting += 1
            return super()._analyse_one(snapshot, limiter)
        if base is not None:  # its weights cross once per child (taken here the first time)
            fresh = child.base_token != base.token
            request = replace(request, base_token=base.token,
                              base=base.for_layers(snapshot.layers) if fresh else None)
        try:
            child.conn.send(("analyse", request))
            if base is not None:
                child.base_token = base.token
            self.analysing = snapshot.step
            while not child.conn.poll(POLL_S):
                if self._cancelled():
                    self.analysing = None
                    self._drop_child(child)
                    raise AnalysisCancelled(f"cancelled during the analysis of step "
                                            f"{snapshot.step}")
                if not child.alive():
                    break
            reply = child.conn.recv()
        except (EOFError, OSError) as err:
            self.analysing = None
            if self._cancelled():
                self._drop_child(child)
                raise AnalysisCancelled("cancelled") from err
            raise self._died(child, snapshot.step) from err
        self.analysing = None
        if reply[0] == "error":
            raise reply[1]
        self._cpu = reply[2]
        return self._record_result(reply[1])

    def _drop_child(self, child: Child) -> None:
        with self._child_lock:
            if self._child is child:
                self._child = None
        child.kill()

    def _died(self, child: Child, step: int) -> AnalysisProcessDied:
        """Reap a child that ended mid-analysis; restart once, then analyse locally."""
        code = child.proc.poll()
        self._drop_child(child)
        code = child.proc.returncode if code is None else code
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            self.in_thread = True
            then = "the analysis runs in the training process from now on"
        else:
            then = "a new analysis process takes the next snapshots"
        return AnalysisProcessDied(f"the analysis process (pid {child.pid}) died "
                                   f"({_describe(code)}) while analysing step {step}; {then}")

    def close(self, timeout: float | None = None) -> bool:
        """As :meth:`BackgroundWorker.close`, then stop the child (kept for the next session
        when it is healthy and idle). When the courier is still busy after ``timeout`` the child
        is left to it: it stops the child when it ends (or is cancelled)."""
        finished = super().close(timeout)
        if finished:
            self._release_child()
        return finished

    def _release_child(self) -> None:
        with self._child_lock:
            child, self._child = self._child, None
        if child is not None:
            if child.alive() and not self._cancelled():
                _park(child, self._blas_threads)
            else:
                child.kill()

    def _run(self) -> None:
        try:
            super()._run()
        finally:
            if self._closing:
                self._release_child()
