"""Run with ``python -m torch.distributed.run --nproc_per_node 2 analyze_cases.py OUT CASE...``
(gloo, CPU): for each case, wrap the model, train two steps, call ``ww_callbacks.analyze`` on
every rank and save, per rank, its frame, the references (single-process analyses of the full
state dict and of the bare model holding it) and the sharding figures in ``OUT/rank<r>.pkl``."""

from __future__ import annotations

import os
import pickle
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn

import ww_callbacks
from ww_callbacks.analysis import analyze_layers
from ww_callbacks.layers import extract_layers, select_layers

sys.path.insert(0, os.path.dirname(__file__))
from models import MLP, Block, TinyTransformer, built, train_steps  # noqa: E402


def single_process(model):
    """What ``analyze(model)`` gives in one process (no collective)."""
    found, skipped = extract_layers(model)
    kept, filtered = select_layers(found)
    return analyze_layers(kept, skipped=skipped + filtered)


def full_state_dict(model):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))


def wrap(case: str, rank: int):
    if case == "ddp":
        return nn.parallel.DistributedDataParallel(built(TinyTransformer)), TinyTransformer
    if case == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        model = built(TinyTransformer)
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model, TinyTransformer
    if case in ("fsdp1_orig", "fsdp1_flat", "fsdp1_fresh"):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        model = FSDP(built(TinyTransformer), auto_wrap_policy=ModuleWrapPolicy({Block}),
                     use_orig_params=case != "fsdp1_flat", device_id=torch.device("cpu"))
        return model, TinyTransformer
    if case == "tp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor.parallel import (
            ColwiseParallel,
            RowwiseParallel,
            parallelize_module,
        )

        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        model = parallelize_module(built(MLP), mesh, {"up": ColwiseParallel(),
                                                      "down": RowwiseParallel(),
                                                      "out": ColwiseParallel()})
        return model, MLP
    if case == "mesh2d":  # FSDP2 over "dp" and tensor parallel over "tp": 2 placements each
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor.parallel import (
            ColwiseParallel,
            RowwiseParallel,
            parallelize_module,
        )

        mesh = init_device_mesh("cpu", (1, dist.get_world_size()), mesh_dim_names=("dp", "tp"))
        model = parallelize_module(built(MLP), mesh["tp"], {"up": ColwiseParallel(),
                                                            "down": RowwiseParallel()})
        fully_shard(model, mesh=mesh["dp"])
        return model, MLP
    if case == "zero3":
        import deepspeed

        config = {"train_batch_size": 4 * dist.get_world_size(),
                  "train_micro_batch_size_per_gpu": 4,
                  "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True,
                  "optimizer": {"type": "SGD",
                                                                   "params": {"lr": 0.05}}}
        with deepspeed.zero.Init(config_dict_or_path=config):
            model = TinyTransformer()
        engine, *_ = deepspeed.initialize(model=model, config=config,
                                          model_parameters=model.parameters())
        return engine, TinyTransformer
    raise ValueError(case)


def run_case(case: str, rank: int) -> dict:
    model, cls = wrap(case, rank)
    if case == "zero3":
        from models import VOCAB, token_batch

        for step in (1, 2):
            tokens, targets = token_batch(rank, step)
            loss = nn.functional.cross_entropy(model(tokens).reshape(-1, VOCAB),
                                               targets.reshape(-1))
            model.backward(loss)
            model.step()
    elif case != "fsdp1_fresh":  # (fresh: analysed before any forward, FSDP not initialised)
        train_steps(model, 2, rank, mlp=cls is MLP)
    start = time.perf_counter()
    df = ww_callbacks.analyze(model)
    seconds = time.perf_counter() - start
    randomized = ww_callbacks.analyze(model, randomize=True) if case == "ddp" else None
    if case == "zero3":
        import deepspeed

        params = list(model.module.parameters())
        with deepspeed.zero.GatheredParameters(params):
            sd = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
    else:  # copies: for DDP the state dict holds the live parameters
        sd = {k: v.detach().clone() for k, v in full_state_dict(model).items()}
    train_steps(model, 1, rank, mlp=cls is MLP) if case != "zero3" else None  # still trains
    bare = cls()
    bare.load_state_dict(sd)
    out = {"sharding": df.attrs["sharding"], "seconds": seconds}
    if randomized is not None:  # the same draws as one rank analysing every layer
        from ww_callbacks.distributed.analyze import analyze_owned
        from ww_callbacks.distributed.gather import ShardedLayers

        alone = ShardedLayers(bare, world_size=1).gather()
        out["randomized"] = (randomized, analyze_owned(alone, randomize=True, seed=0))
    if rank == 0:
        out.update(rows=df, ref_sd=ww_callbacks.analyze(sd), ref_bare=single_process(bare),
                   skipped=df.attrs["skipped"])
    return out


def main() -> None:
    out_dir, cases = sys.argv[1], sys.argv[2:]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    results = {}
    for case in cases:
        if case == "one_rank":
            continue
        try:
            results[case] = run_case(case, rank)
        except Exception as err:  # recorded, so the test shows which case failed and why
            import traceback

            results[case] = {"error": f"{err!r}\n{traceback.format_exc()}"}
        dist.barrier()
    if "one_rank" in cases:  # last: it leaves the ranks' handshake counters apart
        import ww_callbacks.distributed.collective as collective

        collective.DEFAULT_TIMEOUT = 3.0
        if rank == 0:
            start = time.perf_counter()
            try:
                ww_callbacks.analyze(built(TinyTransformer))
                results["one_rank"] = {"error": None}
            except RuntimeError as err:
                results["one_rank"] = {"error": str(err),
                                       "seconds": time.perf_counter() - start}
        dist.barrier()
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(results, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
