"""Faults the tests cause on purpose: a process killed with SIGKILL at a chosen moment (a disk
filled to its last byte: ``fill_disk`` in ``test_full_disk._RUN``, run inside the test scripts)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence


def kill_when(cmd: Sequence[str], ready: Callable[[], bool], timeout: float = 120.0) -> int:
    """Run ``cmd`` and SIGKILL it once ``ready()`` (polled every 50 ms) says so; the process must
    still be alive then (its stderr is the failure message otherwise). Returns its pid."""
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if ready():
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return proc.pid
