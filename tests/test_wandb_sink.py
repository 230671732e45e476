"""WandbSink against real W&B runs in offline mode (nothing leaves the machine), read back from
the run's ``.wandb`` transaction log.

The log is read with W&B's own reader, ``wandb leet inspect --json`` (wandb-core, one JSON record
per line), cross-checked against a small reader of the on-disk framing that decodes each record
with W&B's protobuf schema, ``wandb.proto.wandb_internal_pb2.Record`` (the only reader where W&B
predates ``leet``).
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")
torch = pytest.importorskip("torch")

from ww_callbacks.faults import WatcherWarning  # noqa: E402
from ww_callbacks.integrations.wandb import (  # noqa: E402
    STEP_COLUMN,
    TABLE_COLUMNS,
    TABLE_KEY,
    WandbSink,
)
from ww_callbacks.policies import (  # noqa: E402
    HTSREarlyStopping,
    LayerLRBalancer,
    TorchTarget,
    TrapRemoval,
    param_groups_per_layer,
)
from ww_callbacks.session import WatchSession as Watcher  # noqa: E402
from ww_callbacks.tags import wandb_globs  # noqa: E402

# ---------------------------------------------------------------------------------- helpers




def run_file(root: Path) -> Path:
    """The one offline run's transaction log under ``root``."""
    files = sorted(Path(root).glob("**/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    return files[0]


def leet_records(path: Path) -> list[dict] | None:
    """Every record of a ``.wandb`` file as ``wandb leet inspect --json`` prints them (W&B's own
    reader, in wandb-core), or None when this W&B has no ``leet inspect`` (before 0.2x)."""
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json",
                           str(path)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        return None
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def scan_records(path: Path) -> list:
    """The records of a ``.wandb`` file decoded with ``wandb_internal_pb2.Record``: a 7-byte
    header (``:W&B``, magic 0xBEE1, version 0), then LevelDB-log framing in 32 KiB blocks
    (crc32 of type + data, uint16 length, type FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0)
    block, records, parts, pos = 32768, [], [], 7
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding up to the block's end
            pos += block - pos % block
            continue
        payload = data[pos + 7:pos + 7 + length]
        assert zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == checksum
        parts.append(payload)
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
            parts = []
    return records


def scanned_records(path: Path) -> list[dict]:
    """The history and metric records of :func:`scan_records` in ``leet inspect``'s shape."""
    from google.protobuf.json_format import MessageToDict

    out = []
    for record in scan_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            item = {(i.key or ".".join(i.nested_key)): json.loads(i.value_json)
                    for i in record.history.item}
            out.append({"type": "history", "history": {"item": item}})
        elif kind == "metric":
            metric = MessageToDict(record.metric, preserving_proto_field_name=True)
            out.append({"type": "metric", "metric": metric})
    return out


def _wait_until_written(path: Path, timeout: float = 20.0) -> None:
    """W&B's service may still be appending to the file just after ``run.finish()``: wait until
    its size holds still for half a second."""
    deadline = time.monotonic() + timeout
    size = -1
    while time.monotonic() < deadline:
        now = Path(path).stat().st_size
        if now == size and now > 0:
            return
        size = now
        time.sleep(0.5)


def wandb_records(path: Path) -> list[dict]:
    """The records of a ``.wandb`` file: W&B's ``leet inspect`` cross-checked against the
    protobuf reader (history rows and metric definitions must agree), or the protobuf reader
    alone where W&B has no ``leet``."""
    _wait_until_written(path)
    scanned = scanned_records(path)
    leet = leet_records(path)
    if leet is None:
        return scanned

    def parts(records: list[dict]) -> tuple[list, list]:
        return (history_rows(records),
                [r["metric"] for r in records if r["type"] == "metric"])

    assert parts(leet) == parts(scanned)
    return leet


def history_rows(records: list[dict]) -> list[dict]:
    """The logged rows (``history`` records), in order."""
    return [r["history"]["item"] for r in records if r["type"] == "history"]


class Recorder:
    """A sink keeping what the watcher delivered."""

    def __init__(self):
        self.delivered: list[tuple] = []

    def write(self, result, scalars):
        self.delivered.append((result, dict(scalars)))

    def close(self):
        pass


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 96), torch.nn.ReLU(), torch.nn.Linear(96, 10))


def train_and_watch(watcher: Watcher, model: torch.nn.Module, steps: list[int],
                    log=None) -> None:
    """A few SGD steps between snapshots; each analysis is delivered before the next step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(256, 64, generator=gen), torch.randint(0, 10, (256,), generator=gen)
    done = 0
    for step in steps:
        for _ in range(step - done):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            if log is not None:
                log({"loss": loss.item()})
        done = step
        assert watcher.snapshot(model, step)
        assert watcher.wait_idle(30)
        watcher.poll()


def table_files(root: Path) -> list[dict]:
    """The logged ``ww/layers`` tables (the JSON files W&B wrote), oldest first."""
    files = sorted(Path(root).glob("**/offline-run-*/files/media/table/ww/layers_*.table.json"),
                   key=lambda p: int(p.name.split("_")[1]))
    return [json.loads(p.read_text()) for p in files]


# ---------------------------------------------------------------------------------- tests


def test_offline_run_holds_every_result(wandb_offline):
    run = wandb.init(project="ww-test", dir=wandb_offline)
    recorder = Recorder()
    sink = WandbSink(run, table_every=2, images_every=0)
    watcher = Watcher(sinks=[recorder, sink], traps_every=2)
    train_and_watch(watcher, mlp(), [0, 3, 6, 9], log=run.log)
    watcher.close()
    # close() kept the user's run open: it is still the current run (finish() would unset it)
    assert run.settings.run_id and wandb.run is run
    run.finish()

    path = run_file(wandb_offline)
    records = wandb_records(path)
    rows = history_rows(records)

    ww_rows = [r for r in rows if "ww/step" in r]
    assert [r["ww/step"] for r in ww_rows] == [0, 3, 6, 9, 9]  # the last: close()'s table
    assert [r["_step"] for r in rows] == list(range(len(rows)))  # no step= passed, none dropped
    by_step = {r["ww/step"]: r for r in ww_rows[:4]}
    assert len(recorder.delivered) == 4
    for result, scalars in recorder.delivered:
        row = by_step[result.step]
        assert row["ww/alpha_mean"] == result.summary["ww/alpha_mean"]
        for longname, alpha, aw in zip(result.details["longname"], result.details["alpha"],
                                       result.details["alpha_weighted"], strict=True):
            assert row[f"ww_alpha/{longname}"] == alpha
            assert row[f"ww_alpha_weighted/{longname}"] == aw
        assert {k: row[k] for k in scalars} == scalars  # every scalar, nothing else changed
        assert ("ww_traps/0" in row) == result.randomized
    assert {r["ww/step"] for r in ww_rows if f"{TABLE_KEY}._type" in r} == {0, 6, 9}

    metrics = [r["metric"] for r in records if r["type"] == "metric"]
    assert {"name": "ww/step", "options": {"defined": True}} in metrics
    globs = {m["glob_name"]: m["step_metric"] for m in metrics if "glob_name" in m}
    # every tag family of the registry, the policies' included (issue 9 item 5)
    assert globs == {glob: "ww/step" for glob in wandb_globs()}
    assert {"ww/*", "ww_alpha/*", "ww_alpha_weighted/*", "ww_traps/*", "ww_lr_scale/*",
            "ww_traps_removed/*"} <= set(globs)

    tables = table_files(wandb_offline)
    assert len(tables) == 3
    expected = [recorder.delivered[i][0] for i in (0, 2, 3)]
    for table, result in zip(tables, expected, strict=True):
        columns = [c for c in TABLE_COLUMNS if c in result.details.columns] + [STEP_COLUMN]
        assert table["columns"] == columns
        assert ("num_traps" in columns) == result.randomized
        assert [r[0] for r in table["data"]] == list(result.details["longname"])
        alphas = [r[columns.index("alpha")] for r in table["data"]]
        assert alphas == pytest.approx(list(result.details["alpha"]), rel=1e-12)
        assert [r[columns.index("N")] for r in table["data"]] == list(result.details["N"])


def test_lightning_style_logs_only_the_table(wandb_offline):
    """``scalars=False`` with the host's step metric: rows hold the table and the step only,
    and the host's step metric is not redefined."""
    run = wandb.init(project="ww-test", dir=wandb_offline)
    run.define_metric("trainer/global_step")  # what Lightning's WandbLogger does
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    sink = WandbSink(run, scalars=False, step_metric="trainer/global_step", table_every=2,
                     images_every=0)
    watcher = Watcher(sinks=[sink], traps_every=0)
    train_and_watch(watcher, mlp(), [0, 2, 4])
    watcher.close()
    run.finish()

    records = wandb_records(run_file(wandb_offline))
    rows = history_rows(records)
    keys = {k for r in rows for k in r if not k.startswith("_")}
    assert keys == {"trainer/global_step"} | {k for k in keys if k.startswith(f"{TABLE_KEY}.")}
    assert [r["trainer/global_step"] for r in rows] == [0, 4]  # writes 0 and 2; 4 tabled
    metrics = [r["metric"] for r in records if r["type"] == "metric"]
    assert sum(m.get("name") == "trainer/global_step" for m in metrics) == 1  # the host's
    assert {m["glob_name"]: m["step_metric"] for m in metrics if "glob_name" in m} == {
        "*": "trainer/global_step", **{glob: "trainer/global_step" for glob in wandb_globs()}}
    assert len(table_files(wandb_offline)) == 2


def test_run_none_uses_the_active_run(wandb_offline):
    sink = WandbSink(table_every=0, images_every=0)
    watcher = Watcher(sinks=[sink], traps_every=0)
    model = mlp()
    with pytest.warns(WatcherWarning, match="no active W&B run"):
        train_and_watch(watcher, model, [0])  # no run yet: the sink fails, the watcher goes on
    run = wandb.init(project="ww-test", dir=wandb_offline)
    train_and_watch(watcher, model, [1, 2])
    assert sink.run is run
    watcher.close()
    assert wandb.run is run  # not finished by the sink
    run.finish()

    rows = history_rows(wandb_records(run_file(wandb_offline)))
    assert [r["ww/step"] for r in rows] == [1, 2]
    assert all("ww/alpha_mean" in r and f"{TABLE_KEY}._type" not in r for r in rows)


class FakeRun:
    """Records the calls a sink makes."""

    def __init__(self):
        self.logged: list[dict] = []
        self.defined: list[tuple] = []

    def define_metric(self, name, step_metric=None, **kwargs):
        self.defined.append((name, step_metric))

    def log(self, row):
        self.logged.append(row)


def test_write_from_another_thread_warns(wandb_offline):
    recorder = Recorder()
    watcher = Watcher(sinks=[recorder], traps_every=0)
    train_and_watch(watcher, mlp(), [0])
    watcher.close()
    (result, scalars), = recorder.delivered
    run = FakeRun()
    sink = WandbSink(run, table_every=0)

    caught: list = []

    def write():
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            sink.write(result, scalars)
            sink.write(result, scalars)
        caught.extend(seen)

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()
    assert [str(w.message) for w in caught if issubclass(w.category, WatcherWarning)] == [
        "WandbSink.write called from a thread other than the main one: wandb.log is not "
        "thread-safe; call Watcher.poll() from the training loop"]  # once per sink
    assert len(run.logged) == 2  # still logged: the data is not thrown away
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WandbSink(FakeRun(), table_every=0).write(result, scalars)  # main thread: silent


def test_table_cells_are_plain_values(wandb_offline):
    recorder = Recorder()
    watcher = Watcher(sinks=[recorder], traps_every=1)
    train_and_watch(watcher, mlp(), [0])
    watcher.close()
    (result, _), = recorder.delivered
    details = result.details.copy()
    details.loc[0, "status"] = "failed"
    details.loc[0, "alpha"] = math.nan
    result.details = details
    table = WandbSink(FakeRun()).table(result)
    assert table.columns == [*TABLE_COLUMNS, STEP_COLUMN]
    first = table.data[0]
    assert first[TABLE_COLUMNS.index("status")] == "failed"
    assert math.isnan(first[TABLE_COLUMNS.index("alpha")])
    assert all(type(v) in (str, int, float) for row in table.data for v in row)


def test_options_are_checked():
    with pytest.raises(ValueError, match="table_every"):
        WandbSink(FakeRun(), table_every=-1)


def _bound(key: str, globs: dict[str, str]) -> str | None:
    """The step metric W&B binds ``key`` to through a ``prefix/*`` glob."""
    for glob, step_metric in globs.items():
        if glob.endswith("/*") and key.startswith(glob[:-1]):
            return step_metric
    return None


def test_every_ww_key_of_every_policy_is_on_the_step_metric(wandb_offline):
    """With the three policies at work, every ww key logged (the policies' ``ww_lr_scale/*``,
    ``ww_traps_removed/*`` and ``ww/stop_reason`` included) is bound to ``ww/step``: read back
    from the offline run's metric records."""
    run = wandb.init(project="ww-test", dir=wandb_offline)
    model = mlp()
    opt = torch.optim.SGD(param_groups_per_layer(model), lr=0.05)
    policies = [LayerLRBalancer(), TrapRemoval(verbose=False), HTSREarlyStopping()]
    watcher = Watcher(sinks=[WandbSink(run, table_every=0)], policies=policies, traps_every=1,
                      target=TorchTarget(model, [opt]))
    train_and_watch(watcher, model, [0, 2, 4])
    watcher.close()
    run.finish()

    records = wandb_records(run_file(wandb_offline))
    metrics = [r["metric"] for r in records if r["type"] == "metric"]
    globs = {m["glob_name"]: m["step_metric"] for m in metrics if "glob_name" in m}
    keys = {k for row in history_rows(records) for k in row if not k.startswith("_")}
    keys = {k.split(".", 1)[0] if "._" in k or k.endswith("._type") else k for k in keys}
    assert any(k.startswith("ww_lr_scale/") for k in keys)
    assert "ww/stop_reason" in keys
    unbound = sorted(k for k in keys if k != "ww/step" and _bound(k, globs) != "ww/step")
    assert unbound == []
