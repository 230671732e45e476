"""Someone else's checkpoint (issue 21, points 1, 2, 4, 7, 9, 11): paths read from a file stay in
its folder, only regular files are opened, the safetensors header is validated with the format's
rules (checked against the ``safetensors`` library's own verdict on the same files), unreadable
weights are reported and counted by ``--fail-on``, one-line messages, one loading path for
``analyze(path)`` and the command line. The command line runs as a real subprocess."""

from __future__ import annotations

import argparse
import enum
import json
import os
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import ww_callbacks
from ww_callbacks.checkpoints import CheckpointError, natural_key, open_checkpoint
from ww_callbacks.safetensors_header import MAX_ENTRIES, HeaderError, read_header

PASSWD_NUMBER = str(struct.unpack("<Q", b"root:x:0")[0])  # what the old message leaked


def run_cli(*args, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "ww_callbacks", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def one_error_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def write_raw(path: Path, header: dict | bytes, data: bytes = b"") -> Path:
    """A file in the safetensors layout with exactly this header and data (no validation)."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def heavy(seed: int, shape=(120, 60)) -> np.ndarray:
    return (np.random.default_rng(seed).standard_t(3, shape) / 10).astype(np.float32)


def library_accepts(path: Path) -> bool:
    """The ``safetensors`` library's verdict on a file (its Rust header validation)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            list(fh.keys())
        return True
    except Exception:  # noqa: BLE001 - the library raises its own error types
        return False


# ----------------------------------------------------------------------------- 21.1, 21.7


def _sharded(folder: Path, weight_map: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


def test_shard_index_paths_stay_in_their_folder(tmp_path):
    from safetensors.numpy import save_file

    good = tmp_path / "good.safetensors"
    save_file({"a.weight": heavy(0)}, str(good))
    outside = _sharded(tmp_path / "dotdot", {"a.weight": "../good.safetensors"})
    one_error_line(run_cli("analyze", outside), "outside its folder")
    passwd = _sharded(tmp_path / "abs", {"a.weight": "/etc/passwd"})
    line = one_error_line(run_cli("analyze", passwd), "outside its folder")
    assert "root:x" not in line and PASSWD_NUMBER not in line
    environ = _sharded(tmp_path / "proc", {"a.weight": "../../../../../../proc/self/environ"})
    line = one_error_line(run_cli("analyze", environ), "outside its folder")
    assert "PATH=" not in line
    # a symbolic link in the folder pointing out of it
    linked = _sharded(tmp_path / "link", {"a.weight": "shard.safetensors"})
    (linked / "shard.safetensors").symlink_to(good)
    one_error_line(run_cli("analyze", linked), "symbolic link to outside the folder")
    (linked / "model.safetensors.index.json").unlink()  # the same link found by the folder scan
    one_error_line(run_cli("analyze", linked), "symbolic link to outside the folder")
    # a torch shard index is confined the same way
    torch = pytest.importorskip("torch")
    torch.save({"a.weight": torch.from_numpy(heavy(0))}, tmp_path / "w.bin")
    tfolder = tmp_path / "torch_dotdot"
    tfolder.mkdir()
    (tfolder / "pytorch_model.bin.index.json").write_text(
        json.dumps({"weight_map": {"a.weight": "../w.bin"}}))
    one_error_line(run_cli("analyze", tfolder), "outside its folder")
    # what stays inside is read: a link within the folder, and the Hugging Face cache's layout
    inside = _sharded(tmp_path / "inside", {"a.weight": "shard.safetensors"})
    save_file({"a.weight": heavy(0)}, str(inside / "real.bin.safetensors-data"))
    (inside / "shard.safetensors").symlink_to("real.bin.safetensors-data")
    proc = run_cli("analyze", inside, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    save_file({"a.weight": heavy(0)}, str(repo / "blobs" / "0123abcd"))
    snapshot = _sharded(repo / "snapshots" / "rev1", {"a.weight": "model-1.safetensors"})
    (snapshot / "model-1.safetensors").symlink_to("../../blobs/0123abcd")
    (result,) = json.loads(run_cli("analyze", snapshot, "--format", "json").stdout)
    expected = ww_callbacks.analyze({"a.weight": heavy(0)}, progress=False)
    assert result["layers"][0]["alpha"] == pytest.approx(expected["alpha"].iloc[0], rel=1e-12)
    local_dir = tmp_path / "local_dir"  # huggingface_hub < 0.23: local_dir links into the cache
    local_dir.mkdir()
    (local_dir / "model.safetensors").symlink_to(repo / "blobs" / "0123abcd")
    (result,) = json.loads(run_cli("analyze", local_dir, "--format", "json").stdout)
    assert result["layers"][0]["alpha"] == pytest.approx(expected["alpha"].iloc[0], rel=1e-12)


def test_a_fifo_named_model_safetensors_does_not_hang(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    one_error_line(run_cli("analyze", fifo, timeout=60), "not a regular file")
    one_error_line(run_cli("analyze", tmp_path, timeout=60), "not a regular file")
    index = _sharded(tmp_path / "idx", {"a.weight": "pipe.safetensors"})
    os.mkfifo(index / "pipe.safetensors")
    one_error_line(run_cli("analyze", index, timeout=60), "not a regular file")
    with pytest.raises(HeaderError, match="FIFO"):
        read_header(fifo)


def test_a_file_that_is_not_safetensors_is_not_echoed(tmp_path):
    passwd = tmp_path / "passwd.safetensors"
    passwd.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4)
    line = one_error_line(run_cli("analyze", passwd), "not a safetensors file", "limit")
    assert PASSWD_NUMBER not in line and "root:x" not in line
    assert "truncated" not in line  # an over-limit header is not called truncated
    torch_named = tmp_path / "passwd.pt"
    torch_named.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4)
    line = one_error_line(run_cli("analyze", torch_named), "not a torch checkpoint")
    assert "root:x" not in line and "'r'" not in line
    bad_utf8 = write_raw(tmp_path / "latin.safetensors", b'{"\xe9t\xe9": 1}', b"")
    line = one_error_line(run_cli("analyze", bad_utf8), "not UTF-8")
    assert "\\xe9" not in line and "0xe9" not in line


# ----------------------------------------------------------------------------- 21.4


def _entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


CASES = {
    # name: (header, data length)
    "valid": ({"a": _entry("F32", [4, 4], 0, 64), "b": _entry("F16", [2], 64, 68)}, 68),
    "valid_fp8_u16": ({"a": _entry("F8_E4M3", [4, 4], 0, 16),
                       "b": _entry("U16", [2, 2], 16, 24)}, 24),
    "valid_empty_tensor": ({"a": _entry("F32", [0, 3], 0, 0), "b": _entry("I8", [2], 0, 2)}, 2),
    "valid_metadata": ({"__metadata__": {"format": "pt"}, "a": _entry("F32", [1], 0, 4)}, 4),
    "aliased": ({"a": _entry("F32", [4, 4], 0, 64), "b": _entry("F32", [4, 4], 0, 64)}, 64),
    "overlapping": ({"a": _entry("F32", [4, 4], 0, 64), "b": _entry("F32", [4], 48, 64)}, 64),
    "gap": ({"a": _entry("F32", [4], 0, 16), "b": _entry("F32", [4], 20, 36)}, 36),
    "trailing_bytes": ({"a": _entry("F32", [4], 0, 16)}, 20),
    "negative_offset": ({"a": _entry("F32", [4], -16, 0)}, 16),
    "negative_shape": ({"a": _entry("F32", [64, 64, -1, -1], 0, 16384)}, 16384),
    "shape_mismatch": ({"a": _entry("F32", [4, 4], 0, 60)}, 60),
    "unknown_dtype": ({"a": _entry("F33", [4], 0, 16)}, 16),
    "float_shape": ({"a": _entry("F32", [4.0], 0, 16)}, 16),
    "missing_offsets": ({"a": {"dtype": "F32", "shape": [4]}}, 16),
    "metadata_not_str": ({"__metadata__": {"epoch": 3}, "a": _entry("F32", [1], 0, 4)}, 4),
    "past_the_end": ({"a": _entry("F32", [8], 0, 32)}, 16),
    "not_object": ([1, 2, 3], 0),
    "nan_literal": ({"a": {**_entry("F32", [1], 0, 4), "x": float("nan")}}, 4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_header_validator_agrees_with_the_safetensors_library(tmp_path, case):
    header, data_len = CASES[case]
    path = write_raw(tmp_path / f"{case}.safetensors", json.dumps(header).encode(),
                     bytes(data_len))
    try:
        read_header(path)
        ours = True
    except HeaderError as err:
        ours = False
        assert "\n" not in str(err) and str(path) in str(err)
    assert ours == case.startswith("valid"), case
    assert ours == library_accepts(path), case


def test_aliasing_header_is_refused_before_any_data_is_read(tmp_path):
    # one 4 MiB matrix referenced 16 times: used to be read 16 times (36 s); now refused at once
    header = {f"w{i}": _entry("F32", [1024, 1024], 0, 4 << 20) for i in range(16)}
    path = write_raw(tmp_path / "alias.safetensors", json.dumps(header).encode(), bytes(4 << 20))
    one_error_line(run_cli("analyze", path), "overlaps the tensor before it")


# ----------------------------------------------------------------------------- 21.2


def _fp8_and_ok(tmp_path: Path) -> Path:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    path = tmp_path / "mixed.safetensors"
    save_file({"a.weight": torch.from_numpy(heavy(1)),
               "q.weight": torch.from_numpy(heavy(2)).to(torch.float8_e4m3fn),
               "u.weight": torch.from_numpy((np.abs(heavy(3)) * 1000).astype(np.int32))
               .to(torch.uint16)}, str(path))
    return path


def test_unreadable_weights_are_failed_rows_counted_by_fail_on(tmp_path):
    path = _fp8_and_ok(tmp_path)
    proc = run_cli("analyze", path)
    assert proc.returncode == 0, proc.stderr
    row = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("1 "))
    assert "q" in row and "failed" in row and "FP8" in row, proc.stdout  # reason in the table
    assert "layer q: weights could not be read: dtype F8_E4M3" in proc.stderr
    proc = run_cli("analyze", path, "--fail-on", "over-trained", "under-trained")
    assert proc.returncode == 1, proc.stderr
    assert "1 layer(s) whose weights could not be read: q" in proc.stderr
    proc = run_cli("analyze", path, "--format", "json")
    (result,) = json.loads(proc.stdout)
    by_name = {r["longname"]: r for r in result["layers"]}
    assert by_name["q"]["status"] == "failed" and "F8_E4M3" in by_name["q"]["warning"]
    assert by_name["u"]["status"] == "success"  # unsigned integers are read as numbers
    assert by_name["a"]["status"] == "success"
    assert "--allow-hparams-types" in run_cli("analyze", "--help").stdout
    assert "could not be read" in " ".join(run_cli("analyze", "--help").stdout.split())


def test_broken_headers_are_input_errors(tmp_path):
    for case, words in (("unknown_dtype", ("F33", "not a safetensors dtype")),
                        ("negative_shape", ("shape must be a list of non-negative integers",)),
                        ("shape_mismatch", ("60 bytes for shape [4, 4] of F32",))):
        header, data_len = CASES[case]
        path = write_raw(tmp_path / f"{case}.safetensors", header, bytes(data_len))
        one_error_line(run_cli("analyze", path, "--fail-on", "over-trained"), *words)


# ----------------------------------------------------------------------------- 21.9


def test_raw_exceptions_become_one_line(tmp_path):
    header, data_len = CASES["missing_offsets"]
    path = write_raw(tmp_path / "keyerror.safetensors", header, bytes(data_len))
    one_error_line(run_cli("analyze", path), "entry 'a'", "no data_offsets")
    deep = write_raw(tmp_path / "deep.safetensors", b'{"a":' + b"[" * 100_000 + b"]" * 100_000
                     + b"}", b"")
    one_error_line(run_cli("analyze", deep), "deep.safetensors", "nests JSON deeper")
    from safetensors.numpy import save_file

    long_name = "layers." + "9" * 5000 + ".weight"
    digits = tmp_path / "digits.safetensors"
    save_file({long_name: heavy(4), "layers.2.weight": heavy(5)}, str(digits))
    (result,) = json.loads(run_cli("analyze", digits, "--format", "json").stdout)
    assert [r["longname"] for r in result["layers"]] == ["layers.2", long_name[:-7]]
    keys = ["a10", "a9", "a" + "1" * 5000, "a009", "a09", "b", "a"]
    assert sorted(keys, key=natural_key) == ["a", "a009", "a09", "a9", "a10", "a" + "1" * 5000,
                                              "b"]
    over = tmp_path / "over.safetensors"
    with open(over, "wb") as fh:
        fh.write(struct.pack("<Q", 100_000_001))
        fh.truncate(100_000_100)  # sparse: long enough to hold the announced header
    line = one_error_line(run_cli("analyze", over), "limit of 100 MB")
    assert "truncated" not in line
    many = write_raw(tmp_path / "many.safetensors",
                     b"{" + b",".join(b'"%d":{}' % i for i in range(MAX_ENTRIES + 5)) + b"}")
    one_error_line(run_cli("analyze", many), f"more than {MAX_ENTRIES} tensors")


# ----------------------------------------------------------------------------- 21.11


def test_setup_cfg_torch_floor_has_no_known_weights_only_bypass():
    root = Path(__file__).resolve().parents[1]
    text = (root / "setup.cfg").read_text()
    floors = [line.split(">=")[1].strip() for line in text.splitlines()
              if line.strip().startswith("torch>=")]
    assert floors and all(tuple(map(int, f.split(".")[:2])) >= (2, 10) for f in floors), floors
    readme = (root / "README.md").read_text()
    assert "torch>=2.1 " not in readme and "torch>=2.1\n" not in readme


def test_analyze_path_reads_like_the_command_line(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.numpy import save_file

    weights = {f"layers.{i}.weight": heavy(10 + i, (512, 256)) for i in range(8)}
    path = tmp_path / "m.safetensors"
    save_file(weights, str(path))
    expected = ww_callbacks.analyze(weights, progress=False)
    # one layer in memory at a time: numpy's allocations are traced
    tracemalloc.start()
    try:
        got = ww_callbacks.analyze(path, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(got["alpha"], expected["alpha"], rtol=1e-12)
    one_layer = 512 * 256 * 8  # as float64
    assert peak < 4 * one_layer, (peak, one_layer)  # eager reading held all 8 layers
    # index folders (safetensors and .bin) like the command line
    folder = _sharded(tmp_path / "sharded", {k: f"s{i % 2}.safetensors"
                                              for i, k in enumerate(weights)})
    for s in (0, 1):
        save_file({k: v for i, (k, v) in enumerate(weights.items()) if i % 2 == s},
                  str(folder / f"s{s}.safetensors"))
    np.testing.assert_allclose(ww_callbacks.analyze(folder, progress=False)["alpha"],
                               expected["alpha"], rtol=1e-12)
    bins = tmp_path / "bins"
    bins.mkdir()
    weight_map = {}
    for s in (0, 1):
        part = {k: torch.from_numpy(v) for i, (k, v) in enumerate(weights.items()) if i % 2 == s}
        torch.save(part, bins / f"pytorch_model-{s}.bin")
        weight_map.update(dict.fromkeys(part, f"pytorch_model-{s}.bin"))
    (bins / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    np.testing.assert_allclose(ww_callbacks.analyze(bins, progress=False)["alpha"],
                               expected["alpha"], rtol=1e-12)
    (result,) = json.loads(run_cli("analyze", bins, "--format", "json").stdout)
    np.testing.assert_allclose([r["alpha"] for r in result["layers"]], expected["alpha"],
                               rtol=1e-12)
    # a pickle that is not weights-only: a clear error, not torch's raw UnpicklingError
    torch.save({"w": torch.zeros(3, 3), "obj": _Pickled()}, tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match="not a weights-only torch checkpoint"):
        ww_callbacks.analyze(tmp_path / "unsafe.pt")
    assert list(open_checkpoint(path)) == list(weights)


class _Pickled:
    """An object only full unpickling could restore."""


HPARAMS_NS = argparse.Namespace(width=64)


class Mode(enum.Enum):
    """A hyperparameter of the user's own class (the command line's process cannot import it)."""

    FAST = "fast"


@pytest.mark.slow
def test_lightning_checkpoint_with_path_hyperparameters_opt_in(tmp_path):
    """A real fit's checkpoint whose hyperparameters hold a Path, a Namespace and an Enum of
    the test's own: refused by default with the way out named, read with the opt-in."""
    torch = pytest.importorskip("torch")
    L = pytest.importorskip("lightning.pytorch")
    class Net(L.LightningModule):
        def __init__(self, data_dir: Path = Path("/data/digits"),
                     ns: argparse.Namespace = HPARAMS_NS, mode: Mode = Mode.FAST):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(),
                                           torch.nn.Linear(64, 10))

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            return torch.nn.functional.cross_entropy(self.net(xb), yb)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    from sklearn.datasets import load_digits

    digits = load_digits()
    data = torch.utils.data.TensorDataset(torch.tensor(digits.data[:256], dtype=torch.float32)
                                          / 16, torch.tensor(digits.target[:256]))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Net()
        trainer = L.Trainer(max_epochs=1, default_root_dir=tmp_path, logger=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            accelerator="cpu", devices=1)
        trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=64))
    (ckpt,) = sorted(tmp_path.rglob("*.ckpt"))
    line = one_error_line(run_cli("analyze", ckpt), "pathlib.PosixPath", "--allow-hparams-types")
    assert "Traceback" not in line
    with pytest.raises(CheckpointError, match="allow_hparams_types"):
        ww_callbacks.analyze(ckpt)
    proc = run_cli("analyze", ckpt, "--allow-hparams-types", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)
    expected = ww_callbacks.analyze(dict(model.state_dict()), progress=False)
    got = ww_callbacks.analyze(ckpt, allow_hparams_types=True, progress=False)
    np.testing.assert_allclose([r["alpha"] for r in result["layers"]], expected["alpha"],
                               rtol=1e-12)
    np.testing.assert_allclose(got["alpha"], expected["alpha"], rtol=1e-12)
    # the user's Enum became a placeholder: its class was never imported
    from ww_callbacks.checkpoints import HparamsPlaceholder, _torch_load

    loaded = _torch_load(torch, ckpt, True)
    mode = loaded["hyper_parameters"]["mode"]
    assert isinstance(mode, HparamsPlaceholder) and mode.args == ("fast",)
    assert mode.qualified_name.endswith("Mode") and not isinstance(mode, Mode)
    assert isinstance(loaded["hyper_parameters"]["data_dir"], Path)
