"""The shared browser views (``ww_callbacks/views/``: heatmap, flow, lines, ESD, alerts, linked by
``RunViews`` over one ``AlphaTable``) on a static page outside TensorBoard, as the offline report
uses them: one HTML file opened from disk with the network off, the modules inlined
(``inline_modules``), fed with ``slim_records`` answers of a generated history and real compact
ESDs (``ww_callbacks.esd``), then driven in headless Chromium over the DevTools protocol (keys,
clicks) and checked through the DOM. Also the modules' own rules: no fetch, no markup from data,
relative imports only, top-level names unique across modules."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from tests.chromium_pipe import Browser, problems, script_errors
from tests.test_tensorboard_browser import CHROMIUM, artifacts_dir
from ww_callbacks.esd import compact_esd
from ww_callbacks.integrations.tensorboard_plugin import slim_records
from ww_callbacks.views import ASSET_FILES, asset, inline_modules

HOSTILE = '<img src=x onerror="window.__pwned=1">'
LONG = "model.encoder.layer.11.attention.output.dense"
LAYERS = [LONG, "edge", HOSTILE, "small", "fc"]
EVALS = {LONG: 256, "edge": 128, HOSTILE: 96, "small": 10, "fc": 64}
STEPS = [10 * i for i in range(40)]


def _alpha(name: str, i: int) -> float:
    if name == LONG:
        return 4.1 - 1.65 * i / 39  # a drift 4.1 -> 2.45
    if name == "edge":
        return 2.0004 if i < 20 else 1.9996  # crosses 2 by less than 0.001
    if name == "small":
        return 5.0 + 0.03 * i  # crosses 6 at step 340 (i = 34)
    if name == "fc":
        return 3.0 + 0.5 * np.sin(i / 5)
    return 3.2


def _lines() -> list[str]:
    out = []
    for i, step in enumerate(STEPS):
        out.append(json.dumps({
            "format": 1, "step": step, "epoch": i, "wall_time": 0.0, "duration_s": 0.0,
            "randomized": True, "summary": {},
            "layers": [{"longname": n, "alpha": _alpha(n, i), "status": "success",
                        "num_evals": EVALS[n], "rand_num_spikes": 2 if n == "fc" and i >= 30
                        else 0} for n in LAYERS]}))
        if step == 100:
            out.append(json.dumps({"kind": "actions", "step": step, "lr_scale": {"fc": 0.8},
                                   "stop_reason": None}))
        if step == 200:
            out.append(json.dumps({"kind": "actions", "step": step, "lr_scale": {"fc": 0.8},
                                   "traps_removed": {"fc": 2}, "stop_reason": None}))
        if step == STEPS[-1]:
            out.append(json.dumps({"kind": "actions", "step": step, "lr_scale": {"fc": 0.8},
                                   "traps_removed": {"fc": 2},
                                   "stop_reason": "HTSREarlyStopping: alpha left the band"}))
    return out


def _spectra() -> list[dict]:
    """Compact ESDs at steps 0 and 300 (fc with its randomized ESD and 2 trap spikes)."""
    rng = np.random.default_rng(0)
    out = []
    for step, alpha in ((0, 3.0), (300, 2.6)):
        layers = {}
        for name in LAYERS:
            n = EVALS[name]
            evals = (1 - rng.random(n)) ** (-1 / (alpha - 1))  # Pareto tail
            xmin = float(np.quantile(evals, 0.5))
            row = {"alpha": alpha, "xmin": xmin, "xmax": float(evals.max()),
                   "num_pl_spikes": int((evals >= xmin).sum()),
                   "rand_bulk_max": 2.5, "rand_num_spikes": 2}
            rand = np.concatenate([rng.uniform(0.5, 2.5, n - 2), [9.0, 12.0]]) \
                if name == "fc" else None
            layers[name] = compact_esd(evals, row, rand)
        out.append({"step": step, "layers": layers})
    return out


PAGE = """<!doctype html><meta charset="utf-8"><title>views</title>
<style>%s</style><body><div id="app"></div>
<script type="application/json" id="data">%s</script>
<script type="module">
%s
const data = JSON.parse(document.getElementById("data").textContent);
const table = new AlphaTable();
table.add(data.first);
const views = new RunViews(document.getElementById("app"), table);
// then the rest arrives, as a live poll would bring it
table.add(data.rest);
table.addSpectra({records: data.spectra});
views.update();
window.__views = views;
window.__ready = true;
</script>"""

STATE = """(() => {
  const q = (s) => document.querySelector(s);
  const all = (s) => [...document.querySelectorAll(s)];
  const fit = q("line.ww-esd-fit");
  const svg = q("svg.ww-esd-svg");
  return JSON.stringify({
    labels: all(".ww-row-label").map((d) => [d.textContent, d.title]),
    ticks: q("canvas.ww-heatmap-axis").dataset.ticks,
    low: Number(q("canvas.ww-heatmap-canvas").dataset.lowEvidence),
    few: q(".ww-legend-few").textContent,
    flowStep: q("svg.ww-flow-svg").dataset.step,
    box: q(".ww-flow-stepbox").value,
    points: all("circle.ww-flow-point").map((c) => [c.dataset.layer, Number(c.dataset.alpha)]),
    names: all("text.ww-flow-name").map((t) => t.querySelector("title").textContent),
    legend: all(".ww-lines-item").map((d) => [d.dataset.layer, d.hidden]),
    drawn: q("canvas.ww-lines-canvas").dataset.drawn,
    onTop: q("canvas.ww-lines-canvas").dataset.selected,
    ylo: Number(q("canvas.ww-lines-canvas").dataset.ylo),
    yhi: Number(q("canvas.ww-lines-canvas").dataset.yhi),
    bands: q("canvas.ww-lines-canvas").dataset.bands,
    esd: {...svg.dataset},
    fit: fit ? {...fit.dataset, x1: +fit.getAttribute("x1"), y1: +fit.getAttribute("y1"),
                x2: +fit.getAttribute("x2"), y2: +fit.getAttribute("y2")} : null,
    xmin: all("line.ww-esd-xmin").length, xmax: all("line.ww-esd-xmax").length,
    mp: all("line.ww-esd-mp").length, spikes: all("line.ww-esd-spike").length,
    rand: all("path.ww-esd-rand").length,
    note: (q("text.ww-esd-note") || {}).textContent,
    esdLayer: q("select.ww-esd-layer").value,
    events: all(".ww-event").map((li) => li.textContent),
    marks: all("rect.ww-mark").length,
    pwned: window.__pwned || null,
    imgs: all("img").length,
  });
})()"""


@pytest.fixture
def page(tmp_path):
    """The views on one static HTML file, opened from disk with the network off."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (Debian's package)")
    lines = _lines()
    records = [x for x in lines if '"kind": "actions"' not in x]
    cut = lines.index(records[30])
    data = {"first": slim_records(lines[:cut]), "rest": slim_records(lines[cut:]),
            "spectra": _spectra()}
    text = json.dumps(data).replace("<", "\\u003c")  # no "</script>" from a name
    html = tmp_path / "views.html"
    html.write_text(PAGE % (asset("views.css").decode(), text,
                            inline_modules("table.js", "run_views.js")), encoding="utf-8")
    browser = Browser(CHROMIUM, tmp_path / "profile", width=1300, height=2600)
    try:
        browser.open(html.as_uri(), offline=True)
        for _ in range(100):
            if browser.evaluate("window.__ready === true"):
                break
            time.sleep(0.1)
        assert browser.evaluate("window.__ready === true"), script_errors(browser.events)
        yield browser
        assert problems(browser.events) == []  # no request, warning or error
    finally:
        browser.close()


def _state(browser: Browser) -> dict:
    return json.loads(browser.evaluate(STATE))


def _key(browser: Browser, key: str, code: int) -> None:
    for kind in ("keyDown", "keyUp"):
        browser.call("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": key,
                                                "windowsVirtualKeyCode": code}, page=True)


def _click(browser: Browser, x: float, y: float) -> None:
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y,
                                                  "button": "left", "clickCount": 1},
                     page=True)


@pytest.mark.slow
def test_views_on_a_static_page(page, tmp_path):
    browser = page
    state = _state(browser)
    out = artifacts_dir(tmp_path)
    browser.screenshot(out / "views_static.png")
    print(f"\nscreenshots: {out}")
    # heatmap: every row named (long name elided in the middle, full name as title), the
    # hostile name as text, step ticks, the 10-eigenvalue layer hatched on every analysis
    assert [title for _, title in state["labels"]] == LAYERS
    assert state["labels"][2][0] == HOSTILE and state["pwned"] is None and state["imgs"] == 0
    assert "\u2026" in state["labels"][0][0] or len(LONG) <= 40
    ticks = state["ticks"].split()
    assert ticks[0] == "0" and len(ticks) >= 3 and all(int(t) in STEPS for t in ticks)
    assert state["low"] == len(STEPS) and "fewer than 50 eigenvalues" in state["few"]
    # flow: at the last analysis; points carry the history's alphas; names on the axis
    assert state["flowStep"] == str(STEPS[-1]) and state["box"] == str(STEPS[-1])
    assert dict(state["points"]) == pytest.approx({n: _alpha(n, 39) for n in LAYERS})
    assert state["names"] == LAYERS
    # the step box: the nearest analysis
    browser.evaluate("""(() => { const b = document.querySelector(".ww-flow-stepbox");
        b.value = "123"; b.dispatchEvent(new Event("change")); })()""")
    state = _state(browser)
    assert state["flowStep"] == "120"
    assert dict(state["points"]) == pytest.approx({n: _alpha(n, 12) for n in LAYERS})
    # keys on the slider: one analysis back, Home, End
    browser.evaluate("document.querySelector('.ww-flow-slider').focus()")
    _key(browser, "ArrowLeft", 37)
    assert _state(browser)["flowStep"] == "110"
    _key(browser, "Home", 36)
    state = _state(browser)
    assert state["flowStep"] == "0"
    assert dict(state["points"]) == pytest.approx({n: _alpha(n, 0) for n in LAYERS})
    _key(browser, "End", 35)
    assert _state(browser)["flowStep"] == str(STEPS[-1])
    # lines: a legend entry per layer, the y range fitted to the data, the band line at 2
    assert [name for name, _ in state["legend"]] == LAYERS and state["drawn"] == "5"
    lo = min(_alpha(n, i) for n in LAYERS for i in range(40))
    hi = max(_alpha(n, i) for n in LAYERS for i in range(40))
    assert lo - 0.5 < state["ylo"] <= lo and hi <= state["yhi"] < hi + 0.5
    assert state["bands"] == "2 6"
    browser.evaluate("""(() => { const f = document.querySelector(".ww-lines-filter");
        f.value = "ENCODER"; f.dispatchEvent(new Event("input")); })()""")
    state = _state(browser)
    assert [name for name, hidden in state["legend"] if not hidden] == [LONG]
    assert state["drawn"] == "1" and state["ylo"] > 2.3 and state["yhi"] < 4.3  # refitted
    browser.screenshot(out / "views_static_filtered.png")
    # alerts: the 0.0008 crossing shown with the digits that tell it; the actions
    events = state["events"]
    assert any("edge crossed into over-trained (alpha 2.0004 -> 1.9996)" in e for e in events)
    assert not any(re.search(r"alpha (\d+\.\d+) -> \1\b", e) for e in events), events
    assert any("learning-rate scale of fc 1.00 -> 0.800" in e for e in events), events
    assert any("2 trap components removed from fc" in e for e in events), events
    assert any("training stopped: HTSREarlyStopping" in e for e in events), events
    assert any("correlation traps appeared in fc" in e for e in events), events
    assert any("step 340: small crossed into under-trained (alpha 5.990 -> 6.020) (fit on 10 "
               "eigenvalues: fewer than 50, not trusted)" in e for e in events), events
    assert state["marks"] >= 4
    # ESD of the first layer at the last step: nearest stored ESD (300); the fit line's slope
    # is -alpha in log10 units, from xmin to xmax, and its pixels follow the SVG's axes
    esd, fit = state["esd"], state["fit"]
    assert esd["layer"] == LONG and esd["step"] == "300" and fit is not None
    stored = _spectra()[1]["layers"][LONG]
    assert float(fit["alpha"]) == pytest.approx(stored["alpha"])
    assert float(fit["lx1"]) == pytest.approx(np.log10(stored["xmin"]))
    assert float(fit["lx2"]) == pytest.approx(np.log10(stored["xmax"]))
    slope = (float(fit["ly2"]) - float(fit["ly1"])) / (float(fit["lx2"]) - float(fit["lx1"]))
    assert slope == pytest.approx(-stored["alpha"])
    fit_pixels_follow_axes(esd, fit)
    assert state["xmin"] == 1 and state["xmax"] == 1 and state["rand"] == 0
    # a click on the heatmap cell of "fc" at step 120: the ESD of fc (randomized ESD, MP edge,
    # 2 trap spikes; the stored one nearest to 120 is step 0) and the flow at step 120
    box = json.loads(browser.evaluate("""(() => {
        const c = document.querySelector("canvas.ww-heatmap-canvas");
        c.scrollIntoView({block: "center"});
        const r = c.getBoundingClientRect();
        return JSON.stringify([r.left, r.top, +c.dataset.cellWidth, +c.dataset.rowHeight]);
    })()"""))
    left, top, width, height = box
    _click(browser, left + 12 * width + width / 2, top + 4 * height + height / 2)
    state = _state(browser)
    assert state["esdLayer"] == "fc" and state["esd"]["layer"] == "fc"
    assert state["esd"]["step"] == "0" and state["esd"]["asked"] == "120"
    assert state["flowStep"] == "120"
    assert state["rand"] == 1 and state["mp"] == 1 and state["spikes"] == 2
    assert state["onTop"] == ""  # fc is selected but filtered out of the lines: none on top
    browser.evaluate("""(() => { const f = document.querySelector(".ww-lines-filter");
        f.value = ""; f.dispatchEvent(new Event("input")); })()""")
    state = _state(browser)
    assert state["onTop"] == "fc" and state["drawn"] == "5"
    # the 10-eigenvalue layer's ESD says its fit rests on few eigenvalues
    browser.evaluate("""(() => { const s = document.querySelector(".ww-esd-layer");
        s.value = "small"; s.dispatchEvent(new Event("change")); })()""")
    state = _state(browser)
    assert "fit on 10 eigenvalues (few: fewer than 50" in state["note"]
    browser.screenshot(out / "views_static_esd.png")
    assert script_errors(browser.events) == []


def fit_pixels_follow_axes(esd: dict, fit: dict) -> None:
    """The fit line's pixel ends are its log10 ends on the SVG's axes."""
    xlo, xhi, ylo, yhi = (float(esd[k]) for k in ("xlo", "xhi", "ylo", "yhi"))
    left, right, top, bottom = (float(esd[k]) for k in ("left", "right", "top", "bottom"))
    for lx, ly, px, py in ((fit["lx1"], fit["ly1"], fit["x1"], fit["y1"]),
                           (fit["lx2"], fit["ly2"], fit["x2"], fit["y2"])):
        assert px == pytest.approx(left + (float(lx) - xlo) / (xhi - xlo) * (right - left),
                                   abs=0.01)
        assert py == pytest.approx(bottom - (float(ly) - ylo) / (yhi - ylo) * (bottom - top),
                                   abs=0.01)


def test_view_modules_fetch_nothing_and_write_no_markup():
    """Data comes in through the table only; names become text, never markup; modules import
    each other by relative path only; top-level names are unique across modules (so that the
    report can inline them into one script)."""
    seen: dict[str, str] = {}
    for name in ASSET_FILES:
        if not name.endswith(".js"):
            continue
        text = asset(name).decode()
        for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                    "new Function"):
            assert bad not in text, (name, bad)
        urls = set(re.findall(r"https?://[^\s\"'`]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
        if name != "tensorboard_tab.js":  # the tab's page is the one that asks the server
            assert "fetch(" not in text and "XMLHttpRequest" not in text, name
        for spec in re.findall(r"^import .* from \"([^\"]+)\";", text, re.M):
            assert re.fullmatch(r"\./[a-z_]+\.js", spec) and spec[2:] in ASSET_FILES, spec
        for top in re.findall(r"^(?:export )?(?:async )?(?:function|class|const|let) (\w+)",
                              text, re.M):
            assert top not in seen, f"{top} in both {seen.get(top)} and {name}"
            seen[top] = name
