"""The GPU check: every GPU path of ww_callbacks measured in one command, one JSON summary.

Run on a GPU machine (one command, well inside a 10-minute limit; see bench/RESULTS.md)::

    PYTHONUNBUFFERED=1 timeout 330 python3 bench/gpu_check.py --budget-s 300 \
        --out $OUT/gpu_check.json

and on a CPU in seconds, with every size shrunk (what the CI test runs)::

    python bench/gpu_check.py --tiny --out /tmp/gpu_check.json

Parts, in order of value (``--parts`` picks some, ``--budget-s`` skips, and reports as
``skipped: budget``, those whose estimate would not finish within the budget):

- ``snapshot_torn``: the snapshotter's pinned-buffer copies on a side stream, compared bit for bit
  with a synchronous copy of the same step while the optimizer runs on;
- ``llama_float32``, ``llama_float64``, ``llama_float32_traps``, ``llama_float64_traps``:
  Llama-7B-shaped weights (224 bf16 matrices) analysed on the GPU with ``ww_callbacks.analyze``,
  time, peak GPU memory, alpha against the CPU float64 (numpy) path on a few matrices;
- ``auto_device``: where ``analysis_device="auto"`` runs for a model on the GPU (the torch
  ``Watcher`` and ``analyze(device="auto")``) and the GPU memory it takes;
- ``train_torch`` / ``train_lightning``: a GPT-2-small-shaped training loop with the torch
  ``Watcher`` / the Lightning ``WeightWatcherCallback`` against the same loop without it: step-time
  ratio, main-thread time per snapshot, and no torn snapshot (the spectra the watcher recorded
  against those of a synchronous copy of the same step);
- ``snapshot_race_control`` (GPU only): the same copies without the stream ordering, to show that
  the check can see a torn copy;
- ``sharded_1proc`` (before ``llama_float64_traps``): ``bench/sharded_analysis.py`` in one process
  (NCCL on a GPU, gloo on a CPU).

Every figure is printed and written with its target and a verdict (``pass``, ``fail``,
``not run: no CUDA``, ``skipped: budget``, ``error: ...``). On a machine without CUDA the
CPU-runnable parts run (tiny shapes with ``--tiny``) and every GPU-only figure says
``not run: no CUDA``. The JSON is rewritten after every part, so a kill at the time limit keeps
what finished. Only public APIs of ww_callbacks are used, except the snapshotter itself
(found by name, wherever the package keeps it). Weights and data come from private
``torch.Generator`` s: the global random state is never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import importlib
import importlib.util
import json
import math
import os
import pkgutil
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: When this script started (before torch's import): the budget and ``wall_s`` count it all.
T0 = time.perf_counter()

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def _bootstrap_imports() -> None:
    """Make ``ww_callbacks`` and ``ww_callbacks.integrations`` importable from this checkout, also
    on a bare machine where the package is not installed (the integrations live in the top-level
    ``integrations/`` folder, which an install maps to ``ww_callbacks.integrations``)."""
    for path in (str(BENCH), str(ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)
    import ww_callbacks  # noqa: F401

    try:
        importlib.import_module("ww_callbacks.integrations")
        return
    except ImportError:
        pass
    spec = importlib.util.spec_from_file_location(
        "ww_callbacks.integrations", ROOT / "integrations" / "__init__.py",
        submodule_search_locations=[str(ROOT / "integrations")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["ww_callbacks.integrations"] = module
    spec.loader.exec_module(module)
    ww_callbacks.integrations = module


_bootstrap_imports()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _models import LLAMA7B_DIM, LLAMA7B_HIDDEN, llama7b_weights  # noqa: E402

import ww_callbacks  # noqa: E402

NO_CUDA = "not run: no CUDA"
SKIPPED_BUDGET = "skipped: budget"
LLAMA_TARGET_S = 25.0
LLAMA_TRAPS_TARGET_S = 50.0
ALPHA_ATOL = 1e-3
STEP_RATIO_TARGET = 1.02
SNAPSHOT_MS_TARGET = 2.0
#: One layer's working set at a time (analysis.py): its float64 stack, Gram matrix, eigvalsh
#: workspace and, with traps, the shuffle keys (float32), their order (int64) and the shuffled
#: copy: about 4-5 times the largest matrix in float64. Peak GPU memory beyond the weights is
#: judged against 6 times that plus the cuBLAS/cuSOLVER handles' workspaces.
MEMORY_X_LARGEST = 6.0
MEMORY_WORKSPACE_MIB = 256.0
#: Spectra of the same weights on the same device agree to rounding; a torn copy (one optimizer
#: step mixed in) moves them by ~1e-3 of lambda_max or more.
SPECTRA_RTOL = 1e-9
VERDICTS = ("pass", "fail")


def log(message: str) -> None:
    """Progress on stdout, unbuffered (a killed run still shows how far it got)."""
    print(message, flush=True)


# ----------------------------------------------------------------------------- configuration


@dataclass
class Sizes:
    """Every size the check uses (``--tiny`` shrinks them all; each has its own option)."""

    llama_dim: int = LLAMA7B_DIM
    llama_hidden: int = LLAMA7B_HIDDEN
    llama_layers: int = 32
    ref_matrices: int = 3
    gpt_dim: int = 768
    gpt_layers: int = 12
    gpt_heads: int = 12
    gpt_vocab: int = 50257
    gpt_ctx: int = 1024
    batch: int = 8
    seq: int = 512
    steps: int = 200
    warmup: int = 20
    every: int = 50
    repeats: int = 2
    torn_steps: int = 40
    torn_every: int = 10
    snapshot_trials: int = 6
    sharded_preset: str = "llama-7b"
    sharded_layers: int = 4
    sharded_repeats: int = 1


TINY = Sizes(llama_dim=64, llama_hidden=172, llama_layers=2, ref_matrices=3, gpt_dim=64,
             gpt_layers=2, gpt_heads=2, gpt_vocab=256, gpt_ctx=64, batch=4, seq=32, steps=8,
             warmup=2, every=4, repeats=1, torn_steps=4, torn_every=2, snapshot_trials=3,
             sharded_preset="small", sharded_layers=1, sharded_repeats=1)


@dataclass
class Context:
    """What every part shares: options, device, the running summary, calibration, caches."""

    args: argparse.Namespace
    sizes: Sizes
    device: torch.device
    started: float
    summary: dict
    calibration: dict[str, list[float]] = field(default_factory=dict)
    cache: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def factor(self, family: str) -> float:
        """How much slower than estimated the finished parts of ``family`` ran (all finished
        parts when none of it has; geometric mean, clipped to 0.25..4)."""
        ratios = self.calibration.get(family) or [
            r for values in self.calibration.values() for r in values]
        if not ratios:
            return 1.0
        mean = math.exp(statistics.fmean(math.log(r) for r in ratios))
        return min(4.0, max(0.25, mean))


@dataclass
class Spec:
    """One figure: its name, unit, comparison and limit (the target), and whether only a GPU can
    measure it."""

    name: str
    unit: str
    op: str  # "<=", ">=", "=="
    limit: Any
    cuda_only: bool = False
    note: str = ""

    def target(self) -> str:
        unit = f" {self.unit}" if self.unit and self.op != "==" else ""
        return f"{self.op} {self.limit}{unit}"

    def judge(self, value: Any) -> str:
        if value is None:
            return "error: not measured"
        if self.op == "==":
            ok = value == self.limit
        elif isinstance(value, float) and math.isnan(value):
            ok = False
        elif self.op == "<=":
            ok = value <= self.limit
        else:
            ok = value >= self.limit
        return "pass" if ok else "fail"


@dataclass
class Part:
    """One part of the check: what it measures (``specs``), how long it should take
    (``estimate``, seconds) and how to run it (returns figure values and an info dict)."""

    name: str
    specs: Callable[[Context], list[Spec]]
    estimate: Callable[[Context], float]
    run: Callable[[Context], tuple[dict, dict]]
    #: Parts of one family share the calibration of their estimates by measured time.
    family: str = "other"
    cuda_only: bool = False


# ----------------------------------------------------------------------------- helpers


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _gpu_bytes() -> int:
    return int(torch.cuda.memory_allocated()) if torch.cuda.is_available() else 0


def memory_limit_mib(largest_elements: int) -> float:
    """The peak-GPU-memory target for an analysis whose largest matrix has that many elements."""
    return round(MEMORY_X_LARGEST * largest_elements * 8 / 2**20 + MEMORY_WORKSPACE_MIB, 1)


def largest_gpt_matrix(s: Sizes) -> int:
    """Elements of the GPT's largest analysed matrix (the embeddings over 50000 rows are not)."""
    candidates = [4 * s.gpt_dim * s.gpt_dim, s.gpt_ctx * s.gpt_dim]
    if s.gpt_vocab <= 50000:
        candidates.append(s.gpt_vocab * s.gpt_dim)
    return max(candidates)


def _matrix_eig_cost(n: int, m: int) -> float:
    """Rough flops of one layer's spectrum: Gram matrix plus symmetric eigenvalues."""
    k = min(n, m)
    return 2.0 * n * m * k + 10.0 * k**3


def _rate(ctx: Context, dtype: str) -> float:
    """Rough spectra throughput (flop/s) of the analysis device, for the budget estimates."""
    if ctx.cuda:
        return 5e12 if dtype == "float32" else 2.5e12
    return 1e10


def _llama_shapes(s: Sizes) -> list[tuple[int, int]]:
    return [(s.llama_dim, s.llama_dim)] * 4 + [(s.llama_hidden, s.llama_dim)] * 2 + [
        (s.llama_dim, s.llama_hidden)]


def _snapshotter_class() -> type:
    """``Snapshotter`` wherever ww_callbacks keeps it (``ww_callbacks.snapshot`` today; the
    session package may move it)."""
    candidates = ["ww_callbacks.snapshot", "ww_callbacks.session.snapshot",
                  "ww_callbacks.session.snapshots", "ww_callbacks.session.copies"]
    for info in pkgutil.walk_packages(ww_callbacks.__path__, "ww_callbacks."):
        if any(word in info.name for word in ("snapshot", "cop")) and info.name not in candidates:
            candidates.append(info.name)
    for name in candidates:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "Snapshotter"):
            return module.Snapshotter
    raise ImportError(f"no Snapshotter in {candidates}")


# ----------------------------------------------------------------------------- a small GPT


class Block(nn.Module):
    """A GPT-2 block: pre-norm causal self-attention and a 4x MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.c_attn, self.attn_proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.c_fc, self.mlp_proj = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    """A GPT-2-shaped language model (tied embeddings), small enough to write here."""

    def __init__(self, s: Sizes):
        super().__init__()
        self.wte = nn.Embedding(s.gpt_vocab, s.gpt_dim)
        self.wpe = nn.Embedding(s.gpt_ctx, s.gpt_dim)
        self.blocks = nn.ModuleList(Block(s.gpt_dim, s.gpt_heads) for _ in range(s.gpt_layers))
        self.ln_f = nn.LayerNorm(s.gpt_dim)
        self.head = nn.Linear(s.gpt_dim, s.gpt_vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def build_gpt(s: Sizes, device: torch.device, seed: int = 0) -> GPT:
    """The GPT on ``device``, weights N(0, 0.02^2) from a private generator (no init pass)."""
    with torch.device("meta"):
        model = GPT(s)
    model = model.to_empty(device=device)
    model.head.weight = model.wte.weight
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif ".ln_" in name or name.startswith("ln_"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.02, generator=gen)
    return model


def token_batches(s: Sizes, device: torch.device, count: int, seed: int = 1) -> torch.Tensor:
    """``count`` batches of random tokens, ``(count, batch, seq + 1)``, from a private generator."""
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, s.gpt_vocab, (count, s.batch, s.seq + 1), generator=gen,
                         device=device)


def lm_loss(model: nn.Module, tokens: torch.Tensor, ctx: Context) -> torch.Tensor:
    with torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16, enabled=ctx.cuda):
        logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)


class CaptureSink:
    """A sink keeping each result's step and spectra (to compare with a synchronous copy)."""

    def __init__(self) -> None:
        self.results: list[tuple[int, dict]] = []

    def write(self, result: Any, scalars: dict) -> None:
        self.results.append((int(result.step), dict(getattr(result, "spectra", {}) or {})))

    def close(self) -> None:
        pass


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A synchronous copy of every weight, on the model's device, queued on the training stream
    right now (so it holds exactly the weights of this step)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def compare_spectra(results: list[tuple[int, dict]], copies: dict[int, dict],
                    shadow: nn.Module) -> tuple[int, int, float]:
    """(results compared, torn ones, largest relative difference): each recorded result of a
    step with a synchronous copy against ``analyze`` of that copy (same device, float64)."""
    compared = torn = 0
    worst = 0.0
    for step, spectra in results:
        if step not in copies or not spectra:
            continue
        shadow.load_state_dict(copies[step])
        ref = ww_callbacks.analyze(shadow, keep_spectra=True, progress=False).attrs["spectra"]
        compared += 1
        bad = set(spectra) != set(ref)
        for name, evals in spectra.items():
            other = ref.get(name)
            if other is None or len(other) != len(evals):
                bad = True
                continue
            scale = max(float(np.max(np.abs(other))), 1e-300)
            diff = float(np.max(np.abs(np.asarray(evals) - np.asarray(other)))) / scale
            worst = max(worst, diff)
            bad = bad or diff > SPECTRA_RTOL
        torn += bad
    return compared, torn, worst


# ----------------------------------------------------------------------------- part: snapshots


def _snapshot_trials(ctx: Context, ordered: bool, trials: int) -> tuple[int, int, int]:
    """(compared, torn, dropped): take a snapshot, queue a synchronous copy, run the optimizer
    step (ordered after the copy when ``ordered``), then compare the snapshot bit for bit."""
    from ww_callbacks.layers import extract_layers

    Snapshotter = _snapshotter_class()
    s = ctx.sizes
    model = build_gpt(s, ctx.device, seed=2)
    opt = make_optimizer(model)
    data = token_batches(s, ctx.device, 2, seed=3)
    layers, _ = extract_layers(model)
    snapper = Snapshotter(layers)
    compared = torn = dropped = 0
    try:
        for trial in range(trials):
            opt.zero_grad(set_to_none=True)
            lm_loss(model, data[trial % 2], ctx).backward()
            snap = snapper.take(trial, None, False)
            if snap is None:
                dropped += 1
                opt.step()
                continue
            reference = [layer.weight.detach().clone() for layer in layers]
            if ordered:
                snapper.before_optimizer_step()
            for _ in range(3):  # several updates while the copy may still be in flight
                opt.step()
            snap.ready()
            same = all(torch.equal(got.weight.reshape(want.shape), want.cpu())
                       for got, want in zip(snap.layers, reference, strict=True))
            compared += 1
            torn += not same
            snap.done()
    finally:
        snapper.close()
    return compared, torn, dropped


def specs_snapshot(ctx: Context) -> list[Spec]:
    return [
        Spec("torn_snapshots", "", "==", 0),
        Spec("snapshots_compared", "", ">=", ctx.sizes.snapshot_trials),
    ]


def run_snapshot(ctx: Context) -> tuple[dict, dict]:
    compared, torn, dropped = _snapshot_trials(ctx, True, ctx.sizes.snapshot_trials)
    info = {"dropped_no_buffer": dropped, "path": "pinned buffers, side stream" if ctx.cuda
            else "synchronous host copies"}
    return {"torn_snapshots": torn, "snapshots_compared": compared}, info


def specs_race_control(ctx: Context) -> list[Spec]:
    return [
        Spec("torn_without_ordering", "", ">=", 1,
             note="the snapshot_torn copies with the optimizer not made to wait for them: shows "
                  "that the check can see a torn copy (0 means the race did not happen here)"),
        Spec("snapshots_compared", "", ">=", ctx.sizes.snapshot_trials),
    ]


def run_race_control(ctx: Context) -> tuple[dict, dict]:
    compared, torn, dropped = _snapshot_trials(ctx, False, ctx.sizes.snapshot_trials)
    return ({"torn_without_ordering": torn, "snapshots_compared": compared},
            {"dropped_no_buffer": dropped})


def estimate_snapshot(ctx: Context) -> float:
    s = ctx.sizes
    params = 12 * s.gpt_layers * s.gpt_dim**2 + s.gpt_vocab * s.gpt_dim
    per_trial = params * 4 / (2e10 if ctx.cuda else 1e9) + 0.05
    return 3.0 + 2 * s.snapshot_trials * per_trial


# ----------------------------------------------------------------------------- part: llama


def _llama(ctx: Context) -> dict[str, torch.Tensor]:
    if "llama" not in ctx.cache:
        s = ctx.sizes
        start = time.perf_counter()
        ctx.cache["llama"] = llama7b_weights(str(ctx.device), torch.bfloat16,
                                             n_layers=s.llama_layers, dim=s.llama_dim,
                                             hidden=s.llama_hidden)
        ctx.sync()
        log(f"  built {len(ctx.cache['llama'])} bf16 matrices on {ctx.device} in "
            f"{time.perf_counter() - start:.1f} s")
    return ctx.cache["llama"]


def _llama_reference(ctx: Context, weights: dict) -> Any:
    """alpha of a few matrices (every shape) with the CPU float64 numpy path, computed once."""
    if "llama_ref" not in ctx.cache:
        names = list(weights)
        count = min(ctx.sizes.ref_matrices, len(names))
        picked = [names[i] for i in (0, 4, 6, 1, 5, 2, 3)[:count]] if len(names) >= 7 else \
            names[:count]
        sample = {name: weights[name].cpu() for name in picked}
        start = time.perf_counter()
        ref = ww_callbacks.analyze(sample, progress=False).set_index("longname")
        ctx.cache["llama_ref"] = ref
        ctx.cache["llama_ref_s"] = time.perf_counter() - start
        log(f"  CPU float64 reference on {len(sample)} matrices: "
            f"{ctx.cache['llama_ref_s']:.1f} s")
    return ctx.cache["llama_ref"]


def llama_part(dtype: str, traps: bool) -> Part:
    target = LLAMA_TRAPS_TARGET_S if traps else LLAMA_TARGET_S
    name = f"llama_{dtype}" + ("_traps" if traps else "")

    def specs(ctx: Context) -> list[Spec]:
        s = ctx.sizes
        return [
            Spec("seconds", "s", "<=", target),
            Spec("alpha_max_abs_diff_vs_cpu_float64", "", "<=", ALPHA_ATOL),
            Spec("rows", "", "==", 7 * s.llama_layers),
            Spec("peak_gpu_extra_mib", "MiB", "<=",
                 memory_limit_mib(max(n * m for n, m in _llama_shapes(s))), cuda_only=True,
                 note="peak GPU memory beyond the weights; target: 6x the largest matrix in "
                      "float64 + 256 MiB of library workspaces"),
        ]

    def estimate(ctx: Context) -> float:
        s = ctx.sizes
        flops = s.llama_layers * sum(_matrix_eig_cost(n, m) for n, m in _llama_shapes(s))
        total = flops / _rate(ctx, dtype) * (2.2 if traps else 1.0) + 2.0
        if "llama" not in ctx.cache:
            total += 7 * s.llama_layers * s.llama_dim * s.llama_hidden * 2 / 1e11 + 1.0
        if "llama_ref" not in ctx.cache:
            ref = sum(_matrix_eig_cost(n, m) for n, m in _llama_shapes(s)[:s.ref_matrices])
            total += ref / (1e11 if ctx.cuda else 1e10)
        return total

    def run(ctx: Context) -> tuple[dict, dict]:
        weights = _llama(ctx)
        ref = _llama_reference(ctx, weights)
        device = str(ctx.device)
        warm = dict(list(weights.items())[:7])
        ww_callbacks.analyze(warm, device=device, dtype=dtype, randomize=traps, progress=False)
        ctx.sync()
        base = _gpu_bytes()
        if ctx.cuda:
            torch.cuda.reset_peak_memory_stats(ctx.device)
        log(f"  analysing {len(weights)} matrices on {device}, {dtype}, randomize={traps}")
        start = time.perf_counter()
        df = ww_callbacks.analyze(weights, device=device, dtype=dtype, randomize=traps,
                                  progress=False)
        ctx.sync()
        seconds = time.perf_counter() - start
        ours = df.set_index("longname").loc[ref.index]
        diff = float(np.max(np.abs(ours.alpha.to_numpy() - ref.alpha.to_numpy())))
        values = {"seconds": round(seconds, 3), "alpha_max_abs_diff_vs_cpu_float64": diff,
                  "rows": len(df)}
        info = {"device": device, "matrices": len(weights),
                "failed_fits": int((df.status != "success").sum()),
                "same_xmin_as_cpu": int(np.isclose(ours.xmin, ref.xmin, rtol=1e-6).sum()),
                "reference_matrices": list(ref.index),
                "cpu_reference_s": round(ctx.cache.get("llama_ref_s", float("nan")), 3)}
        if traps:
            info["num_traps_total"] = int(df.num_traps.sum())
        if ctx.cuda:
            peak = int(torch.cuda.max_memory_allocated(ctx.device))
            values["peak_gpu_extra_mib"] = round((peak - base) / 2**20, 1)
            info.update(peak_gpu_gib=round(peak / 2**30, 3),
                        peak_gpu_extra_gib=round((peak - base) / 2**30, 3),
                        weights_gib=round(base / 2**30, 3))
        return values, info

    return Part(name, specs, estimate, run, family="llama")


# ----------------------------------------------------------------------------- part: auto


def specs_auto(ctx: Context) -> list[Spec]:
    expected = "cuda" if ctx.cuda else "cpu"
    return [
        Spec("watcher_auto_runs_on", "", "==", expected),
        Spec("analyze_auto_runs_on", "", "==", expected),
        Spec("watcher_auto_gpu_extra_mib", "MiB", "<=",
             memory_limit_mib(largest_gpt_matrix(ctx.sizes)), cuda_only=True,
             note="GPU memory the Watcher's analysis took; target: 6x the largest watched "
                  "matrix in float64 + 256 MiB of library workspaces"),
    ]


def run_auto(ctx: Context) -> tuple[dict, dict]:
    """The model on the training device, one analysis by the torch Watcher (initial weights,
    ``analysis_device`` left at its default "auto") and one by ``analyze(device="auto")``; on a
    GPU the memory the analysis allocated there says where it ran."""
    from ww_callbacks.integrations.torch import Watcher

    s = ctx.sizes
    model = build_gpt(s, ctx.device, seed=4)
    largest = largest_gpt_matrix(s) * 8
    ran: dict[str, str] = {}
    extra: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, analyse in (
                ("watcher", lambda: _watch_once(Watcher, model, tmp)),
                ("analyze", lambda: ww_callbacks.analyze(model, device="auto", progress=False))):
            ctx.sync()
            base = _gpu_bytes()
            if ctx.cuda:
                torch.cuda.reset_peak_memory_stats(ctx.device)
            analyse()
            ctx.sync()
            used = int(torch.cuda.max_memory_allocated(ctx.device)) - base if ctx.cuda else 0
            extra[label] = used
            ran[label] = "cuda" if used > 0 else "cpu"
    values = {"watcher_auto_runs_on": ran["watcher"], "analyze_auto_runs_on": ran["analyze"]}
    info = {"model_device": str(ctx.device), "largest_float64_mib": round(largest / 2**20, 2),
            "how": "GPU memory allocated during the analysis (> 0: it ran on the GPU)"}
    if ctx.cuda:
        values["watcher_auto_gpu_extra_mib"] = round(extra["watcher"] / 2**20, 1)
        info.update(watcher_gpu_extra_mib=round(extra["watcher"] / 2**20, 2),
                    analyze_gpu_extra_mib=round(extra["analyze"] / 2**20, 2))
    return values, info


def _watch_once(Watcher: type, model: nn.Module, log_dir: str) -> None:
    with Watcher(model, log_dir=log_dir, tensorboard=False, every_n_steps=None):
        pass  # the initial weights are snapshotted on entry, analysed before the block ends


def estimate_auto(ctx: Context) -> float:
    s = ctx.sizes
    flops = s.gpt_layers * (_matrix_eig_cost(3 * s.gpt_dim, s.gpt_dim) * 3
                            + _matrix_eig_cost(s.gpt_dim, s.gpt_dim))
    return 3.0 + 2 * (2.2 * flops / _rate(ctx, "float64") + 0.5)


# ----------------------------------------------------------------------------- part: training


def training_specs(ctx: Context) -> list[Spec]:
    return [
        Spec("step_time_ratio", "x", "<=", STEP_RATIO_TARGET),
        Spec("main_thread_ms_per_snapshot", "ms", "<=", SNAPSHOT_MS_TARGET),
        Spec("torn_snapshots", "", "==", 0),
        Spec("snapshots_compared", "", ">=", 2),
    ]


def estimate_training(ctx: Context, lightning: bool) -> float:
    s = ctx.sizes
    params = 12 * s.gpt_layers * s.gpt_dim**2 + s.gpt_vocab * s.gpt_dim
    flops = 6 * params * s.batch * s.seq
    step = flops / (2e14 if ctx.cuda else 5e9) + (0.02 if ctx.cuda else 0.005)
    steps = 2 * s.repeats * (s.steps + s.warmup) + s.torn_steps
    analyses = (2 * s.repeats * (2 + s.steps // max(s.every, 1)) + s.torn_steps
                // max(s.torn_every, 1) + 4)
    per_analysis = 2.2 * s.gpt_layers * 4 * _matrix_eig_cost(3 * s.gpt_dim, s.gpt_dim) \
        / _rate(ctx, "float64") + 0.2
    setup = (4.0 + 1.5 * (2 * s.repeats + 1)) if lightning else 1.0
    return setup + steps * step * (1.3 if lightning else 1.0) + analyses * per_analysis * 0.5


def _timed_steps(ctx: Context, model: nn.Module, opt: Any, data: torch.Tensor, watcher: Any,
                 start_step: int) -> tuple[float, list[float]]:
    """(seconds per measured step, main-thread seconds of the watcher's calls at due steps)."""
    s = ctx.sizes
    due_times: list[float] = []
    t0 = 0.0
    for i in range(s.warmup + s.steps):
        if i == s.warmup:
            ctx.sync()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        lm_loss(model, data[i % len(data)], ctx).backward()
        opt.step()
        if watcher is not None:
            step = start_step + i + 1
            t = time.perf_counter()
            watcher.step(step=step)
            if step % s.every == 0:
                due_times.append(time.perf_counter() - t)
    ctx.sync()
    return (time.perf_counter() - t0) / s.steps, due_times


def run_train_torch(ctx: Context) -> tuple[dict, dict]:
    """The plain loop without and with the torch ``Watcher`` (interleaved repeats), then a short
    run with synchronous copies at every due step for the torn check."""
    from ww_callbacks.integrations.torch import Watcher

    s = ctx.sizes
    model = build_gpt(s, ctx.device, seed=5)
    opt = make_optimizer(model)
    data = token_batches(s, ctx.device, 8, seed=6)
    ratios, due, plain_steps, watched_steps, analysed = [], [], [], [], []
    step = 0
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(s.repeats):
            plain, _ = _timed_steps(ctx, model, opt, data, None, step)
            step += s.warmup + s.steps
            sink = CaptureSink()
            with Watcher(model, log_dir=os.path.join(tmp, f"run{r}"), tensorboard=False,
                         every_n_steps=s.every, optimizer=opt, sinks=[sink]) as ww:
                watched, times = _timed_steps(ctx, model, opt, data, ww, step)
            step += s.warmup + s.steps
            ratios.append(watched / plain)
            plain_steps.append(plain)
            watched_steps.append(watched)
            due.extend(times[1:] if len(times) > 1 else times)  # the first allocates buffers
            analysed.append(len(sink.results))
            log(f"  repeat {r}: {plain * 1e3:.2f} ms/step plain, {watched * 1e3:.2f} with the "
                f"Watcher ({watched / plain:.3f}x), {len(sink.results)} analyses")
        compared, torn, worst = _torn_torch(ctx, model, opt, data, Watcher, tmp)
    return _overhead_figures(ratios, due, torn, compared, plain_steps, watched_steps, analysed,
                             every_n_steps=s.every, steps=s.steps, warmup=s.warmup,
                             spectra_max_rel_diff=worst,
                             outputs="history file only (no TensorBoard)")


def _overhead_figures(ratios: list[float], due: list[float], torn: int, compared: int,
                      plain_steps: list[float], watched_steps: list[float], analysed: list[int],
                      **details: Any) -> tuple[dict, dict]:
    """The figures of one training-overhead part (torch Watcher or Lightning callback) and
    their details: median step-time ratio, main-thread time per due call, torn snapshots."""
    values = {"step_time_ratio": round(_median(ratios), 4),
              "main_thread_ms_per_snapshot": round(_median(due) * 1e3, 4),
              "torn_snapshots": torn, "snapshots_compared": compared}
    info = {"ms_per_step_plain": [round(t * 1e3, 3) for t in plain_steps],
            "ms_per_step_watched": [round(t * 1e3, 3) for t in watched_steps],
            "ratios": [round(x, 4) for x in ratios],
            "main_thread_ms_max": round(max(due, default=float("nan")) * 1e3, 4),
            "due_calls_timed": len(due), "analyses_per_repeat": analysed, **details}
    return values, info

def _torn_torch(ctx: Context, model: nn.Module, opt: Any, data: torch.Tensor, Watcher: type,
                tmp: str) -> tuple[int, int, float]:
    s = ctx.sizes
    shadow = copy.deepcopy(model)
    sink = CaptureSink()
    copies = {0: state_copy(model)}
    with Watcher(model, log_dir=os.path.join(tmp, "torn"), tensorboard=False,
                 every_n_steps=s.torn_every, optimizer=opt, sinks=[sink],
                 traps_every=0) as ww:  # (the spectra are compared: traps would only cost)
        for i in range(s.torn_steps):
            opt.zero_grad(set_to_none=True)
            lm_loss(model, data[i % len(data)], ctx).backward()
            opt.step()
            ww.step()
            if (i + 1) % s.torn_every == 0 or i + 1 == s.torn_steps:
                copies[i + 1] = state_copy(model)
    return compare_spectra(sink.results, copies, shadow)


def run_train_lightning(ctx: Context) -> tuple[dict, dict]:
    """Lightning fits without and with ``WeightWatcherCallback`` (interleaved repeats), then a
    short fit with synchronous copies at every due step for the torn check."""
    try:
        import lightning as L
    except ImportError:
        import pytorch_lightning as L
    from ww_callbacks.integrations.lightning import WeightWatcherCallback

    s = ctx.sizes

    class LitGPT(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.gpt = build_gpt(s, ctx.device, seed=7)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return lm_loss(self.gpt, batch[0], ctx)

        def configure_optimizers(self) -> Any:
            return make_optimizer(self)

    class StepClock(L.Callback):
        """Wall time from the end of the warm-up steps to the end of the last step."""

        def __init__(self) -> None:
            self.t0 = self.t1 = 0.0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step in (s.warmup, s.warmup + s.steps):
                ctx.sync()
                if trainer.global_step == s.warmup:
                    self.t0 = time.perf_counter()
                else:
                    self.t1 = time.perf_counter()

    class TimedCallback(WeightWatcherCallback):
        """The callback, its batch-end hook timed at due steps (the main-thread cost)."""

        due: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            t = time.perf_counter()
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            if trainer.global_step % s.every == 0:
                self.due.append(time.perf_counter() - t)

    class Copier(L.Callback):
        """Synchronous copies of the weights at the steps the callback snapshots."""

        def __init__(self, every: int) -> None:
            self.every, self.copies = every, {}

        def on_train_start(self, trainer, pl_module) -> None:
            self.copies[trainer.global_step] = state_copy(pl_module)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step % self.every == 0:
                self.copies[trainer.global_step] = state_copy(pl_module)

        def on_train_end(self, trainer, pl_module) -> None:
            self.copies[trainer.global_step] = state_copy(pl_module)

    tokens = token_batches(s, torch.device("cpu"), 1, seed=8)[0]
    more = token_batches(s, torch.device("cpu"), 7, seed=9).flatten(0, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.cat([tokens, more])), batch_size=s.batch, shuffle=False,
        generator=torch.Generator().manual_seed(10))  # (its base seed: not the global RNG)

    def fit(module: Any, callbacks: list, max_steps: int, root: str) -> None:
        with _quiet_lightning():
            trainer = L.Trainer(accelerator="gpu" if ctx.cuda else "cpu", devices=1,
                                max_steps=max_steps, logger=False,
                                enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, precision="32-true",
                                default_root_dir=root, num_sanity_val_steps=0,
                                limit_val_batches=0, callbacks=callbacks)
        with warnings.catch_warnings(), _quiet_lightning():
            warnings.simplefilter("ignore")
            trainer.fit(module, loader)

    module = LitGPT()
    shadow = copy.deepcopy(module)  # (before any fit: no trainer attached to copy)
    ratios, due, analysed, plain_steps, watched_steps = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(s.repeats):
            clock = StepClock()
            fit(module, [clock], s.warmup + s.steps, tmp)
            plain = (clock.t1 - clock.t0) / s.steps
            sink = CaptureSink()
            TimedCallback.due = []
            callback = TimedCallback(every_n_train_steps=s.every, every_n_epochs=None,
                                     log_dir=os.path.join(tmp, f"run{r}"), sinks=[sink])
            clock = StepClock()
            fit(module, [clock, callback], s.warmup + s.steps, tmp)
            watched = (clock.t1 - clock.t0) / s.steps
            ratios.append(watched / plain)
            plain_steps.append(plain)
            watched_steps.append(watched)
            due.extend(TimedCallback.due[1:] if len(TimedCallback.due) > 1
                       else TimedCallback.due)
            analysed.append(len(sink.results))
            log(f"  repeat {r}: {plain * 1e3:.2f} ms/step plain, {watched * 1e3:.2f} with the "
                f"callback ({watched / plain:.3f}x), {len(sink.results)} analyses")
        sink = CaptureSink()
        copier = Copier(s.torn_every)
        callback = WeightWatcherCallback(every_n_train_steps=s.torn_every, every_n_epochs=None,
                                         log_dir=os.path.join(tmp, "torn"), sinks=[sink],
                                         traps_every=0)
        fit(module, [callback, copier], s.torn_steps, tmp)
        compared, torn, worst = compare_spectra(sink.results, copier.copies, shadow)
    return _overhead_figures(ratios, due, torn, compared, plain_steps, watched_steps, analysed,
                             every_n_train_steps=s.every, steps=s.steps, warmup=s.warmup,
                             spectra_max_rel_diff=worst, lightning=L.__version__,
                             outputs="history file only (logger=False)")


@contextlib.contextmanager
def _quiet_lightning() -> Any:
    """Lightning's start-up chatter (GPU available, tips, max_steps reached) silenced."""
    import logging

    loggers = [logging.getLogger(name) for name in ("lightning", "lightning.pytorch",
                                                     "lightning.fabric", "pytorch_lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# ----------------------------------------------------------------------------- part: sharded


def specs_sharded(ctx: Context) -> list[Spec]:
    s = ctx.sizes
    matrices = 7 * s.sharded_layers + 2
    return [
        Spec("returncode", "", "==", 0),
        Spec("snapshot_s", "s", "<=", round(LLAMA_TARGET_S * matrices / 224, 3),
             note="the Llama-7B target per matrix (25 s for 224) times the matrices analysed"),
        Spec("analysis_on", "", "==", "cuda" if ctx.cuda else "cpu"),
    ]


def run_sharded(ctx: Context) -> tuple[dict, dict]:
    """``bench/sharded_analysis.py`` as one process (no launcher: the rendezvous variables are
    set here), NCCL and analysis on the GPU when there is one, gloo and numpy otherwise."""
    s = ctx.sizes
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "sharded.json")
        cmd = [sys.executable, str(BENCH / "sharded_analysis.py"),
               "--backend", "nccl" if ctx.cuda else "gloo", "--preset", s.sharded_preset,
               "--layers", str(s.sharded_layers), "--repeats", str(s.sharded_repeats),
               "--analysis-device", "auto" if ctx.cuda else "cpu", "--json", out]
        remaining = ctx.args.budget_s - ctx.elapsed() if ctx.args.budget_s else 600.0
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT,
                              timeout=max(30.0, remaining))
        for line in proc.stdout.splitlines():
            log(f"  | {line}")
        values: dict[str, Any] = {"returncode": proc.returncode}
        info: dict[str, Any] = {"command": " ".join(cmd[1:]),
                                "stderr_tail": proc.stderr[-2000:] if proc.returncode else ""}
        if proc.returncode == 0 and os.path.exists(out):
            with open(out, encoding="utf-8") as f:
                result = json.load(f)
            one = result["results"]["1"]
            values["snapshot_s"] = one["snapshot_s"]
            values["analysis_on"] = "cuda" if "cuda" in result["analysis_device"] else "cpu"
            info.update(result)
    return values, info


def estimate_sharded(ctx: Context) -> float:
    s = ctx.sizes
    dim, ff = (4096, 11008) if s.sharded_preset == "llama-7b" else (256, 688)
    flops = s.sharded_layers * (4 * _matrix_eig_cost(dim, dim) + 3 * _matrix_eig_cost(ff, dim))
    return 8.0 + (2 + 2 * s.sharded_repeats) * flops / _rate(ctx, "float64")


# ----------------------------------------------------------------------------- driver


PARTS = [
    Part("snapshot_torn", specs_snapshot, estimate_snapshot, run_snapshot),
    llama_part("float32", False),
    Part("auto_device", specs_auto, estimate_auto, run_auto),
    Part("train_torch", training_specs, lambda c: estimate_training(c, False), run_train_torch,
         family="train"),
    Part("train_lightning", training_specs, lambda c: estimate_training(c, True),
         run_train_lightning, family="train"),
    Part("snapshot_race_control", specs_race_control, estimate_snapshot, run_race_control,
         cuda_only=True),
    llama_part("float64", False),
    llama_part("float32", True),
    Part("sharded_1proc", specs_sharded, estimate_sharded, run_sharded),
    llama_part("float64", True),
]
PART_NAMES = [p.name for p in PARTS]


def figures_of(ctx: Context, part: Part, values: dict, status: str | None) -> list[dict]:
    """Every figure of ``part`` with its target and verdict (``status`` for all of them when the
    part did not run; ``not run: no CUDA`` for GPU-only figures on a CPU)."""
    out = []
    for spec in part.specs(ctx):
        value = values.get(spec.name)
        if status is not None:
            verdict = status
        elif spec.cuda_only and not ctx.cuda:
            verdict = NO_CUDA
        else:
            verdict = spec.judge(value)
        if isinstance(value, float) and not math.isfinite(value):
            value = None if math.isnan(value) else str(value)
        item = {"name": spec.name, "value": value, "unit": spec.unit, "target": spec.target(),
                "verdict": verdict}
        if spec.note:
            item["note"] = spec.note
        out.append(item)
    return out


def print_figures(part: str, figures: list[dict]) -> None:
    for f in figures:
        value = "-" if f["value"] is None else f["value"]
        value = f"{value:.4g}" if isinstance(value, float) else value
        log(f"  {part}.{f['name']}: {value} {f['unit']} (target {f['target']}): {f['verdict']}")


def write_summary(ctx: Context) -> None:
    """Rewrite the JSON atomically (a kill leaves the last complete version)."""
    summary = ctx.summary
    summary["wall_s"] = round(ctx.elapsed(), 2)
    counts: dict[str, int] = {}
    for part in summary["parts"].values():
        for f in part["figures"]:
            key = f["verdict"] if f["verdict"] in VERDICTS else f["verdict"].split(":")[0]
            counts[key] = counts.get(key, 0) + 1
    summary["verdicts"] = counts
    path = Path(ctx.args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(summary, indent=1, default=str)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    if ctx.args.last:
        with contextlib.suppress(OSError):
            last = Path(ctx.args.last)
            last.with_name(last.name + ".tmp").write_text(text, encoding="utf-8")
            os.replace(last.with_name(last.name + ".tmp"), last)


def environment(device: torch.device) -> dict:
    env = {
        "python": platform.python_version(), "platform": platform.platform(),
        "host": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "numpy": np.__version__, "ww_callbacks": getattr(ww_callbacks, "__version__", "?"),
        "ww_callbacks_path": str(Path(ww_callbacks.__file__).parent),
        "integrations_path": str(Path(sys.modules["ww_callbacks.integrations"].__file__).parent),
        "device": str(device), "cuda_available": torch.cuda.is_available(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    from importlib import metadata

    for package in ("lightning", "pytorch-lightning", "pandas"):
        try:  # (read from the metadata: importing Lightning takes seconds)
            env[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            env[package] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, capability=f"{props.major}.{props.minor}")
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Sizes]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="the JSON summary")
    parser.add_argument("--tiny", action="store_true", help="every size shrunk (CPU, seconds)")
    parser.add_argument("--device", default="auto",
                        help="'auto' (CUDA when there is one), 'cuda', 'cuda:1' or 'cpu'")
    parser.add_argument("--budget-s", type=float, default=0.0,
                        help="skip the parts whose estimate would end past this many seconds "
                             "(0: no budget)")
    parser.add_argument("--unfinished-from", default=None, metavar="JSON",
                        help="run only the parts that this earlier summary did not finish "
                             "(skipped: budget, interrupted, errors, or absent)")
    parser.add_argument("--last", default=os.path.join(tempfile.gettempdir(),
                                                       "gpu_check_last.json"),
                        help="a second copy of the JSON, outside $OUT (which the device tool "
                             "empties before each command), for --unfinished-from")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default; 1 keeps a loaded CPU's tiny "
                             "run fast)")
    parser.add_argument("--parts", default=",".join(PART_NAMES),
                        help=f"comma-separated parts, run in the order given ({PART_NAMES})")
    base = TINY if "--tiny" in (argv if argv is not None else sys.argv[1:]) else Sizes()
    for name, value in vars(base).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    sizes = Sizes(**{name: getattr(args, name) for name in vars(base)})
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if args.unfinished_from:
        try:
            with open(args.unfinished_from, encoding="utf-8") as f:
                done = {name for name, part in json.load(f).get("parts", {}).items()
                        if part.get("status") == "done"}
        except (OSError, ValueError, AttributeError) as err:
            parser.error(f"--unfinished-from: cannot read {args.unfinished_from}: {err}")
        parts = [p for p in parts if p not in done]
    unknown = sorted(set(parts) - set(PART_NAMES))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose among {PART_NAMES}")
    args.parts = parts
    return args, sizes


def _global_rng_states() -> list[bytes]:
    """The global torch (CPU and CUDA) and numpy random states, to check that nothing here, in
    ww_callbacks or in the training libraries drew from them."""
    states = [torch.random.get_rng_state().numpy().tobytes(), np.random.get_state()[1].tobytes()]
    if torch.cuda.is_available():
        states += [s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()]
    return states


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(f"terminated by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the parts, write the JSON (SIGTERM ends the part in progress as
    ``interrupted`` and still writes it)."""
    args, sizes = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run_parts(args, sizes, argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_parts(args: argparse.Namespace, sizes: Sizes, argv: list[str] | None) -> int:
    """Run the chosen parts in order, rewriting the JSON after each; 0 (the verdicts are in the
    JSON: a failed figure is a result, not an error of the script)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda":
        if device.index is None:  # (set_device and the memory counters want an index)
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    summary = {
        "script": "bench/gpu_check.py", "format": 1,
        "started_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None
                                                        else sys.argv[1:])]),
        "tiny": args.tiny, "budget_s": args.budget_s, "sizes": vars(sizes),
        "env": environment(device), "order": args.parts, "parts": {}, "finished": False,
    }
    ctx = Context(args, sizes, device, T0, summary)
    env = summary["env"]
    log(f"# gpu_check: {env.get('gpu', 'no GPU')} ({device}), torch {env['torch']}, "
        f"python {env['python']}, {env['cpus']} CPUs, load {env['loadavg']}, "
        f"{'tiny' if args.tiny else 'full'} sizes, budget {args.budget_s or 'none'}")
    write_summary(ctx)
    parts = {p.name: p for p in PARTS}
    rng_states = _global_rng_states()
    try:
        for name in args.parts:
            part = parts[name]
            raw_estimate = part.estimate(ctx)
            estimate = raw_estimate * ctx.factor(part.family)
            record: dict[str, Any] = {"estimate_s": round(estimate, 2), "status": "interrupted",
                                      "figures": figures_of(ctx, part, {}, "error: interrupted")}
            summary["parts"][name] = record
            skip = NO_CUDA if part.cuda_only and not ctx.cuda else SKIPPED_BUDGET if (
                args.budget_s and ctx.elapsed() + estimate > args.budget_s) else None
            if skip is not None:
                record.update(status=skip, figures=figures_of(ctx, part, {}, skip))
                log(f"[{name}] {skip}" + (f" (estimate {estimate:.0f} s, "
                                          f"{args.budget_s - ctx.elapsed():.0f} s left)"
                                          if skip == SKIPPED_BUDGET else ""))
                print_figures(name, record["figures"])
                write_summary(ctx)
                continue
            log(f"[{name}] estimate {estimate:.1f} s")
            start = time.perf_counter()
            try:
                values, info = part.run(ctx)
                record.update(status="done", info=info,
                              figures=figures_of(ctx, part, values, None))
            except Exception as err:  # a failed part is reported; the others still run
                message = f"error: {type(err).__name__}: {err}"[:500]
                log(f"  {message}\n{traceback.format_exc()}")
                record.update(status=message, figures=figures_of(ctx, part, {}, message))
            wall = time.perf_counter() - start
            record["wall_s"] = round(wall, 2)
            ctx.calibration.setdefault(part.family, []).append(
                max(wall, 0.05) / max(raw_estimate, 0.05))
            print_figures(name, record["figures"])
            log(f"  ({wall:.1f} s)")
            write_summary(ctx)
            if name.startswith("llama") and not any(
                    n.startswith("llama") for n in args.parts[args.parts.index(name) + 1:]):
                ctx.cache.pop("llama", None)
                if ctx.cuda:
                    torch.cuda.empty_cache()
        summary["finished"] = True
    finally:
        summary["global_rng_untouched"] = _global_rng_states() == rng_states
        write_summary(ctx)
        log(f"# verdicts {summary['verdicts']}; global random states untouched: "
            f"{summary['global_rng_untouched']}; {summary['wall_s']:.1f} s; JSON in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
