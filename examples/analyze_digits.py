"""Train a small MLP on scikit-learn's digits with plain PyTorch, then analyse its layers.

Runs in a few seconds on a CPU; nothing is downloaded (the digits ship with scikit-learn).
    python examples/analyze_digits.py
"""

from __future__ import annotations

import torch
import torch.nn as nn
from sklearn.datasets import load_digits

import ww_callbacks


def main(epochs: int = 30, seed: int = 0) -> None:
    torch.manual_seed(seed)
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target)
    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = ww_callbacks.analyze(model)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    after = ww_callbacks.analyze(model, randomize=True)
    accuracy = (model(x).argmax(1) == y).float().mean().item()
    print(f"train accuracy {accuracy:.3f}")
    print("alpha at init :", before.alpha.round(2).tolist())
    print(after[["longname", "N", "M", "alpha", "alpha_weighted", "log_norm", "num_traps",
                 "warning"]].to_string(index=False))
    print("summary:", {k: round(v, 3) for k, v in ww_callbacks.summarize(after).items()})


if __name__ == "__main__":
    main()
