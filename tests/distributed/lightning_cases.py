"""Run with ``python -m torch.distributed.run --nproc_per_node 2 lightning_cases.py OUT``
(gloo, CPU): Lightning ``ModelParallelStrategy`` (FSDP2 via ``configure_model``) with the
``WeightWatcherCallback``; rank 0 saves the history and, at every step a snapshot is taken at,
``analyze()`` of the full state dict, in ``OUT/rank<r>.pkl``."""

from __future__ import annotations

import os
import pickle
import sys
import traceback

import lightning.pytorch as L
import torch
import torch.distributed as dist
import torch.nn as nn

import ww_callbacks
from ww_callbacks.integrations.lightning import WeightWatcherCallback

sys.path.insert(0, os.path.dirname(__file__))
from analyze_cases import full_state_dict  # noqa: E402
from models import VOCAB, TinyTransformer, built, token_batch  # noqa: E402


class Module(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = built(TinyTransformer)

    def configure_model(self):
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for block in self.model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(self.model, mesh=mesh)

    def training_step(self, batch, batch_idx):
        tokens, targets = batch
        logits = self.model(tokens)
        return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class References(L.Callback):
    """The single-process analysis of the full state dict wherever the watcher snapshots."""

    def __init__(self):
        self.refs = {}

    def _take(self, trainer, pl_module):
        sd = {k: v.detach().clone() for k, v in full_state_dict(pl_module).items()}
        if trainer.is_global_zero:
            self.refs[int(trainer.global_step)] = ww_callbacks.analyze(sd)

    def on_train_start(self, trainer, pl_module):
        self._take(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx + 1 == trainer.num_training_batches:
            self._take(trainer, pl_module)


def main() -> None:
    out_dir = sys.argv[1]
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    batches = [token_batch(rank, step) for step in range(3)]
    data = [(t, y) for t, y in batches]
    refs = References()
    callback = WeightWatcherCallback(log_dir=os.path.join(out_dir, "logs"), traps_every=0,
                                     max_duty=None)
    from lightning.pytorch.strategies import ModelParallelStrategy

    trainer = L.Trainer(accelerator="cpu", devices=2, max_epochs=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False,
                        strategy=ModelParallelStrategy(data_parallel_size=2,
                                                       tensor_parallel_size=1),
                        callbacks=[callback, refs])
    out: dict = {}
    try:
        trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=None))
        out["history_path"] = str(callback.history_path)
        if trainer.is_global_zero:
            out["history"] = ww_callbacks.load_history(callback.history_path)
            out["refs"] = refs.refs
    except Exception as err:
        out["error"] = f"{err!r}\n{traceback.format_exc()}"
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump({"lightning": out}, f)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
