"""Watch an MLP train on scikit-learn's digits in a plain PyTorch loop, live in TensorBoard.

Runs in well under a minute on a CPU; nothing is downloaded (the digits ship with scikit-learn).
    python examples/torch_digits.py            # writes ww_logs/torch_digits/
    tensorboard --logdir ww_logs               # Scalars (smoothing 0), Custom Scalars, Images

Every ``--every`` optimizer steps the watcher copies the weights and analyses them in a background
thread (power-law alpha per layer, correlation traps); with ``wait="always"`` (these steps are
shorter than an analysis) the loop waits when the analysis is behind. The history
of every analysis is in ``ww_logs/ww_history.jsonl`` (``ww_callbacks.history.load_history``).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
from sklearn.datasets import load_digits

from ww_callbacks.history import load_history
from ww_callbacks.integrations.torch import Watcher


def main(log_dir: str = "ww_logs/torch_digits", epochs: int = 20, every: int = 50,
         seed: int = 0) -> None:
    """Train for ``epochs`` epochs, analysing every ``every`` steps; print the last analysis."""
    torch.manual_seed(seed)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    # These steps take ~4 ms: 50 of them are shorter than one analysis (~0.3 s for these three
    # layers with their correlation traps). wait="always" has every requested snapshot analysed
    # (the loop pauses for the analysis when it is behind). In real training, where the steps
    # between two snapshots take longer than an analysis, leave it out: the loop then never
    # waits, and a snapshot the analysis cannot keep up with is dropped and counted.
    with Watcher(model, log_dir=log_dir, every_n_steps=every, optimizer=opt,
                 wait="always") as watcher:
        for epoch in range(epochs):
            for idx in torch.randperm(len(x)).split(64):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
                watcher.step(epoch=epoch)  # snapshots when due
            if (epoch + 1) % 10 == 0:
                print(f"epoch {epoch + 1:3d}  loss {loss.item():.4f}  "
                      f"analyses so far {watcher.results_delivered}")
    # leaving the block analysed the final weights and waited for it
    accuracy = (model(x).argmax(1) == y).float().mean().item()
    print(f"train accuracy {accuracy:.3f} in {time.perf_counter() - start:.1f} s; "
          f"{watcher.results_delivered} analyses of {watcher.snapshots_taken} requested (initial, "
          f"every {every} steps, final), {watcher.dropped} dropped (the analysis could not keep "
          "up)")
    history = load_history(log_dir)
    last = history[history.step == history.step.max()]
    print(last[["step", "longname", "alpha", "alpha_weighted", "num_traps", "warning"]]
          .to_string(index=False))
    print(f"\nhistory: {watcher.history_path}\nopen TensorBoard with:  tensorboard --logdir "
          f"{log_dir}   then http://localhost:6006 (Images: alpha heatmap, correlation flow, "
          "alpha histogram and ESD per layer; Custom Scalars: every layer's alpha in one chart; "
          "Text: ww/alerts; set the Scalars' smoothing to 0)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", default="ww_logs/torch_digits")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--every", type=int, default=50, help="analyse every N optimizer steps")
    args = parser.parse_args()
    main(args.log_dir, args.epochs, args.every)
