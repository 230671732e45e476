"""Analysis time per snapshot of a sharded transformer with 1 and with R ranks, in the same run,
and the bytes of weights each rank gathers.

CPU (gloo, 2 processes; a small Llama-shaped model):
    python -m torch.distributed.run --standalone --nproc_per_node 2 bench/sharded_analysis.py
GPU (NCCL, one process per GPU; Llama-7B shapes, FSDP2), unchanged:
    torchrun --standalone --nproc_per_node 8 bench/sharded_analysis.py --backend nccl \\
        --preset llama-7b --analysis-device auto

The model (token embedding, ``--layers`` blocks of q/k/v/o and gate/up/down projections, a head)
is built on the meta device, sharded with FSDP2 ``fully_shard`` per block (``--kind ddp``:
replicated with DDP), then materialised with random weights. One snapshot = gather every watched
layer's full matrix on its owner + the owner analyses it (``analyze_owned``) + rows to rank 0;
"1 rank" assigns every layer to rank 0 (the others only send their shards), "R ranks" splits them
by cost. Prints the median over ``--repeats`` of the slowest rank's time, the ratio, and the
gathered bytes per rank; ``--json PATH`` also writes them (rank 0). One process (``--nproc_per_node
1``, or ``RANK=0 WORLD_SIZE=1`` with ``MASTER_ADDR``/``MASTER_PORT`` set) measures the 1-rank case
alone: ``bench/gpu_check.py`` runs it so on one GPU with ``--backend nccl``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn

PRESETS = {  # d_model, d_ff, vocab, layers
    "small": (256, 688, 2000, 4),
    "llama-7b": (4096, 11008, 32000, 32),
}


class Block(nn.Module):
    """A Llama block's weights (attention q/k/v/o, MLP gate/up/down); the forward is not used."""

    def __init__(self, d: int, ff: int):
        super().__init__()
        self.q_proj, self.k_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.v_proj, self.o_proj = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.gate_proj, self.up_proj = nn.Linear(d, ff, bias=False), nn.Linear(d, ff, bias=False)
        self.down_proj = nn.Linear(ff, d, bias=False)


class Model(nn.Module):
    def __init__(self, d: int, ff: int, vocab: int, layers: int):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([Block(d, ff) for _ in range(layers)])
        self.lm_head = nn.Linear(d, vocab, bias=False)


def build(args, device: torch.device) -> nn.Module:
    d, ff, vocab, layers = PRESETS[args.preset]
    layers = args.layers or layers
    with torch.device("meta"):
        model = Model(d, ff, vocab, layers)
    if args.kind == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for block in model.layers:
            fully_shard(block)
        fully_shard(model)
    model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            local = p.to_local() if hasattr(p, "to_local") else p
            local.normal_(0.0, 0.02, generator=gen)
    if args.kind == "ddp":
        model = nn.parallel.DistributedDataParallel(model)
    return model


def one_snapshot(model, world_size: int, device, analysis_device) -> tuple[float, float, int]:
    """(gather s, gather + analysis + rows to rank 0 s, bytes gathered here), slowest rank."""
    from ww_callbacks.distributed.analyze import analyze_owned
    from ww_callbacks.distributed.gather import ShardedLayers

    sharded = ShardedLayers(model, world_size=world_size, max_N=100000)
    dist.barrier()
    start = time.perf_counter()
    owned = sharded.gather(device)
    gathered = time.perf_counter() - start
    rows = analyze_owned(owned, randomize=False, device=analysis_device, progress=False)
    everyone = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(rows, everyone, dst=0)
    total = time.perf_counter() - start
    times = torch.tensor([gathered, total], dtype=torch.float64,
                         device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(times, op=dist.ReduceOp.MAX)
    return float(times[0]), float(times[1]), sharded.gathered_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--layers", type=int, default=0, help="blocks (0: the preset's)")
    parser.add_argument("--kind", default="fsdp2", choices=["fsdp2", "ddp"])
    parser.add_argument("--analysis-device", default="cpu",
                        help="'cpu' (numpy, float64) or 'auto' (the GPU of the model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the figures here (rank 0)")
    args = parser.parse_args()
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    from ww_callbacks.devices import resolve_analysis_device

    model = build(args, device)
    analysis_device = resolve_analysis_device(model, args.analysis_device)
    gather_to = "cpu" if analysis_device in (None, "cpu") else analysis_device
    if rank == 0:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"# {args.preset} ({args.layers or PRESETS[args.preset][3]} blocks), {args.kind}, "
              f"{args.backend}, {world} ranks, analysis on {analysis_device or 'cpu (numpy)'}, "
              f"torch threads {torch.get_num_threads()}, load {load:.2f}", flush=True)
    one_snapshot(model, world, torch.device(gather_to), analysis_device)  # warm-up
    results = {}
    for ranks in sorted({1, world}):
        runs = [one_snapshot(model, ranks, torch.device(gather_to), analysis_device)
                for _ in range(args.repeats)]
        bytes_here = runs[-1][2]
        everyone = [None] * world
        dist.all_gather_object(everyone, bytes_here)
        results[ranks] = (statistics.median(r[0] for r in runs),
                          statistics.median(r[1] for r in runs), everyone)
    if rank == 0:
        print("| analysing ranks | gather s | snapshot s (gather + analysis) | "
              "MiB gathered per rank |")
        print("| --- | --- | --- | --- |")
        for ranks, (gather_s, total_s, per_rank) in results.items():
            mib = ", ".join(f"{b / 2**20:.1f}" for b in per_rank)
            print(f"| {ranks} | {gather_s:.3f} | {total_s:.3f} | {mib} |")
        ratio = results[1][1] / results[world][1]
        print(f"speed-up 1 -> {world} ranks: {ratio:.2f}x", flush=True)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({"preset": args.preset, "kind": args.kind, "backend": args.backend,
                           "world_size": world, "analysis_device": str(analysis_device or "cpu"),
                           "results": {str(r): {"gather_s": g, "snapshot_s": t,
                                                "mib_gathered_per_rank": [b / 2**20 for b in p]}
                                       for r, (g, t, p) in results.items()},
                           "speed_up": ratio}, f, indent=1)
    dist.destroy_process_group()
    # Leave without the interpreter's teardown: once in a full test run (CI, 2026-12-07) the
    # one-process gloo run died at exit with SIGABRT ("terminate called without an active
    # exception": a native thread of the process group destroyed while still joinable), after
    # its figures were measured. Everything is written and flushed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
