"""Run with ``python -m torch.distributed.run --nproc_per_node 2 watch_cases.py OUT CASE...``
(gloo, CPU): a plain training loop with the torch ``Watcher`` on every rank (``ddp``, ``fsdp2``,
``fsdp1_flat``, ``fsdp1_orig``, ``tp``: tensor-parallel DTensors, ``Shard(0)`` and ``Shard(1)``;
``ddp_lora``: peft LoRA under DDP with ``adapters="both"``; ``ddp_base``: ``base="initial"``
under DDP and ``fsdp2_base`` under FSDP2; ``fsdp2_lora``: refused); rank 0 saves the history it
wrote and, for every step a snapshot may be taken at, the single-process ``analyze()`` of the
full state dict at that step, in ``OUT/rank<r>.pkl``."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.nn as nn

import ww_callbacks
from ww_callbacks.integrations.torch import Watcher

sys.path.insert(0, os.path.dirname(__file__))
from analyze_cases import full_state_dict  # noqa: E402
from launch import run_cases  # noqa: E402
from models import VOCAB, TinyTransformer, built, token_batch  # noqa: E402

EVERY, STEPS = 2, 6


def with_lora(model):
    """``model`` with peft LoRA adapters (rank 4) on the MLPs and the head, their B drawn
    non-zero (from a private generator) so that the adapters count from the start."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8,
                                             target_modules=["fc1", "fc2", "head"]))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    return model


def wrap(case: str):
    model = built(TinyTransformer)
    if case in ("ddp", "ddp_base"):
        return nn.parallel.DistributedDataParallel(model)
    if case == "ddp_lora":
        return nn.parallel.DistributedDataParallel(with_lora(model))
    if case == "fsdp2_lora":
        from torch.distributed.fsdp import fully_shard

        model = with_lora(model)
        for block in model.base_model.model.blocks:
            fully_shard(block)
        return fully_shard(model)
    if case in ("fsdp2", "fsdp2_base"):
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        return fully_shard(model)
    if case in ("fsdp1_flat", "fsdp1_orig"):
        # use_orig_params=False: flat parameters (segfaulted before); True: the original
        # parameters are views of flat 1-D shards (every layer was skipped before)
        from models import Block
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        return FSDP(model, auto_wrap_policy=ModuleWrapPolicy({Block}),
                    use_orig_params=case == "fsdp1_orig", device_id=torch.device("cpu"))
    if case == "tp":  # DTensors: up and out sharded by rows (Shard(0)), down by columns
        from models import MLP
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor.parallel import (
            ColwiseParallel,
            RowwiseParallel,
            parallelize_module,
        )

        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        return parallelize_module(built(MLP), mesh, {"up": ColwiseParallel(),
                                                     "down": RowwiseParallel(),
                                                     "out": ColwiseParallel()})
    raise ValueError(case)


def loss_of(case: str, model, rank: int, step: int):
    """The training loss of ``step``: the MLP of ``tp`` gets the same input on every rank (its
    ranks hold parts of one model), the transformer a batch of the rank's own."""
    if case == "tp":
        from models import WIDTH

        gen = torch.Generator().manual_seed(7 + step)
        return model(torch.randn(8, WIDTH, generator=gen)).square().mean()
    tokens, targets = token_batch(rank, step)
    return nn.functional.cross_entropy(model(tokens).reshape(-1, VOCAB), targets.reshape(-1))


def train_step(model, opt, rank: int, step: int, case: str = "") -> None:
    """One optimizer step on :func:`loss_of`'s loss."""
    loss = loss_of(case, model, rank, step)
    opt.zero_grad()
    loss.backward()
    opt.step()


#: The Watcher options of each case (the others: the defaults).
OPTIONS = {"ddp_lora": {"adapters": "both"}, "ddp_base": {"base": "initial"},
           "fsdp2_base": {"base": "initial"}}


def reference(model, rank: int, case: str = "", initial: dict | None = None):
    """Single-process analysis of the full state dict (rank 0; every rank takes part). LoRA: of
    the bare model, as one process reads it (``adapters="both"``); ``base="initial"``: of the
    state dict minus the ``initial`` one."""
    if case == "ddp_lora":
        if rank != 0:
            return None
        from ww_callbacks.analysis import analyze_layers
        from ww_callbacks.layers import extract_layers, select_layers

        found, skipped = extract_layers(model.module, adapters="both")
        kept, filtered = select_layers(found)
        return analyze_layers(kept, skipped=skipped + filtered)
    sd = {k: v.detach().clone() for k, v in full_state_dict(model).items()}
    if rank != 0:
        return None
    return ww_callbacks.analyze(sd, base=initial) if initial is not None else \
        ww_callbacks.analyze(sd)


def run_policies(rank: int, out_dir: str, kind: str) -> dict:
    """FSDP2 with a learning-rate balancer and an early stop due at the first analysis after the
    initial weights, restoring the best weights: what each rank's optimizer and loop did, and
    whether the weights at the end are those of the restored step."""
    from ww_callbacks.policies import HTSREarlyStopping, LayerLRBalancer, param_groups_per_layer

    model = wrap(kind)
    opt = torch.optim.SGD(param_groups_per_layer(model, lr=0.05), lr=0.05)
    # plateau with a huge min_delta: step 0 sets the best, step 2 shows the signal
    stop = HTSREarlyStopping("plateau", min_delta=100.0, patience=1, verbose=False,
                             restore_best_weights=True)
    steps_run = 0
    states = {0: full_state_dict(model)}
    with Watcher(model, log_dir=os.path.join(out_dir, f"policies_{kind}"), every_n_steps=EVERY,
                 optimizer=opt, tensorboard=False, traps_every=0, max_duty=None,
                 policies=[LayerLRBalancer(), stop]) as ww:
        for step in range(1, 5 * EVERY + 1):
            train_step(model, opt, rank, step)
            ww.step()
            steps_run = step
            if step % EVERY == 0:
                states[step] = full_state_dict(model)
            if ww.should_stop:
                break
            ww.wait_idle()  # so that the stop is due at a known step on every rank
    final = full_state_dict(model)
    restored = states.get(stop.restored_step, {})
    same = bool(restored) and all(torch.equal(final[k], restored[k]) for k in final)
    return {"steps_run": steps_run, "stopped_step": stop.stopped_step,
            "restored_step": stop.restored_step, "restored_weights_equal": same,
            "lrs": [group["lr"] for group in opt.param_groups],
            "groups": len(opt.param_groups)}


def run_default_duty(rank: int, out_dir: str) -> dict:
    """DDP with the default ``max_duty``: the workers rest between analyses, so most snapshots
    are skipped; rank 0 skips them on every rank alike, so no step is lost half-analysed."""
    model = wrap("ddp")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with Watcher(model, log_dir=os.path.join(out_dir, "duty"), every_n_steps=1, optimizer=opt,
                 tensorboard=False, traps_every=0) as ww:
        for step in range(1, 31):
            train_step(model, opt, rank, step)
            ww.step()
    out = {"dropped": ww.dropped, "discarded": ww.session._dist.discarded,
           "taken": ww.snapshots_taken}
    if rank == 0:
        out["steps"] = sorted(set(ww_callbacks.load_history(ww.history_path)["step"]))
    return out


def run_declined_final(rank: int, out_dir: str) -> dict:
    """DDP where rank 1's analysis of step 4 takes a while (a sleep in its worker), so that the
    ranks decline step 6's snapshot together, then the watcher's close takes the final weights
    (step 6) after all: the step is analysed, so it must not stay counted as dropped."""
    import time

    from ww_callbacks.distributed.snapshots import DistributedSnapshots

    model = wrap("ddp")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    analyse = DistributedSnapshots.analyse

    def slow_on_rank1(self, snapshot):
        if rank == 1 and snapshot.step == 4:
            time.sleep(3.0)  # >> two training steps: rank 1 is busy at step 6
        return analyse(self, snapshot)

    DistributedSnapshots.analyse = slow_on_rank1
    try:
        with Watcher(model, log_dir=os.path.join(out_dir, "declined"), every_n_steps=EVERY,
                     optimizer=opt, tensorboard=False, traps_every=0, max_duty=None) as ww:
            for step in range(1, STEPS + 1):
                train_step(model, opt, rank, step)
                ww.step()
                if step < 4:
                    ww.wait_idle()
            declined = ww.session.drops.no_buffer  # step 6: some rank's worker busy
    finally:
        DistributedSnapshots.analyse = analyse
    out = {"dropped": ww.dropped, "declined_before_close": declined}
    dist.barrier()
    if rank == 0:
        out["steps"] = sorted(set(ww_callbacks.load_history(ww.history_path)["step"]))
    return out


def run_zero3(rank: int, out_dir: str) -> dict:
    """DeepSpeed ZeRO-3 (engine.backward / engine.step) with the Watcher on every rank."""
    import deepspeed

    config = {"train_batch_size": 4 * dist.get_world_size(), "train_micro_batch_size_per_gpu": 4,
              "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True,
              "optimizer": {"type": "SGD", "params": {"lr": 0.05}}}
    with deepspeed.zero.Init(config_dict_or_path=config):
        model = TinyTransformer()
    engine, *_ = deepspeed.initialize(model=model, config=config,
                                      model_parameters=model.parameters())

    def reference_here():
        with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
            sd = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
        return ww_callbacks.analyze(sd) if rank == 0 else None

    log_dir = os.path.join(out_dir, "zero3")
    refs = {0: reference_here()}
    with Watcher(engine, log_dir=log_dir, every_n_steps=EVERY, tensorboard=False, traps_every=0,
                 max_duty=None) as ww:
        for step in range(1, STEPS + 1):
            tokens, targets = token_batch(rank, step)
            loss = nn.functional.cross_entropy(engine(tokens).reshape(-1, VOCAB),
                                               targets.reshape(-1))
            engine.backward(loss)
            engine.step()
            ww.step()
            if step % EVERY == 0:
                refs[step] = reference_here()
    out = {"dropped": ww.dropped, "history_path": str(ww.history_path)}
    if rank == 0:
        out["history"] = ww_callbacks.load_history(log_dir)
        out["refs"] = refs
    return out


def run_traps(rank: int, out_dir: str) -> dict:
    """FSDP2 with a correlation trap planted in blocks.0.fc1 and ``TrapRemoval``: every rank
    removes the same components from its own shards."""
    from torch.distributed.fsdp import fully_shard

    from ww_callbacks.policies import TrapRemoval

    model = built(TinyTransformer)
    with torch.no_grad():
        model.blocks[0].fc1.weight[3, 5] = 25.0  # one huge entry: a trap
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    removal = TrapRemoval(verbose=False)
    before = full_state_dict(model)["blocks.0.fc1.weight"][3, 5].item()
    with Watcher(model, log_dir=None, every_n_steps=EVERY, optimizer=opt, tensorboard=False,
                 traps_every=1, max_duty=None, policies=[removal]) as ww:
        for step in range(1, STEPS + 1):
            train_step(model, opt, rank, step)
            ww.step()
            ww.wait_idle()
    after = full_state_dict(model)["blocks.0.fc1.weight"][3, 5].item()
    return {"removed": dict(removal.removed), "before": before, "after": after}


def run_case(case: str, rank: int, out_dir: str) -> dict:
    if case == "traps":
        return run_traps(rank, out_dir)
    if case == "zero3":
        return run_zero3(rank, out_dir)
    if case.startswith("policies_"):
        return run_policies(rank, out_dir, case.removeprefix("policies_"))
    if case == "duty":
        return run_default_duty(rank, out_dir)
    if case == "declined_final":
        return run_declined_final(rank, out_dir)
    model = wrap(case)
    if case == "fsdp2_lora":  # refused with a clear error, on every rank alike
        try:
            with Watcher(model, log_dir=None, tensorboard=False, traps_every=0):
                pass
        except NotImplementedError as err:
            return {"refused": str(err)}
        return {"refused": None}
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    log_dir = os.path.join(out_dir, case)
    initial = None
    if case in ("ddp_base", "fsdp2_base"):
        initial = {k: v.detach().clone() for k, v in full_state_dict(model).items()}
    refs = {0: reference(model, rank, case, initial)}
    with Watcher(model, log_dir=log_dir, every_n_steps=EVERY, optimizer=opt, tensorboard=False,
                 traps_every=0, max_duty=None, **OPTIONS.get(case, {})) as ww:
        for step in range(1, STEPS + 1):
            train_step(model, opt, rank, step, case)
            ww.step()
            if step % EVERY == 0:
                refs[step] = reference(model, rank, case, initial)
    sharded = ww.session._dist.sharded
    out = {"dropped": ww.dropped, "gathered_bytes": ww.session._dist.gathered_bytes,
           "owned_share_bytes": sharded.owned_share_bytes(),
           "total_bytes": sum(p.nbytes for p in sharded.params),
           "max_param_bytes": max(p.nbytes for p in sharded.params),
           "owned": [p.layers[0].longname for p in sharded.owned],
           "history_path": str(ww.history_path)}
    dist.barrier()
    if rank == 0:
        out["history"] = ww_callbacks.load_history(log_dir)
        out["refs"] = refs
    return out


if __name__ == "__main__":
    run_cases(lambda case, out_dir, rank: run_case(case, rank, out_dir))
