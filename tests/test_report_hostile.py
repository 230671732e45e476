"""The report page with hostile names (issue 21.5), opened in headless Chromium over the DevTools
pipe with the network off: layer names, a metric column and the run folder's own path hold
``<!--<script>``, ``</script>``, ``__JS__``, ``__DATA__``, ``{{JS}}``, U+2028, leading and double
spaces and ``$\\frac$``. The page is drawn in full (``data-drawn``), with no console error and no
CSP violation, and the DOM shows every name as text. Also: the CSP allows only the page's own
script and style (by hash), and the folder walk follows no symlink and lists what it read."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.test_report import CHROMIUM, page_data
from ww_callbacks.history import HistoryWriter
from ww_callbacks.page import fill_template, script_json, sha256_source
from ww_callbacks.report import report_data, write_report
from ww_callbacks.results import AnalysisResult

HOSTILE = ["  lead  double  spaces", "<!--<script>", "</script><script>alert(1)</script>",
           "__JS__", "__DATA__", "{{JS}}", "line\u2028sep\u2029para", "bad$\\frac$name",
           "amp &amp; <b>bold</b>", "'quote\" `tick`"]


def _hostile_run(root: Path) -> Path:
    """A run folder named ``__DATA__/__JS__`` whose history has the hostile layer names (the
    first one with leading and double spaces), stored ESDs (``ww_spectra.jsonl``) for the ESD
    view, a policies' actions line and a Lightning ``metrics.csv`` with a hostile validation
    column (a loss: issue 20 takes only losses and accuracies)."""
    from ww_callbacks.esd import compact_esd

    run = root / "__DATA__" / "__JS__"
    run.mkdir(parents=True)
    writer = HistoryWriter(run / "ww_history.jsonl")
    rng = np.random.default_rng(0)
    for t in range(4):
        details = pd.DataFrame({"layer_id": range(len(HOSTILE)), "longname": HOSTILE,
                                "alpha": 2.5 + 0.3 * np.arange(len(HOSTILE)) + 0.1 * t,
                                "status": "success", "rand_num_spikes": t % 2})
        result = AnalysisResult(10 * t, t, details, {"ww/alpha_mean": 3.0 + t,
                                                     "ww/alpha_weighted_mean": 2.0 + t},
                                0.0, 0.01, bool(t % 2))
        writer.append(result)
        writer.append_actions(10 * t, {"lr_scale": {name: 1.0 - 0.1 * t for name in HOSTILE},
                                       "stop_reason": None})
        spectra = {}
        for name in HOSTILE:
            evals = np.sort(rng.pareto(2.0, 100)) + 1e-3
            spectra[name] = compact_esd(evals, {"alpha": 2.5, "xmin": float(evals[50]),
                                                "xmax": float(evals[-1])})
        writer.append_spectra(10 * t, spectra)
    writer.close()
    pd.DataFrame({"step": [0, 10, 20, 30], "epoch": [0, 1, 2, 3],
                  "val_loss<!--<script>__JS__": [1.0, 0.8, 0.7, 0.6]}).to_csv(
        run / "metrics.csv", index=False)
    return run


def test_page_parts_are_filled_in_one_pass_and_data_is_script_safe():
    values = {"A": "{{B}} __JS__", "B": "<b>"}
    assert fill_template("x{{A}}y{{B}}z", values) == "x{{B}} __JS__y<b>z"
    with pytest.raises(KeyError):
        fill_template("{{A}}", {"A": "", "B": ""})
    text = script_json({"n": "</script><!--\u2028\u2029&>"})
    assert not re.search("[<>&\u2028\u2029]", text)
    assert json.loads(text) == {"n": "</script><!--\u2028\u2029&>"}
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256("x\u00e9".encode()).digest()).decode()
    assert sha256_source("x\u00e9") == f"'sha256-{digest}'"


def test_hostile_names_stay_data(tmp_path):
    run = _hostile_run(tmp_path)
    out = write_report(run, tmp_path / "report.html")
    page = out.read_text(encoding="utf-8")
    data = page_data(out)  # the data element ends where the template says, not in a name
    assert data["layers"] == HOSTILE
    assert page.count("<script") == 2 and page.count("</script>") == 2
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page).group(1)
    assert "unsafe-inline" not in csp and "base-uri 'none'" in csp and \
        "form-action 'none'" in csp
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    assert f"script-src {sha256_source(script)};" in csp
    assert f"style-src {sha256_source(style)};" in csp
    # the absolute path is not embedded unless asked; the folder's name is data like any name
    assert str(tmp_path) not in page and data["run_dir"] == "__JS__"
    assert data["sources"] == ["ww_history.jsonl", "ww_spectra.jsonl", "metrics.csv"]
    assert str(tmp_path) in page_data(write_report(run, tmp_path / "p.html",
                                                   embed_path=True))["run_dir"]
    (metric,) = data["metrics"]
    assert metric["name"] == "val_loss<!--<script>__JS__"


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")
def test_hostile_names_in_headless_chromium(tmp_path):
    from chromium_pipe import open_offline, problems

    run = _hostile_run(tmp_path)
    out = write_report(run, tmp_path / "report.html")
    browser = open_offline(CHROMIUM, tmp_path / "profile", out.resolve().as_uri())
    try:
        drawn = browser.evaluate("document.body.dataset.drawn")
        assert drawn.split() == ["title", "heatmap", "flow", "curves", "traps", "esd",
                                 "policies", "metrics"], drawn
        # the shared views: the alpha lines' legend, the ESD view's layer choice
        captions = browser.evaluate(
            "[...document.querySelectorAll('#views .ww-lines-item')].map(c => c.title)")
        assert captions == HOSTILE  # every name shown as text, none parsed as markup
        assert browser.evaluate("document.querySelectorAll('#views b').length") == 0
        options = browser.evaluate(
            "[...document.querySelectorAll('#views .ww-esd-layer option')]"
            ".map(o => o.textContent)")
        assert options == HOSTILE
        # every layer's ESD (the stored one nearest the shown step) is drawn with its fit when
        # chosen, the first (leading/double spaces) included
        lines = browser.evaluate("""(() => {
            const s = document.querySelector('#views .ww-esd-layer');
            const out = [];
            for (let i = 0; i < s.options.length; i++) {
              s.selectedIndex = i; s.dispatchEvent(new Event('change'));
              out.push([document.querySelectorAll('#views .ww-esd-bar').length > 0,
                        document.querySelectorAll('#views .ww-esd-fit').length]); }
            return out; })()""")
        assert lines == [[True, 1]] * len(HOSTILE), lines
        assert browser.evaluate("document.title") == "ww_callbacks report: __JS__"
        notes = browser.evaluate("document.getElementById('metrics').textContent")
        assert "val_loss<!--<script>__JS__" in notes
        assert browser.evaluate("document.getElementById('sources').textContent") == \
            "Files read (below the run folder): ww_history.jsonl, ww_spectra.jsonl, metrics.csv"
        assert not problems(browser.events), problems(browser.events)
    finally:
        browser.close()


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")
def test_the_csp_blocks_an_inline_script_that_is_not_the_pages_own(tmp_path):
    """The policy is live: a second inline script planted in the written page is refused
    (a CSP violation in the console), while the page's own script still draws."""
    from chromium_pipe import open_offline, problems

    run = _hostile_run(tmp_path)
    out = write_report(run, tmp_path / "report.html")
    text = out.read_text(encoding="utf-8")
    out.write_text(text.replace("</body>", "<script>document.title='pwned'</script></body>"))
    browser = open_offline(CHROMIUM, tmp_path / "profile", out.resolve().as_uri())
    try:
        assert browser.evaluate("document.body.dataset.drawn").split()[-1] == "metrics"
        assert browser.evaluate("document.title") != "pwned"
        assert any("Content Security Policy" in p for p in problems(browser.events))
    finally:
        browser.close()


def test_folder_walk_follows_no_symlink_and_reads_known_layouts_only(tmp_path):
    run = _hostile_run(tmp_path)
    private = tmp_path / "home"
    (private / "deep").mkdir(parents=True)
    pd.DataFrame({"epoch": [0, 1], "val_secret": [1.0, 2.0]}).to_csv(private / "deep" / "x.csv",
                                                                    index=False)
    (run / "linked").symlink_to(private, target_is_directory=True)
    (run / "loop").symlink_to(run, target_is_directory=True)
    (run / "keras.csv").symlink_to(private / "deep" / "x.csv")
    nested = run / "a" / "b"
    nested.mkdir(parents=True)
    shutil.copy(private / "deep" / "x.csv", nested / "other.csv")  # not a known layout
    lightning = run / "lightning_logs" / "version_0"
    lightning.mkdir(parents=True)
    pd.DataFrame({"step": [0, 30], "val_acc": [0.5, 0.9]}).to_csv(lightning / "metrics.csv",
                                                                  index=False)
    data = report_data(run)
    names = {m["name"] for m in data["metrics"]}
    assert "val_secret" not in names and "val_acc" in names
    assert data["sources"] == ["ww_history.jsonl", "ww_spectra.jsonl", "metrics.csv",
                               "lightning_logs/version_0/metrics.csv"]


def test_page_script_inlines_the_views_a_page_imports():
    """The report's and compare's one inline script: the view modules the page's glue imports
    (and theirs) first, in dependency order, then the glue, with no import or export left (a
    classic script under the CSP of hashes); other import forms are refused."""
    from ww_callbacks.views import page_script

    script = page_script('import {AlphaTable} from "./table.js";\n'
                         'import {FlowView} from "./flow.js";\n'
                         "new FlowView(a, new AlphaTable());\n")
    heads = re.findall(r"^// ---- (\S+)", script, re.M)
    assert heads.index("table.js") < heads.index("heatmap.js") < heads.index("flow.js")
    assert "svg.js" in heads and "run_views.js" not in heads  # only what is imported
    assert not re.search(r"^\s*(import|export)\b", script, re.M)
    assert script.endswith("new FlowView(a, new AlphaTable());\n}\n})();\n")
    for bad in ('import * as v from "./table.js";\n', "export const x = 1;\n",
                'import {x} from "https://cdn.example/x.js";\n'):
        with pytest.raises(ValueError):
            page_script(bad)
