"""``ww-callbacks report`` / ``ww_callbacks.write_report``: the self-contained HTML report of a
run, from a real watched training run (plain torch loop, TensorBoard events, a learning-rate
policy, a validation metric), from the metric files of other frameworks, at the size the issue
sets (100 layers x 200 analyses), and opened by headless Chromium with the network disabled."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ww_callbacks
from ww_callbacks.report import read_history, report_data, spearman

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                        else None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  # no network: every request goes to a closed local port
                  "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]


def run_cli(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ww_callbacks", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def page_data(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    blob = re.search(r'<script type="application/json" id="ww-data">(.*?)</script>', text, re.S)
    return table_columns(json.loads(blob.group(1)))


def table_columns(data: dict) -> dict:
    """The page's data with its slim table (the TensorBoard tab's form) also as lists: steps,
    layers, alpha per analysis, traps per analysis (None for one that counted none)."""
    records = data["table"]["records"]
    data.update(steps=[r["step"] for r in records], layers=data["table"]["layers"],
                alpha=[r["a"] for r in records],
                traps=[r["t"] if any(v is not None for v in r["t"]) else None for r in records])
    return data


@pytest.fixture(scope="module")
def watched_run(tmp_path_factory) -> Path:
    """A real run: an MLP on digits in a plain torch loop under the Watcher, with TensorBoard
    events (its own writer, also used for the validation loss), a per-layer learning-rate policy
    and traps counted every other analysis."""
    torch = pytest.importorskip("torch")
    from sklearn.datasets import load_digits

    from ww_callbacks.integrations.tensorboard import EventWriter
    from ww_callbacks.integrations.torch import Watcher
    from ww_callbacks.policies import LayerLRBalancer, param_groups_per_layer

    log_dir = tmp_path_factory.mktemp("run")
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    x_train, y_train, x_val, y_val = x[:1400], y[:1400], x[1400:], y[1400:]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                                    torch.nn.Linear(256, 128), torch.nn.ReLU(),
                                    torch.nn.Linear(128, 10))
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(param_groups_per_layer(model), lr=0.1, momentum=0.9)
    writer = EventWriter(log_dir)
    step = 0
    with Watcher(model, log_dir=log_dir, tensorboard=writer, every_n_steps=11, traps_every=2,
                 optimizer=opt, policies=[LayerLRBalancer()], max_duty=None,
                 wait="always",  # every requested step analysed: this loop outruns the analysis
                 tensorboard_options={"images_every": 0}) as watcher:
        for _ in range(5):
            for idx in torch.randperm(len(x_train), generator=gen).split(64):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
                opt.step()
                step += 1
                watcher.step()
            with torch.no_grad():
                val = torch.nn.functional.cross_entropy(model(x_val), y_val).item()
            writer.add_scalar("val_loss", val, global_step=step)
    writer.close()
    return log_dir


# ----------------------------------------------------------------------------- real run


@pytest.mark.slow
def test_report_of_a_real_run(watched_run, tmp_path):
    out = tmp_path / "report.html"
    proc = run_cli("report", watched_run, "-o", out)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text(encoding="utf-8")
    # offline: no URL anywhere but the SVG namespace name, a CSP that forbids every fetch
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text)
    assert "default-src 'none'" in text
    data = page_data(out)
    records = read_history(watched_run)
    assert data["steps"] == [r["step"] for r in records] and len(data["steps"]) >= 6
    assert data["layers"] == ["0", "2", "4"]
    last = {row["longname"]: row["alpha"] for row in records[-1]["layers"]}
    assert data["alpha"][-1] == [round(last[n], 3) for n in data["layers"]]
    assert any(t is not None for t in data["traps"]) and any(t is None for t in data["traps"])
    # the validation loss logged at each epoch end, paired with the analyses, rank-correlated
    (metric,) = [m for m in data["metrics"] if m["name"] == "val_loss"]
    assert metric["source"] == "TensorBoard events" and metric["n"] == 5
    scipy_stats = pytest.importorskip("scipy.stats")
    steps = np.array(data["steps"])
    means = np.array(data["means"]["ww/alpha_mean"], dtype=float)
    paired = [means[np.argmin(np.abs(steps - s))] for s in metric["x"]]
    expected = scipy_stats.spearmanr(metric["y"], paired).statistic
    assert metric["rho_alpha"] == pytest.approx(expected, abs=1e-4)
    # the policy's learning-rate multipliers, from the history's actions lines (the page's
    # alerts view lists their changes)
    actions = data["table"]["actions"]
    assert actions and all(set(a["lr_scale"]) <= {"0", "2", "4"} for a in actions)
    assert any(v != 1.0 for a in actions for v in a["lr_scale"].values())
    # spectra: the ESDs the run stored in ww_spectra.jsonl
    assert {n for r in data["spectra"]["records"] for n in r["layers"]} == {"0", "2", "4"}


@pytest.mark.slow
def test_write_report_python_api_and_compare_runs(watched_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(watched_run, run)
    written = ww_callbacks.write_report(run)
    assert written == run / "ww_report.html" and written.stat().st_size > 0
    proc = run_cli("compare", watched_run, run / "ww_history.jsonl", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["longname"] for r in rows] == ["0", "2", "4"]
    assert all(r["alpha_diff"] == 0 and not r["crossed"] for r in rows)


# ----------------------------------------------------------------------------- other metrics


def _history(folder: Path, alpha_means: list[float], *, epochs: list[int] | None = None,
             steps: list[int] | None = None, layers: int = 3):
    """A history file as the watcher writes it (``history.result_record``), with chosen means;
    returns its writer (actions and spectra lines of the same run)."""
    from ww_callbacks.history import HistoryWriter
    from ww_callbacks.results import AnalysisResult

    folder.mkdir(parents=True, exist_ok=True)
    writer = HistoryWriter(folder / "ww_history.jsonl")
    steps = steps or [10 * i for i in range(len(alpha_means))]
    for i, mean in enumerate(alpha_means):
        details = pd.DataFrame({
            "layer_id": range(layers), "longname": [f"l{k}" for k in range(layers)],
            "alpha": [mean + 0.1 * k for k in range(layers)], "status": "success"})
        summary = {"ww/alpha_mean": mean, "ww/alpha_weighted_mean": mean / 2}
        writer.append(AnalysisResult(steps[i], None if epochs is None else epochs[i], details,
                                     summary, 0.0, 0.01, False))
    return writer


def test_metrics_from_lightning_csv_hf_trainer_state_and_keras_csvlogger(tmp_path):
    means = [5.0, 4.0, 4.5, 3.0, 2.5, 2.0]
    # Lightning's CSVLogger: rows per step, val_loss only on some
    run = tmp_path / "lightning"
    _history(run, means)
    val = [0.9, 0.5, 0.7, 0.3, 0.2, 0.1]  # the ranks of the means
    pd.DataFrame({"epoch": [e for e in range(6) for _ in (0, 1)],
                  "step": [s for s in range(0, 60, 10) for _ in (0, 1)],
                  "train_loss": [1, np.nan] * 6,
                  "val_loss": [x for v in val for x in (np.nan, v)]}).to_csv(
        run / "metrics.csv", index=False)
    (metric,) = report_data(run)["metrics"]
    assert (metric["name"], metric["n"]) == ("val_loss", 6)
    assert metric["source"].startswith("Lightning")
    assert metric["rho_alpha"] == pytest.approx(spearman(val, means))
    assert metric["rho_alpha"] == pytest.approx(1.0)

    # Hugging Face Trainer: trainer_state.json's log_history, eval_* keys; its runtime and
    # throughputs are not validation metrics; 4 paired points: no correlation (issue 20: from
    # 5 paired points on), their number shown
    run = tmp_path / "hf" / "checkpoint-50"
    _history(run, means)
    log = [{"step": s, "epoch": s / 10, "eval_loss": v, "eval_runtime": 1.0 + s,
            "eval_samples_per_second": 9.0 - s / 10, "eval_steps_per_second": 3.0}
           for s, v in zip([0, 20, 40, 50], [2.0, 1.0, 1.5, 0.1], strict=True)]
    log.append({"step": 50, "loss": 0.3})
    (run / "trainer_state.json").write_text(json.dumps({"log_history": log}))
    (metric,) = report_data(run)["metrics"]
    assert (metric["name"], metric["n"], metric["source"]) == (
        "eval_loss", 4, "Hugging Face trainer_state.json")
    assert metric["rho_alpha"] is None and metric["rho_weighted"] is None

    # Keras CSVLogger: one row per epoch, matched to the last analysis of that epoch
    run = tmp_path / "keras"
    _history(run, [9.0, *means], epochs=[0, 0, 1, 2, 3, 4, 5],
             steps=[0, 5, 10, 20, 30, 40, 50])
    pd.DataFrame({"epoch": range(6), "loss": [1.0, 0.8, 0.7, 0.6, 0.5, 0.4],
                  "val_accuracy": [0.1, 0.3, 0.2, 0.5, 0.7, 0.9]}).to_csv(
        run / "training.log.csv", index=False)
    (metric,) = report_data(run)["metrics"]
    assert (metric["name"], metric["n"], metric["by"]) == ("val_accuracy", 6, "epoch")
    assert metric["rho_alpha"] == pytest.approx(-1.0)
    assert metric["rho_weighted"] == pytest.approx(-1.0)


def test_validation_metric_names():
    """val*/eval* losses and accuracies are validation metrics; runtimes, throughputs, steps
    and epochs are not (issue 20: eval/runtime was taken for the validation metric)."""
    from ww_callbacks.report import is_validation_metric

    for name in ("val_loss", "val_acc", "val_accuracy", "val_sparse_categorical_accuracy",
                 "eval_loss", "eval/loss", "eval_accuracy", "validation/loss", "val_loss_epoch",
                 "valid_perplexity"):
        assert is_validation_metric(name), name
    for name in ("eval/runtime", "eval_runtime", "eval_samples_per_second",
                 "eval/steps_per_second", "epoch", "val_epoch", "eval/step", "ww/alpha_mean",
                 "train_loss", "loss", "interval_loss", "validation"):
        assert not is_validation_metric(name), name


def test_spearman_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(30), rng.standard_normal(30)
    b[:5] = a[:5]
    a[3] = a[4]  # a tie
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(spearman([1, 2], [3, 4]))


def test_history_read_defensively(tmp_path):
    _history(tmp_path / "run", [3.0, 2.5])
    path = tmp_path / "run" / "ww_history.jsonl"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"step": 20, "epo')  # a torn last line (killed mid-write)
    assert [r["step"] for r in read_history(tmp_path / "run")] == [0, 10]
    assert [r["step"] for r in read_history(tmp_path)] == [0, 10]  # found one level down
    lines = path.read_text().splitlines()
    path.write_text("\n".join([json.dumps({"writer": {"pid": 1}}), *lines]) + "\n")
    assert [r["step"] for r in read_history(path)] == [0, 10]  # metadata lines passed over
    other = tmp_path / "other.jsonl"
    other.write_text('{"loss": 1.0}\n')
    with pytest.raises(ValueError, match="not a ww_callbacks history"):
        read_history(other)


# ----------------------------------------------------------------------------- size and browser


def _big_history(folder: Path, layers: int = 100, analyses: int = 200) -> None:
    """100 layers x 200 analyses, every 4th randomised, written as the watcher writes them."""
    from ww_callbacks.analysis import columns_for
    from ww_callbacks.history import HistoryWriter
    from ww_callbacks.results import AnalysisResult

    rng = np.random.default_rng(0)
    writer = HistoryWriter(folder / "ww_history.jsonl")
    cols = columns_for(randomize=True)
    base = rng.uniform(1.5, 8.0, layers)
    for t in range(analyses):
        randomized = t % 4 == 0
        alpha = base + np.sin(t / 20 + np.arange(layers)) + rng.normal(0, 0.05, layers)
        rows = {c: rng.standard_normal(layers) for c in cols}
        rows.update({"layer_id": np.arange(layers), "name": "weight",
                     "longname": [f"model.layers.{k // 4}.{['q', 'k', 'v', 'o'][k % 4]}_proj"
                                  for k in range(layers)],
                     "layer_type": "dense", "alpha": alpha, "status": "success", "warning": ""})
        rows["rand_num_spikes"] = rng.poisson(0.05, layers)
        details = pd.DataFrame(rows)[cols if randomized else columns_for()]
        summary = {"ww/alpha_mean": float(alpha.mean()),
                   "ww/alpha_weighted_mean": float(alpha.mean() - 1)}
        writer.append(AnalysisResult(t * 50, t // 10, details, summary, float(t), 0.1,
                                     randomized))


@pytest.fixture(scope="module")
def big_report(tmp_path_factory) -> tuple[Path, float]:
    folder = tmp_path_factory.mktemp("big")
    _big_history(folder)
    start = time.perf_counter()
    out = ww_callbacks.write_report(folder, folder / "report.html")
    return out, time.perf_counter() - start


def test_report_of_100_layers_x_200_analyses_is_small(big_report):
    out, seconds = big_report
    size = out.stat().st_size
    assert size <= 1.5e6, f"{size / 1e6:.2f} MB"
    data = page_data(out)
    assert len(data["steps"]) == 200 and len(data["layers"]) == 100
    assert data["layers"][:2] == ["model.layers.0.q_proj", "model.layers.0.k_proj"]
    assert seconds < 30


def _artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("WW_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                    "(apt-get install -y chromium); the report's browser check cannot run")
def test_report_in_headless_chromium_offline(big_report, tmp_path):
    out, _ = big_report
    url = out.resolve().as_uri()
    profile = tmp_path / "profile"
    proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
                           "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    assert not console, console  # no console message at all: no error, no blocked request
    drawn = re.search(r'data-drawn="([^"]*)"', dom)
    assert drawn, "the report's script did not finish"
    assert drawn.group(1).split() == ["title", "heatmap", "flow", "curves", "traps", "esd",
                                      "policies", "metrics"]
    # heatmap (the shared view, a canvas): one cell per layer and analysis
    canvas = re.search(r'<canvas[^>]*class="ww-heatmap-canvas"[^>]*>', dom).group(0)
    assert 'data-columns="200"' in canvas and 'data-rows="100"' in canvas, canvas
    # the flow (the shared view): every layer's point at the shown analysis, the last one first
    flow = re.search(r'<path[^>]*class="ww-flow-line"[^>]*>', dom).group(0)
    assert len(re.findall(r"[ML]", re.search(r' d="([^"]*)"', flow).group(1))) == 100
    assert re.search(r'<svg[^>]*class="ww-flow-svg"[^>]*data-step="9950"', dom)
    # every layer's alpha over time (the shared lines view: a canvas)
    assert re.search(r'<canvas[^>]*class="ww-lines-canvas"[^>]*data-drawn="100"', dom)
    assert dom.count('class="trap-layer"') > 0  # the layers that had traps
    shot = _artifacts(tmp_path) / "ww_report.png"
    proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'p2'}",
                           "--window-size=1280,2000", "--hide-scrollbars",
                           f"--screenshot={shot}", url], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0 and shot.stat().st_size > 10_000, proc.stderr[-2000:]


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                    "(apt-get install -y chromium); the report's browser check cannot run")
def test_report_hover_and_slider_over_devtools_offline(big_report, tmp_path):
    """The same page driven over the DevTools protocol with the network emulated offline: no
    console message, exception or request; hovering a heatmap cell shows its values; the flow
    slider redraws another analysis."""
    from chromium_pipe import open_offline, problems

    out, _ = big_report
    browser = open_offline(CHROMIUM, tmp_path / "profile", out.resolve().as_uri())
    try:
        assert browser.evaluate("document.body.dataset.drawn").split()[-1] == "metrics"
        data = page_data(out)
        t, l = 37, 12  # a cell: analysis 37, layer 12 (the shared heatmap's canvas)
        rect = ("JSON.stringify(document.querySelector('#views .ww-heatmap-canvas')"
                ".getBoundingClientRect())")
        box = json.loads(browser.evaluate(rect))
        browser.evaluate(f"window.scrollTo(0, {box['top']} - 10)")
        box = json.loads(browser.evaluate(rect))
        cw, ch = (float(browser.evaluate("document.querySelector('#views "
                                         f".ww-heatmap-canvas').dataset.{key}"))
                  for key in ("cellWidth", "rowHeight"))
        x, y = box["left"] + (t + 0.5) * cw, box["top"] + (l + 0.5) * ch
        browser.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y},
                     page=True)
        tip = browser.evaluate("document.querySelector('.ww-section-heatmap .ww-tip')"
                               ".textContent")
        alpha = data["alpha"][t][l]
        assert tip.startswith(f"{data['layers'][l]} \u2014 step {data['steps'][t]}"), tip
        assert f"alpha {alpha:.3f}" in tip, tip
        assert browser.evaluate("document.querySelector('.ww-section-heatmap .ww-tip')"
                                ".hidden") is False
        step = browser.evaluate("(() => { const s = document.querySelector('.ww-flow-slider');"
                                " s.value = 10; s.dispatchEvent(new Event('input')); return "
                                "document.querySelector('.ww-flow-svg').dataset.step; })()")
        assert step == str(data["steps"][10])
        # 100 layers x 200 analyses fit the page's width: nothing overflows sideways
        widths = json.loads(browser.evaluate(
            "JSON.stringify([document.documentElement.scrollWidth, "
            "document.documentElement.clientWidth])"))
        assert widths[0] <= widths[1], widths
        shot = browser.screenshot(_artifacts(tmp_path) / "ww_report_devtools.png")
        assert shot.stat().st_size > 10_000
        assert not problems(browser.events), problems(browser.events)
    finally:
        browser.close()


def test_spectra_and_policy_actions_from_the_history_files(tmp_path):
    """The ESDs come from the run's ww_spectra.jsonl and what the policies did from its
    actions lines (issue 20: no longer from TensorBoard events, nor from ``spectra`` and
    ``scalars`` fields no writer writes), in step order; a history without them says none were
    stored; another run's lines are not this run's."""
    from ww_callbacks.esd import compact_esd

    writer = _history(tmp_path, [4.0, 3.0, 2.5])
    rng = np.random.default_rng(0)
    for i, step in enumerate([0, 10, 20]):
        writer.append_actions(step, {"lr_scale": {"l0": [1.0, 0.5, 0.5][i]},
                                     "traps_removed": {"l1": [0, 0, 2][i]},
                                     "stop_reason": [None, None, "alpha below 2"][i]})
        evals = np.sort(rng.pareto(2.0, 200)) + 1e-3
        writer.append_spectra(step, {
            "l0": compact_esd(evals, {"alpha": 3.0, "xmin": float(evals[100]),
                                      "xmax": float(evals[-1])}),
            "l1": compact_esd([1.0, 2.0, 3.0])})
    writer.close()
    other = type(writer)(tmp_path / "ww_history.jsonl")  # another writer: not this run's
    other.append_actions(10, {"lr_scale": {"l0": 9.0}})
    other.append_spectra(10, {"l9": compact_esd([1.0, 2.0])})
    data = report_data(tmp_path)
    records = data["spectra"]["records"]
    assert {n for r in records for n in r["layers"]} == {"l0", "l1"}
    assert [r["step"] for r in records] == [0, 10, 20]
    assert sum(records[0]["layers"]["l0"]["counts"]) == 200
    assert data["sources"][:2] == ["ww_history.jsonl", "ww_spectra.jsonl"]
    # the actions lines as the tab gets them (this run's only, without their writer); the
    # page's alerts view shows their changes
    assert data["table"]["actions"] == [
        {"kind": "actions", "step": 0, "lr_scale": {"l0": 1.0}, "traps_removed": {"l1": 0},
         "stop_reason": None},
        {"kind": "actions", "step": 10, "lr_scale": {"l0": 0.5}, "traps_removed": {"l1": 0},
         "stop_reason": None},
        {"kind": "actions", "step": 20, "lr_scale": {"l0": 0.5}, "traps_removed": {"l1": 2},
         "stop_reason": "alpha below 2"}]

    bare = tmp_path / "old"
    _history(bare, [4.0, 3.0])
    data = report_data(bare)
    assert data["spectra"]["records"] == [] and data["table"]["actions"] == []
    assert data["spectra"]["note"].startswith("No ESD stored")


def test_nan_in_actions_and_stored_spectra_is_null_on_the_page(tmp_path):
    """The history's writer keeps NaN and infinities (JSON's NaN/Infinity); the page's data is
    plain JSON (null), not a crash of the report."""
    writer = _history(tmp_path, [4.0, 3.0])
    writer.append_actions(10, {"lr_scale": {"l0": float("nan")}, "stop_reason": None})
    writer.append_spectra(10, {"l0": {"counts": [1, 2], "alpha": float("inf"),
                                      "log10_lo": 0.0, "log10_hi": 1.0}})
    writer.close()
    data = page_data(ww_callbacks.write_report(tmp_path, tmp_path / "r.html"))
    assert data["table"]["actions"][0]["lr_scale"] == {"l0": None}
    assert data["spectra"]["records"][0]["layers"]["l0"]["alpha"] is None


@pytest.mark.slow
def test_report_of_a_real_lightning_run_with_csv_metrics(tmp_path):
    """A real Lightning fit with its CSVLogger and the WeightWatcher callback: the report finds
    ``val_loss`` in ``metrics.csv`` and pairs it with the analyses."""
    torch = pytest.importorskip("torch")
    L = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import CSVLogger

    from tests.test_lightning import DigitsMLP, digits_loader, quiet
    from ww_callbacks.integrations.lightning import WeightWatcherCallback

    class Net(DigitsMLP):  # the Lightning tests' digits MLP, with a validation metric
        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.nn.functional.cross_entropy(self(batch[0]), batch[1]))

        def val_dataloader(self):
            return digits_loader(512)

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Net()
        logger = CSVLogger(tmp_path, name="run")
        # epochs of ~40 ms outrun the analysis: wait="epoch" analyses every one
        callback = WeightWatcherCallback(every_n_epochs=1, max_duty=None, wait="epoch")
        L.Trainer(**quiet(max_epochs=4, logger=logger, callbacks=[callback])).fit(model)
    run_dir = Path(logger.log_dir)
    assert (run_dir / "ww_history.jsonl").exists() and (run_dir / "metrics.csv").exists()
    out = tmp_path / "report.html"
    proc = run_cli("report", run_dir, "-o", out)
    assert proc.returncode == 0, proc.stderr
    data = page_data(out)
    (metric,) = [m for m in data["metrics"] if m["name"] == "val_loss"]
    assert metric["source"] == "Lightning metrics.csv (metrics.csv)"
    assert len(metric["x"]) == 4 and metric["n"] == 4
    assert metric["rho_alpha"] is None or -1 <= metric["rho_alpha"] <= 1
