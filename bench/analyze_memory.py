"""Peak memory of one ``ww_callbacks.analyze`` call against the largest layer's float64 working set.

Usage: ``python bench/analyze_memory.py [--models gpt2,big] [--top 8]``

The claim checked (``ww_callbacks/analysis.py``): layers are analysed one at a time, so at most
one layer's float64 working set is alive beyond the spectra. For each model it prints

- the peak of the bytes traced by ``tracemalloc`` during the call (numpy's array buffers are
  traced; torch's allocator, BLAS/LAPACK work buffers and numpy.linalg's internal copies, made
  with plain ``malloc``, are not);
- the largest layer's float64 working set, ``rf*N*M*8`` (the stack) ``+ rf*M^2*8`` (the Gram
  matrices) ``+ rf*M*8`` (the eigenvalues);
- the size of all spectra, ``sum(num_evals) * 8``;
- the ratio ``(peak - spectra) / working set`` (the claim holds when it is <= 1);
- the growth of the process's resident-set high-water mark (``VmHWM``, reset before the call;
  Linux only) in a separate run without tracemalloc: it includes what tracemalloc cannot see;
- where the traced memory stood at its highest: the top ``tracemalloc`` statistics of a snapshot
  taken at that moment (a third run, with a profile hook that snapshots every new maximum).

Models: ``gpt2`` (GPT-2-small-shaped, 49 layers analysed, largest 3072 x 768) and ``big``
(one Linear 4096 -> 11008 plus a few small layers). Weights are float32 torch tensors.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import gpt2_small, print_header  # noqa: E402

import ww_callbacks  # noqa: E402

MODELS = ("gpt2", "big", "big-bf16")
#: Python bookkeeping (row dicts, the frame) allowed beyond one working set before the claim fails.
SLACK = 2**20
MiB = 2**20


def big_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """One Linear 4096 -> 11008 (a Llama-7B MLP matrix) and a few small layers."""
    model = nn.Sequential(nn.Linear(4096, 11008), nn.Linear(256, 128), nn.Conv2d(16, 32, 3),
                          nn.Linear(128, 64))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model:
            module.weight.normal_(0.0, 0.02, generator=g)
    return model.to(dtype)


def build(name: str, seed: int) -> nn.Module:
    """The model called ``name``."""
    if name == "gpt2":
        return gpt2_small(seed=seed)
    return big_model(seed, torch.bfloat16 if name == "big-bf16" else torch.float32)


def working_sets(df: pd.DataFrame) -> pd.Series:
    """Float64 bytes of each analysed layer's stack, Gram matrices and eigenvalues."""
    n, m, rf = (df[c].astype(np.int64) for c in ("N", "M", "rf"))
    return rf * n * m * 8 + rf * m * m * 8 + rf * m * 8


def _vm_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_growth(model: nn.Module) -> int | None:
    """Bytes by which the resident-set high-water mark exceeds the RSS before one call."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    before = _vm_kib("VmRSS")
    ww_callbacks.analyze(model, progress=False)
    peak = _vm_kib("VmHWM")
    if before is None or peak is None:
        return None
    return (peak - before) * 1024


def traced_peak(model: nn.Module) -> tuple[int, pd.DataFrame]:
    """Peak traced bytes of one call (tracemalloc started just before it)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        df = ww_callbacks.analyze(model, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, df


def snapshot_at_peak(model: nn.Module, frames: int = 6) -> tuple[int, Any]:
    """Re-run the call with a profile hook that takes a tracemalloc snapshot whenever the traced
    memory reaches a new maximum (checked at every Python and C function call and return)."""
    gc.collect()
    best = {"bytes": 0, "snapshot": None}
    step = 256 * 1024  # snapshot only when the maximum grows by this much

    def hook(frame: Any, event: str, arg: Any) -> None:
        current = tracemalloc.get_traced_memory()[0]
        if current > best["bytes"] + step:
            sys.setprofile(None)
            best["bytes"] = current
            best["snapshot"] = tracemalloc.take_snapshot()
            sys.setprofile(hook)

    tracemalloc.start(frames)
    try:
        sys.setprofile(hook)
        try:
            ww_callbacks.analyze(model, progress=False)
        finally:
            sys.setprofile(None)
    finally:
        tracemalloc.stop()
    return best["bytes"], best["snapshot"]


def report(name: str, args: argparse.Namespace) -> None:
    """Measure and print everything for one model."""
    model = build(name, args.seed)
    ww_callbacks.analyze(nn.Sequential(nn.Linear(64, 32)), progress=False)  # imports
    growth = rss_growth(model)  # first: before other calls leave freed pages resident
    peak, df = traced_peak(model)
    ws = working_sets(df)
    largest = int(ws.max())
    spectra = int(df.num_evals.sum()) * 8
    ratio = (peak - spectra) / largest
    row = df.loc[ws.idxmax()]
    print(f"\n[{name}] {len(df)} layers analysed; largest: {row.longname} "
          f"(N={row.N}, M={row.M}, rf={row.rf})")
    print(f"  peak traced (tracemalloc):           {peak / MiB:10.3f} MiB")
    print(f"  largest layer's float64 working set: {largest / MiB:10.3f} MiB "
          f"(stack {int(row.rf * row.N * row.M * 8) / MiB:.3f} + Gram "
          f"{int(row.rf * row.M * row.M * 8) / MiB:.3f} + evals "
          f"{int(row.rf * row.M * 8) / MiB:.3f})")
    print(f"  all spectra (sum num_evals * 8):     {spectra / MiB:10.3f} MiB")
    excess = peak - spectra - largest
    verdict = "holds" if excess <= SLACK else "EXCEEDED"
    print(f"  (peak - spectra) / working set:      {ratio:10.6f}  -> claim {verdict} for traced "
          f"memory (excess over one working set: {excess / 1024:+.1f} KiB; "
          f"{SLACK // 1024} KiB of Python objects allowed)")
    if growth is None:
        print("  RSS high-water mark: not available on this system")
    else:
        gram = int(row.rf * row.M * row.M * 8)
        print(f"  RSS high-water mark growth (first call, untraced): {growth / MiB:8.1f} MiB = "
              f"{growth / largest:.2f} x the working set; working set + one more Gram "
              f"(numpy.linalg's private copy) = {(largest + gram) / MiB:.1f} MiB")
    if args.top <= 0:
        return
    at, snapshot = snapshot_at_peak(model)
    if snapshot is None:
        return
    print(f"  traced memory at its observed maximum: {at / MiB:.3f} MiB; top allocations alive "
          f"then (by line):")
    for stat in snapshot.statistics("lineno")[:args.top]:
        frame = stat.traceback[0]
        where = f"{Path(frame.filename).parent.name}/{Path(frame.filename).name}:{frame.lineno}"
        print(f"    {stat.size / MiB:10.3f} MiB  {stat.count:6d} blocks  {where}")


def main() -> None:
    """Parse arguments and report each model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated models among {', '.join(MODELS)}")
    parser.add_argument("--top", type=int, default=6,
                        help="tracemalloc statistics shown at the peak (0: skip that run)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated weights")
    args = parser.parse_args()
    names = [s.strip() for s in args.models.split(",") if s.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose among {list(MODELS)}")
    print_header(f"numpy {np.__version__}")
    for name in names:
        report(name, args)


if __name__ == "__main__":
    main()
