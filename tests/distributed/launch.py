"""Launch a script under ``torch.distributed.run`` (2 CPU processes, gloo, a free port) from a
test, and read back what each rank saved."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
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
