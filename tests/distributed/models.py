"""Small transformer-shaped models and data shared by the distributed test scripts."""

from __future__ import annotations

import torch
import torch.nn as nn

VOCAB, WIDTH, HIDDEN = 50, 32, 64


class Block(nn.Module):
    """Attention (packed Q/K/V) and an MLP with an odd-sized hidden layer."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(WIDTH, 4, batch_first=True)
        self.fc1 = nn.Linear(WIDTH, HIDDEN + 1)
        self.fc2 = nn.Linear(HIDDEN + 1, WIDTH)

    def forward(self, x):
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.fc2(torch.relu(self.fc1(x)))


class TinyTransformer(nn.Module):
    """Embedding, two blocks, a head: layers of six shapes (uneven shards included)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class MLP(nn.Module):
    """For tensor parallelism: column-wise, row-wise, column-wise linear layers."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(WIDTH, HIDDEN)
        self.down = nn.Linear(HIDDEN, WIDTH - 1)
        self.out = nn.Linear(WIDTH - 1, 21)  # column-wise: uneven shards of 11 and 10 rows

    def forward(self, x):
        return self.out(torch.relu(self.down(torch.relu(self.up(x)))))


def built(cls, seed: int = 0):
    """A model with weights drawn from a private generator (the global RNG is left alone)."""
    model = cls()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    return model


def token_batch(rank: int, step: int, batch: int = 4, length: int = 6):
    """A batch of tokens and targets, different on each rank and step."""
    gen = torch.Generator().manual_seed(1000 * rank + step)
    tokens = torch.randint(0, VOCAB, (batch, length), generator=gen)
    return tokens, torch.randint(0, VOCAB, (batch, length), generator=gen)


def train_steps(model, steps: int, rank: int, *, mlp: bool = False, lr: float = 0.05,
                after_step=None):
    """A few SGD steps on generated data (``after_step(step)`` after each)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(1, steps + 1):
        tokens, targets = token_batch(rank, step)
        if mlp:
            gen = torch.Generator().manual_seed(7 + step)  # same on every rank (TP)
            x = torch.randn(8, WIDTH, generator=gen)
            loss = model(x).square().mean()
        else:
            loss = nn.functional.cross_entropy(model(tokens).reshape(-1, VOCAB),
                                               targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if after_step is not None:
            after_step(step)
    return opt
