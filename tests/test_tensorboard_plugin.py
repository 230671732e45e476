"""The HTSR tab of TensorBoard (``integrations/tensorboard_plugin.py`` and the shared views in
``ww_callbacks/views/``): the backend's run walk and incremental reads, its routes through
TensorBoard's own WSGI wrappers, the entry point, and (slow) a live ``tensorboard`` opened in
headless Chromium while another process trains and writes a history: TensorBoard and the
training run from a fresh virtual environment holding the BUILT WHEEL (its entry point and
asset files, not this checkout's), and the tab's views (heatmap, flow, lines, ESD) are driven
and checked through the DOM against the history."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
from tensorboard.plugins import base_plugin  # noqa: E402
from werkzeug.test import Client  # noqa: E402

from tests.chromium_pipe import Browser, script_errors  # noqa: E402
from tests.test_tensorboard_browser import CHROMIUM, artifacts_dir, free_port  # noqa: E402
from tests.test_views import fit_pixels_follow_axes  # noqa: E402
from ww_callbacks.history import (  # noqa: E402
    HISTORY_FILE,
    HistoryWriter,
    read_records,
    read_spectra,
)
from ww_callbacks.integrations.tensorboard_plugin import (  # noqa: E402
    HtsrPlugin,
    find_runs,
    read_after,
    slim_records,
)
from ww_callbacks.views import ASSET_FILES, asset  # noqa: E402


def _record(step: int, layers: dict[str, float]) -> dict:
    return {"format": 1, "step": step, "epoch": None, "wall_time": 0.0, "duration_s": 0.0,
            "randomized": True, "summary": {},
            "layers": [{"longname": n, "alpha": a, "status": "success", "num_evals": 64,
                        "rand_num_spikes": 1 if a < 2 else 0} for n, a in layers.items()]}


def test_entry_point_and_assets():
    names = {e.name: e.value for e in importlib.metadata.entry_points(group="tensorboard_plugins")}
    assert names.get("htsr") == "ww_callbacks.integrations.tensorboard_plugin:HtsrPlugin"
    for name in ASSET_FILES:
        assert asset(name)
    for text in (asset("heatmap.js"), asset("tensorboard_tab.js")):
        assert b"http://" not in text and b"https://" not in text  # nothing fetched elsewhere
    with pytest.raises(ValueError):
        asset("../__init__.py")


def test_find_runs_is_bounded_and_follows_no_symlink(tmp_path):
    logdir = tmp_path / "logs"
    for run in ("lightning_logs/version_0", "keras", "hf/runs/x", "a/b/c/d/e/f/g/h"):
        (logdir / run).mkdir(parents=True)
        (logdir / run / HISTORY_FILE).write_text("")
    (logdir / HISTORY_FILE).write_text("")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / HISTORY_FILE).write_text("")
    (logdir / "link").symlink_to(outside)
    (logdir / "filelink").mkdir()
    (logdir / "filelink" / HISTORY_FILE).symlink_to(outside / HISTORY_FILE)
    runs = find_runs(logdir)
    assert list(runs) == [".", "hf/runs/x", "keras", "lightning_logs/version_0"]  # too deep: no
    assert len(find_runs(logdir, max_dirs=1)) == 1


def test_read_after_keeps_torn_tail_and_resets_on_truncation(tmp_path):
    path = tmp_path / HISTORY_FILE
    path.write_bytes(b'{"step": 0}\n{"step": 1}\n{"step": 2')
    first = read_after(path, 0)
    assert first["lines"] == ['{"step": 0}', '{"step": 1}'] and first["next"] == 24
    assert not first["more"] and not first["reset"]
    assert read_after(path, first["next"])["lines"] == []  # the torn tail waits
    with open(path, "ab") as fh:
        fh.write(b', "x": 1}\n')
    assert read_after(path, first["next"])["lines"] == ['{"step": 2, "x": 1}']
    chunked = read_after(path, 0, max_bytes=13)
    assert chunked["lines"] == ['{"step": 0}'] and chunked["more"]
    long_line = read_after(path, 0, max_bytes=4)  # a line longer than the chunk: read on
    assert long_line["lines"] == ['{"step": 0}']
    path.write_bytes(b'{"step": 0}\n')  # a resumed run truncated it
    assert read_after(path, 24)["reset"]


def test_slim_records_align_layers_and_pass_actions(tmp_path):
    lines = [json.dumps(_record(0, {"a": 3.0, "b": 1.5})),
             json.dumps({"kind": "actions", "step": 0, "lr_scale": {"a": 1.1}, "writer": {}}),
             '{"step": 5, "torn',
             json.dumps(_record(5, {"b": float("nan"), "c": 4.0}))]
    slim = slim_records(lines)
    assert slim["layers"] == ["a", "b", "c"] and slim["skipped"] == 1
    assert slim["records"][0] == {"step": 0, "epoch": None, "a": [3.0, 1.5, None],
                                  "t": [0, 1, None], "n": [64, 64, None]}
    assert slim["records"][1]["a"] == [None, None, 4.0]  # NaN: no fit
    assert slim["actions"] == [{"kind": "actions", "step": 0, "lr_scale": {"a": 1.1}}]


def test_slim_records_pass_min_evals_for_trust():
    plain = slim_records([json.dumps(_record(0, {"a": 3.0}))])
    assert "min_evals_for_trust" not in plain  # the page's default (50) holds
    stated = slim_records([json.dumps({**_record(0, {"a": 3.0}), "min_evals_for_trust": 30})])
    assert stated["min_evals_for_trust"] == 30
    bad = slim_records([json.dumps({**_record(0, {"a": 3.0}), "min_evals_for_trust": "x"})])
    assert "min_evals_for_trust" not in bad


def test_routes_serve_only_new_records(tmp_path):
    run = tmp_path / "run1"
    writer = HistoryWriter(run / HISTORY_FILE)
    writer.append(_record(0, {"layer.0": 3.0}))
    plugin = HtsrPlugin(base_plugin.TBContext(logdir=str(tmp_path)))
    apps = plugin.get_plugin_apps()
    assert plugin.frontend_metadata().tab_name == "HTSR"

    def get(route: str, query: str = "") -> tuple[int, bytes]:
        response = Client(apps[route]).get(route, query_string=query)
        return response.status_code, response.get_data()

    assert json.loads(get("/runs")[1]) == {"runs": ["run1"]}
    code, body = get("/records", "run=run1&offset=0")
    first = json.loads(body)
    assert code == 200 and [r["step"] for r in first["records"]] == [0]
    code, body = get("/records", f"run=run1&offset={first['next']}")
    assert json.loads(body)["records"] == []  # nothing new: nothing sent
    writer.append(_record(10, {"layer.0": 2.5}))
    again = json.loads(get("/records", f"run=run1&offset={first['next']}")[1])
    assert [r["step"] for r in again["records"]] == [10]
    assert get("/records", "run=../etc&offset=0")[0] == 404
    assert get("/records", "run=run1&offset=-1")[0] == 400
    assert json.loads(get("/spectra", "run=run1&offset=0")[1])["records"] == []  # none yet
    writer.append_spectra(0, {"layer.0": {"counts": [1, 2], "alpha": 3.0, "bulk_max": None}})
    spectra = json.loads(get("/spectra", "run=run1&offset=0")[1])
    assert spectra["records"] == [{"step": 0, "layers": {"layer.0": {
        "counts": [1, 2], "alpha": 3.0, "bulk_max": None}}}]
    assert json.loads(get("/spectra", f"run=run1&offset={spectra['next']}")[1])["records"] == []
    code, body = get("/index.js")
    assert code == 200 and b"render" in body
    for name in ASSET_FILES:  # every module the page imports, by its own name
        code, body = get(f"/{name}")
        assert code == 200 and body == asset(name), name
    writer.close()


def test_full_chunks_are_parsed_once(tmp_path, monkeypatch):
    import ww_callbacks.integrations.tensorboard_plugin as tp

    run = tmp_path / "run"
    writer = HistoryWriter(run / HISTORY_FILE)
    for step in range(4):
        writer.append(_record(step, {"a": 3.0}))
    line = len((run / HISTORY_FILE).read_bytes()) // 4
    monkeypatch.setattr(tp, "CHUNK_BYTES", 2 * line + 1)
    plugin = HtsrPlugin(base_plugin.TBContext(logdir=str(tmp_path)))
    first = plugin.records("run", 0)
    assert first["more"] and [r["step"] for r in first["records"]] == [0, 1]
    assert plugin.records("run", 0) is first  # from the cache
    rest = plugin.records("run", first["next"])
    assert [r["step"] for r in rest["records"]] == [2, 3]
    writer.truncate_after(0)  # a resumed run rewrites the history: another file
    writer.append(_record(7, {"a": 2.0}))
    writer.append(_record(8, {"a": 2.0}))
    writer.append(_record(9, {"a": 2.0}))
    again = plugin.records("run", 0)
    assert again is not first and [r["step"] for r in again["records"]][:2] == [0, 7]
    writer.close()


#: layer names a sidecar may hold (a path, object-prototype names, markup, quotes, non-ASCII)
HOSTILE = ["../../etc/passwd", "constructor", "__proto__", 'a"b<script>x</script>',
           "\u5c42.\u00e9\u00e8/\\x", "fc"]


def _esd(step: int, i: int) -> dict:
    return {"counts": [i, step, 1], "log10_lo": -1.0, "log10_hi": 1.0, "alpha": 2.0 + i / 10,
            "xmin": 0.5, "xmax": 9.0, "n": 64, "spikes": [step + 0.5]}


def _layer_client(tmp_path: Path):
    plugin = HtsrPlugin(base_plugin.TBContext(logdir=str(tmp_path)))
    app = plugin.get_plugin_apps()["/spectra"]

    def get(layer: str | None, offset: int | str = 0, run: str = "run") -> tuple[int, dict, int]:
        query = {"run": run, "offset": str(offset)}
        if layer is not None:
            query["layer"] = layer
        response = Client(app).get("/spectra", query_string=query)
        body = response.get_data()
        return response.status_code, json.loads(body), len(body)

    return plugin, get


def test_spectra_route_sends_one_layer_on_demand(tmp_path):
    """``spectra?layer=L``: only that layer's stored ESDs (hostile names compared as data), all
    of them from offset 0, then only the new ones; ``stored`` counts the stored analyses."""
    writer = HistoryWriter(tmp_path / "run" / HISTORY_FILE)
    writer.append(_record(0, {name: 3.0 for name in HOSTILE}))
    _, get = _layer_client(tmp_path)
    code, empty, _ = get("fc")
    assert code == 200 and empty["records"] == [] and empty["stored"] == 0  # none stored yet
    for step in (0, 5, 10):
        writer.append_spectra(step, {name: _esd(step, i) for i, name in enumerate(HOSTILE)})
    _, whole, whole_bytes = get(None)  # every layer's, as before
    assert [r["step"] for r in whole["records"]] == [0, 5, 10]
    for i, name in enumerate(HOSTILE):
        code, answer, nbytes = get(name)
        assert code == 200 and answer["stored"] == 3 and not answer["more"], name
        assert answer["records"] == [{"step": s, "layers": {name: _esd(s, i)}}
                                     for s in (0, 5, 10)], name
        assert nbytes < whole_bytes / 3, (nbytes, whole_bytes)
        again = get(name, answer["next"])[1]
        assert again["records"] == [] and again["next"] == answer["next"]  # nothing new
    for absent in ("../etc", "toString", "hasOwnProperty", "FC", "fc ", ""):
        code, answer, _ = get(absent)
        assert code == 200 and answer["records"] == [] and answer["stored"] == 3, absent
    assert get("x" * 5000)[0] == 400  # bounded length
    assert get("fc", run="../run")[0] == 404 and get("fc", offset="-3")[0] == 400
    nxt = get("fc")[1]["next"]
    writer.append_spectra(15, {"fc": _esd(15, 9)})  # a step that stored one layer only
    new = get("fc", nxt)[1]
    assert new["records"] == [{"step": 15, "layers": {"fc": _esd(15, 9)}}] and new["stored"] == 4
    assert get("constructor", nxt)[1]["records"] == []
    raw = {"step": 20, "layers": {HOSTILE[4]: _esd(20, 4), "fc": _esd(20, 5)}}
    with open(tmp_path / "run" / "ww_spectra.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(raw, ensure_ascii=False) + "\n")  # a hand-made, non-ASCII line
    assert get(HOSTILE[4], new["next"])[1]["records"] == [{"step": 20, "layers": {
        HOSTILE[4]: _esd(20, 4)}}]
    assert get("fc", new["next"])[1]["records"] == [{"step": 20, "layers": {"fc": _esd(20, 5)}}]
    writer.close()


def test_spectra_index_parses_each_line_once_and_resets(tmp_path, monkeypatch):
    """A layer's answer comes from the index: no line is parsed twice (another layer, a poll),
    a torn line waits for its end, and a rewritten sidecar (a resumed run) answers reset."""
    import ww_callbacks.views.spectra_index as si

    parsed: list[bytes] = []
    real = si.layer_spans
    monkeypatch.setattr(si, "layer_spans", lambda line: parsed.append(line) or real(line))
    run = tmp_path / "run"
    writer = HistoryWriter(run / HISTORY_FILE)
    writer.append(_record(0, {"a": 3.0, "b": 3.0}))
    for step in range(4):
        writer.append_spectra(step, {"a": _esd(step, 0), "b": _esd(step, 1)})
    plugin, get = _layer_client(tmp_path)
    first = get("a")[1]
    assert [r["step"] for r in first["records"]] == [0, 1, 2, 3] and len(parsed) == 4
    assert [r["step"] for r in get("b")[1]["records"]] == [0, 1, 2, 3]
    assert get("a", first["next"])[1]["records"] == [] and len(parsed) == 4  # nothing re-read
    sidecar = run / "ww_spectra.jsonl"
    line = json.dumps({"step": 4, "layers": {"a": _esd(4, 0), "b": _esd(4, 1)}}) + "\n"
    with open(sidecar, "a") as fh:  # being written: a torn last line
        fh.write(line[:40])
    torn = get("a", first["next"])[1]
    assert torn["records"] == [] and torn["next"] == first["next"] and not torn["more"]
    with open(sidecar, "a") as fh:
        fh.write(line[40:])
    done = get("b", first["next"])[1]
    assert done["records"] == [{"step": 4, "layers": {"b": _esd(4, 1)}}] and len(parsed) == 5
    assert get("a", first["next"] + 7)[1]["reset"]  # no line starts there
    assert get("a", 10 ** 9)[1]["reset"]  # past the end
    writer.truncate_after(1)  # a resumed run rewrites the sidecar: another, shorter file
    writer.append_spectra(2, {"a": _esd(20, 0)})
    stale = get("a", done["next"])[1]
    assert stale["reset"] and stale["more"]
    fresh = get("a", 0)[1]
    assert [r["layers"]["a"] for r in fresh["records"]] == [_esd(0, 0), _esd(1, 0), _esd(20, 0)]
    assert fresh["stored"] == 3
    writer.close()


def test_spectra_index_memory_is_bounded(tmp_path, monkeypatch):
    """Past :data:`INDEX_ENTRIES` the rest of the sidecar is read on demand, a chunk per call:
    the same answers, nothing more kept."""
    import ww_callbacks.views.spectra_index as si

    writer = HistoryWriter(tmp_path / "run" / HISTORY_FILE)
    writer.append(_record(0, {"a": 3.0}))
    for step in range(10):
        writer.append_spectra(step, {"a": _esd(step, 0), "b": _esd(step, 1)})
    monkeypatch.setattr(si, "INDEX_ENTRIES", 9)  # three lines: 6 spans + 3 line starts
    plugin, get = _layer_client(tmp_path)
    got, offset = [], 0
    for _ in range(20):
        answer = get("b", offset)[1]
        got += answer["records"]
        offset = answer["next"]
        if not answer["more"]:
            break
    assert got == [{"step": s, "layers": {"b": _esd(s, 1)}} for s in range(10)]
    (index,) = plugin._indexes.values()
    assert index.full and index.entries + len(index.line_starts) <= 9
    writer.append_spectra(10, {"b": _esd(10, 1)})
    assert get("b", offset)[1]["records"] == [{"step": 10, "layers": {"b": _esd(10, 1)}}]
    writer.close()


REPO = Path(__file__).resolve().parents[1]


def wheel_python(tmp_path: Path) -> Path:
    """The python of a fresh virtual environment holding ww_callbacks from its built wheel (no
    dependency installed: the ones this test needs are reached through a .pth file pointing at
    the folders they are installed in here, none of which holds ww_callbacks)."""
    import importlib.util

    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(dist), str(REPO)], cwd=tmp_path,
                   check=True, capture_output=True, timeout=600)
    (wheel,) = dist.glob("ww_callbacks-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   capture_output=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], cwd=tmp_path, check=True,
                   capture_output=True, timeout=600)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"], check=True,
                               capture_output=True, text=True).stdout.strip())
    deps = sorted({str(Path(importlib.util.find_spec(m).origin).resolve().parents[1])
                   for m in ("tensorboard", "torch", "sklearn")})
    for folder in deps:
        assert not (Path(folder) / "ww_callbacks").exists(), folder
        # (an editable install of the checkout there, as in CI, stays inert: the .pth files of a
        # folder that a .pth line adds to sys.path are not processed; the check below shows
        # where ww_callbacks is imported from)
    (site / "_test_deps.pth").write_text("\n".join(deps) + "\n")
    where = subprocess.run(
        [str(python), "-P", "-c", "import ww_callbacks.integrations.tensorboard_plugin as m, "
         "ww_callbacks.views as v; print(m.__file__); print(v.__file__)"],
        cwd=tmp_path, check=True, capture_output=True, text=True, env=_clean_env()).stdout
    assert all(line.startswith(str(site)) for line in where.split()), (where, site)
    return python


def _clean_env() -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)  # nothing of the checkout
    return env


TRAINER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    import torch, torch.nn as nn
    from sklearn.datasets import load_digits
    from ww_callbacks.integrations.torch import Watcher

    run, stop = Path(sys.argv[1]), Path(sys.argv[2])
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 48), nn.ReLU(),
                          nn.Linear(48, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    deadline = time.monotonic() + 900
    with Watcher(model, log_dir=run, every_n_steps=5, optimizer=opt, tensorboard=False,
                 wait="always") as w:
        while not stop.exists() and time.monotonic() < deadline:
            idx = torch.randint(0, len(x), (64,), generator=g)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            w.step()
            time.sleep(0.3)
''')

#: The HTSR iframe's document, found through TensorBoard's shadow roots.
FRAME = """(() => {
  const find = (node) => {
    if (node.tagName === "IFRAME") {
      try { if (node.contentDocument && node.contentDocument.getElementById("ww-run"))
        return node; } catch (e) {}
    }
    if (node.shadowRoot) { const f = find(node.shadowRoot); if (f) return f; }
    for (const child of node.children || []) { const f = find(child); if (f) return f; }
    return null;
  };
  return find(document.documentElement);
})()"""

STATE = f"""(() => {{
  const frame = {FRAME};
  if (!frame) return null;
  const doc = frame.contentDocument;
  const canvas = doc.querySelector("canvas.ww-heatmap-canvas");
  const tip = doc.querySelector(".ww-tip");
  const f = frame.getBoundingClientRect();
  const c = canvas ? canvas.getBoundingClientRect() : null;
  return JSON.stringify({{
    runs: [...doc.querySelectorAll("#ww-run option")].map((o) => o.value),
    columns: canvas ? Number(canvas.dataset.columns) : 0,
    rows: canvas ? Number(canvas.dataset.rows) : 0,
    labels: [...doc.querySelectorAll(".ww-row-label")].map((d) => [d.textContent, d.title]),
    canvas: c ? [f.left + c.left, f.top + c.top] : null,
    tip: tip && !tip.hidden ? tip.textContent : null,
    marker: frame.contentWindow.__wwMarker || null,
    status: doc.querySelector(".ww-status").textContent,
  }});
}})()"""


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_htsr_tab_live_in_headless_chromium(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (Debian's package)")
    logdir = tmp_path / "logs"
    live = logdir / "torch_run"
    other = logdir / "lightning_logs" / "version_0"  # a second, finished run
    old = HistoryWriter(other / HISTORY_FILE)
    old.append(_record(0, {"model.encoder.layer.11.attention.output.dense": 3.5, "fc": 2.2}))
    old.close()
    stop = tmp_path / "stop"
    python = wheel_python(tmp_path)  # the plugin, its assets and the Watcher from the wheel
    env = _clean_env()
    trainer = subprocess.Popen([str(python), "-P", "-c", TRAINER, str(live), str(stop)],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    port = free_port()
    board = subprocess.Popen([str(python), "-P", "-m", "tensorboard.main", "--logdir",
                              str(logdir), "--host", "127.0.0.1", "--port", str(port)],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    browser = None
    out = artifacts_dir(tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 420  # TensorBoard starts slowly on a loaded machine
        import urllib.request
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/data/plugins_listing", timeout=10) as r:
                    listing = json.loads(r.read())
                if "htsr" in listing and (live / HISTORY_FILE).exists():
                    break
            except OSError:
                pass
            assert board.poll() is None, board.stderr.read()[-2000:]
            assert trainer.poll() is None, trainer.stderr.read()[-2000:]
            time.sleep(1)
        assert listing["htsr"]["tab_name"] == "HTSR", listing.get("htsr")

        browser = Browser(CHROMIUM, tmp_path / "profile", width=1400, height=1000)
        browser.open(f"{base}/#htsr", wait=False)
        state: dict = {}
        while time.monotonic() < deadline:
            time.sleep(1)
            raw = browser.evaluate(STATE)
            state = json.loads(raw) if raw else {}
            if "torch_run" in state.get("runs", []) and state.get("columns", 0) >= 1:
                break
        # the run selector lists both runs (several runs at once); the live one is chosen
        assert sorted(state["runs"]) == ["lightning_logs/version_0", "torch_run"], state
        browser.evaluate(f"""(() => {{ const d = {FRAME}.contentDocument;
            const s = d.getElementById("ww-run"); s.value = "torch_run";
            s.dispatchEvent(new Event("change")); }})()""")
        browser.evaluate(f"{FRAME}.contentWindow.__wwMarker = 'no reload'")
        time.sleep(3)
        state = json.loads(browser.evaluate(STATE))
        browser.screenshot(out / "htsr_tab_first.png")
        # a new record reaches the page without a reload within 10 s
        shown = state["columns"]
        while len(read_records(live)) <= shown and time.monotonic() < deadline:
            time.sleep(0.2)
        written = time.monotonic()
        count = len(read_records(live))
        while time.monotonic() - written < 15:
            state = json.loads(browser.evaluate(STATE))
            if state["columns"] >= count:
                break
            time.sleep(0.25)
        delay = time.monotonic() - written
        print(f"\nnew record drawn {delay:.2f} s after it was written "
              f"({shown} -> {state['columns']} columns)")
        assert state["columns"] >= count > shown and delay <= 10, (state, count, delay)
        assert state["marker"] == "no reload"
        # rows are the layers, labelled, full name on hover
        records = read_records(live)
        names = [row["longname"] for row in records[0]["layers"]]
        assert [title for _, title in state["labels"]] == names
        assert all(text == title for text, title in state["labels"])  # short names: whole
        # hover over the cell of layer 1 at the last analysis the page has
        column = state["columns"] - 1
        width = _cell_width(browser)
        x = state["canvas"][0] + column * width + width / 2
        row_height = float(browser.evaluate(
            f"{FRAME}.contentDocument.querySelector('canvas.ww-heatmap-canvas').dataset.rowHeight"))
        y = state["canvas"][1] + row_height * 1 + row_height / 2
        browser.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y},
                     page=True)
        time.sleep(0.5)
        state = json.loads(browser.evaluate(STATE))
        browser.screenshot(out / "htsr_tab_hover.png")
        record = read_records(live)[column]
        row = record["layers"][1]
        assert state["tip"] is not None, state
        assert state["tip"].startswith(f"{row['longname']} \u2014 step {record['step']}")
        assert f"alpha {row['alpha']:.3f}" in state["tip"]
        assert f"{row['num_evals']} eigenvalues" in state["tip"]
        _check_views(browser, live, names, state, width, row_height, out)
        # the other run: long names elided in the middle, full name as the title
        browser.evaluate(f"""(() => {{ const d = {FRAME}.contentDocument;
            const s = d.getElementById("ww-run"); s.value = "lightning_logs/version_0";
            s.dispatchEvent(new Event("change")); }})()""")
        time.sleep(3)
        state = json.loads(browser.evaluate(STATE))
        browser.screenshot(out / "htsr_tab_other_run.png")
        long = "model.encoder.layer.11.attention.output.dense"
        assert [long, "fc"] == [title for _, title in state["labels"]]
        text = state["labels"][0][0]
        assert "\u2026" in text and text.startswith("model.") and text.endswith("output.dense")
        assert script_errors(browser.events) == []
        print(f"screenshots: {out}")
    finally:
        stop.touch()
        if browser is not None:
            browser.close()
        board.terminate()
        board.wait(30)
        try:
            trainer.wait(120)
        except subprocess.TimeoutExpired:
            trainer.kill()
            trainer.wait()


def _cell_width(browser: Browser) -> float:
    return float(browser.evaluate(
        f"Number({FRAME}.contentDocument.querySelector('canvas.ww-heatmap-canvas')"
        ".dataset.cellWidth)"))


#: What the flow, lines and ESD views show, from the HTSR iframe's DOM.
VIEWS = f"""(() => {{
  const doc = {FRAME}.contentDocument;
  const q = (s) => doc.querySelector(s);
  const all = (s) => [...doc.querySelectorAll(s)];
  const fit = q("line.ww-esd-fit");
  return JSON.stringify({{
    flowStep: q("svg.ww-flow-svg").dataset.step,
    points: all("circle.ww-flow-point").map((c) => [c.dataset.layer, Number(c.dataset.alpha)]),
    legend: all(".ww-lines-item").map((d) => [d.dataset.layer, d.hidden]),
    drawn: Number(q("canvas.ww-lines-canvas").dataset.drawn),
    esd: {{...q("svg.ww-esd-svg").dataset}},
    fit: fit ? {{...fit.dataset, x1: +fit.getAttribute("x1"), y1: +fit.getAttribute("y1"),
                x2: +fit.getAttribute("x2"), y2: +fit.getAttribute("y2")}} : null,
  }});
}})()"""


def _views(browser: Browser) -> dict:
    return json.loads(browser.evaluate(VIEWS))


def _key(browser: Browser, key: str, code: int) -> None:
    for kind in ("keyDown", "keyUp"):
        browser.call("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": key,
                                                "windowsVirtualKeyCode": code}, page=True)


def _alphas(record: dict) -> dict:
    """The fitted alphas of a record (the flow draws no point for a failed fit)."""
    return {row["longname"]: row["alpha"] for row in record["layers"]
            if row.get("status", "success") == "success" and isinstance(row["alpha"], float)
            and math.isfinite(row["alpha"]) and row["alpha"] > 0}


def _check_views(browser: Browser, live: Path, names: list[str], state: dict, width: float,
                 row_height: float, out: Path) -> None:
    """The flow's step box and keys, a heatmap click into the ESD view (its fit line against
    the stored ESD), the lines' legend and filter, all against the run's history."""
    records = read_records(live)
    # the step box: the flow shows the first analysis, values as in the history
    browser.evaluate(f"""(() => {{ const b = {FRAME}.contentDocument.querySelector(
        ".ww-flow-stepbox"); b.value = "{records[0]['step']}";
        b.dispatchEvent(new Event("change")); }})()""")
    views = _views(browser)
    assert views["flowStep"] == str(records[0]["step"]), views
    assert dict(views["points"]) == pytest.approx(_alphas(records[0]))
    # keys on the slider: End (the last analysis shown), then one back
    browser.evaluate(f"""(() => {{ const f = {FRAME}; f.contentWindow.focus();
        f.contentDocument.querySelector(".ww-flow-slider").focus({{preventScroll: true}});
        }})()""")
    _key(browser, "End", 35)
    last = int(_views(browser)["flowStep"])
    steps = sorted({r["step"] for r in read_records(live)})
    assert last in steps and last > records[0]["step"], (last, steps)
    _key(browser, "ArrowLeft", 37)  # (a poll may bring a newer analysis meanwhile)
    views = _views(browser)
    before = int(views["flowStep"])
    steps = sorted({r["step"] for r in read_records(live)})
    assert before in steps and steps.index(last) - 1 <= steps.index(before) < len(steps) - 1, \
        (before, last, steps)
    assert dict(views["points"]) == pytest.approx(_alphas(
        {r["step"]: r for r in read_records(live)}[before]))
    browser.evaluate(f"{FRAME}.contentDocument.scrollingElement.scrollTo(0, 0)")
    state = json.loads(browser.evaluate(STATE))  # where the heatmap is now
    width = _cell_width(browser)  # (narrower once the columns fill the width)
    # a click on the heatmap cell of layer 0 at the first analysis: its stored ESD (the first
    # analysis always stores them) with the fit line of the stored alpha, xmin and xmax
    x = state["canvas"][0] + width / 2
    y = state["canvas"][1] + row_height / 2
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y,
                                                  "button": "left", "clickCount": 1},
                     page=True)
    time.sleep(0.5)
    views = _views(browser)
    stored = {s["step"]: s["layers"] for s in read_spectra(live)}
    first = records[0]["step"]
    assert views["flowStep"] == str(first)
    assert views["esd"]["layer"] == names[0] and views["esd"]["step"] == str(first), views
    esd = stored[first][names[0]]
    fit = views["fit"]
    assert fit is not None, views
    assert float(fit["alpha"]) == pytest.approx(esd["alpha"])
    assert float(fit["alpha"]) == pytest.approx(records[0]["layers"][0]["alpha"], rel=1e-5)
    assert float(fit["lx1"]) == pytest.approx(math.log10(esd["xmin"]))
    assert float(fit["lx2"]) == pytest.approx(math.log10(esd["xmax"]))
    slope = (float(fit["ly2"]) - float(fit["ly1"])) / (float(fit["lx2"]) - float(fit["lx1"]))
    assert slope == pytest.approx(-esd["alpha"])
    fit_pixels_follow_axes(views["esd"], fit)  # drawn where the axes put those values
    # a click on layer 1's cell: its stored ESDs are fetched then (per layer, on demand)
    y1 = state["canvas"][1] + row_height * 1.5
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y1,
                                                  "button": "left", "clickCount": 1},
                     page=True)
    until = time.monotonic() + 10
    while time.monotonic() < until:
        views = _views(browser)
        if views["esd"]["layer"] == names[1] and views["esd"]["step"] == str(first):
            break
        time.sleep(0.2)
    assert views["esd"]["layer"] == names[1] and views["esd"]["step"] == str(first), views
    esd1 = stored[first][names[1]]
    if views["fit"] is not None or esd1.get("alpha") is not None:
        assert float(views["fit"]["alpha"]) == pytest.approx(esd1["alpha"])
        assert float(views["fit"]["lx1"]) == pytest.approx(math.log10(esd1["xmin"]))
    # the count of analyses with stored ESDs is the server's (any layer), not the loaded ones'
    status = json.loads(browser.evaluate(STATE))["status"]
    shown = int(re.search(r"(\d+) with stored ESDs", status).group(1))
    assert 1 <= shown <= len({s["step"] for s in read_spectra(live)}), status
    browser.evaluate(f"{FRAME}.contentDocument.querySelector('.ww-section-esd')"
                     ".scrollIntoView()")
    browser.screenshot(out / "htsr_tab_esd.png")
    # the lines: a legend entry per layer; the filter keeps the matching ones
    assert [name for name, _ in views["legend"]] == names and views["drawn"] == len(names)
    needle = names[-1]
    browser.evaluate(f"""(() => {{ const f = {FRAME}.contentDocument.querySelector(
        ".ww-lines-filter"); f.value = {json.dumps(needle)};
        f.dispatchEvent(new Event("input")); }})()""")
    views = _views(browser)
    kept = [name for name, hidden in views["legend"] if not hidden]
    assert kept == [n for n in names if needle.lower() in n.lower()] and needle in kept
    assert views["drawn"] == len(kept) < len(names)
    browser.evaluate(f"{FRAME}.contentDocument.querySelector('.ww-section-lines')"
                     ".scrollIntoView()")
    browser.screenshot(out / "htsr_tab_lines.png")
    browser.evaluate(f"{FRAME}.contentDocument.querySelector('.ww-section-flow')"
                     ".scrollIntoView()")
    browser.screenshot(out / "htsr_tab_flow.png")
    browser.evaluate(f"{FRAME}.contentDocument.scrollingElement.scrollTo(0, 0)")
