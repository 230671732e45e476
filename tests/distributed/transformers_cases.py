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
import pickle
import sys
import traceback

import torch
import torch.distributed as dist
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import ww_callbacks
from ww_callbacks.integrations.transformers import WeightWatcherCallback

EVERY, STEPS = 2, 8  # 64 samples, 8 a batch, 2 ranks: 4 steps an epoch, 2 epochs


class RandomTokens(torch.utils.data.Dataset):
    """``n`` sequences of random token ids with random binary labels."""

    def __init__(self, n: int = 64, length: int = 16, vocab: int = 100, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, vocab, (n, length), generator=gen)
        self.labels = torch.randint(0, 2, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]),
                "labels": self.labels[i]}


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, vocab_size=100, max_position_embeddings=64)
    return BertForSequenceClassification(config)


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


def main() -> None:
    out_dir, cases = sys.argv[1], sys.argv[2:]
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
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


if __name__ == "__main__":
    main()
