"""``ww-callbacks analyze A B C --history DIR``: several checkpoints as one run's history, read by
the HTSR tab of TensorBoard (its run walk and slim records), ``report`` and ``compare`` (issue 20:
"a history from the command line's analyze of several checkpoints")."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_cli import _weights, run_cli
from ww_callbacks.history import read_records, read_spectra
from ww_callbacks.views.data import slim_records

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _checkpoints(tmp_path, n=3):
    paths = []
    for i in range(n):
        weights = _weights(seed=i, n_blocks=3)
        path = tmp_path / f"ckpt-{i}.safetensors"
        safetensors_numpy.save_file(weights, str(path))
        paths.append(path)
    return paths


def test_analyze_history_is_one_run_for_the_tab_and_the_report(tmp_path):
    paths = _checkpoints(tmp_path)
    out = tmp_path / "logs" / "cli"
    proc = run_cli("analyze", *paths, "--randomize", "--history", out, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "ww_history.jsonl (3 analyses, steps 0 to 2" in proc.stderr
    table = json.loads(proc.stdout)

    records = read_records(out / "ww_history.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2]
    assert len({r["writer"]["run_id"] for r in records}) == 1  # one run
    for record, part in zip(records, table, strict=True):
        assert [row["longname"] for row in record["layers"]] == \
            [row["longname"] for row in part["layers"]]
        np.testing.assert_allclose([row["alpha"] for row in record["layers"]],
                                   [row["alpha"] for row in part["layers"]], rtol=1e-12)
        assert record["randomized"] is True and record["min_evals_for_trust"] == 50
        assert "ww/layers_low_evidence" in record["summary"]
    spectra = read_spectra(out / "ww_spectra.jsonl")
    assert [s["step"] for s in spectra] == [0, 1, 2]
    assert set(spectra[0]["layers"]) == {row["longname"] for row in records[0]["layers"]}

    pytest.importorskip("tensorboard")
    from ww_callbacks.integrations.tensorboard_plugin import find_runs

    runs = find_runs(tmp_path / "logs")
    assert list(runs) == ["cli"]
    slim = slim_records((out / "ww_history.jsonl").read_text().splitlines())
    assert [r["step"] for r in slim["records"]] == [0, 1, 2] and slim["skipped"] == 0

    report = tmp_path / "report.html"
    proc = run_cli("report", out, "-o", report)
    assert proc.returncode == 0, proc.stderr
    assert "blocks.2.fc" in report.read_text()


def test_analyze_history_refuses_a_file(tmp_path):
    paths = _checkpoints(tmp_path, 1)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("analyze", *paths, "--history", blocker)
    assert proc.returncode == 2 and "not a folder" in proc.stderr
