"""Train a Lightning MLP on scikit-learn's digits with live WeightWatcher diagnostics.

``WeightWatcherCallback`` analyses the layers at the start, at the end of every epoch (in a
background thread, while training goes on) and at the end; the ``ww`` scalars go to TensorBoard
next to the loss, and every analysis to ``ww_history.jsonl`` in the same folder. Runs in well
under a minute on a CPU; nothing is downloaded (the digits ship with scikit-learn).

    python examples/lightning_digits.py
    tensorboard --logdir lightning_logs
"""

from __future__ import annotations

import argparse
import os

import lightning.pytorch as L
import torch
import torch.nn as nn
from lightning.pytorch.loggers import TensorBoardLogger
from sklearn.datasets import load_digits

from ww_callbacks.history import load_history
from ww_callbacks.integrations.lightning import WeightWatcherCallback


class DigitsMLP(L.LightningModule):
    """A 64-512-512-10 MLP classifying 8x8 digits."""

    def __init__(self, hidden: int = 512, lr: float = 1e-3):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", (logits.argmax(1) == y).float().mean(), on_step=False,
                 on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def digits_loader(batch_size: int = 64, seed: int = 0) -> torch.utils.data.DataLoader:
    """The 1797 digits as a shuffled loader, pixels scaled to [0, 1]."""
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                       batch_size=batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def main(epochs: int = 10, root: str = "lightning_logs", seed: int = 0) -> None:
    L.seed_everything(seed, verbose=False)
    # CPU training: leave one core to the analysis thread (torch's default takes every core,
    # and its threads then wait on each other whenever the analysis runs)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    # every epoch, + the initial and final weights, analysed while training goes on (it never
    # waits). Every epoch is analysed unless the analysis cannot keep up; then the newest
    # snapshot wins and the others are counted in ww/snapshots_dropped (wait="epoch"
    # instead pauses training at the epoch ends until the analysis is done).
    ww = WeightWatcherCallback()
    logger = TensorBoardLogger(root, name="digits")
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=logger,
                        callbacks=[ww], log_every_n_steps=10, enable_model_summary=False)
    trainer.fit(DigitsMLP(), digits_loader(seed=seed))

    print(f"\nlogs and ww_history.jsonl in {logger.log_dir}")
    print(f"open them with: tensorboard --logdir {root}\n")
    layers = load_history(ww.history_path)
    alphas = layers.pivot(index="step", columns="longname", values="alpha")
    print("alpha per layer at each analysed step (2-6: well trained, <2: over-fit, "
          ">6: under-trained):")
    print(alphas.round(2).to_string())
    final = layers[layers["step"] == layers["step"].max()]
    print(f"analyses: {alphas.shape[0]} of {ww.watcher.snapshots_taken} requested (initial, "
          f"{epochs} epochs, final), snapshots dropped: {ww.watcher.dropped}")
    print("\nfinal analysis:")
    print(final[["longname", "N", "M", "alpha", "alpha_weighted", "num_traps", "warning"]]
          .to_string(index=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--root", default="lightning_logs", help="TensorBoard root folder")
    args = parser.parse_args()
    main(epochs=args.epochs, root=args.root)
