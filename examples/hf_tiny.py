"""Train a tiny BERT with the Hugging Face ``Trainer`` and watch its layers while it trains.

The task is generated (nothing is downloaded): sequences of random tokens, labelled 1 when more
than half of their tokens come from the lower half of the vocabulary. The model is built from a
``BertConfig``. ``WeightWatcherCallback`` analyses the weights every 10 steps in a background
thread and writes the results to TensorBoard and to ``ww_history.jsonl``. Under a minute on a
CPU::

    python examples/hf_tiny.py                 # --out ww_logs/hf_tiny --epochs 3
    tensorboard --logdir ww_logs/hf_tiny       # train/loss next to ww_alpha/<layer>, pictures

The ww tags, the history and Hugging Face's own ``train/loss`` share one TensorBoard run
(``<out>/runs/hf_tiny``: ``TENSORBOARD_LOGGING_DIR`` names it for both), so they overlay.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from ww_callbacks.history import load_history
from ww_callbacks.integrations.transformers import WeightWatcherCallback


class MajorityTask(torch.utils.data.Dataset):
    """``n`` random token sequences; label 1 when most tokens are below ``vocab // 2``."""

    def __init__(self, n: int = 512, length: int = 24, vocab: int = 128, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        bias = torch.rand(n, 1, generator=gen)  # varied proportions, so both labels occur
        low = torch.rand(n, length, generator=gen) < bias
        tokens = torch.randint(0, vocab // 2, (n, length), generator=gen)
        self.ids = torch.where(low, tokens, tokens + vocab // 2)
        self.labels = (low.sum(1) * 2 > length).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]),
                "labels": self.labels[i]}


def main(out: str = "ww_logs/hf_tiny", epochs: int = 3, seed: int = 0) -> None:
    """Train, then print the analyses recorded during training."""
    torch.manual_seed(seed)
    run_dir = os.path.join(out, "runs", "hf_tiny")  # Hugging Face's TensorBoard run and ours
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", run_dir)
    run_dir = os.environ["TENSORBOARD_LOGGING_DIR"]
    config = BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128,
                        max_position_embeddings=32, num_labels=2)
    model = BertForSequenceClassification(config)
    args = TrainingArguments(output_dir=out, num_train_epochs=epochs,
                             per_device_train_batch_size=32, learning_rate=2e-3,
                             logging_steps=10, report_to=["tensorboard"], use_cpu=True,
                             save_strategy="no", disable_tqdm=True, seed=seed)
    # A model this small trains faster than it is analysed: wait="always" keeps every
    # snapshot (in real training leave it False; analyses then never slow training down).
    callback = WeightWatcherCallback(every_n_steps=10, every_n_epochs=None, log_dir=run_dir,
                                     wait="always")
    trainer = Trainer(model=model, args=args, train_dataset=MajorityTask(seed=seed),
                      eval_dataset=MajorityTask(256, seed=seed + 1), callbacks=[callback])
    trainer.train()
    print("eval:", {k: round(v, 3) for k, v in trainer.evaluate().items()})

    runs = load_history(run_dir, level="model")
    print(runs[["step", "epoch", "ww/alpha_mean", "ww/alpha_weighted_mean",
                "ww/layers_under_trained", "duration_s"]].round(3).to_string(index=False))
    layers = load_history(run_dir)
    last = layers[layers["step"] == layers["step"].max()]
    print(last[["longname", "N", "M", "alpha", "alpha_weighted", "num_traps", "warning"]]
          .round(3).to_string(index=False))
    print(f"history: {callback.watcher.history_path}\n"
          f"TensorBoard: tensorboard --logdir {os.path.abspath(out)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="ww_logs/hf_tiny", type=Path)
    parser.add_argument("--epochs", default=3, type=int)
    parser.add_argument("--seed", default=0, type=int)
    options = parser.parse_args()
    main(str(options.out), options.epochs, options.seed)
