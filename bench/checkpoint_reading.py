"""Reading someone else's checkpoint (issue 21): the safetensors header validator's cost, and
``ww_callbacks.analyze(path)`` against the command line in peak memory.

Usage: ``python bench/checkpoint_reading.py [--only valid,hostile,memory] [--repeats 5]``

- ``valid``: :func:`ww_callbacks.safetensors_header.read_header` on a valid 1 GiB safetensors
  file (256 float32 tensors of 1024 x 1024; a sparse file: the header is written, the data is a
  hole, since validation must not read it). Baseline in the same run: the ``safetensors``
  library opening the same file (``safe_open`` + ``keys()``, its Rust header validation). Best
  of ``--repeats`` wall times, and the ratio.
- ``hostile``: a 100 MB header (just under the format's 100,000,000-byte limit) of 1 M entries
  that all alias one 1 KiB buffer (the shape of the header in issue 21 that ran 300 s to 2.1 GB
  before it was killed). Each reader runs in a child process that reports its own peak RSS
  (``VmHWM`` at exit; ``ru_maxrss`` would carry the parent's memory across ``exec``): the
  validator (refused after reading part of the header), the ``safetensors`` library (refuses
  after parsing it all), and a child that only imports (the floor).
- ``memory``: peak RSS of ``ww_callbacks.analyze(PATH)`` and of ``ww-callbacks analyze PATH`` on
  a ~400 MB safetensors file with one analysable layer (a 1000 x 500 matrix; the rest is one
  400 MB 1-D tensor, passed over); the claim: within 20% of each other. For the record, the
  eager reading ``analyze(path)`` did before issue 21 (``safetensors.numpy.load_file`` then
  ``analyze``), and the import-only floor.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ww_callbacks.safetensors_header import HeaderError, read_header

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peak import PEAK_WRAPPER as _PEAK_WRAPPER  # noqa: E402

MB = 1e6


def child(args: list[str]) -> tuple[float, float, str]:
    """Peak RSS (bytes), wall seconds and stderr of a child running ``args`` in the wrapper."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *args], capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    hwm = [int(ln.split()[1]) for ln in proc.stderr.splitlines() if ln.startswith("VmHWM_KIB")]
    if not hwm:
        raise RuntimeError(proc.stderr[-2000:])
    return hwm[-1] * 1024, wall, proc.stderr


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def write_sparse(path: Path, header: dict | bytes, data_len: int) -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + data_len)


# ----------------------------------------------------------------------------- sections


def bench_valid(tmp: Path, repeats: int) -> None:
    from safetensors import safe_open

    header, at = {}, 0
    for i in range(256):
        size = 1024 * 1024 * 4
        header[f"layers.{i}.weight"] = {"dtype": "F32", "shape": [1024, 1024],
                                        "data_offsets": [at, at + size]}
        at += size
    path = tmp / "valid_1gib.safetensors"
    write_sparse(path, header, at)
    assert len(read_header(path).tensors) == 256

    def library():
        with safe_open(str(path), framework="numpy") as fh:
            list(fh.keys())

    ours = best(lambda: read_header(path), repeats)
    theirs = best(library, repeats)
    print(f"valid 1 GiB file ({path.stat().st_size / 2**30:.2f} GiB, 256 tensors, header "
          f"{len(json.dumps(header)) / 1e3:.0f} kB): read_header {ours * 1e3:.2f} ms, "
          f"safetensors.safe_open {theirs * 1e3:.2f} ms, ratio {ours / theirs:.2f}")


def _hostile_file(tmp: Path, n: int, pad: bytes) -> Path:
    """A header of ``n`` entries all aliasing one 1 KiB buffer (names padded with ``pad``)."""
    entry = b'"%07d.%s":{"dtype":"F32","shape":[16,16],"data_offsets":[0,1024]}'
    raw = b"{" + b",".join(entry % (i, pad) for i in range(n)) + b"}"
    assert len(raw) <= 100_000_000, len(raw)
    path = tmp / f"alias_{n}.safetensors"
    write_sparse(path, raw, 1024)
    return path


def _refusals(path: Path, floor: float) -> None:
    code = ("from ww_callbacks.safetensors_header import read_header, HeaderError\n"
            "import time\nt, c = time.perf_counter(), time.process_time()\n"
            f"try:\n    read_header({str(path)!r})\nexcept HeaderError as e:\n"
            "    print('REFUSED', time.perf_counter() - t, time.process_time() - c, e,\n"
            "          file=sys.stderr)\n")
    ours, _, err = child(["-c", code])
    refused = next(ln for ln in err.splitlines() if ln.startswith("REFUSED"))
    lib = ("import time\nfrom safetensors import safe_open\n"
           "t, c = time.perf_counter(), time.process_time()\n"
           f"try:\n    safe_open({str(path)!r}, framework='numpy')\nexcept Exception as e:\n"
           "    print('REFUSED', time.perf_counter() - t, time.process_time() - c,\n"
           "          type(e).__name__, e, file=sys.stderr)\n")
    theirs, _, lib_err = child(["-c", lib])
    lib_line = next(ln for ln in lib_err.splitlines() if ln.startswith("REFUSED"))
    why = " ".join(refused.split()[3:]).split(": ", 1)[-1]
    print(f"  read_header: refused in {float(refused.split()[1]):.3f} s "
          f"({float(refused.split()[2]):.3f} s CPU), peak RSS "
          f"{ours / MB:.0f} MB ({(ours - floor) / MB:.0f} MB above the import-only floor of "
          f"{floor / MB:.0f} MB): {why[:110]}")
    print(f"  safetensors library: refused in {float(lib_line.split()[1]):.3f} s "
          f"({float(lib_line.split()[2]):.3f} s CPU), peak RSS {theirs / MB:.0f} MB: "
          f"{' '.join(lib_line.split()[3:])[:90]}")


def bench_hostile(tmp: Path) -> None:
    from ww_callbacks.safetensors_header import MAX_ENTRIES

    floor, _, _ = child(["-c", "import ww_callbacks.safetensors_header"])
    path = _hostile_file(tmp, 1_000_000, b"x" * 32)  # just under 100,000,000 bytes of header
    print(f"hostile header: {path.stat().st_size / MB:.1f} MB file, 1000000 entries aliasing "
          "one 1 KiB buffer")
    _refusals(path, floor)
    path.unlink()
    path = _hostile_file(tmp, MAX_ENTRIES, b"x" * 32)
    print(f"hostile header at the entry limit: {path.stat().st_size / MB:.1f} MB file, "
          f"{MAX_ENTRIES} entries aliasing one 1 KiB buffer (parsed, then refused)")
    _refusals(path, floor)


def bench_memory(tmp: Path) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    path = tmp / "one_layer_400mb.safetensors"
    save_file({"fc.weight": (rng.standard_t(3, (1000, 500)) / 10).astype(np.float32),
               "big.bias": np.zeros(100_000_000, np.float32)}, str(path))
    floor, _, _ = child(["-c", "import ww_callbacks, numpy, pandas"])
    api, api_wall, _ = child(["-c", f"import ww_callbacks\nww_callbacks.analyze({str(path)!r}, "
                                    "progress=False)"])
    cli, cli_wall, _ = child(["analyze", str(path)])
    eager, eager_wall, _ = child(["-c", "import ww_callbacks\nfrom safetensors.numpy import "
                                        f"load_file\nww_callbacks.analyze(load_file("
                                        f"{str(path)!r}), progress=False)"])
    print(f"analyze memory, {path.stat().st_size / MB:.0f} MB file, one analysable layer "
          "(1000 x 500 float32):")
    print(f"  ww_callbacks.analyze(path): peak RSS {api / MB:.0f} MB ({api_wall:.1f} s)")
    print(f"  ww-callbacks analyze PATH:  peak RSS {cli / MB:.0f} MB ({cli_wall:.1f} s)")
    print(f"  ratio analyze(path) / CLI: {api / cli:.3f} (claim: within 1.2)")
    print(f"  for the record: eager load_file + analyze {eager / MB:.0f} MB ({eager_wall:.1f} s)"
          f"; import-only floor {floor / MB:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="valid,hostile,memory")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        if "valid" in only:
            bench_valid(Path(tmp), args.repeats)
        if "hostile" in only:
            bench_hostile(Path(tmp))
        if "memory" in only:
            bench_memory(Path(tmp))


if __name__ == "__main__":
    try:
        main()
    except HeaderError as err:
        sys.exit(f"unexpected refusal: {err}")
