"""Launch a script under ``torch.distributed.run`` (2 CPU processes, gloo, a free port) from a
test, and read back what each rank saved."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).parent


def torchrun(script: str, out_dir: Path, *args: str, nproc: int = 2,
             timeout: float = 600) -> list[dict]:
    """Run ``tests/distributed/<script>`` on ``nproc`` ranks (``--standalone`` picks a free
    port); returns each rank's pickled results (``out_dir/rank<r>.pkl``). Fails with the
    processes' output when they fail."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", str(HERE / script), str(out_dir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    out = []
    for rank in range(nproc):
        with open(out_dir / f"rank{rank}.pkl", "rb") as f:
            out.append(pickle.load(f))
    return out


def run_cases(run_case: Callable[[str, str, int], dict], *, init_group: bool = True) -> None:
    """The ``main`` of a cases script, on each rank: ``argv`` is the output folder and the case
    names; runs ``run_case(case, out_dir, rank)`` for each (an exception is recorded as the
    case's ``error``, so the test shows which case failed and why), with a barrier between
    cases, and saves this rank's results to ``out_dir/rank<r>.pkl``. ``init_group``: start the
    gloo process group here (False: the framework under test starts it)."""
    import torch
    import torch.distributed as dist

    out_dir, cases = sys.argv[1], sys.argv[2:]
    if init_group:
        dist.init_process_group("gloo")
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    results = {}
    for case in cases:
        try:
            results[case] = run_case(case, out_dir, rank)
        except Exception as err:
            results[case] = {"error": f"{err!r}\n{traceback.format_exc()}"}
        if dist.is_initialized():
            dist.barrier()
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(results, f)
    if dist.is_initialized():
        dist.destroy_process_group()
