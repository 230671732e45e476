"""The command line on checkpoints as training scripts write them: the state dict under the usual
keys (Lightning's ``state_dict``, nanoGPT's ``model``, ``model_state_dict``, DeepSpeed's
``module``, ``ema``, one level of nesting) and with wrapper prefixes (``_orig_mod.``,
``module.``, ``_fsdp_wrapped_module.``, ``_checkpoint_wrapped_module.``); ``--fail-on`` when no
layer was analysed; strict JSON output. Real ``torch.save`` files, the real console script."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.test_cli import run_cli  # noqa: E402
from ww_callbacks import analyze  # noqa: E402
from ww_callbacks.checkpoints import natural_key  # noqa: E402
from ww_callbacks.state_dicts import bare_name, describe, find_state_dict  # noqa: E402


def strict_json(text: str):
    """``json.loads`` that refuses ``NaN``/``Infinity`` literals (not JSON)."""
    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def _state_dict(seed: int = 0) -> dict:
    """A small GPT-like state dict: embeddings, two blocks (attention, MLP, norms), a head."""
    g = torch.Generator().manual_seed(seed)
    sd = {"transformer.wte.weight": torch.randn(65, 32, generator=g),
          "transformer.wpe.weight": torch.randn(16, 32, generator=g)}
    for i in range(2):
        sd[f"transformer.h.{i}.ln_1.weight"] = torch.ones(32)
        sd[f"transformer.h.{i}.attn.c_attn.weight"] = torch.randn(96, 32, generator=g)
        sd[f"transformer.h.{i}.attn.c_proj.weight"] = torch.randn(32, 32, generator=g)
        sd[f"transformer.h.{i}.mlp.c_fc.weight"] = torch.randn(128, 32, generator=g)
        sd[f"transformer.h.{i}.mlp.c_proj.weight"] = torch.randn(32, 128, generator=g)
    sd["transformer.ln_f.weight"] = torch.ones(32)
    sd["lm_head.weight"] = torch.randn(65, 32, generator=g)
    return sd


def _prefixed(sd: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in sd.items()}


LAYOUTS = {
    # nanoGPT train.py: a compiled model's keys, a 0-d tensor beside the weights
    "nanogpt": lambda sd: {"model": _prefixed(sd, "_orig_mod."), "optimizer": {"state": {},
                           "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
                           "model_args": {"n_layer": 2}, "iter_num": 600,
                           "best_val_loss": torch.tensor(1.5), "config": {"lr": 1e-3}},
    "lightning": lambda sd: {"state_dict": sd, "epoch": 3,
                             "global_step": 30, "pytorch-lightning_version": "2.4.0",
                             "optimizer_states": [], "lr_schedulers": []},
    "deepspeed": lambda sd: {"module": sd, "buffer_names": [], "optimizer": None,
                             "global_steps": 3, "ds_version": "0.14"},
    "model_state_dict": lambda sd: {"epoch": 2, "model_state_dict": sd,
                                    "optimizer_state_dict": {"state": {}, "param_groups": []}},
    "nested": lambda sd: {"checkpoint": {"state_dict": sd, "step": 7}, "meta": "x"},
    "ema": lambda sd: {"ema": sd, "step": 7},
    "ddp": lambda sd: _prefixed(sd, "module."),
    "fsdp": lambda sd: {k.replace("transformer.h.", "transformer.h._fsdp_wrapped_module.")
                        .replace(".attn.", ".attn._checkpoint_wrapped_module."): v
                        for k, v in _prefixed(sd, "_fsdp_wrapped_module.").items()},
}
EXPECTED_KEY = {"nanogpt": "'model'", "lightning": "'state_dict'", "deepspeed": "'module'",
                "model_state_dict": "'model_state_dict'", "nested": "'checkpoint.state_dict'",
                "ema": "'ema'"}


def test_find_state_dict_units():
    sd = {"a.weight": torch.zeros(3, 3)}
    assert find_state_dict(sd).key == "" and find_state_dict(sd).note() is None
    both = find_state_dict({"model": sd, "ema": sd, "iter_num": 3})
    assert both.key == "model" and both.others == ["ema"] and "'ema'" in both.note()
    assert find_state_dict({"net": sd, "epoch": 1}).key == "net"
    assert find_state_dict({"model": {"module": sd}}).key == "model.module"
    assert bare_name("_orig_mod.h._fsdp_wrapped_module.0.w") == "h.0.w"
    # a leading module. is removed only when every name has it (a model may own a `module`)
    assert list(find_state_dict({"module.x": sd["a.weight"], "y": sd["a.weight"]}).weights) == \
        ["module.x", "y"]
    assert "'iter_num' (int)" in describe({"iter_num": 3, "model": {}})
    assert describe([1]) == "a list"


def test_every_layout_finds_the_layers_says_where_and_matches_analyze(tmp_path):
    sd = _state_dict()
    expected = analyze({k: sd[k].numpy() for k in sorted(sd, key=natural_key)}, progress=None)
    assert len(expected) == 11  # (the command line reads names in natural order)
    paths = []
    for name, make in LAYOUTS.items():
        path = tmp_path / f"{name}.pt"
        torch.save(make(sd), path)
        paths.append(path)
    proc = run_cli("analyze", *paths, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out = strict_json(proc.stdout)
    for (name, _), result in zip(LAYOUTS.items(), out, strict=True):
        layers = result["layers"]
        assert [r["longname"] for r in layers] == list(expected["longname"]), name
        np.testing.assert_allclose([r["alpha"] for r in layers], expected["alpha"], rtol=1e-12,
                                   err_msg=name)
    lines = proc.stderr.splitlines()
    for name, key in EXPECTED_KEY.items():
        line = next(ln for ln in lines if f"{name}.pt:" in ln)
        assert f"weights from the checkpoint's {key} entry" in line, line
    assert "_orig_mod." in next(ln for ln in lines if "nanogpt.pt:" in ln)
    assert "removed from" in next(ln for ln in lines if "ddp.pt:" in ln)
    # the API reads the same file the same way (analyze(path))
    api = analyze(str(tmp_path / "nanogpt.pt"), progress=None)
    assert sorted(api["longname"]) == sorted(expected["longname"])


def test_compare_matches_a_compiled_checkpoint_with_a_plain_one(tmp_path):
    sd = _state_dict()
    torch.save(LAYOUTS["nanogpt"](sd), tmp_path / "compiled.pt")
    torch.save(sd, tmp_path / "plain.pt")
    proc = run_cli("compare", tmp_path / "compiled.pt", tmp_path / "plain.pt", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = strict_json(proc.stdout)
    assert len(rows) == 11 and all(r["alpha_diff"] == 0 for r in rows)
    assert not any("_orig_mod" in r["longname"] for r in rows)


def test_fail_on_fails_when_no_layer_was_analysed(tmp_path):
    # weights found, none analysable (1-D only): the message says what the file holds
    torch.save({"model": {"ln.weight": torch.ones(8), "ln.bias": torch.zeros(8)},
                "iter_num": 5}, tmp_path / "norms.pt")
    plain = run_cli("analyze", tmp_path / "norms.pt")
    assert plain.returncode == 0, plain.stderr
    assert "no layer to analyse" in plain.stderr and "'iter_num' (int)" in plain.stderr
    failing = run_cli("analyze", tmp_path / "norms.pt", "--fail-on", "over-trained")
    assert failing.returncode == 1, failing.stderr
    assert "2 x 1-D parameter" in failing.stderr and "no layer was analysed" in failing.stderr
    # no weights at all: an input error naming the keys and their types
    torch.save({"iter_num": 5, "config": {"lr": 0.1}, "note": "hi"}, tmp_path / "empty.pt")
    none = run_cli("analyze", tmp_path / "empty.pt", "--fail-on", "over-trained")
    assert none.returncode == 2
    assert "no weights found" in none.stderr and "'config' (dict of 1)" in none.stderr
    assert len(none.stderr.strip().splitlines()) == 1


def test_json_output_is_strict_json(tmp_path):
    sd = _state_dict()
    sd["dead.weight"] = torch.zeros(40, 20)  # its fit fails: NaN metrics
    torch.save({"model": sd}, tmp_path / "ckpt.pt")
    torch.save({"model": {"ln.weight": torch.ones(8)}}, tmp_path / "nolayer.pt")
    proc = run_cli("analyze", tmp_path / "ckpt.pt", tmp_path / "nolayer.pt", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "NaN" not in proc.stdout and "Infinity" not in proc.stdout
    out = strict_json(proc.stdout)
    dead = next(r for r in out[0]["layers"] if r["longname"] == "dead")
    assert dead["status"] == "failed" and any(v is None for v in dead.values())
    assert out[1]["layers"] == [] and all(v is None or math.isfinite(v)
                                          for v in out[1]["summary"].values())
