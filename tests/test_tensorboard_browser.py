"""A live ``tensorboard`` over a real example's logs, opened in headless Chromium (Debian's
``chromium``) as a user would: screenshots of the Images and Custom Scalars tabs are saved as test
artifacts (``$WW_TEST_ARTIFACTS``, default the test's tmp folder), and the page must have loaded
every ww image (decoded, non-empty) without a JavaScript error.

Chromium is driven with the DevTools protocol over ``--remote-debugging-pipe`` (file descriptors
3 and 4, NUL-separated JSON messages): no browser download and no websocket library needed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.chromium_pipe import Browser, script_errors

pytest.importorskip("tensorboard")
pytest.importorskip("matplotlib")

CHROMIUM = "/usr/bin/chromium"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PLOT_TAGS = ["ww_plots/alpha_heatmap", "ww_plots/correlation_flow", "ww_plots/alpha_histogram"]

#: Every text and image inside the page, shadow roots included (TensorBoard's dashboards are
#: Polymer elements: ``--dump-dom`` would not see into them).
COLLECT = """(() => {
  const texts = [], images = [];
  const walk = (node) => {
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.children || []) walk(child);
    if (node.tagName === "IMG") images.push({src: node.src, w: node.naturalWidth,
                                              complete: node.complete});
    if (node.nodeType === 1 && node.childElementCount === 0 && node.textContent)
      texts.push(node.textContent.trim());
  };
  walk(document.documentElement);
  return JSON.stringify({texts, images});
})()"""


def artifacts_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("WW_TEST_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def run_example(name: str, tmp_path: Path) -> Path:
    """Run an example into ``tmp_path``; return the folder to give TensorBoard."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TENSORBOARD_LOGGING_DIR", None)
    if name == "torch_digits":
        args = ["--log-dir", str(tmp_path / "ww_logs" / "torch_digits"), "--epochs", "6",
                "--every", "25"]
    else:
        args = ["--out", str(tmp_path / "ww_logs" / "hf_tiny"), "--epochs", "2"]
    subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *args], cwd=tmp_path,
                   env=env, check=True, timeout=900, capture_output=True)
    return tmp_path / "ww_logs"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("example", ["torch_digits", "hf_tiny"])
def test_live_tensorboard_in_headless_chromium(example, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (Debian's package)")
    if example == "hf_tiny":
        pytest.importorskip("transformers")
    logdir = run_example(example, tmp_path)
    port = free_port()
    board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                              "--host", "127.0.0.1", "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    browser = None
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 420  # TensorBoard starts slowly on a loaded 2-core machine
        tags: dict = {}
        while time.monotonic() < deadline:
            try:
                tags = get_json(f"{base}/data/plugin/images/tags")
                if any(tag in t for t in tags.values() for tag in PLOT_TAGS):
                    break
            except OSError:
                pass
            assert board.poll() is None, board.stderr.read()[-2000:]
            time.sleep(1)
        image_tags = sorted({t for run in tags.values() for t in run})
        assert set(PLOT_TAGS) <= set(image_tags), image_tags
        assert any(t.startswith("ww_esd_plot/") for t in image_tags)
        if example == "hf_tiny":  # HF's train/loss and the ww tags in one run
            scalars = get_json(f"{base}/data/plugin/scalars/tags")
            shared = [run for run, t in scalars.items() if "train/loss" in t
                      and any(k.startswith("ww_alpha/") for k in t)]
            assert shared, scalars.keys()

        out = artifacts_dir(tmp_path)
        browser = Browser(CHROMIUM, tmp_path / "profile", width=1400, height=1000)
        browser.open(f"{base}/#images", wait=False)
        expected = [t for t in image_tags if t.startswith("ww_plots/")]
        seen: dict = {}
        while time.monotonic() < deadline + 120:
            time.sleep(2)
            seen = json.loads(browser.evaluate(COLLECT))
            loaded = [im for im in seen["images"] if "individualImage" in im["src"]
                      and im["complete"] and im["w"] > 0]
            if all(t in seen["texts"] for t in expected) and len(loaded) >= len(expected):
                break
        browser.screenshot(out / f"{example}_images.png")
        for tag in expected:
            assert tag in seen["texts"], f"{tag} not on the Images tab"
        loaded = [im for im in seen["images"] if "individualImage" in im["src"]]
        assert loaded and all(im["complete"] and im["w"] > 0 for im in loaded), loaded
        # the model-level pictures first (TensorBoard sorts ww_esd_plot before ww_plots), in a
        # taller window
        browser.resize(1400, 1600)
        browser.open(f"{base}/#images&tagFilter=ww_plots", wait=False)
        for _ in range(30):
            time.sleep(2)
            seen = json.loads(browser.evaluate(COLLECT))
            shown = [im for im in seen["images"] if "individualImage" in im["src"]
                     and im["complete"] and im["w"] > 0]
            if len(shown) >= len(expected):
                break
        browser.screenshot(out / f"{example}_plots.png")
        assert all(tag in seen["texts"] for tag in expected)
        browser.resize(1400, 1000)

        browser.open(f"{base}/#custom_scalars&_smoothingWeight=0", wait=False)
        for _ in range(30):
            time.sleep(2)
            texts = json.loads(browser.evaluate(COLLECT))["texts"]
            if "alpha (all layers)" in texts:
                break
        browser.screenshot(out / f"{example}_custom_scalars.png")
        assert "alpha (all layers)" in texts and "ww model" in texts
        assert "learning-rate multipliers (LayerLRBalancer)" not in texts  # no empty charts
        assert script_errors(browser.events) == []
        assert (out / f"{example}_images.png").stat().st_size > 10_000
    finally:
        if browser is not None:
            browser.close()
        board.terminate()
        board.wait(30)
