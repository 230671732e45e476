"""What watching a LoRA fine-tune costs: the fine-tune of ``examples/lora_finetune.py`` (tiny
BERT, rank-8 LoRA on query/value, Hugging Face ``Trainer``) with and without
``WeightWatcherCallback(every_n_steps=5, adapters="both", max_duty=None)`` (every requested
snapshot analysed: the worst case for training), measured in one run.

    python bench/lora_overhead.py                  # --epochs 1 --pairs 2

Fits alternate without/with the callback after a warm-up fit of each; every fit starts from a
copy of the same LoRA model. Prints each fit's wall time (``Trainer`` built and ``train()``),
the training thread's CPU time and the whole process's CPU time (the analysis thread included),
the median and the best of each side and their ratios (target: wall <= 1.05), and how many
snapshots were analysed. On a shared machine the CPU times are the steadier figures: wall time
then depends on what else runs. Then the training thread's cost of one snapshot of a larger
LoRA BERT (d=512, 4 layers, vocab 8000; frozen base copied once, adapters every time) against
the same model with every parameter trainable (everything copied every time).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))


def _fit(template: torch.nn.Module, epochs: int, with_callback: bool,
         root: str) -> tuple[float, float, float, int]:
    """One fine-tune: (wall s, training-thread CPU s, whole-process CPU s, analyses)."""
    from lora_finetune import finetune

    from ww_callbacks.integrations.transformers import WeightWatcherCallback

    callback = None
    if with_callback:
        callback = WeightWatcherCallback(every_n_steps=5, every_n_epochs=None, log_dir=root,
                                         tensorboard=False, adapters="both", max_duty=None)
    model = copy.deepcopy(template)
    start, thread0, process0 = time.perf_counter(), time.thread_time(), time.process_time()
    finetune(root, epochs, 0, callback, model=model)
    wall = time.perf_counter() - start  # (trainer construction included on both sides)
    thread, process = time.thread_time() - thread0, time.process_time() - process0
    analysed = callback.watcher.results_delivered if callback is not None else 0
    return wall, thread, process, analysed


def _large_lora() -> torch.nn.Module:
    """A larger LoRA BERT (not trained) for the snapshot cost: d=512, 4 layers, vocab 8000."""
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=8000, hidden_size=512, num_hidden_layers=4,
                        num_attention_heads=8, intermediate_size=2048)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return get_peft_model(BertModel(config), LoraConfig(r=8, lora_alpha=16,
                                                            target_modules=["query", "value"]))


def _snapshot_cost(template: torch.nn.Module, repeats: int = 20) -> tuple[float, float, int]:
    """Median seconds of one snapshot: LoRA model as is / with every parameter trainable; and
    the number of watched rows."""
    from ww_callbacks.layers import extract_layers, select_layers
    from ww_callbacks.snapshot import Snapshotter

    out = []
    for trainable in (False, True):
        model = copy.deepcopy(template)
        if trainable:
            for p in model.parameters():
                p.requires_grad_(True)
        kept, _ = select_layers(extract_layers(model, adapters="both")[0])
        snapshotter = Snapshotter(kept)
        snapshotter.take(0, None, False)  # the first copies everything
        times = []
        for step in range(1, repeats + 1):
            start = time.perf_counter()
            snapshotter.take(step, None, False)
            times.append(time.perf_counter() - start)
        out.append(statistics.median(times))
    return out[0], out[1], len(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=2)
    options = parser.parse_args()
    from lora_finetune import lora_model

    print(f"load average at start: {os.getloadavg()[0]:.2f}; torch threads "
          f"{torch.get_num_threads()}")
    template = lora_model(0)
    runs: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    analysed = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(options.pairs + 1):  # the first pair warms up (imports, caches)
            for with_cb in (False, True):
                wall, thread, process, n = _fit(template, options.epochs, with_cb,
                                                f"{tmp}/run{i}{int(with_cb)}")
                tag = "warm-up " if i == 0 else ""
                print(f"{tag}fit {'with' if with_cb else 'without'} callback: wall {wall:.2f} s, "
                      f"training thread CPU {thread:.2f} s, process CPU {process:.2f} s"
                      + (f" ({n} analyses)" if with_cb else ""))
                if i:
                    runs[with_cb].append((wall, thread, process))
                    if with_cb:
                        analysed.append(n)
    for k, what in enumerate(("wall", "training-thread CPU", "process CPU (all threads)")):
        base = statistics.median(r[k] for r in runs[False])
        ours = statistics.median(r[k] for r in runs[True])
        best_base, best_ours = min(r[k] for r in runs[False]), min(r[k] for r in runs[True])
        print(f"{what}: median without {base:.2f} s, with {ours:.2f} s, ratio {ours / base:.3f}; "
              f"best {best_base:.2f} / {best_ours:.2f} s, ratio {best_ours / best_base:.3f}")
    print(f"target: wall ratio <= 1.05; analyses per fit: {analysed}")
    lora, full, rows = _snapshot_cost(_large_lora())
    print(f"one snapshot on the training thread ({rows} watched rows): LoRA model "
          f"{lora * 1e3:.3f} ms (frozen base copied once), all parameters trainable "
          f"{full * 1e3:.3f} ms, ratio {lora / full:.3f}")


if __name__ == "__main__":
    main()
