"""Generated models and helpers shared by the benchmarks in ``bench/`` (no downloads).

Every model draws its weights from a private ``torch.Generator``: the global torch and numpy
random states are never touched here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn as nn

GPT2_DIM = 768
GPT2_VOCAB = 50257
GPT2_CONTEXT = 1024
GPT2_BLOCKS = 12


class GPT2Attention(nn.Module):
    """GPT-2's attention projections as ``nn.Linear`` (the forward pass is never run)."""

    def __init__(self, dim: int):
        super().__init__()
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)


class GPT2MLP(nn.Module):
    """GPT-2's MLP projections as ``nn.Linear``."""

    def __init__(self, dim: int):
        super().__init__()
        self.c_fc = nn.Linear(dim, 4 * dim)
        self.c_proj = nn.Linear(4 * dim, dim)


class GPT2Block(nn.Module):
    """One transformer block: layer norms, attention and MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = GPT2Attention(dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = GPT2MLP(dim)


class GPT2Body(nn.Module):
    """Token and position embeddings plus the blocks (HF's ``transformer``)."""

    def __init__(self, dim: int, vocab: int, context: int, blocks: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(context, dim)
        self.h = nn.ModuleList(GPT2Block(dim) for _ in range(blocks))
        self.ln_f = nn.LayerNorm(dim)


class GPT2Shaped(nn.Module):
    """GPT-2-small-shaped container (HF module names), weights only; not meant to run forward."""

    def __init__(self, dim: int = GPT2_DIM, vocab: int = GPT2_VOCAB, context: int = GPT2_CONTEXT,
                 blocks: int = GPT2_BLOCKS):
        super().__init__()
        self.transformer = GPT2Body(dim, vocab, context, blocks)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def tie(self) -> None:
        """Share ``wte``'s weight with ``lm_head`` (as GPT-2 does)."""
        self.lm_head.weight = self.transformer.wte.weight


def gpt2_small(seed: int = 0, tied: bool = True, std: float = 0.02) -> nn.Module:
    """The GPT-2-small-shaped model with N(0, std^2) weights and zero biases.

    Built on the ``meta`` device and materialised with ``to_empty`` (no default initialisation
    pass over the ~124M parameters), then filled from a private generator. ``tied``: lm_head
    shares wte's weight (tied after ``to_empty``, which would give each its own tensor).
    """
    with torch.device("meta"):
        model = GPT2Shaped()
    model = model.to_empty(device="cpu")
    if tied:
        model.tie()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif name.startswith("transformer.ln") or ".ln_" in name:
                param.fill_(1.0)
            else:
                param.normal_(0.0, std, generator=g)
    return model


def n_gpt2_layers_analysed() -> int:
    """Layers both tools analyse in the GPT-2 model: 4 per block plus ``wpe`` (``wte`` and
    ``lm_head`` have N = 50257 > max_N = 50000)."""
    return 4 * GPT2_BLOCKS + 1


def cifar_convnet(seed: int = 0, std: float = 0.05, traps: bool = True) -> nn.Module:
    """A small VGG-like CIFAR net: Conv2d 3->32->64->128 (3x3), a 1x1 conv 128->128, and two
    Linear layers 2048->256->10. With ``traps`` a few planted large elements give some layers
    correlation traps (spikes that survive shuffling)."""
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 128, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10),
    )
    g = torch.Generator().manual_seed(seed)
    planted = {3: 2, 9: 3, 13: 4}  # module index -> number of planted large elements
    with torch.no_grad():
        for index, module in enumerate(model):
            if not hasattr(module, "weight"):
                continue
            w = module.weight
            w.normal_(0.0, std, generator=g)
            module.bias.zero_()
            if traps:
                flat = w.view(-1)
                for k in range(planted.get(index, 0)):
                    flat[(7919 * (k + 1)) % flat.numel()] = 40 * std * (1 + k)
    return model


LLAMA7B_DIM = 4096
LLAMA7B_HIDDEN = 11008


def llama7b_shapes(n_layers: int = 32, dim: int = LLAMA7B_DIM, hidden: int = LLAMA7B_HIDDEN
                   ) -> Iterator[tuple[str, tuple[int, int]]]:
    """``(name, (out, in))`` of the 7 matrices per block of Llama-7B, for ``n_layers`` blocks
    (smaller ``dim``/``hidden`` only for smoke tests)."""
    for i in range(n_layers):
        prefix = f"model.layers.{i}"
        for part in ("q_proj", "k_proj", "v_proj", "o_proj"):
            yield f"{prefix}.self_attn.{part}.weight", (dim, dim)
        yield f"{prefix}.mlp.gate_proj.weight", (hidden, dim)
        yield f"{prefix}.mlp.up_proj.weight", (hidden, dim)
        yield f"{prefix}.mlp.down_proj.weight", (dim, hidden)


def llama7b_weights(device: str, dtype: torch.dtype, n_layers: int = 32, seed: int = 0,
                    std: float = 0.02, dim: int = LLAMA7B_DIM, hidden: int = LLAMA7B_HIDDEN
                    ) -> dict[str, torch.Tensor]:
    """Llama-7B-shaped random matrices, created directly on ``device`` from a private generator."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = {}
    for name, shape in llama7b_shapes(n_layers, dim, hidden):
        t = torch.randn(shape, generator=g, device=device, dtype=dtype)
        out[name] = t.mul_(std)
    return out


# ----------------------------------------------------------------------------- helpers


def quiet_weightwatcher() -> Any:
    """Import weightwatcher with its logging silenced; returns the module."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import weightwatcher
    logging.getLogger("weightwatcher").setLevel(logging.CRITICAL)
    return weightwatcher


@contextlib.contextmanager
def no_stdout() -> Iterator[None]:
    """Swallow prints (the reference's ``SMALL N PL FIT``)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def best_time(func: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Min wall time (``perf_counter``) over ``repeats`` calls, and the last call's result."""
    best = float("inf")
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def machine_line() -> str:
    """CPU model, core count and RAM of this machine, for the printed header."""
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = int(f.readline().split()[1])
        ram = f", {kib / 2**20:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{model}, {os.cpu_count()} cores{ram}, torch {torch.__version__}"


def load_line() -> str:
    """The 1/5/15-minute load averages: other processes on the machine skew timings."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average: unknown"
    return f"load average: {one:.2f} {five:.2f} {fifteen:.2f} (on {os.cpu_count()} cores)"


def print_header(versions: str) -> None:
    """The header every benchmark prints: machine, UTC date, library ``versions``, load."""
    import datetime

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"machine: {machine_line()}")
    print(f"date: {now}; {versions}")
    print(f"at start: {load_line()}")
