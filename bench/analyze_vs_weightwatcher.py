"""Time ``ww_callbacks.analyze`` against WeightWatcher 0.7.7's ``analyze`` on generated models.

Usage: ``python bench/analyze_vs_weightwatcher.py [--only cpu-gpt2,cpu-conv,gpu-llama]``

Sections:

- ``cpu-gpt2``: a GPT-2-small-shaped model (random N(0, 0.02^2) weights, 49 analysable layers),
  default options on both tools. Target: ours / reference <= 1/3.
- ``cpu-conv``: a small CIFAR-style conv net with planted correlation traps, ``randomize=True,
  mp_fit=True`` on both. Target: ours / reference <= 1/30.
- ``gpu-llama``: Llama-7B-shaped random matrices (224 of them) created on the GPU, ours only
  (float32 and float64 spectra, without and with ``randomize``), checked against the CPU float64
  path on 8 of the matrices. Targets: <= 25 s and <= 50 s. Skipped without a CUDA device.

Ours is timed as the best (min) of ``--repeats`` runs, the reference as the best of
``--ref-runs`` runs (it is slow; ``--ref-runs 0`` skips it, e.g. to profile ours alone).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _models import (  # noqa: E402
    LLAMA7B_DIM,
    LLAMA7B_HIDDEN,
    best_time,
    cifar_convnet,
    gpt2_small,
    llama7b_weights,
    load_line,
    n_gpt2_layers_analysed,
    no_stdout,
    print_header,
    quiet_weightwatcher,
)

import ww_callbacks  # noqa: E402

SECTIONS = ("cpu-gpt2", "cpu-conv", "gpu-llama")
GPT2_TARGET = 1 / 3
CONV_TARGET = 1 / 30
LLAMA_TARGET_S = 25.0
LLAMA_RANDOMIZE_TARGET_S = 50.0
LLAMA_ALPHA_ATOL = 1e-3


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _ratio_line(t_ours: float, t_ref: float, target: float) -> str:
    ratio = t_ours / t_ref
    return (f"  ratio ours/reference: {ratio:.4f} (= 1/{1 / ratio:.1f})   "
            f"target <= 1/{1 / target:.0f}: {_verdict(ratio <= target)}")


def _reference_analyze(model: Any, seed: int, **kwargs: Any) -> pd.DataFrame:
    """The reference's ``analyze`` with prints and warnings swallowed. It shuffles with numpy's
    global RNG: seeded here for a repeatable run and restored afterwards."""
    ww = quiet_weightwatcher()
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with no_stdout(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ww.WeightWatcher(model=model).analyze(**kwargs)
    finally:
        np.random.set_state(state)


def _time_both(model: Any, args: argparse.Namespace, ref_runs: int, **kwargs: Any
               ) -> tuple[float, pd.DataFrame, float | None, pd.DataFrame | None]:
    """Best-of-k times and frames of ours and (unless ``ref_runs`` is 0) of the reference."""
    ww_callbacks.analyze(model, progress=False, **kwargs)  # warm-up: imports, BLAS threads
    t_ours, ours = best_time(lambda: ww_callbacks.analyze(model, progress=False, **kwargs),
                             args.repeats)
    print(f"  ours:      {t_ours:9.3f} s  (best of {args.repeats}, after one warm-up run)")
    if ref_runs <= 0:
        print("  reference: skipped (--ref-runs 0)")
        return t_ours, ours, None, None
    t_ref, ref = best_time(lambda: _reference_analyze(model, args.seed, **kwargs), ref_runs)
    print(f"  reference: {t_ref:9.3f} s  (best of {ref_runs}: it is slow)")
    return t_ours, ours, t_ref, ref


def _max_rel_diff(a: pd.Series, b: pd.Series) -> float:
    a = a.to_numpy(dtype=float)
    b = b.to_numpy(dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def bench_gpt2(args: argparse.Namespace) -> None:
    """GPT-2-small-shaped model, default options on both tools."""
    print("\n[cpu-gpt2] GPT-2-small-shaped model, random N(0, 0.02^2) weights, tied lm_head")
    start = time.perf_counter()
    model = gpt2_small(seed=args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"  built {n_params / 1e6:.1f}M parameters in {time.perf_counter() - start:.1f} s")
    ref_runs = 1 if args.ref_runs is None else args.ref_runs
    t_ours, ours, t_ref, ref = _time_both(model, args, ref_runs)
    expected = n_gpt2_layers_analysed()
    assert len(ours) == expected, f"ours analysed {len(ours)} layers, expected {expected}"
    print(f"  layers analysed: ours {len(ours)}")
    if ref is None or t_ref is None:
        return
    assert len(ref) == expected, f"reference analysed {len(ref)} layers, expected {expected}"
    assert list(ours.longname) == list(ref.longname), "the two frames name different layers"
    print(f"  layers analysed: reference {len(ref)}, same longnames: yes")
    print(_ratio_line(t_ours, t_ref, GPT2_TARGET))
    print(f"  max relative alpha difference: {_max_rel_diff(ours.alpha, ref.alpha):.2e}")
    same_xmin = bool(np.allclose(ours.xmin, ref.xmin.astype(float), rtol=1e-10, atol=0))
    same_tail = bool((ours.num_pl_spikes.to_numpy() == ref.num_pl_spikes.to_numpy()).all())
    print(f"  same xmin (rtol 1e-10) on every layer: {same_xmin}; "
          f"same num_pl_spikes: {same_tail}")
    for col in ("alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank"):
        print(f"  max relative {col} difference: {_max_rel_diff(ours[col], ref[col]):.2e}")


def bench_conv(args: argparse.Namespace) -> None:
    """Small CIFAR conv net with randomize=True and mp_fit=True on both tools."""
    print("\n[cpu-conv] CIFAR-style conv net (Conv2d 3-32-64-128 3x3, 1x1 conv 128-128, "
          "Linear 2048-256-10), planted traps, randomize=True, mp_fit=True")
    model = cifar_convnet(seed=args.seed)
    ref_runs = 2 if args.ref_runs is None else args.ref_runs
    t_ours, ours, t_ref, ref = _time_both(model, args, ref_runs, randomize=True, mp_fit=True)
    if ref is None or t_ref is None:
        return
    assert list(ours.longname) == list(ref.longname), "the two frames name different layers"
    print(f"  layers analysed: {len(ours)} by both")
    print(_ratio_line(t_ours, t_ref, CONV_TARGET))
    print(f"  max relative alpha difference: {_max_rel_diff(ours.alpha, ref.alpha):.2e}")
    table = pd.DataFrame({
        "layer": ours.longname, "N": ours.N, "M": ours.M, "rf": ours.rf,
        "rand_num_spikes ours": ours.rand_num_spikes,
        "rand_num_spikes ref": ref.rand_num_spikes.astype(int),
        "num_spikes ours": ours.num_spikes, "num_spikes ref": ref.num_spikes.astype(int),
    })
    print("  " + table.to_string(index=False).replace("\n", "\n  "))
    same_traps = bool((table["rand_num_spikes ours"] == table["rand_num_spikes ref"]).all())
    same_spikes = bool((table["num_spikes ours"] == table["num_spikes ref"]).all())
    print(f"  rand_num_spikes agree on every layer: {same_traps}; num_spikes agree: {same_spikes}")
    print(f"  max relative max_rand_eval difference (different shuffles): "
          f"{_max_rel_diff(ours.max_rand_eval, ref.max_rand_eval):.2e}")


def bench_llama(args: argparse.Namespace) -> None:
    """Llama-7B-shaped matrices on the GPU: ours only (the reference has no GPU path)."""
    device = args.llama_device
    print(f"\n[gpu-llama] Llama-7B-shaped random N(0, 0.02^2) matrices ({args.llama_layers} "
          f"blocks x 7, dim,hidden = {args.llama_dims}), {args.llama_weight_dtype} on {device}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("  skipped: no CUDA device")
        return
    weight_dtype = getattr(torch, args.llama_weight_dtype)
    start = time.perf_counter()
    dim, hidden = (int(v) for v in args.llama_dims.split(","))
    weights = llama7b_weights(device, weight_dtype, n_layers=args.llama_layers, seed=args.seed,
                              dim=dim, hidden=hidden)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        print(f"  GPU: {torch.cuda.get_device_name()}")
    n_params = sum(w.numel() for w in weights.values())
    print(f"  built {len(weights)} matrices, {n_params / 1e9:.2f}B parameters in "
          f"{time.perf_counter() - start:.1f} s")
    first_block = dict(list(weights.items())[:7])

    def run(dtype: str, randomize: bool) -> pd.DataFrame:
        df = ww_callbacks.analyze(weights, device=device, dtype=dtype, randomize=randomize,
                                  progress=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return df

    frames = {}
    for dtype in ("float32", "float64"):
        # warm-up on one block: cuBLAS / cuSOLVER handles and kernels
        ww_callbacks.analyze(first_block, device=device, dtype=dtype, randomize=True,
                             progress=False)
        for randomize, target in ((False, LLAMA_TARGET_S), (True, LLAMA_RANDOMIZE_TARGET_S)):
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t, df = best_time(lambda d=dtype, r=randomize: run(d, r), args.gpu_repeats)
            assert len(df) == len(weights), f"{len(df)} rows for {len(weights)} matrices"
            failed = int((df.status != "success").sum())
            peak = (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
                    if device.startswith("cuda") else "")
            print(f"  dtype={dtype:7s} randomize={randomize!s:5s}: {t:8.2f} s "
                  f"(best of {args.gpu_repeats}){peak}; failed fits {failed}; "
                  f"target <= {target:.0f} s: {_verdict(t <= target)}")
            frames[dtype, randomize] = df

    # the CPU float64 numpy path on a sample of matrices
    names = list(weights)
    picked = [names[i] for i in np.linspace(0, len(names) - 1, args.llama_sample).astype(int)]
    sample = {name: weights[name].cpu() for name in picked}
    start = time.perf_counter()
    cpu = ww_callbacks.analyze(sample, progress=False).set_index("longname")
    print(f"  CPU float64 on {len(sample)} matrices: {time.perf_counter() - start:.1f} s")
    for dtype in ("float32", "float64"):
        gpu = frames[dtype, False].set_index("longname").loc[cpu.index]
        diff = float(np.max(np.abs(gpu.alpha.to_numpy() - cpu.alpha.to_numpy())))
        same_xmin = int((np.isclose(gpu.xmin, cpu.xmin, rtol=1e-6)).sum())
        print(f"  alpha {dtype} on {device} vs CPU float64: max |diff| {diff:.2e} "
              f"(target <= {LLAMA_ALPHA_ATOL:g}: {_verdict(diff <= LLAMA_ALPHA_ATOL)}); "
              f"same xmin on {same_xmin}/{len(cpu)}")


def main() -> None:
    """Parse arguments and run the selected sections."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections among {', '.join(SECTIONS)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours (best kept)")
    parser.add_argument("--ref-runs", type=int, default=None,
                        help="timed runs of the reference (best kept; default: 1 for cpu-gpt2, "
                             "2 for cpu-conv); 0 skips it")
    parser.add_argument("--gpu-repeats", type=int, default=1,
                        help="timed runs of each gpu-llama configuration (best kept)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated weights")
    parser.add_argument("--llama-device", default="cuda",
                        help="device of the gpu-llama section (cpu only for a smoke test)")
    parser.add_argument("--llama-layers", type=int, default=32, help="Llama blocks (7 each)")
    parser.add_argument("--llama-dims", default=f"{LLAMA7B_DIM},{LLAMA7B_HIDDEN}",
                        help="dim,hidden of the Llama matrices (smaller only for smoke tests)")
    parser.add_argument("--llama-weight-dtype", default="bfloat16",
                        choices=("bfloat16", "float16", "float32"),
                        help="dtype the Llama weights are stored in")
    parser.add_argument("--llama-sample", type=int, default=8,
                        help="matrices compared with the CPU float64 path")
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose among {list(SECTIONS)}")

    print_header(f"ww_callbacks {ww_callbacks.__version__}, numpy {np.__version__}")
    runners = {"cpu-gpt2": bench_gpt2, "cpu-conv": bench_conv, "gpu-llama": bench_llama}
    for section in only:
        runners[section](args)
    print(f"\nat end: {load_line()}")


if __name__ == "__main__":
    main()
