"""Run with ``python -m torch.distributed.run --nproc_per_node 2 sink_cases.py OUT csv``
(gloo, CPU): a plain DDP loop with the torch ``Watcher`` on every rank and ``sinks=[("csv",
{"path": OUT/rank<r>.csv})]`` plus a sink object that declares ``main_process_only = False``;
each rank saves which files exist and what its every-rank sink saw."""

from __future__ import annotations

import os
import sys

import torch
import torch.nn as nn

from ww_callbacks.integrations.torch import Watcher

sys.path.insert(0, os.path.dirname(__file__))
from launch import run_cases  # noqa: E402


class EveryRank:
    """A sink every rank keeps (``main_process_only = False``): counts its writes and closes."""

    main_process_only = False

    def __init__(self) -> None:
        self.writes, self.closed = 0, False

    def write(self, result, scalars) -> None:
        self.writes += 1

    def close(self) -> None:
        self.closed = True


def run_case(case: str, out_dir: str, rank: int) -> dict:
    assert case == "csv", case
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16)))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    everyone = EveryRank()
    log_dir = os.path.join(out_dir, f"logs{rank}")
    with Watcher(model, log_dir=log_dir, tensorboard=False, every_n_steps=2, wait="always",
                 optimizer=opt, sinks=[("csv", {"path": os.path.join(out_dir, f"rank{rank}.csv")}),
                                       everyone]) as ww:
        gen = torch.Generator().manual_seed(rank)
        for _ in range(4):
            opt.zero_grad()
            model(torch.randn(8, 32, generator=gen)).square().mean().backward()
            opt.step()
            ww.step()
    csv_path = os.path.join(out_dir, f"rank{rank}.csv")
    return {"csv": open(csv_path).read() if os.path.exists(csv_path) else None,
            "kept_every_rank_sink": any(s is everyone for s in ww.sinks),
            "every_rank_closed": everyone.closed, "history": ww.history_path is not None}


if __name__ == "__main__":
    run_cases(run_case)
