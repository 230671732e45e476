"""The ``ww-callbacks`` command line, run as a real console script in a subprocess on checkpoint
files the tests write (safetensors, torch, a Lightning checkpoint from a real fit, a Hugging Face
folder from a tiny config), checked against ``ww_callbacks.analyze`` on the same weights."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ww_callbacks

SCRIPT = Path(sys.executable).parent / "ww-callbacks"
#: Columns compared with ``analyze``: every metric of a default analysis.
METRICS = ["N", "M", "num_evals", "alpha", "xmin", "D", "alpha_weighted", "log_norm",
           "log_spectral_norm", "log_alpha_norm", "stable_rank", "entropy", "lambda_max"]


def run_cli(*args: str, script: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``ww-callbacks`` (the console script, or ``python -m ww_callbacks``) in a subprocess."""
    cmd = [str(SCRIPT)] if script else [sys.executable, "-m", "ww_callbacks"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def cli_json(*args: str, **kwargs) -> list[dict]:
    proc = run_cli("analyze", *args, "--format", "json", **kwargs)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def assert_same(cli_layers: list[dict], expected: pd.DataFrame, *, check_ids: bool = True):
    """The command line's rows equal ``analyze``'s (same layers, same order, same metrics)."""
    got = pd.DataFrame(cli_layers)
    assert list(got["longname"]) == list(expected["longname"])
    if check_ids:
        assert list(got["layer_id"]) == list(expected["layer_id"])
    for col in METRICS:
        np.testing.assert_allclose(got[col].astype(float), expected[col].astype(float),
                                   rtol=1e-12, atol=0, err_msg=col)
    assert list(got["status"]) == list(expected["status"])


def _weights(seed: int = 0, n_blocks: int = 12) -> dict[str, np.ndarray]:
    """A small model's weights: blocks numbered past 9 (model order != string order), a conv,
    biases and norms (passed over)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n_blocks):
        out[f"blocks.{i}.fc.weight"] = (rng.standard_t(3, (96, 48)) / 10).astype(np.float32)
        out[f"blocks.{i}.fc.bias"] = np.zeros(96, np.float32)
        out[f"blocks.{i}.norm.weight"] = np.ones(96, np.float32)
    out["conv.weight"] = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    out["head.weight"] = rng.standard_normal((10, 96)).astype(np.float32)
    return out


def _natural(d: dict) -> dict:
    from ww_callbacks.checkpoints import natural_key

    return {k: d[k] for k in sorted(d, key=natural_key)}


# ----------------------------------------------------------------------------- help, exits


def test_help_on_every_subcommand():
    assert SCRIPT.exists(), f"console script missing: {SCRIPT} (pip install -e .)"
    for sub in ([], ["analyze"], ["compare"], ["report"]):
        proc = run_cli(*sub, "--help", script=True)
        assert proc.returncode == 0, proc.stderr
        assert "usage: ww-callbacks" in proc.stdout
    assert "--fail-on" in run_cli("analyze", "--help", script=True).stdout
    proc = run_cli("analyze", script=True)  # no PATH: usage error
    assert proc.returncode == 2 and "PATH" in proc.stderr


# ----------------------------------------------------------------------------- readers


def test_analyze_safetensors_with_bf16_fp16_matches_analyze(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    weights = {k: torch.from_numpy(v) for k, v in _weights().items()}
    weights["blocks.3.fc.weight"] = weights["blocks.3.fc.weight"].to(torch.bfloat16)
    weights["blocks.11.fc.weight"] = weights["blocks.11.fc.weight"].to(torch.float16)
    path = tmp_path / "model.safetensors"
    save_file(weights, str(path))
    (result,) = cli_json(path, script=True)
    expected = ww_callbacks.analyze(_natural(weights), progress=False)
    assert_same(result["layers"], expected)
    names = [r["longname"] for r in result["layers"]]
    assert names.index("blocks.2.fc") < names.index("blocks.10.fc")  # model order
    assert result["summary"]["alpha"] == pytest.approx(ww_callbacks.summarize(expected)["alpha"])
    skipped = {s["longname"] for s in result["skipped"]}
    assert "blocks.0.fc.bias" in skipped or "blocks.0.fc" not in skipped  # biases never analysed


def test_sharded_safetensors_folder_equals_one_file(tmp_path):
    from safetensors.numpy import save_file

    weights = _weights(seed=1)
    names = list(weights)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    folder = tmp_path / "sharded"
    folder.mkdir()
    weight_map = {}
    for file, keys in shards.items():
        save_file({k: weights[k] for k in keys}, str(folder / file))
        weight_map.update({k: file for k in keys})
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (result,) = cli_json(folder)
    assert_same(result["layers"], ww_callbacks.analyze(_natural(weights), progress=False))


def test_torch_checkpoint_matches_analyze_and_table_csv_formats(tmp_path):
    torch = pytest.importorskip("torch")
    state = {k: torch.from_numpy(v) for k, v in _weights(seed=2).items()}
    path = tmp_path / "model.pt"
    torch.save(state, path)
    expected = ww_callbacks.analyze(_natural(state), progress=False)
    (result,) = cli_json(path)
    assert_same(result["layers"], expected)
    csv_out = tmp_path / "out.csv"
    proc = run_cli("analyze", path, "--format", "csv", "--out", csv_out)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(pd.read_csv(csv_out)["alpha"], expected["alpha"], rtol=1e-12)
    proc = run_cli("analyze", path)
    assert proc.returncode == 0
    assert "alpha" in proc.stdout and "blocks.10.fc" in proc.stdout and "band" in proc.stdout


@pytest.mark.slow
def test_lightning_checkpoint_of_a_real_fit(tmp_path):
    torch = pytest.importorskip("torch")
    L = pytest.importorskip("lightning.pytorch")
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)

    class Net(L.LightningModule):
        def __init__(self, hidden: int = 64):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                                           torch.nn.Linear(hidden, 10))

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            return torch.nn.functional.cross_entropy(self.net(xb), yb)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Net()
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64,
                                             shuffle=True)
        trainer = L.Trainer(max_epochs=2, default_root_dir=tmp_path, logger=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            accelerator="cpu", devices=1)
        trainer.fit(model, loader)
    ckpts = sorted(tmp_path.rglob("*.ckpt"))
    assert ckpts, "the fit wrote no checkpoint"
    (result,) = cli_json(ckpts[-1])
    expected = ww_callbacks.analyze(_natural(model.state_dict()), progress=False)
    assert_same(result["layers"], expected)
    assert [r["longname"] for r in result["layers"]] == ["net.0", "net.2"]


def test_hugging_face_folder_from_a_tiny_config(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=200,
                                     n_positions=64)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(config)
    folder = tmp_path / "tiny-gpt2"
    model.save_pretrained(folder)  # config.json + model.safetensors
    assert (folder / "config.json").exists()
    (result,) = cli_json(folder)
    # the reference reading: the safetensors library's own loader, then analyze()
    saved = {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}
    assert_same(result["layers"], ww_callbacks.analyze(_natural(saved), progress=False))
    assert any(r["longname"] == "transformer.h.1.mlp.c_fc" for r in result["layers"])
    # the same model saved as pytorch_model.bin (weights-only torch pickle)
    bin_folder = tmp_path / "tiny-gpt2-bin"
    model.save_pretrained(bin_folder, safe_serialization=False)
    (result_bin,) = cli_json(bin_folder)
    got = {r["longname"]: r["alpha"] for r in result_bin["layers"]}
    for row in result["layers"]:
        if row["longname"] in got and row["alpha"] is not None:
            assert got[row["longname"]] == pytest.approx(row["alpha"], rel=1e-12)


# ----------------------------------------------------------------------------- options


def test_fail_on_and_layers(tmp_path):
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(0)
    path = tmp_path / "random.safetensors"
    # a nearly orthogonal matrix has a flat spectrum (alpha ~27: under-trained); Student-t entries
    # with 1.2 degrees of freedom are very heavy-tailed (alpha < 2: over-trained)
    orth = np.linalg.qr(rng.standard_normal((300, 150)))[0]
    save_file({"a.weight": (orth + 0.01 * rng.standard_normal(orth.shape)).astype(np.float32),
               "b.weight": rng.standard_t(1.2, (300, 150)).astype(np.float32)}, str(path))
    weights = load_file(str(path))
    details = ww_callbacks.analyze(weights, progress=False)
    assert details["alpha"].iloc[0] > 6 and details["alpha"].iloc[1] < 2, details["alpha"]
    proc = run_cli("analyze", path, "--fail-on", "under-trained")
    assert proc.returncode == 1, proc.stderr
    assert "1 under-trained layer(s) (alpha > 6): a" in proc.stderr
    proc = run_cli("analyze", path, "--fail-on", "over-trained", "under-trained")
    assert proc.returncode == 1 and "1 over-trained layer(s) (alpha < 2): b" in proc.stderr
    save_file({"c.weight": rng.standard_t(3, (200, 100)).astype(np.float32)},
              str(tmp_path / "ok.safetensors"))  # alpha ~3.5: well trained
    proc = run_cli("analyze", tmp_path / "ok.safetensors", "--fail-on", "over-trained")
    assert proc.returncode == 0, proc.stderr
    (result,) = cli_json(path, "--layers", "b")
    assert [r["longname"] for r in result["layers"]] == ["b"]
    (result,) = cli_json(path, "--layers=-a")
    assert [r["longname"] for r in result["layers"]] == ["b"]
    (result,) = cli_json(path, "--layers", "dense,-b")
    assert [r["longname"] for r in result["layers"]] == ["a"]
    (result,) = cli_json(path, "--randomize", "--mp-fit")
    expected = ww_callbacks.analyze(weights, randomize=True, mp_fit=True, progress=False)
    for col in ("rand_distance", "num_traps", "mp_softrank", "alpha"):
        np.testing.assert_allclose([r[col] for r in result["layers"]], expected[col],
                                   rtol=1e-12, err_msg=col)


def test_plots_writes_the_dashboard_figures(tmp_path):
    figures = pytest.importorskip("ww_callbacks.figures")
    if not hasattr(figures, "save_analysis_figures"):
        pytest.skip("ww_callbacks.figures.save_analysis_figures is not on this branch yet "
                    "(helper 'dash' writes it)")
    from safetensors.numpy import save_file

    path = tmp_path / "m.safetensors"
    save_file(_weights(seed=4, n_blocks=3), str(path))
    out = tmp_path / "plots"
    proc = run_cli("analyze", path, "--plots", out)
    assert proc.returncode == 0, proc.stderr
    written = sorted(out.iterdir())
    assert written and all(p.stat().st_size > 0 for p in written)


# ----------------------------------------------------------------------------- compare


def test_compare_two_checkpoints_with_delta(tmp_path):
    from safetensors.numpy import save_file

    a = _weights(seed=5, n_blocks=4)
    rng = np.random.default_rng(6)
    b = {k: (v + 0.05 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in a.items()}
    pa, pb = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(a, str(pa))
    save_file(b, str(pb))
    html = tmp_path / "compare.html"
    proc = run_cli("compare", pa, pb, "--delta", "--format", "json", "--out", html)
    assert proc.returncode == 0, proc.stderr
    rows = pd.DataFrame(json.loads(proc.stdout))
    ea = ww_callbacks.analyze(_natural(a), progress=False).set_index("longname")
    eb = ww_callbacks.analyze(_natural(b), progress=False).set_index("longname")
    diff = {k: b[k].astype(np.float64) - a[k].astype(np.float64) for k in a}
    ed = ww_callbacks.analyze(_natural(diff), progress=False).set_index("longname")
    rows = rows.set_index("longname")
    np.testing.assert_allclose(rows["alpha_A"], ea.loc[rows.index, "alpha"], rtol=1e-12)
    np.testing.assert_allclose(rows["alpha_B"], eb.loc[rows.index, "alpha"], rtol=1e-12)
    np.testing.assert_allclose(rows["alpha_diff"], rows["alpha_B"] - rows["alpha_A"])
    np.testing.assert_allclose(rows["alpha_delta"], ed.loc[rows.index, "alpha"], rtol=1e-12)
    from ww_callbacks.bands import band

    assert list(rows["crossed"]) == [band(x) != band(y) for x, y in
                                     zip(rows["alpha_A"], rows["alpha_B"], strict=True)]
    page = html.read_text()
    # the shared views' data: one column per side (A, B, B - A), every layer
    blob = re.search(r'<script type="application/json" id="ww-data">(.*?)</script>', page, re.S)
    table = json.loads(blob.group(1))["table"]
    assert [r["step"] for r in table["records"]] == [0, 1, 2]
    assert table["sides"] == ["A", "B", "B - A"]
    assert table["layers"] == list(rows.index)
    assert table["records"][2]["a"] == [round(v, 3) for v in rows["alpha_delta"]]
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)  # nothing to fetch
    assert "default-src 'none'" in page


# ----------------------------------------------------------------------------- bad input


def _assert_input_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_bad_inputs_give_one_line_and_exit_2(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.numpy import save_file

    _assert_input_error(run_cli("analyze", tmp_path / "missing.safetensors"), "no such file")
    good = tmp_path / "good.safetensors"
    save_file(_weights(n_blocks=2), str(good))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _assert_input_error(run_cli("analyze", truncated), "truncated")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    _assert_input_error(run_cli("analyze", garbage), "not a safetensors file")

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"weights": torch.zeros(3, 3), "obj": _Pickled()}, unsafe)
    _assert_input_error(run_cli("analyze", unsafe), "not a weights-only")
    proc = run_cli("analyze", unsafe, "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr

    _assert_input_error(run_cli("report", tmp_path / "no_run"), "no such file")
    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    _assert_input_error(run_cli("report", empty_run), "no ww_history.jsonl")
    (empty_run / "ww_history.jsonl").write_text("")
    _assert_input_error(run_cli("report", empty_run), "empty")
    newer = tmp_path / "newer_run"
    newer.mkdir()
    (newer / "ww_history.jsonl").write_text(json.dumps(
        {"format": 99, "step": 0, "epoch": None, "layers": [], "summary": {}}) + "\n")
    _assert_input_error(run_cli("report", newer), "newer")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "README.txt").write_text("nothing here")
    _assert_input_error(run_cli("analyze", no_weights), "no checkpoint found")
    _assert_input_error(run_cli("compare", good, tmp_path / "nope.pt"), "no such file")
    proc = run_cli("analyze", good, "--format", "xml")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


class _Pickled:
    """An object only full unpickling could restore."""


def test_progress_bar_only_on_a_terminal(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    from safetensors.numpy import save_file

    path = tmp_path / "m.safetensors"
    save_file(_weights(seed=7, n_blocks=3), str(path))
    proc = run_cli("analyze", path)  # stderr is a pipe: no bar
    assert proc.returncode == 0 and "layer/s" not in proc.stderr and "it/s" not in proc.stderr
    leader, follower = pty.openpty()
    # a terminal of 80 columns (a fresh pty has 0, and tqdm draws nothing in 0 columns)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        done = subprocess.run([sys.executable, "-m", "ww_callbacks", "analyze", str(path),
                               "--out", str(tmp_path / "t.txt")], stderr=follower,
                              stdout=subprocess.DEVNULL, timeout=300)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0
    assert b"analyze" in seen and b"layer" in seen, seen[-500:]


def test_device_option_uses_the_torch_path(tmp_path):
    pytest.importorskip("torch")
    from safetensors.numpy import save_file

    weights = _weights(seed=8, n_blocks=3)
    path = tmp_path / "m.safetensors"
    save_file(weights, str(path))
    (result,) = cli_json(path, "--device", "cpu")
    expected = ww_callbacks.analyze(_natural(weights), device="cpu", progress=False)
    assert_same(result["layers"], expected)


def test_iter_tensors_reads_one_tensor_at_a_time_with_bf16_widened(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from ww_callbacks.checkpoints import LazyTensor, iter_tensors, open_checkpoint

    g = torch.Generator().manual_seed(0)
    weights = {"layers.10.w": torch.randn(5, 3, generator=g).to(torch.bfloat16),
               "layers.2.w": torch.randn(4, 4, generator=g).to(torch.float16),
               "layers.1.w": torch.randn(2, 6, generator=g, dtype=torch.float64)}
    path = tmp_path / "t.safetensors"
    save_file(weights, str(path))
    lazy = open_checkpoint(path)
    assert list(lazy) == ["layers.1.w", "layers.2.w", "layers.10.w"]
    assert all(isinstance(v, LazyTensor) for v in lazy.values())
    assert lazy["layers.10.w"].shape == (5, 3) and lazy["layers.10.w"].dtype == "BF16"
    pairs = iter_tensors(path)
    assert not isinstance(pairs, (list, dict))  # a generator: nothing read before asked
    for name, array in pairs:
        expected = weights[name].float() if weights[name].dtype != torch.float64 \
            else weights[name]
        assert array.dtype in (np.float32, np.float64)
        np.testing.assert_array_equal(array, expected.numpy())
