"""The report as the shared views over one file (issue 20): a history of 361 analyses written by
the project's ``HistoryWriter`` (8 layers, traps, policies' actions lines, stored ESDs in
``ww_spectra.jsonl``) and a Hugging Face-like ``trainer_state.json``, reported, then opened
from disk in headless Chromium with the network off (``--proxy-server`` to a closed port and
DevTools' offline emulation; no request may leave the page). The DOM text must show the layer
names on the heatmap rows and the flow axis, the run's distinct trap count, a slider that
reaches the 361st analysis (keyboard and step box), an ESD with its fit line, a page that does
not overflow sideways, ``eval_loss`` (not ``eval_runtime``) as the validation metric with no
correlation from 4 points and its n. The compare page draws with the same heatmap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.test_report import CHROMIUM, _artifacts
from ww_callbacks.analysis import columns_for
from ww_callbacks.esd import compact_esd
from ww_callbacks.history import HistoryWriter
from ww_callbacks.report import report_data, write_report
from ww_callbacks.results import AnalysisResult

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                                "(apt-get install -y chromium)")

LAYERS = ["embed.tok", "block.0.attn.qkv", "block.0.mlp.fc1", "block.1.attn.proj",
          "block.1.mlp.fc2", "block.2.attn.qkv", "block.2.mlp.fc2", "head"]
ANALYSES = 361
STEP = 50


def _traps(t: int) -> list[int]:
    """Traps per layer at analysis ``t``: block.1.mlp.fc2 has 2 from analysis 100 on,
    block.2.attn.qkv 1 during analyses 200-250, head 3 from analysis 300 on: 6 distinct traps
    in the run (the sum over all randomised analyses is several hundred)."""
    out = [0] * len(LAYERS)
    if t >= 100:
        out[4] = 2
    if 200 <= t <= 250:
        out[5] = 1
    if t >= 300:
        out[7] = 3
    return out


def _run(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    writer = HistoryWriter(folder / "ww_history.jsonl")
    base = np.linspace(2.3, 5.5, len(LAYERS))
    for t in range(ANALYSES):
        randomized = t % 2 == 0
        cols = columns_for(randomize=randomized)
        alpha = base + 0.6 * np.sin(t / 40 + np.arange(len(LAYERS))) + rng.normal(0, .02, 8)
        rows = {c: np.full(len(LAYERS), 1.0) for c in cols}
        rows.update(layer_id=np.arange(len(LAYERS)), name="weight", longname=LAYERS,
                    layer_type="dense", alpha=alpha, status="success", warning="",
                    num_evals=np.full(len(LAYERS), 256), xmin=np.full(len(LAYERS), 0.5),
                    xmax=np.full(len(LAYERS), 40.0))
        if randomized:
            rows["rand_num_spikes"] = _traps(t)
        details = pd.DataFrame(rows)[cols]
        summary = {"ww/alpha_mean": float(alpha.mean()),
                   "ww/alpha_weighted_mean": float(alpha.mean() - 0.5)}
        step = t * STEP
        writer.append(AnalysisResult(step, t // 10, details, summary, float(t), 0.1,
                                     randomized))
        if t in (120, 350):
            writer.append_actions(step, {"lr_scale": {"head": 0.5 if t == 120 else 0.25},
                                         "stop_reason": None if t == 120 else "alpha below 2"})
        if t % 30 == 0 or t == ANALYSES - 1:
            spectra = {}
            for k, name in enumerate(LAYERS):
                evals = 0.05 * (rng.pareto(alpha[k] - 1, 256) + 1)
                row = {"alpha": float(alpha[k]), "xmin": float(np.quantile(evals, 0.6)),
                       "xmax": float(evals.max()), "rand_bulk_max": 0.4,
                       "rand_num_spikes": _traps(t)[k] if randomized else None}
                rand = np.sort(0.05 * rng.chisquare(4, 256)) if randomized else None
                spectra[name] = compact_esd(evals, row, rand)
            writer.append_spectra(step, spectra)
    writer.close()
    # a Hugging Face Trainer's log: evaluation at 4 steps, with its runtime and throughputs
    log = [{"step": s, "epoch": s / 1000, "eval_loss": v, "eval_runtime": 3.0 + s / 1e4,
            "eval_samples_per_second": 99.0, "eval_steps_per_second": 12.0}
           for s, v in zip([2000, 8000, 14000, 18000], [1.2, 0.9, 0.7, 0.65], strict=True)]
    log += [{"step": s, "loss": 1.0, "learning_rate": 1e-3} for s in range(0, 18000, 500)]
    (folder / "trainer_state.json").write_text(json.dumps({"log_history": log}))
    return folder


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict]:
    folder = _run(tmp_path_factory.mktemp("run361"))
    return write_report(folder, folder / "ww_report.html"), report_data(folder)


#: The rendered texts inside a selector's element: each element's own text (an SVG label's
#: <title> child left out), where it takes room on the page.
TEXTS = """((sel) => [...document.querySelectorAll(sel + ' *')]
  .filter(e => e.tagName.toLowerCase() !== 'title' && e.getBoundingClientRect().width > 0)
  .map(e => [...e.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent).join(''))
  .filter(t => t.trim()))"""


def test_report_of_361_analyses_offline_in_chromium(report, tmp_path):
    from chromium_pipe import open_offline, problems

    out, data = report
    assert len(data["table"]["records"]) == ANALYSES
    assert data["traps"]["distinct"] == 6 and data["traps"]["latest"] == 5
    assert [m["name"] for m in data["metrics"]] == ["eval_loss"]
    browser = open_offline(CHROMIUM, tmp_path / "profile", out.resolve().as_uri())
    try:
        drawn = browser.evaluate("document.body.dataset.drawn")
        assert drawn.split() == ["title", "heatmap", "flow", "curves", "traps", "esd",
                                 "policies", "metrics"], drawn
        # layer names on the heatmap rows (visible text, full name on hover)
        rows = browser.evaluate("""[...document.querySelectorAll('#views .ww-row-label')]
            .map(d => [d.textContent, d.title, d.getBoundingClientRect().width > 0])""")
        assert rows == [[n, n, True] for n in LAYERS], rows
        canvas = browser.evaluate("JSON.stringify(document.querySelector("
                                  "'#views canvas.ww-heatmap-canvas').dataset)")
        assert json.loads(canvas)["columns"] == str(ANALYSES)
        # ... and on the flow's axis
        flow_texts = browser.evaluate(f"{TEXTS}('#views .ww-section-flow')")
        assert all(n in flow_texts for n in LAYERS), flow_texts
        # the run's distinct traps, said what is counted; not the sum over all analyses
        traps = browser.evaluate("document.getElementById('sec-traps').innerText")
        assert "6 correlation trap(s) in this run" in traps, traps
        assert "distinct traps" in traps and "5 at the last randomised analysis" in traps
        trap_rows = browser.evaluate("[...document.querySelectorAll('#sec-traps .trap-layer')]"
                                     ".map(t => t.textContent)")
        assert trap_rows == ["block.1.mlp.fc2", "block.2.attn.qkv", "head"], trap_rows
        summary = browser.evaluate("document.getElementById('sec-summary').innerText")
        assert "6 correlation trap(s) in this run" in summary
        # the slider: full width, reaches the 361st analysis by keyboard, and the step box
        slider = json.loads(browser.evaluate("""JSON.stringify((() => {
            const s = document.querySelector('#views .ww-section-flow input[type=range]');
            const sec = document.querySelector('#views .ww-section-flow');
            return {max: s.max, w: s.getBoundingClientRect().width,
                    sec: sec.getBoundingClientRect().width}; })())"""))
        assert slider["max"] == str(ANALYSES - 1)
        assert slider["w"] >= 0.5 * slider["sec"], slider
        flow = "document.querySelector('#views .ww-section-flow')"
        browser.evaluate(f"(() => {{ const s = {flow}.querySelector('input[type=range]'); "
                         "s.value = 0; s.dispatchEvent(new Event('input')); s.focus(); })()")
        assert f"analysis 1 of {ANALYSES}" in browser.evaluate(f"{flow}.innerText")
        for kind in ("rawKeyDown", "keyUp"):
            browser.call("Input.dispatchKeyEvent", {"type": kind, "key": "End", "code": "End",
                                                    "windowsVirtualKeyCode": 35}, page=True)
        label = browser.evaluate(f"{flow}.innerText")
        last = (ANALYSES - 1) * STEP
        assert f"analysis {ANALYSES} of {ANALYSES}, step {last}" in label, label
        browser.evaluate(f"(() => {{ const b = {flow}.querySelector('input[type=number]'); "
                         "b.value = '6020'; b.dispatchEvent(new Event('change')); })()")
        label = browser.evaluate(f"{flow}.innerText")
        assert f"analysis 121 of {ANALYSES}, step 6000" in label, label
        # the ESD of a chosen layer and step, with its fitted power law
        fit = json.loads(browser.evaluate("""JSON.stringify((() => {
            const f = document.querySelector('#views .ww-esd-fit');
            return f ? f.getBoundingClientRect() : null; })())"""))
        assert fit and fit["width"] > 10, fit
        summary = browser.evaluate("document.getElementById('sec-summary').innerText")
        assert "13 analyses with stored ESDs" in summary, summary
        # the page fits its width: nothing overflows sideways (the traps timeline included)
        widths = json.loads(browser.evaluate(
            "JSON.stringify([document.body.scrollWidth, document.body.clientWidth, "
            "document.documentElement.scrollWidth, document.documentElement.clientWidth])"))
        assert widths[0] <= widths[1] and widths[2] <= widths[3], widths
        # the validation metric a user means, no correlation from 4 points, n shown
        metrics = browser.evaluate("document.getElementById('sec-metrics').innerText")
        assert "eval_loss" in metrics and "runtime" not in metrics, metrics
        assert "no rank correlation shown: 4 paired point(s), fewer than 5" in metrics
        assert "(n = 4 " in metrics
        policies = browser.evaluate("document.querySelector('#views .ww-section-alerts')"
                                    ".innerText")
        assert "learning-rate scale of head" in policies and "alpha below 2" in policies
        # new traps are alerted once each (against the last analysis that counted traps, not
        # at every other analysis where traps were not counted)
        trap_alerts = browser.evaluate(
            "[...document.querySelectorAll('#views .ww-section-alerts li')]"
            ".map(e => e.textContent).filter(t => t.includes('correlation trap'))")
        assert len(trap_alerts) == 3, trap_alerts
        browser.screenshot(_artifacts(tmp_path) / "ww_report_361.png")
        assert not problems(browser.events), problems(browser.events)  # no request, no error
    finally:
        browser.close()


def test_compare_page_draws_with_the_shared_heatmap(report, tmp_path):
    from chromium_pipe import open_offline, problems

    from ww_callbacks.compare import compare, write_compare_html

    out, _ = report
    run = out.parent
    table = compare(str(run), str(run / "ww_history.jsonl"), analyze_path=lambda p: None)
    page = write_compare_html(table, tmp_path / "compare.html", a="run A", b="run B")
    browser = open_offline(CHROMIUM, tmp_path / "profile", page.resolve().as_uri())
    try:
        assert browser.evaluate("document.body.dataset.drawn") == "heatmap flow"
        canvas = json.loads(browser.evaluate("JSON.stringify(document.querySelector("
                                             "'#heatmap canvas.ww-heatmap-canvas').dataset)"))
        assert (canvas["columns"], canvas["rows"]) == ("2", str(len(LAYERS)))
        labels = browser.evaluate("[...document.querySelectorAll('#heatmap .ww-row-label')]"
                                  ".map(d => d.title)")
        assert labels == LAYERS
        assert not problems(browser.events), problems(browser.events)
    finally:
        browser.close()
