"""Run with ``python -m torch.distributed.run --nproc_per_node 2 lightning_cases.py OUT CASE...``
(gloo, CPU), one ``Trainer.fit`` per case with the ``WeightWatcherCallback``:
``model_parallel`` (``ModelParallelStrategy``, FSDP2 via ``configure_model``), ``ddp``
(``strategy="ddp"``, replicated weights) and ``ddp_policies`` (DDP with a learning-rate balancer
and early stopping that restores the best weights). Rank 0 saves the history and, at every step
a snapshot is taken at, ``analyze()`` of the full state dict; every rank saves the layers it
analysed and what its policies did, in ``OUT/rank<r>.pkl``."""

from __future__ import annotations

import os
import sys

import lightning.pytorch as L
import torch
import torch.nn as nn

import ww_callbacks
from ww_callbacks.integrations.lightning import WeightWatcherCallback

sys.path.insert(0, os.path.dirname(__file__))
from analyze_cases import full_state_dict  # noqa: E402
from launch import run_cases  # noqa: E402
from models import VOCAB, TinyTransformer, built, token_batch  # noqa: E402


class Module(L.LightningModule):
    def __init__(self, shard: bool = True, per_layer_lr: bool = False):
        super().__init__()
        self.model = built(TinyTransformer)
        self.shard = shard
        self.per_layer_lr = per_layer_lr

    def configure_model(self):
        from torch.distributed.fsdp import fully_shard

        if not self.shard:
            return
        mesh = self.device_mesh["data_parallel"]
        for block in self.model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(self.model, mesh=mesh)

    def training_step(self, batch, batch_idx):
        tokens, targets = batch
        logits = self.model(tokens)
        return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))

    def configure_optimizers(self):
        if self.per_layer_lr:
            from ww_callbacks.policies import param_groups_per_layer

            return torch.optim.SGD(param_groups_per_layer(self, lr=0.05), lr=0.05)
        return torch.optim.SGD(self.parameters(), lr=0.05)


class References(L.Callback):
    """The single-process analysis of the full state dict wherever the watcher snapshots."""

    def __init__(self):
        self.refs = {}
        self.states = {}  # step -> this rank's full state dict

    def _take(self, trainer, pl_module):
        sd = {k: v.detach().clone() for k, v in full_state_dict(pl_module).items()}
        self.states[int(trainer.global_step)] = sd
        if trainer.is_global_zero:
            self.refs[int(trainer.global_step)] = ww_callbacks.analyze(sd)

    def on_train_start(self, trainer, pl_module):
        self._take(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx + 1 == trainer.num_training_batches:
            self._take(trainer, pl_module)


def run_case(case: str, out_dir: str, rank: int) -> dict:
    """One fit of ``case`` (see the module docstring); what this rank saw."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    batches = [token_batch(rank, step) for step in range(3)]
    data = [(t, y) for t, y in batches]
    refs = References()
    policies = []
    if case == "ddp_policies":
        from ww_callbacks.policies import HTSREarlyStopping, LayerLRBalancer

        # plateau with a huge min_delta: step 0 sets the best, the next analysis (step 3, the
        # snapshot of epoch 0, merged at its end) stops the fit there
        stop = HTSREarlyStopping("plateau", min_delta=100.0, patience=1, verbose=False,
                                 restore_best_weights=True)
        policies = [LayerLRBalancer(), stop]
    callback = WeightWatcherCallback(log_dir=os.path.join(out_dir, case), traps_every=0,
                                     max_duty=None, policies=policies,
                                     wait="epoch" if policies else None)
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1) \
        if case == "model_parallel" else "ddp"
    trainer = L.Trainer(accelerator="cpu", devices=2, max_epochs=4 if policies else 2,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, strategy=strategy,
                        use_distributed_sampler=False,  # each rank its own batches
                        callbacks=[callback, refs])
    module = Module(shard=case == "model_parallel", per_layer_lr=bool(policies))
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=None))
    session = callback.watcher
    out = {"history_path": str(callback.history_path),
           "owned": [p.layers[0].longname for p in session._dist.sharded.owned],
           "gathered_bytes": session._dist.gathered_bytes,
           "global_step": int(trainer.global_step)}
    if policies:
        final = full_state_dict(module)
        restored = refs.states.get(stop.restored_step, {})
        out.update(stopped_step=stop.stopped_step, restored_step=stop.restored_step,
                   restored_weights_equal=bool(restored) and all(
                       torch.equal(final[k], restored[k]) for k in final),
                   lrs=[group["lr"] for group in trainer.optimizers[0].param_groups])
    if trainer.is_global_zero:
        out["history"] = ww_callbacks.load_history(callback.history_path)
        out["refs"] = refs.refs
    return out



if __name__ == "__main__":
    run_cases(run_case, init_group=False)
