"""Small torch models with layers of every kind the reference tests need. Weights are drawn from a
private generator, so they do not depend on the global torch seed."""

from __future__ import annotations

import torch
import torch.nn as nn


class Conv1D(nn.Module):
    """Hugging Face GPT-2's ``Conv1D``: a dense layer storing its weight as (in, out)."""

    def __init__(self, nf: int, nx: int, generator: torch.Generator):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf, generator=generator) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


def _fill(module: nn.Module, weight: torch.Tensor) -> nn.Module:
    with torch.no_grad():
        module.weight.copy_(weight)
    return module


def zoo(seed: int = 0) -> nn.Module:
    """A container of varied layers: dense, conv with odd/even/1x1 kernels, embedding, small-N,
    heavy-tailed, spiked, GPT-2 Conv1D. Not meant to be run forward."""
    g = torch.Generator().manual_seed(seed)
    dense = nn.Linear(256, 128)
    dense_tall = nn.Linear(64, 512)
    conv3 = nn.Conv2d(16, 32, 3)
    conv5 = nn.Conv2d(8, 24, 5)
    conv2 = nn.Conv2d(32, 48, 2)
    conv1x1 = nn.Conv2d(64, 96, 1)
    emb = nn.Embedding(1000, 64)
    small = nn.Linear(12, 10)
    heavy_layer = nn.Linear(120, 300)
    spiked = nn.Linear(200, 400)
    for module in (dense, dense_tall, conv3, conv5, conv2, conv1x1, emb, small):
        _fill(module, torch.randn(module.weight.shape, generator=g) * 0.05)
    # heavy-tailed: Student-t entries via a ratio of normals and chi-square draws from g
    z = torch.randn(300, 120, generator=g)
    chi = torch.randn(300, 120, 3, generator=g).pow(2).sum(-1)
    heavy = z / torch.sqrt(chi / 3)
    _fill(heavy_layer, heavy * 0.05)
    u = torch.randn(400, 3, generator=g)
    v = torch.randn(3, 200, generator=g)
    _fill(spiked, torch.randn(400, 200, generator=g) * 0.05 + (u @ v) * 0.1)
    gpt_conv1d = Conv1D(384, 128, g)
    return nn.Sequential(dense, dense_tall, conv3, conv5, conv2, conv1x1, emb, small,
                         heavy_layer, spiked, gpt_conv1d)


def trapped(seed: int = 0) -> nn.Module:
    """Dense layers with planted large single elements (correlation traps) and one without."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for shape, planted in (((300, 200), 0), ((300, 200), 1), ((400, 160), 3), ((256, 256), 2)):
        layer = nn.Linear(shape[1], shape[0])
        w = torch.randn(shape, generator=g) * 0.02
        for k in range(planted):
            w[(37 * k + 5) % shape[0], (53 * k + 11) % shape[1]] = 3.0 + k
        _fill(layer, w)
        layers.append(layer)
    return nn.Sequential(*layers)
