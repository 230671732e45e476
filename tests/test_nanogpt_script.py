"""A real training script as its author writes it: the nanoGPT-shaped ``tests/nanogpt_train.py``
(GPT blocks, tied embedding, AdamW parameter groups, ``torch.compile``, nanoGPT's checkpoint dict)
with the ``Watcher`` in the README's plain form, SIGKILLed mid-run, resumed with
``init_from='resume'``, and never calling ``close()``. Then the command line on its
``ckpt.pt``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from tests.test_cli import run_cli  # noqa: E402
from ww_callbacks.history import read_records  # noqa: E402

SCRIPT = Path(__file__).with_name("nanogpt_train.py")
MAX_ITERS, KILL_AT = 42, 33  # checkpoints at 21 and 42, every_n_steps=5


def _train(out: Path, init_from: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    return subprocess.run([sys.executable, str(SCRIPT), str(out), init_from, str(MAX_ITERS),
                           *extra], capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow  # two training processes with torch.compile: ~40-60 s on 2 shared cores
def test_nanogpt_script_killed_resumed_and_left_unclosed(tmp_path):
    out = tmp_path / "out"
    first = _train(out, "scratch", str(KILL_AT))
    assert first.returncode == -signal.SIGKILL, first.stderr
    before = [r["step"] for r in read_records(out / "ww")]
    assert max(before) > MAX_ITERS // 2, before  # analyses after the checkpoint at 21
    second = _train(out, "resume")
    assert second.returncode == 0, second.stderr
    assert "done at 42" in second.stdout
    assert "restart" not in second.stderr  # resumed with its state: no warning

    records = read_records(out / "ww")
    steps = [r["step"] for r in records]
    # one history, no duplicates: the first run's up to the checkpoint, then the resumed run's
    assert steps == sorted(set(steps)) and steps[0] == 0, steps
    writers = [r.get("writer", {}).get("run_id") for r in records]
    assert len(set(writers)) == 2
    assert all(w == writers[0] for w, s in zip(writers, steps, strict=True) if s <= 21)
    # the final weights analysed without close(), at interpreter exit
    assert steps[-1] == MAX_ITERS, steps
    final = {row["longname"]: row for row in records[-1]["layers"]}
    # the tied matrix once, under the model's first name
    assert "lm_head" not in final and final["transformer.wte"]["aliases"] == "lm_head"
    assert not any("_orig_mod" in name for name in final)

    # the command line finds every layer of nanoGPT's checkpoint, with the history's alphas
    proc = run_cli("analyze", out / "ckpt.pt", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "'model' entry" in proc.stderr and "_orig_mod." in proc.stderr
    cli = {row["longname"]: row for row in json.loads(proc.stdout)[0]["layers"]}
    assert set(cli) == set(final)
    for name, row in final.items():
        np.testing.assert_allclose(cli[name]["alpha"], row["alpha"], rtol=1e-9, err_msg=name)
    assert cli["transformer.wte"]["aliases"] == "lm_head"

    cmp = run_cli("compare", out / "ckpt.pt", out / "ww", "--format", "json")
    assert cmp.returncode == 0, cmp.stderr
    rows = json.loads(cmp.stdout)
    assert {r["longname"] for r in rows} == set(final)
    assert max(abs(r["alpha_diff"]) for r in rows) < 1e-9
