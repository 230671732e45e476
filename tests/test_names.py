"""Hostile layer names (issue 21.6 and 21.10) on every output, in real processes: terminal escape
sequences never reach a terminal raw (``analyze``/``compare`` tables, ``--fail-on`` lines, console
alerts), markdown in TensorBoard's Text tab stays text, ``$\\frac$`` and 300-character names do not
kill a figure or the table, and names that sanitise alike get files of their own."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from ww_callbacks import names

ESC = "\x1b]0;pwned\x07\x1b[2J"  # set the terminal's title, clear the screen
HOSTILE = [f"esc{ESC}", "bad$\\frac$name", "x" * 300, "same name", "same_name",
           "![img](http://example.invalid/x.png)[link](http://example.invalid)",
           "bidi\u202eevil", "nl\nsep\u2028"]
MARKDOWN = "![img](http://example/x)[link](http://example)"  # a module name holds no "."


def run_cli(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ww_callbacks", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_escaping_rules():
    assert names.terminal("plain.name") == "plain.name"
    assert names.terminal(ESC) == "\\x1b]0;pwned\\x07\\x1b[2J"
    assert names.terminal("a\u202eb\u2028c\x85d\x7f") == "a\\u202eb\\u2028c\\x85d\\x7f"
    md = names.markdown(HOSTILE[5])
    assert "![" not in md and "](" not in md and md.startswith("\\!\\[img\\]")
    assert names.markdown("<img src=x>") == "\\<img src\\=x\\>"
    assert names.figure("bad$\\frac$name") == "bad\\$\\frac\\$name"
    assert names.figure("abcdefghij", 7) == "abc…hij" and len(names.figure("x" * 300, 40)) == 40
    used: set[str] = set()
    stems = [names.file_stem(n, used) for n in ["0", "same name", "same_name", "Same_Name",
                                                 "x" * 300, "..", "", "é"]]
    assert stems[0] == "0" and stems[2] == "same_name"
    assert len({s.lower() for s in stems}) == len(stems)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]{1,80}", s) and s not in (".", "..") for s in stems)


def test_figure_labels_keep_the_block_number_and_the_end():
    """Issue 20: two Hugging Face rows no longer both read ``….attention.output.dense``."""
    attention = "bert.encoder.layer.11.attention.output.dense"
    ffn = "bert.encoder.layer.11.output.dense"
    other_block = "bert.encoder.layer.10.attention.output.dense"
    labels = [names.figure(n, 24) for n in (attention, ffn, other_block)]
    assert labels == ["…layer.11…output.dense", "…layer.11.output.dense",
                      "…layer.10…output.dense"]
    assert all(len(label) <= 24 for label in labels) and len(set(labels)) == 3
    assert names.shorten_name("bert.encoder.layer.11.attention.self.query", 24) == \
        "bert…layer.11…self.query"
    assert names.shorten_name("model.layers.31.self_attn.q_proj", 20) == "…layers.31…q_proj"
    assert names.shorten_name("encoder/block_1/dense/kernel", 18) == "…block_1…kernel"
    assert names.shorten_name(attention, 60) == attention  # short enough: unchanged
    # no parts, or a last part too long for the width: cut in the middle as before
    assert names.shorten_name("abcdefghij", 7) == "abc…hij"
    assert len(names.shorten_name("a." + "b" * 50, 20)) == 20


def _hostile_checkpoint(path) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({f"{name}.weight": rng.standard_normal((48, 32)).astype(np.float32)
               for name in HOSTILE}, str(path))


@pytest.mark.slow
def test_cli_tables_fail_on_and_plots_with_hostile_names(tmp_path):
    pytest.importorskip("matplotlib")
    ckpt = tmp_path / "m.safetensors"
    _hostile_checkpoint(ckpt)
    plots = tmp_path / "plots"
    proc = run_cli("analyze", ckpt, "--plots", plots, "--fail-on", "over-trained",
                   "under-trained")
    assert proc.returncode in (0, 1), proc.stderr  # not 2: no figure failed
    for stream in (proc.stdout, proc.stderr):
        assert "\x1b" not in stream and "\x07" not in stream and "\u202e" not in stream
    assert "esc\\x1b]0;pwned\\x07\\x1b[2J" in proc.stdout  # the table shows it, escaped
    assert "bad$\\frac$name" in proc.stdout and len(HOSTILE) <= proc.stdout.count("\n")
    esd = sorted(p.name for p in plots.glob("esd_*.png"))
    assert len(esd) == len(HOSTILE), esd  # one picture per layer: none overwritten
    assert all(len(p) <= 90 for p in esd)
    assert {"correlation_flow.png", "alpha_histogram.png"} <= {p.name for p in plots.iterdir()}

    proc = run_cli("compare", ckpt, ckpt)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "esc\\x1b]0;pwned" in proc.stdout


@pytest.mark.slow
def test_tensorboard_pictures_alerts_and_console_with_hostile_names(tmp_path):
    """A Watcher with the TensorBoard sink on a model whose layers carry the hostile names (one
    two layers' weights NaN, so every analysis raises an alert naming them): every layer's
    ESD picture and the summary pictures are written (one ``$\\frac$`` name killed them all
    before), the Text tab's alerts are escaped markdown and the console line has no escape."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("tensorboard")
    pytest.importorskip("matplotlib")
    script = f"""
import sys, warnings, torch, torch.nn as nn
from ww_callbacks.integrations.torch import Watcher
warnings.simplefilter("ignore")
names = {HOSTILE[:2] + [MARKDOWN, HOSTILE[6]]!r}
model = nn.Sequential()
torch.manual_seed(0)
for i, name in enumerate(names):
    model.add_module(name, nn.Linear(40, 40))
with torch.no_grad():
    model[0].weight[0, 0] = float("nan")  # the escape-sequence layer
    model[2].weight[0, 0] = float("nan")  # the markdown layer
with Watcher(model, log_dir=sys.argv[1], every_n_steps=1, traps_every=0, max_duty=None,
             wait="always", tensorboard_options={{"images_every": 1, "picture_duty": None}}) as w:
    for step in range(2):
        w.step()
"""
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\x1b" not in proc.stderr and "\u202e" not in proc.stderr
    assert "ww_callbacks alert" in proc.stderr and "esc\\x1b]0;pwned" in proc.stderr
    from tests.events import read_events

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acc = read_events(tmp_path)
    images = acc.Tags()["images"]
    esd = [t for t in images if t.startswith("ww_esd_plot/")]
    assert len(esd) == 2, images  # the NaN layers have no spectrum; the other two are drawn
    assert any("frac" in t for t in esd)
    assert len([t for t in images if not t.startswith("ww_esd_plot/")]) >= 2  # model pictures
    (alerts,) = acc.Tensors("ww/alerts")[:1]
    text = alerts.tensor_proto.string_val[0].decode()
    assert "NaN/Inf" in text and "![" not in text and "](" not in text and "\x1b" not in text
    assert "\\!\\[img\\]" in text
    del torch
