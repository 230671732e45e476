"""Fine-tune a tiny BERT with LoRA adapters (Hugging Face ``peft``) and watch the adapters live.

Nothing is downloaded: the "pretrained" model is a ``BertConfig`` built here, first trained in
full for a few steps on one generated task (token counting), then adapted with LoRA (rank 8 on
the query and value projections, the rest frozen) to another task: is the *first* half of the
sequence mostly low tokens. ``WeightWatcherCallback(adapters="both")`` analyses, every 10 steps
in a background thread, each LoRA layer's effective weight ``W0 + scaling * B @ A`` and its update
``scaling * B @ A`` alone (rows ``<layer>.lora_BA.default``); the frozen base is copied once, the
adapters at every snapshot. Under a minute on a CPU::

    python examples/lora_finetune.py            # --out ww_logs/lora --epochs 3

It prints the adapters' rows of the last analysis and how the largest eigenvalue and alpha of
each update grew during the fine-tune (the update starts at 0: peft initialises ``B`` to zeros, so
the first analysis of every update fails, status ``failed``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from ww_callbacks.history import load_history
from ww_callbacks.integrations.transformers import WeightWatcherCallback

VOCAB, LENGTH = 128, 24


class TokenTask(torch.utils.data.Dataset):
    """``n`` random token sequences; label 1 when most tokens of ``span`` are below VOCAB // 2."""

    def __init__(self, n: int, span: slice, seed: int):
        gen = torch.Generator().manual_seed(seed)
        bias = torch.rand(n, 1, generator=gen)  # varied proportions, so both labels occur
        low = torch.rand(n, LENGTH, generator=gen) < bias
        tokens = torch.randint(0, VOCAB // 2, (n, LENGTH), generator=gen)
        self.ids = torch.where(low, tokens, tokens + VOCAB // 2)
        part = low[:, span]
        self.labels = (part.sum(1) * 2 > part.shape[1]).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]),
                "labels": self.labels[i]}


def base_model(seed: int = 0, steps: int = 40) -> BertForSequenceClassification:
    """A small BERT "pretrained" locally on the whole-sequence task (plain torch loop)."""
    config = BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128,
                        max_position_embeddings=32, num_labels=2)
    with torch.random.fork_rng():  # transformers initialises from the global generator
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config)
    data = TokenTask(512, slice(None), seed)
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=False)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for step, batch in zip(range(steps), _cycle(loader), strict=False):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
        del step
    return model


def _cycle(loader):
    while True:
        yield from loader


def lora_model(seed: int = 0) -> torch.nn.Module:
    """The base model wrapped with rank-8 LoRA adapters on the attention's query and value."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.0,
                        target_modules=["query", "value"])
    with torch.random.fork_rng():  # peft draws A from the global generator
        torch.manual_seed(seed)
        return get_peft_model(base_model(seed), config)


def training_args(out: str, epochs: int, seed: int) -> TrainingArguments:
    """The fine-tune's arguments (shared with ``bench/lora_overhead.py``)."""
    return TrainingArguments(output_dir=out, num_train_epochs=epochs,
                             per_device_train_batch_size=32, learning_rate=5e-3,
                             logging_steps=10, report_to=[], use_cpu=True, save_strategy="no",
                             disable_tqdm=True, seed=seed)


def finetune(out: str, epochs: int, seed: int, callback: WeightWatcherCallback | None,
             model: torch.nn.Module | None = None) -> Trainer:
    """Fine-tune the LoRA model (``model``, or a new :func:`lora_model`) on the first-half task,
    with ``callback`` when given."""
    model = lora_model(seed) if model is None else model
    trainer = Trainer(model=model, args=training_args(out, epochs, seed),
                      train_dataset=TokenTask(512, slice(0, LENGTH // 2), seed + 1),
                      eval_dataset=TokenTask(256, slice(0, LENGTH // 2), seed + 2),
                      callbacks=[callback] if callback is not None else [])
    trainer.train()
    return trainer


def main(out: str = "ww_logs/lora", epochs: int = 3, seed: int = 0) -> None:
    """Fine-tune, then print what the callback recorded about the adapters."""
    # A model this small trains faster than it is analysed: wait="always" keeps every
    # snapshot (in real training leave it out; analyses then never slow training down).
    callback = WeightWatcherCallback(every_n_steps=10, every_n_epochs=None, log_dir=out,
                                     tensorboard=False, adapters="both", traps_every=0,
                                     wait="always")
    trainer = finetune(out, epochs, seed, callback)
    print("eval:", {k: round(v, 3) for k, v in trainer.evaluate().items()})

    layers = load_history(out)
    lora = layers[layers["layer_type"] == "lora"]
    last = lora[lora["step"] == lora["step"].max()]
    print(f"\nLoRA rows of the last analysis (step {int(last['step'].iloc[0])}):")
    print(last[["longname", "N", "M", "alpha", "lambda_max", "log_norm", "status"]]
          .assign(longname=last["longname"].str.replace("base_model.model.", "", regex=False))
          .round(4).to_string(index=False))
    updates = lora[lora["longname"].str.contains(".lora_BA.", regex=False)].copy()
    updates["layer"] = (updates["longname"].str.replace("base_model.model.bert.encoder.", "",
                                                        regex=False)
                        .str.replace(".lora_BA.default", "", regex=False))
    print("\nlambda_max of each adapter update (scaling * B @ A) by step:")
    print(updates.pivot(index="step", columns="layer", values="lambda_max").round(5)
          .to_string())
    print("\nalpha of each adapter update by step (step 0: B = 0, nothing to fit):")
    print(updates.pivot(index="step", columns="layer", values="alpha").round(3).to_string())
    skipped = callback.watcher.skipped
    print(f"\n{len(skipped)} parameters/layers not analysed, e.g. "
          f"{skipped[0].longname}: {skipped[0].reason}" if skipped else "")
    print(f"history: {callback.watcher.history_path}  ({os.path.abspath(out)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="ww_logs/lora", type=Path)
    parser.add_argument("--epochs", default=3, type=int)
    parser.add_argument("--seed", default=0, type=int)
    options = parser.parse_args()
    main(str(options.out), options.epochs, options.seed)
