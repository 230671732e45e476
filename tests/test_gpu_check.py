"""``bench/gpu_check.py`` runs end to end on a CPU with tiny shapes (as a subprocess, as a GPU
session would run it): one JSON summary with every part, every figure compared with its target,
and every GPU-only figure reported as ``not run: no CUDA`` rather than left out. A budget too
small for anything skips the parts and says so, and still writes the JSON."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
PARTS = ["snapshot_torn", "llama_float32", "auto_device", "train_torch", "train_lightning",
         "snapshot_race_control", "llama_float64", "llama_float32_traps", "sharded_1proc",
         "llama_float64_traps"]
FIGURE_KEYS = {"name", "value", "unit", "target", "verdict"}
#: The figures only a GPU can measure: on a CPU each must say so.
CUDA_ONLY_PARTS = {"snapshot_race_control"}
CUDA_ONLY = {
    ("snapshot_race_control", "torn_without_ordering"),
    ("snapshot_race_control", "snapshots_compared"),
    ("auto_device", "watcher_auto_gpu_extra_mib"),
    *((part, "peak_gpu_extra_mib") for part in PARTS if part.startswith("llama")),
}


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out),
                           "--last", str(tmp_path / "last.json"), *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


@pytest.mark.slow
def test_tiny_cpu_run_reports_every_figure_against_its_target(tmp_path):
    proc, summary = _run(tmp_path, "--tiny", "--device", "cpu", "--threads", "1")
    assert summary["finished"] is True and summary["tiny"] is True
    assert summary["global_rng_untouched"] is True  # weights, data, analyses: private generators
    assert {"env", "sizes", "parts", "verdicts", "wall_s", "order"} <= set(summary)
    assert summary["env"]["cuda_available"] is False or summary["env"]["device"] == "cpu"
    assert list(summary["parts"]) == PARTS
    for name, part in summary["parts"].items():
        want = "not run: no CUDA" if name in CUDA_ONLY_PARTS else "done"
        assert part["status"] == want, (name, part["status"])
        assert part["figures"], name
        for figure in part["figures"]:
            assert FIGURE_KEYS <= set(figure), (name, figure)
            assert figure["target"], (name, figure)
            # every figure is judged; the printed line carries the same target and verdict
            assert f"{name}.{figure['name']}: " in proc.stdout
            assert f"(target {figure['target']}): {figure['verdict']}" in proc.stdout
            if (name, figure["name"]) in CUDA_ONLY:
                assert figure["verdict"] == "not run: no CUDA", (name, figure)
                assert figure["value"] is None
            else:
                assert figure["verdict"] in ("pass", "fail"), (name, figure)
                assert figure["value"] is not None, (name, figure)
    # what CPU tiny shapes can show must hold: no torn snapshot, the same alpha as the CPU
    # float64 path, auto analysing on the CPU, the sharded bench in one process
    figures = {(p, f["name"]): f for p, part in summary["parts"].items()
               for f in part["figures"]}
    for key in [("snapshot_torn", "torn_snapshots"), ("train_torch", "torn_snapshots"),
                ("train_lightning", "torn_snapshots"), ("train_torch", "snapshots_compared"),
                ("train_lightning", "snapshots_compared"),
                ("llama_float64", "alpha_max_abs_diff_vs_cpu_float64"),
                ("llama_float32", "alpha_max_abs_diff_vs_cpu_float64"),
                ("auto_device", "watcher_auto_runs_on"), ("auto_device", "analyze_auto_runs_on"),
                ("sharded_1proc", "returncode"), ("sharded_1proc", "analysis_on")]:
        assert figures[key]["verdict"] == "pass", (key, figures[key])
    assert summary["verdicts"].get("not run") == len(CUDA_ONLY)


def test_budget_skips_what_would_not_finish_and_still_writes_the_json(tmp_path, capsys,
                                                                      monkeypatch):
    # in this process (torch is usually imported already: no second start-up of a subprocess)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script adds bench/ to it
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # (its dataclasses look it up)
    spec.loader.exec_module(module)
    out = tmp_path / "gpu_check.json"
    handler = signal.getsignal(signal.SIGTERM)
    last = tmp_path / "last.json"
    assert module.main(["--tiny", "--device", "cpu", "--budget-s", "0.5", "--out", str(out),
                        "--last", str(last), "--parts", "snapshot_torn,llama_float64"]) == 0
    assert last.read_text() == out.read_text()
    assert signal.getsignal(signal.SIGTERM) is handler
    summary = json.loads(out.read_text())
    stdout = capsys.readouterr().out
    assert summary["finished"] is True
    assert list(summary["parts"]) == ["snapshot_torn", "llama_float64"]
    for name, part in summary["parts"].items():
        assert part["status"] == "skipped: budget", (name, part)
        assert all(f["verdict"] == "skipped: budget" and f["target"] for f in part["figures"])
    assert "skipped: budget" in stdout
    # the rerun of what a run left unfinished (parts absent from the file count as unfinished)
    summary["parts"]["snapshot_torn"]["status"] = "done"
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps(summary))
    assert module.main(["--tiny", "--device", "cpu", "--budget-s", "0.5", "--out", str(out),
                        "--unfinished-from", str(earlier), "--last", ""]) == 0
    assert json.loads(out.read_text())["order"] == [p for p in PARTS if p != "snapshot_torn"]
