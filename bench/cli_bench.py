"""The ``ww-callbacks`` command line: memory, report size, and what the command line adds.

Usage: ``python bench/cli_bench.py [--only memory,report,gpt2] [--gb 1.0]``

- ``memory``: ``ww-callbacks analyze`` on a generated ~1 GB safetensors file (32 float32 matrices
  of 8192 x 1024 by default) in a temporary folder, deleted afterwards. Prints the command
  line's peak RSS (``ru_maxrss`` of the child), the peak RSS of a child that only imports what the
  command line imports (the interpreter, numpy, pandas, ww_callbacks), the largest layer's
  float64 working set (stack ``N*M*8`` + Gram ``M*M*8`` + eigenvalues ``M*8``) and the claim:
  peak RSS <= working set + 200 MB. Baseline in the same run: the child that only imports;
  with ``--eager`` also ``ww_callbacks.analyze(path)`` (it loaded every tensor first until issue
  21; it now reads through the command line's reader: see ``bench/checkpoint_reading.py``).
- ``report``: size and build time of the report of a synthetic history of 100 layers x 200
  analyses (every 4th randomised), against ``load_history`` of the same file.
- ``gpt2``: ``ww-callbacks analyze`` on GPT-2-small-shaped safetensors (124M float32 weights,
  ~500 MB) against ``ww_callbacks.analyze`` in Python on the same weights already in memory; the
  claim: the command line adds <= 1 s (process start, imports, reading the file).
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _models import best_time, gpt2_small, print_header  # noqa: E402
from _peak import PEAK_WRAPPER as _PEAK_WRAPPER  # noqa: E402

import ww_callbacks  # noqa: E402
from ww_callbacks.checkpoints import open_checkpoint  # noqa: E402

MB = 1e6
CLI = [sys.executable, "-m", "ww_callbacks"]




def child_peak_rss(args: list[str]) -> tuple[float, float]:
    """Peak RSS (bytes, the child's ``VmHWM``) and wall time of ``ww-callbacks ARGS`` (or of
    ``python -c CODE`` when ``args`` starts with ``-c``) in a child process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *args], capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    hwm = [int(ln.split()[1]) for ln in proc.stderr.splitlines() if ln.startswith("VmHWM_KIB")]
    return hwm[-1] * 1024, wall


def write_safetensors(path: Path, shapes: dict[str, tuple[int, int]], seed: int = 0) -> None:
    """A float32 safetensors file written one tensor at a time (the format: 8-byte header
    length, JSON header, data), so this process never holds more than one tensor."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset,
                                                                                offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        for shape in shapes.values():
            (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype("<f4").tofile(fh)


def bench_memory(gb: float, eager: bool) -> None:
    n, m = 8192, 1024
    count = max(1, round(gb * 1e9 / (n * m * 4)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.safetensors"
        write_safetensors(path, {f"layers.{i}.weight": (n, m) for i in range(count)})
        size = path.stat().st_size
        working = n * m * 8 + m * m * 8 + m * 8
        imports, _ = child_peak_rss(["-c", "import ww_callbacks.cli, ww_callbacks.checkpoints, "
                                     "ww_callbacks.analysis"])
        peak, wall = child_peak_rss(["analyze", str(path), "--format", "csv",
                                     "--out", str(Path(tmp) / "out.csv")])
        if eager:
            base, base_wall = child_peak_rss(["-c", f"import ww_callbacks; ww_callbacks.analyze("
                                              f"{str(path)!r}, progress=False)"])
    print(f"\n## memory: {count} layers of {n} x {m} float32, file {size / MB:.0f} MB")
    print(f"largest layer's float64 working set: {working / MB:.1f} MB")
    print(f"baseline, imports only (interpreter, numpy, pandas, ww_callbacks): peak RSS "
          f"{imports / MB:.0f} MB")
    print(f"ww-callbacks analyze: peak RSS {peak / MB:.0f} MB in {wall:.1f} s; growth over the "
          f"imports {(peak - imports) / MB:.0f} MB = {(peak - imports) / working:.2f} x the "
          "working set")
    if eager:
        print(f"ww_callbacks.analyze(path) (loads every tensor first): peak RSS {base / MB:.0f} "
              f"MB in {base_wall:.1f} s; ratio CLI / that {peak / base:.3f}")
    limit = working + 200 * MB
    print(f"claim peak RSS <= working set + 200 MB = {limit / MB:.0f} MB: "
          f"{'pass' if peak <= limit else 'FAIL'}")


def bench_report() -> None:
    from test_report import _big_history

    from ww_callbacks.history import load_history

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _big_history(folder)
        load_s, _ = best_time(lambda: load_history(folder), 3)
        build_s, out = best_time(lambda: ww_callbacks.write_report(folder, folder / "r.html"),
                                 3)
        size = out.stat().st_size
    print("\n## report: 100 layers x 200 analyses (every 4th randomised)")
    print(f"size {size / MB:.3f} MB (limit 1.5 MB): {'pass' if size <= 1.5e6 else 'FAIL'}")
    print(f"build time {build_s:.3f} s (best of 3); load_history of the same file "
          f"{load_s:.3f} s; ratio {build_s / load_s:.2f}")


def _child_cpu(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _cpu(func) -> tuple[float, float, object]:
    """Wall and CPU seconds of one call in this process."""
    start, cpu = time.perf_counter(), time.process_time()
    out = func()
    return time.perf_counter() - start, time.process_time() - cpu, out


def bench_gpt2(repeats: int) -> None:
    import torch
    from safetensors.torch import save_file

    model = gpt2_small(seed=0)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    del model
    rows = {"python": [], "cli": [], "imports": [], "read": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gpt2.safetensors"
        save_file(state, str(path))
        ordered = open_checkpoint(path)  # the CLI's order
        weights = {k: state[k] for k in ordered}
        out = str(Path(tmp) / "o.csv")
        ww_callbacks.analyze(weights, progress=False)  # warm-up
        for _ in range(repeats):  # interleaved, so a change of load hits both alike
            wall, cpu, df = _cpu(lambda: ww_callbacks.analyze(weights, progress=False))
            rows["python"].append((wall, cpu))
            rows["cli"].append(_child_cpu(CLI + ["analyze", str(path), "--format", "csv",
                                                 "--out", out]))
            rows["imports"].append(_child_cpu([sys.executable, "-c", "import ww_callbacks.cli, "
                                               "ww_callbacks.checkpoints, "
                                               "ww_callbacks.analysis"]))
            wall, cpu, _ = _cpu(lambda: [np.asarray(t) for t in open_checkpoint(path).values()
                                         if len(t.shape) == 2])
            rows["read"].append((wall, cpu))
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in rows.items()}
    print(f"\n## gpt2: GPT-2-small-shaped safetensors ({path.name}, 124M float32), {len(df)} "
          f"layers analysed, torch {torch.__version__}; best of {repeats}, wall / CPU seconds")
    for key, label in (("python", "ww_callbacks.analyze, weights in memory"),
                       ("cli", "ww-callbacks analyze FILE (whole process)"),
                       ("imports", "  of which: a process that only imports"),
                       ("read", "  of which: reading every 2-D tensor from the file")):
        print(f"{label:52s} {best[key][0]:7.3f} s / {best[key][1]:7.3f} s")
    added_wall = best["cli"][0] - best["python"][0]
    added_cpu = best["cli"][1] - best["python"][1]
    print(f"the command line adds {added_wall:.3f} s wall, {added_cpu:.3f} s CPU (limit 1 s): "
          f"{'pass' if added_wall <= 1.0 else 'FAIL'} (wall); ratio CLI / Python "
          f"{best['cli'][0] / best['python'][0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="memory,report,gpt2")
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eager", action="store_true",
                        help="memory: also ww_callbacks.analyze(path), which loads every tensor")
    args = parser.parse_args()
    print_header(f"numpy {np.__version__}, ww_callbacks {ww_callbacks.__version__}")
    sections = args.only.split(",")
    if "memory" in sections:
        bench_memory(args.gb, args.eager)
    if "report" in sections:
        bench_report()
    if "gpt2" in sections:
        bench_gpt2(args.repeats)
    print(f"\n(parent peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB)")


if __name__ == "__main__":
    main()
