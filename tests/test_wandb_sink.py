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
import re
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


def media_tables(root: Path, key: str) -> list[tuple[int, dict]]:
    """The table files W&B wrote for ``key`` (``media/table/<key>_<_step>_<hash>.table.json``),
    as ``(_step, table)``, oldest first."""
    folder, _, name = key.rpartition("/")
    files = Path(root).glob(f"**/offline-run-*/files/media/table/{folder}/{name}_*.table.json")
    found = []
    for path in files:
        step = path.name[len(name) + 1:].split("_")[0]
        if step.isdigit():  # (not another key that starts with the same name)
            found.append((int(step), json.loads(path.read_text())))
    return sorted(found, key=lambda item: item[0])


def config_items(path: Path) -> dict[tuple[str, ...], object]:
    """The run's config updates in the ``.wandb`` file's config records, keyed by their key path
    (``("_wandb", "visualize", <chart key>)`` for a custom chart; later records win)."""
    config: dict = {}
    for record in scan_records(path):
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                key = (item.key,) if item.key else tuple(item.nested_key)
                config[key] = json.loads(item.value_json)
    return config


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

    # the increments of the one table (issue 20): the rows of step 0, of steps 3 and 6, of 9
    tables = table_files(wandb_offline)
    assert len(tables) == 3
    results = [result for result, _ in recorder.delivered]
    columns = [*TABLE_COLUMNS, STEP_COLUMN]
    for table, tabled in zip(tables, ([results[0]], results[1:3], [results[3]]), strict=True):
        assert table["columns"] == columns
        assert [r[-1] for r in table["data"]] == [
            result.step for result in tabled for _ in range(len(result.details))]
        for result in tabled:
            mine = [r for r in table["data"] if r[-1] == result.step]
            assert [r[0] for r in mine] == list(result.details["longname"])
            alphas = [r[columns.index("alpha")] for r in mine]
            assert alphas == pytest.approx(list(result.details["alpha"]), rel=1e-12)
            assert [r[columns.index("N")] for r in mine] == list(result.details["N"])
            counted = [r[columns.index("num_traps")] is not None for r in mine]
            assert counted == [result.randomized] * len(mine)  # traps counted at that step


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
    # no scalars: the table, the stored ESDs as histograms (issue 20) and the step only
    assert keys == {"trainer/global_step"} | {
        k for k in keys if k.startswith((f"{TABLE_KEY}.", "ww_esd/"))}
    tabled = [r["trainer/global_step"] for r in rows if f"{TABLE_KEY}._type" in r]
    assert tabled == [0, 4]  # writes 0 and 2; 4 tabled
    assert all(f"{TABLE_KEY}._type" in r or "ww_esd/0._type" in r for r in rows)
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
    assert [r["ww/step"] for r in rows if "ww/alpha_mean" in r] == [1, 2]
    assert not any(f"{TABLE_KEY}._type" in r for r in rows)
    # besides: the final analysis' ESDs, stored at the close (issue 20), in a row of their own
    others = [r for r in rows if "ww/alpha_mean" not in r]
    assert [r["ww/step"] for r in others] == [2]
    assert {k.split(".")[0] for k in others[0] if not k.startswith("_")} == {
        "ww/step", "ww_esd/0", "ww_esd/2", "ww_esd/4"}


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


def test_one_table_the_alpha_chart_and_the_stored_esds(wandb_offline, tmp_path):
    """Issue 20: ONE ``ww/layers`` table across the run (every analysed step's rows, a ``step``
    column), every layer's alpha as one line chart (``line_series``: a line per layer, keyed by
    its name) at the picture cadence and at the end, the stored ESDs (the history's sidecar,
    ``esd_every``) as histograms at the same steps, and the mid-run pictures (not only the final
    frame): all read back from the offline run."""
    run = wandb.init(project="ww-test", dir=wandb_offline)
    recorder = Recorder()
    sink = WandbSink(run, table_every=2, images_every=2, picture_duty=None)
    log_dir = tmp_path / "logs"
    watcher = Watcher(sinks=[recorder, sink], traps_every=2, esd_every=2, log_dir=log_dir)
    train_and_watch(watcher, mlp(), [0, 2, 4, 6, 8])
    watcher.close()
    run.finish()

    path = run_file(wandb_offline)
    rows = history_rows(wandb_records(path))
    results = [result for result, _ in recorder.delivered]
    steps = [r.step for r in results]
    assert steps == [0, 2, 4, 6, 8]
    layers = list(results[0].details["longname"])

    # ONE table: each log of ww/layers is an increment of the same incremental table, and the
    # increments together hold every analysed step's rows, in order
    table_rows = [r for r in rows if f"{TABLE_KEY}._type" in r]
    assert {r[f"{TABLE_KEY}._type"] for r in table_rows} == {"incremental-table-file"}
    assert [r[f"{TABLE_KEY}.increment_num"] for r in table_rows] == list(range(len(table_rows)))
    assert [r["ww/step"] for r in table_rows] == [0, 4, 8]  # table_every=2, and the close
    increments = media_tables(wandb_offline, TABLE_KEY)
    assert len(increments) == len(table_rows)
    columns = [*TABLE_COLUMNS, STEP_COLUMN]
    assert all(table["columns"] == columns for _, table in increments)
    data = [row for _, table in increments for row in table["data"]]
    assert len(data) == len(layers) * len(results)
    assert [row[-1] for row in data] == [s for s in steps for _ in layers]
    for result in results:
        mine = [row for row in data if row[-1] == result.step]
        assert [row[0] for row in mine] == list(result.details["longname"])
        alphas = [row[columns.index("alpha")] for row in mine]
        assert alphas == pytest.approx(list(result.details["alpha"]), rel=1e-12)
        traps = [row[columns.index("num_traps")] for row in mine]
        if result.randomized:
            assert traps == list(result.details["rand_num_spikes"].astype(int))
        else:
            assert traps == [None] * len(layers)  # not counted at this step: an empty cell
    # the sink keeps only the rows not logged yet (W&B's table would keep the whole run)
    assert sink.layers.pending == 0 and sink.layers.table.data == []

    # the alpha chart: one line per layer, logged when pictures were due and at the end
    chart_key = "ww_plots/alpha_by_layer"
    chart_rows = [r for r in rows if f"{chart_key}_table._type" in r]
    frames = [r["ww/step"] for r in rows if "ww_plots/alpha_heatmap._type" in r]
    assert [r["ww/step"] for r in chart_rows] == frames == [2, 6, 8]
    charts = media_tables(wandb_offline, f"{chart_key}_table")
    assert len(charts) == len(chart_rows)
    _, last = charts[-1]
    assert last["columns"] == ["step", "lineKey", "lineVal"]
    for name in layers:
        line = [(x, y) for x, key, y in last["data"] if key == name]
        expected = [(r.step, float(r.details.set_index("longname").loc[name, "alpha"]))
                    for r in results]
        assert [x for x, _ in line] == [x for x, _ in expected]
        assert [y for _, y in line] == pytest.approx([y for _, y in expected], rel=1e-12)
    panel = config_items(path)[("_wandb", "visualize", chart_key)]["panel_config"]
    assert panel["panelDefId"] == "wandb/lineseries/v0"
    assert f'"value": "{chart_key}_table"' in json.dumps(panel["userQuery"])  # its data

    # the ESD histograms: at the steps the session stored ESDs in its sidecar, the same bins
    stored = [json.loads(line) for line in (log_dir / "ww_spectra.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stored] == [r.step for r in results if r.esd]
    assert 1 < len(stored) < len(results)  # on the esd_every schedule, not every analysis
    hist_rows = {r["ww/step"]: r for r in rows if f"ww_esd/{layers[0]}._type" in r}
    assert sorted(hist_rows) == [s["step"] for s in stored]
    for record in stored:
        row = hist_rows[record["step"]]
        for name, esd in record["layers"].items():
            assert row[f"ww_esd/{name}._type"] == "histogram"
            assert row[f"ww_esd/{name}.values"] == esd["counts"]
            edges = row[f"ww_esd/{name}.bins"]
            assert len(edges) == len(esd["counts"]) + 1
            assert edges[0] == pytest.approx(esd["log10_lo"], abs=1e-6)
            assert edges[-1] == pytest.approx(esd["log10_hi"], abs=1e-6)
            if "rand_counts" in esd:
                assert row[f"ww_esd_rand/{name}.values"] == esd["rand_counts"]
            else:
                assert f"ww_esd_rand/{name}._type" not in row
    assert any("rand_counts" in esd for s in stored for esd in s["layers"].values())


def synthetic_result(step: int, layers: int = 3):
    """An analysis result with made-up numbers (no analysis: the table's schedule is tested)."""
    import pandas as pd

    from ww_callbacks.results import AnalysisResult

    details = pd.DataFrame({"longname": [f"layer.{i}" for i in range(layers)],
                            "layer_id": list(range(layers)), "N": [64] * layers,
                            "M": [32] * layers, "alpha": [2.0 + step / 1000 + i
                                                           for i in range(layers)],
                            "status": ["success"] * layers})
    return AnalysisResult(step, None, details, {}, 0.0, 0.0, False)


def test_the_table_stays_within_the_limits_of_w_and_b(wandb_offline, monkeypatch):
    """A long run: the one table's increments stay under the 100 that W&B shows (the interval
    doubles every DOUBLE_EVERY increments), no increment passes ``wandb.Table.MAX_ROWS``
    (W&B would cut it), every row is logged exactly once, and the sink never holds more rows
    than those not logged yet (W&B's table object alone would keep the whole run)."""
    from ww_callbacks.integrations.wandb_panels import DOUBLE_EVERY

    monkeypatch.setattr(wandb.Table, "MAX_ROWS", 20)  # W&B's documented override
    run = wandb.init(project="ww-test", dir=wandb_offline)
    sink = WandbSink(run, scalars=False, table_every=1, images_every=0)
    writes = 7 * DOUBLE_EVERY + 10  # 3-layer analyses for 60 increments, then 10 of 8 layers
    most = 0
    for step in range(writes):
        sink.write(synthetic_result(step, layers=3 if step < writes - 10 else 8), {})
        most = max(most, len(sink.layers.table.data))
        assert len(sink.layers.table.data) == sink.layers.pending
    sink.close()
    run.finish()

    increments = media_tables(wandb_offline, TABLE_KEY)
    sizes = [len(table["data"]) for _, table in increments]
    assert max(sizes) <= 20 and most <= 20
    data = [row for _, table in increments for row in table["data"]]
    expected = [(step, f"layer.{i}") for step in range(writes)
                for i in range(3 if step < writes - 10 else 8)]
    assert [(row[-1], row[0]) for row in data] == expected
    # at table_every=1: 20 increments of 1 analysis, 20 of 2, 20 of 4, then 8 analyses or
    # fewer when 8-layer analyses would pass 20 rows, and the close
    steps_per_increment = [len({row[-1] for row in table["data"]}) for _, table in increments]
    assert steps_per_increment[:3 * DOUBLE_EVERY] == [1] * 20 + [2] * 20 + [4] * 20
    assert len(increments) < 100


def test_hostile_layer_names_reach_every_w_and_b_output(wandb_offline):
    """Layer names are data (tests/test_names.py's hostile set: escape sequences, ``$\\frac$``,
    300 characters, names that sanitise alike, markdown, bidi, line breaks): the one table, the
    chart's legend and the ESD histograms (``ww_esd/<name>``, as the per-layer scalars) carry
    every layer, and no write fails."""
    from test_names import HOSTILE, MARKDOWN

    HOSTILE = [MARKDOWN if "." in name else name for name in HOSTILE]  # (no "." in a module)
    run = wandb.init(project="ww-test", dir=wandb_offline)
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    for name in HOSTILE:
        model.add_module(name, torch.nn.Linear(40, 40))
    sink = WandbSink(run, table_every=1, images_every=1, picture_duty=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", WatcherWarning)  # a failed write would warn
        watcher = Watcher(sinks=[sink], traps_every=1, esd_every=1)
        for step in (0, 1):
            assert watcher.snapshot(model, step)
            assert watcher.wait_idle(60)
            watcher.poll()
        watcher.close()
    run.finish()

    rows = history_rows(wandb_records(run_file(wandb_offline)))
    data = [row for _, table in media_tables(wandb_offline, TABLE_KEY) for row in table["data"]]
    assert [row[0] for row in data] == HOSTILE * 2
    _, chart = media_tables(wandb_offline, "ww_plots/alpha_by_layer_table")[-1]
    assert {key for _, key, _ in chart["data"]} == set(HOSTILE)
    for name in HOSTILE:
        assert [r["ww/step"] for r in rows if f"ww_esd/{name}._type" in r] == [0, 1]
        assert [r["ww/step"] for r in rows if f"ww_alpha/{name}" in r] == [0, 1]
    # the ESD pictures: W&B writes them to files named after their key, so a layer's part of the
    # key is a bounded file-name part (a 300-character name failed the write before)
    esd_keys = {k.split("._type")[0] for r in rows for k in r
                if k.startswith("ww_esd_plot/") and k.endswith("._type")}
    assert len(esd_keys) == len(HOSTILE)
    assert all(re.fullmatch(r"ww_esd_plot/[A-Za-z0-9._-]{1,80}", k) for k in esd_keys)
    assert "ww_esd_plot/same_name" in esd_keys  # a plain name stays as it is


def test_the_training_thread_only_logs_ready_objects(wandb_offline, monkeypatch):
    """The slow W&B work is off the training thread (issue 20; RESULTS.md 14): the table's rows
    are type-checked in the analysis thread (``prepare``), the alpha chart is built in the
    sink's thread; the training thread logs them, and the run still holds every row and the
    chart of the last step."""
    import ww_callbacks.integrations.wandb as sink_module
    import ww_callbacks.integrations.wandb_panels as panels

    threads: dict[str, set[str]] = {"rows": set(), "chart": set()}
    table_rows, chart = panels.table_rows, sink_module.alpha_chart

    def rows_spy(result):
        threads["rows"].add(threading.current_thread().name)
        return table_rows(result)

    def chart_spy(*args):
        threads["chart"].add(threading.current_thread().name)
        return chart(*args)

    monkeypatch.setattr(panels, "table_rows", rows_spy)
    monkeypatch.setattr(sink_module, "alpha_chart", chart_spy)
    run = wandb.init(project="ww-test", dir=wandb_offline)
    recorder = Recorder()
    sink = WandbSink(run, table_every=2, images_every=2, picture_duty=None)
    watcher = Watcher(sinks=[recorder, sink], traps_every=0)
    train_and_watch(watcher, mlp(), [0, 1, 2, 3, 4])
    watcher.close()
    run.finish()

    main = threading.main_thread().name
    assert threads["rows"] and main not in threads["rows"]
    assert threads["chart"] and main not in threads["chart"]
    data = [row for _, table in media_tables(wandb_offline, TABLE_KEY) for row in table["data"]]
    results = [result for result, _ in recorder.delivered]
    assert [row[-1] for row in data] == [r.step for r in results for _ in range(len(r.details))]
    rows = history_rows(wandb_records(run_file(wandb_offline)))
    assert [r["ww/step"] for r in rows if "ww_plots/alpha_by_layer_table._type" in r] == [1, 3, 4]
