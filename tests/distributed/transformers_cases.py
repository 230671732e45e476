"""Run with ``python -m torch.distributed.run --nproc_per_node 2 transformers_cases.py OUT CASE...``
(gloo, CPU): a Hugging Face ``Trainer`` (``use_cpu=True``: accelerate's multi-CPU DDP) training a
tiny BERT built from its config (nothing downloaded) with the ``WeightWatcherCallback`` on every
process. Cases, in this order: ``ddp`` (every 2 steps, TensorBoard, a checkpoint at step 4),
``ddp_resume`` (the same run resumed from that checkpoint), ``ddp_policies`` (early stopping that
restores the best weights, and a learning-rate balancer). Rank 0 saves the history and, at every
step a snapshot may be taken at, ``analyze()`` of the model's state dict; every rank saves the
layers it analysed and what its policies did, in ``OUT/rank<r>.pkl``."""

from __future__ import annotations

import os
import sys

import torch
from transformers import (
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import ww_callbacks
from ww_callbacks.integrations.transformers import WeightWatcherCallback

sys.path.insert(0, os.path.dirname(__file__))
from hf_models import RandomTokens, tiny_bert  # noqa: E402
from launch import run_cases  # noqa: E402

EVERY, STEPS = 2, 8  # 64 samples, 8 a batch, 2 ranks: 4 steps an epoch, 2 epochs


class References(TrainerCallback):
    """This rank's state dict at the start and every ``EVERY`` steps, and (rank 0) its
    single-process analysis. Added after the watcher's callback: the same weights."""

    def __init__(self):
        self.refs, self.states = {}, {}

    def _take(self, state, model):
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.states[state.global_step] = sd
        if state.is_world_process_zero:
            self.refs[state.global_step] = ww_callbacks.analyze(sd)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._take(state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % EVERY == 0:
            self._take(state, model)


def run_case(case: str, out_dir: str, rank: int) -> dict:
    output = os.path.join(out_dir, "ddp" if case == "ddp_resume" else case)
    policies, optimizers, stop = [], (None, None), None
    model = tiny_bert()
    if case == "ddp_policies":
        from ww_callbacks.policies import HTSREarlyStopping, LayerLRBalancer, param_groups_per_layer

        # plateau with a huge min_delta: step 0 sets the best, step 2's analysis (merged at
        # step 4's snapshot, wait="always") stops both ranks at step 4
        stop = HTSREarlyStopping("plateau", min_delta=100.0, patience=1, verbose=False,
                                 restore_best_weights=True)
        policies = [LayerLRBalancer(), stop]
        optimizers = (torch.optim.SGD(param_groups_per_layer(model, lr=0.05), lr=0.05), None)
    callback = WeightWatcherCallback(every_n_steps=EVERY, traps_every=0, max_duty=None,
                                     log_dir=os.path.join(output, "ww"), policies=policies,
                                     wait="always" if policies else "never",
                                     tensorboard_options={"images_every": 0})
    refs = References()
    saving = {"save_strategy": "steps", "save_steps": 4} if case.startswith("ddp") \
        and case != "ddp_policies" else {"save_strategy": "no"}
    args = TrainingArguments(output_dir=output, max_steps=STEPS, per_device_train_batch_size=8,
                             logging_steps=2, report_to=["tensorboard"], use_cpu=True,
                             ddp_backend="gloo", disable_tqdm=True, learning_rate=1e-3,
                             seed=0, **saving)
    trainer = Trainer(model=model, args=args, train_dataset=RandomTokens(),
                      callbacks=[callback, refs], optimizers=optimizers)
    resume = os.path.join(output, "checkpoint-4") if case == "ddp_resume" else None
    trainer.train(resume_from_checkpoint=resume)
    session = callback.watcher
    out = {"history_path": str(session.history_path), "sinks": len(session.sinks),
           "owned": [p.layers[0].longname for p in session._dist.sharded.owned],
           "gathered_bytes": session._dist.gathered_bytes,
           "global_step": trainer.state.global_step,
           "distributed_type": str(trainer.accelerator.distributed_type),
           "ww_logged": any("ww/alpha_mean" in e for e in trainer.state.log_history)}
    if stop is not None:
        final = {k: v.detach() for k, v in model.state_dict().items()}
        restored = refs.states.get(stop.restored_step, {})
        out.update(stopped_step=stop.stopped_step, restored_step=stop.restored_step,
                   restored_weights_equal=bool(restored) and all(
                       torch.equal(final[k], restored[k]) for k in final),
                   lrs=[group["lr"] for group in trainer.optimizer.param_groups])
    if rank == 0:
        out["history"] = ww_callbacks.load_history(session.history_path)
        out["refs"] = refs.refs
        out["events"] = sorted(f for f in os.listdir(os.path.join(output, "ww"))
                               if "tfevents" in f)
    return out



if __name__ == "__main__":
    run_cases(run_case, init_group=False)
