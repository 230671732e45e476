"""The one history reader (``ww_callbacks.history_reader``) on what real runs leave behind: a torn
line in the middle (a crash, then a rerun into the same folder), bytes that are not UTF-8,
wrong-typed fields, newer formats, two runs in one file; read the same way by ``load_history``,
the watcher's resume, ``report`` and ``compare`` (real processes). Property-based: arbitrary
bytes and arbitrary JSON lines give records or one-line problems, never another exception, at a
cost linear in the input."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.faults import kill_when
from ww_callbacks import history_reader
from ww_callbacks.history import HISTORY_FILE, HistoryWriter, load_history, read_records

HISTORY_FORMAT = history_reader.HISTORY_FORMAT
check_record, parse_line = history_reader.check_record, history_reader.parse_line
read_history_file = history_reader.read_history_file


def run_cli(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ww_callbacks", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


# A training loop writing every step into LOG_DIR until it is killed (or STEPS steps are done).
_LOOP = textwrap.dedent("""
    import sys, torch, torch.nn as nn
    from ww_callbacks.integrations.torch import Watcher
    log_dir, steps = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 16))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with Watcher(model, log_dir=log_dir, every_n_steps=1, traps_every=0, tensorboard=False,
                 max_duty=None, wait="always") as w:
        for step in range(steps):
            opt.zero_grad()
            model(torch.randn(8, 32)).pow(2).mean().backward()
            opt.step()
            w.step()
            print(step, flush=True)
    print("run", w.history.writer["run_id"], flush=True)
""")


def _train(log_dir: Path, steps: int) -> str:
    """A run of ``steps`` analysed steps in its own process; returns its run id."""
    done = subprocess.run([sys.executable, "-c", _LOOP, str(log_dir), str(steps)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split("run ")[-1].strip()


def _killed_run(log_dir: Path, at_least: int) -> None:
    """A run killed with SIGKILL once ``at_least`` analyses are in its history."""
    kill_when([sys.executable, "-c", _LOOP, str(log_dir), "100000"],
              lambda: (log_dir / HISTORY_FILE).exists()
              and len(read_records(log_dir)) >= at_least)


@pytest.fixture(scope="module")
def crashed_then_rerun(tmp_path_factory) -> tuple[Path, str]:
    """The issue's case: a run killed mid-write (its last line torn: the crash), then a rerun
    into the same folder without resume wiring; the torn line is in the middle of the file."""
    log_dir = tmp_path_factory.mktemp("crash")
    _killed_run(log_dir, 4)
    with open(log_dir / HISTORY_FILE, "ab") as fh:
        fh.write(b'{"step": 99, "layers": [{"longname": "0", "al')  # died inside a write
    second = _train(log_dir, 3)
    return log_dir, second


@pytest.mark.slow
def test_torn_line_mid_file_after_crash_and_rerun(crashed_then_rerun, tmp_path):
    log_dir, second = crashed_then_rerun
    lines = (log_dir / HISTORY_FILE).read_bytes().split(b"\n")
    torn = next(i for i, ln in enumerate(lines) if ln.startswith(b'{"step": 99'))
    assert torn < len(lines) - 2  # in the middle: records of the rerun follow it
    read = read_history_file(log_dir)
    assert read.skipped == 1 and read.problems == [f"line {torn + 1}: not JSON (a torn or "
                                                   "damaged line)"]
    runs = read.runs()
    assert len(runs) == 2 and runs[1].writers == [second]
    second_steps = [r["step"] for r in runs[1].records]
    assert second_steps[:3] == [0, 1, 2]  # (and the final analysis at close)
    first_steps = [r["step"] for r in runs[0].records]
    assert first_steps[:4] == [0, 1, 2, 3]

    # load_history: every run's records (as before), what was skipped in attrs
    frame = load_history(log_dir, level="model")
    assert list(frame["step"]) == first_steps + second_steps
    assert frame.attrs["history_problems"] == read.problems and len(frame.attrs["runs"]) == 2
    assert list(load_history(log_dir, level="model", run="newest")["step"]) == second_steps

    # report: exit 0, the newest run only, the page says there were two, --run picks the first
    out = tmp_path / "r.html"
    proc = run_cli("report", log_dir, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "holds 2 runs" in proc.stderr and "1 line(s) skipped" in proc.stderr
    from tests.test_report import page_data

    data = page_data(out)
    assert data["steps"] == second_steps
    assert any("holds 2 runs" in n and f"shown: run {second} (the newest)" in n
               for n in data["notes"])
    proc = run_cli("report", log_dir, "-o", out, "--run", runs[0].run_id[:8])
    assert proc.returncode == 0, proc.stderr
    assert page_data(out)["steps"] == first_steps  # never the two runs' steps interleaved
    proc = run_cli("report", log_dir, "-o", out, "--run", "nosuchrun")
    assert proc.returncode == 2 and "no run 'nosuchrun'" in proc.stderr

    # compare: the newest run's last analysis against the first run's
    proc = run_cli("compare", log_dir, log_dir, "--format", "json", "--run", runs[0].run_id)
    assert proc.returncode == 0, proc.stderr
    assert "holds 2 runs" in proc.stderr


@pytest.mark.slow
def test_resume_over_a_mid_file_torn_line_keeps_every_readable_record(crashed_then_rerun,
                                                                      tmp_path):
    """``truncate_after`` (a resume) reads with the same reader: the torn line goes, the
    records up to the step stay, a JSON line that is not an analysis stays."""
    import shutil

    log_dir = tmp_path / "copy"
    shutil.copytree(crashed_then_rerun[0], log_dir)
    with open(log_dir / HISTORY_FILE, "a") as fh:
        fh.write(json.dumps({"kind": "metadata a later version writes"}) + "\n")
    before = read_history_file(log_dir)
    writer = HistoryWriter(log_dir / HISTORY_FILE)
    dropped = writer.truncate_after(1)
    after = read_history_file(log_dir)
    assert after.skipped == 0 and after.other == 1
    assert [r["step"] for r in after.records] == [r["step"] for r in before.records
                                                  if r["step"] <= 1]
    assert dropped == before.skipped + len(before.records) - len(after.records)
    assert not list(log_dir.glob("*.tmp"))


def _record(step=0, **extra) -> dict:
    return {"format": 1, "step": step, "epoch": None, "wall_time": 1.0, "duration_s": 0.1,
            "randomized": False, "summary": {"ww/alpha_mean": 3.0},
            "layers": [{"layer_id": 0, "longname": "l0", "alpha": 3.0, "status": "success"}],
            "writer": {"run_id": "abc", "pid": 1, "host": "h"}, **extra}


def test_bad_fields_and_bytes_give_one_line_problems_and_the_cli_reads_the_rest(tmp_path):
    lines = [json.dumps(_record(0)).encode(),
             b'{"format": 1, "step": NaN, "layers": []}',
             b'{"format": 1, "step": Infinity, "layers": []}',
             json.dumps(_record("5")).encode(),
             json.dumps(_record(3, format="1")).encode(),
             json.dumps(_record(4, format=2)).encode(),
             json.dumps(_record(6, epoch=1.5)).encode(),
             json.dumps(_record(7, layers=[{"longname": "l0", "alpha": "3"}])).encode(),
             json.dumps(_record(8, layers="l0")).encode(),
             json.dumps(_record(9, randomized="yes")).encode(),
             json.dumps(_record(True)).encode(),
             json.dumps(_record(11)).replace('"l0"', '"l\\u00e9"').encode().replace(
                 b"\\u00e9", b"\xff\xfe"),  # a name with bytes that are not UTF-8
             b"[" * 200_000,  # nested past the parser's recursion limit
             b"1" * 5000,  # past Python's int digit limit
             json.dumps({"loss": 1.0}).encode(),  # not an analysis: passed over
             json.dumps(_record(12)).encode()]
    (tmp_path / HISTORY_FILE).write_bytes(b"\n".join(lines) + b"\n")
    read = read_history_file(tmp_path)
    assert [r["step"] for r in read.records] == [0, 11, 12]
    assert read.records[1]["layers"][0]["longname"] == "l\ufffd\ufffd"
    assert read.replaced == 1 and read.other == 1 and read.newer == 1
    expected = [
        "line 2: 'step' is nan, not an integer", "line 3: 'step' is inf, not an integer",
        "line 4: 'step' is '5', not an integer", "line 5: 'format' is '1', not an integer",
        f"line 6: history format 2; this version reads up to {HISTORY_FORMAT} (written by a "
        "newer ww_callbacks: upgrade it)",
        "line 7: 'epoch' is 1.5, not an integer or null",
        "line 8: layer 0: 'alpha' is '3', not a number",
        "line 9: 'layers' is 'l0', not a list",
        "line 10: 'randomized' is 'yes', not true or false",
        "line 11: 'step' is True, not an integer",
        "line 12: bytes that are not UTF-8 replaced",
        "line 13: nested too deeply to be a history record",
        "line 14: not JSON (a torn or damaged line)"]
    assert read.problems == expected
    assert read.skipped == 12 and all("\n" not in p for p in read.problems)
    # load_history and the watcher's reader agree
    assert [r["step"] for r in read_records(tmp_path)] == [0, 11, 12]
    assert list(load_history(tmp_path, level="model")["step"]) == [0, 11, 12]
    # the command line: report and compare read the rest, say what was skipped, exit 0
    out = tmp_path / "r.html"
    proc = run_cli("report", tmp_path, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "12 line(s) skipped" in proc.stderr and "not UTF-8 replaced" in proc.stderr
    proc = run_cli("compare", tmp_path, tmp_path / HISTORY_FILE, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert [r["longname"] for r in json.loads(proc.stdout)] == ["l0"]


def test_only_newer_records_is_one_error_naming_the_format(tmp_path):
    (tmp_path / HISTORY_FILE).write_text(json.dumps(_record(0, format=2)) + "\n")
    proc = run_cli("report", tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "history format 2; this version reads up to 1" in line and "newer" in line


def test_a_fifo_named_like_the_history_is_refused_not_waited_on(tmp_path):
    import os

    os.mkfifo(tmp_path / HISTORY_FILE)
    proc = run_cli("report", tmp_path / HISTORY_FILE, timeout=60)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr


# ----------------------------------------------------------------------------- properties

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=30)
_keys = st.sampled_from(["format", "step", "epoch", "wall_time", "duration_s", "randomized",
                         "summary", "layers", "writer", "scalars", "spectra"])
_recordish = st.dictionaries(_keys, _json | st.lists(st.dictionaries(
    st.sampled_from(["longname", "alpha", "layer_id", "status", "rand_num_spikes"]), _json,
    max_size=5), max_size=3), max_size=11).map(lambda d: {"step": 0, "layers": [], **d})


def _check(read) -> None:
    for record in read.records:
        assert check_record(record) is None
        assert isinstance(record["step"], int) and isinstance(record["layers"], list)
    for problem in read.problems:
        assert re.fullmatch(r"line \d+: [^\n]{1,200}", problem), problem
    assert len(read.problems) <= max(read.skipped + read.replaced, 0)
    read.runs()  # grouping never fails on what the reader kept
    read.summary()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_give_records_or_problems(tmp_path, data):
    path = tmp_path / "h.jsonl"
    path.write_bytes(data)
    _check(read_history_file(path))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(values=st.lists(_json | _recordish, max_size=8))
def test_arbitrary_json_lines_give_records_or_problems(tmp_path, values):
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(v, allow_nan=True) + "\n" for v in values))
    read = read_history_file(path)
    _check(read)
    assert len(read.records) + read.skipped + read.other == len(values)
    for value in values:
        kind, record, reason = parse_line(json.dumps(value, allow_nan=True).encode())
        assert kind in ("record", "other", "problem")
        assert (kind == "problem") == bool(reason)


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_cost_is_linear_in_the_input(tmp_path):
    """Pathological lines (deep nesting, 4000-digit numbers, bad bytes, long strings) cost per
    byte about what well-formed records cost: each kind of file is read at two sizes, the
    larger 4x the smaller, and its time grows about 4x (not 16x), within a bound relative to
    well-formed records of the same size (ratios in one run, not absolute times)."""
    good = (json.dumps(_record(1)) + "\n").encode()
    kinds = {"good": good, "nested": b"[" * 5000 + b"\n", "digits": b"9" * 4000 + b"\n",
             "bytes": b"\xff\xfe" * 200 + b"\n", "string": b'"' + b"a" * 10000 + b"\n"}
    size = 500_000
    times = {}
    for name, line in kinds.items():
        for factor in (1, 4):
            path = tmp_path / f"{name}{factor}.jsonl"
            path.write_bytes(line * (factor * size // len(line) + 1))
            times[name, factor] = _best(lambda p=path: read_history_file(p))
    for name in kinds:
        # 4x the bytes: under 10x the time (a quadratic cost would be 16x; json's own per-line
        # cost varies ~2x with the machine's load); 100 ms of slack for the cheap kinds
        assert times[name, 4] < 10 * times[name, 1] + 0.1, (name, times)
        assert times[name, 4] < 5 * times["good", 4] + 0.2, (name, times)
    assert math.isfinite(sum(times.values()))
