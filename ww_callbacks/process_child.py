"""The analysis process's main: analyses the snapshots the training process sends, one at a time.

Started by :mod:`ww_callbacks.process_worker` as a fresh interpreter (``python -c``: spawn
semantics on every OS, and the user's main script is never imported again, as multiprocessing's
spawn would do). It imports numpy, pandas and the analysis engine, never torch. Protocol:

1. stdin, first line: the hex authkey; second line: ``nice blas_threads``.
2. It listens on a :class:`multiprocessing.connection.Listener` (a Unix socket, a Windows named
   pipe) and prints the address as one JSON line on stdout; stdout then points at stderr, so a
   stray print never fills a pipe nobody reads.
3. Requests ``("analyse", AnalysisRequest)`` are answered ``("ok", AnalysisResult, cpu_s)`` or
   ``("error", exception, traceback)``; ``("status",)`` by ``("status", dict)`` (see
   :func:`status`); ``("quit",)`` ends it.

stdin stays open for the parent's lifetime and is the lifeline: a thread reads it, and end of file
(the parent exited, however, SIGKILL included) ends this process at once, whatever it is doing.
SIGINT is ignored and the process runs in its own session: Ctrl-C is the parent's to handle.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from typing import Any


def _watch_parent(fd: int) -> None:
    """Exit when the parent's end of stdin closes (raw reads: no buffered reader's lock held
    at shutdown)."""
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    os._exit(0)


def _reply_error(err: BaseException) -> tuple:
    text = traceback.format_exc()
    try:
        pickle.dumps(err)
    except Exception:
        err = RuntimeError(repr(err))
    return ("error", err, text)


#: ``base="initial"``: (token, weights) of the base weights last received (one per session).
_BASE: tuple[str, dict] | None = None


def _base_of(request: Any) -> dict | None:
    """The base weights a request names (received with it, or with an earlier one)."""
    global _BASE
    if request.base is not None:
        _BASE = (request.base_token, request.base)
    if request.base_token is None:
        return None
    if _BASE is None or _BASE[0] != request.base_token:
        raise RuntimeError("the analysis process has not received the base weights "
                           f"{request.base_token}")
    return _BASE[1]


def analyse(request: Any) -> tuple:
    """One request: map the segment, analyse the views (less the base weights, if any),
    unmap."""
    from dataclasses import replace

    from threadpoolctl import threadpool_limits

    from .analysis import analyze_layers
    from .scalars import summarized_result
    from .shared_arrays import attach

    start, cpu = time.perf_counter(), time.process_time()
    attached = attach(request.layout)
    try:
        layers = [replace(layer, weight=array)
                  for layer, array in zip(request.layers, attached.arrays, strict=True)]
        limits = (threadpool_limits(limits=request.blas_threads, user_api="blas")
                  if request.blas_threads is not None else None)
        try:
            details = analyze_layers(layers, randomize=request.randomize, progress=False,
                                     skipped=request.skipped, base=_base_of(request),
                                     **request.options)
        finally:
            if limits is not None:
                limits.restore_original_limits()
        del layers
    finally:
        attached.close()
    spectra = details.attrs.pop("spectra", {})
    result = summarized_result(request.step, request.epoch, details,
                               wall_time=request.wall_time,
                               duration_s=time.perf_counter() - start,
                               randomized=request.randomize, spectra=spectra,
                               min_evals_for_trust=request.min_evals_for_trust)
    return ("ok", result, time.process_time() - cpu)


def status() -> dict:
    """This process's pid, nice value and whether torch was imported."""
    return {"pid": os.getpid(), "nice": os.nice(0) if hasattr(os, "nice") else None,
            "torch": "torch" in sys.modules, "modules": len(sys.modules)}


def main() -> None:
    """Entry point (see the module docstring)."""
    fd = sys.stdin.fileno()
    key = bytes.fromhex(_read_line(fd))
    nice, blas = _read_line(fd).split()
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if int(nice) and hasattr(os, "nice"):
        try:
            os.nice(int(nice))
        except OSError:
            pass
    threading.Thread(target=_watch_parent, args=(fd,), name="ww-lifeline",
                     daemon=True).start()
    from multiprocessing.connection import Listener

    # The engine (numpy, pandas: ~1 s) is imported before the child says it is ready, so that
    # a parent starting it in the background (analysis_in="auto") does not send its first
    # snapshot to a child that would spend that second importing (the due steps meanwhile
    # were skipped on a 0.2-s cadence).
    from . import analysis  # noqa: F401

    listener = Listener(authkey=key)
    out = sys.stdout.buffer
    out.write(json.dumps(listener.address).encode() + b"\n")
    out.flush()
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    conn = listener.accept()
    listener.close()

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message[0] == "quit":
            break
        if message[0] == "status":  # what tests check: no torch, the priority, the pid
            conn.send(("status", status()))
            continue
        try:
            reply = analyse(message[1])
        except BaseException as err:
            reply = _reply_error(err)
        try:
            conn.send(reply)
        except (OSError, EOFError):
            break
        except Exception as err:  # a result that does not pickle
            conn.send(_reply_error(err))
    conn.close()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown: the lifeline thread is blocked in a read


def _read_line(fd: int) -> str:
    """One line from ``fd``, read byte by byte (nothing buffered past it: the rest of stdin is
    the lifeline)."""
    out = bytearray()
    while True:
        byte = os.read(fd, 1)
        if not byte or byte == b"\n":
            return out.decode().strip()
        out += byte


if __name__ == "__main__":
    main()
