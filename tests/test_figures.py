"""Issue 20: the TensorBoard pictures can be read without the HTSR tab. Images read back with
TensorBoard's own reader have the documented pixel size; every text of every picture is at least
``MIN_TEXT_PX`` high on a ``CARD_WIDTH_PX``-wide Images card; the heatmap's continuous colour
scale is the browser views' one and marks 2 and 6; trap counts are shown."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
pytest.importorskip("tensorboard")
matplotlib = pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

import ww_callbacks  # noqa: E402
from tests.events import read_events  # noqa: E402
from ww_callbacks import figures, tags  # noqa: E402
from ww_callbacks.bands import ALPHA_SCALE, ALPHA_SCALE_RANGE  # noqa: E402
from ww_callbacks.integrations.tensorboard import TensorBoardSink  # noqa: E402
from ww_callbacks.session import WatchSession  # noqa: E402

HEATMAP_JS = Path(ww_callbacks.__file__).parent / "views" / "heatmap.js"


def on_card(fig) -> float:
    """The smallest text of ``fig`` in pixels once the picture is shown CARD_WIDTH_PX wide."""
    figures.figure_to_rgb(fig)  # drawn: the ticks exist
    width_px = fig.get_figwidth() * fig.dpi
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text)
             if t.get_visible() and t.get_text().strip()]
    assert sizes
    return min(sizes) * fig.dpi / 72 * figures.CARD_WIDTH_PX / width_px


def trapped_small_mlp() -> nn.Module:
    """64 -> 128 -> 96 -> 10, a planted large element in the first layer (a correlation trap);
    the last layer has 10 eigenvalues: low evidence."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 96), nn.ReLU(),
                          nn.Linear(96, 10))
    with torch.no_grad():
        for layer in model[::2]:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.05)
        model[0].weight[3, 5] = 3.0
    return model


def test_tensorboard_images_are_large_and_readable_on_a_card(tmp_path):
    sink = TensorBoardSink(log_dir=tmp_path, images_every=1, plot_on_change=False,
                           picture_duty=None)
    model = trapped_small_mlp()
    with WatchSession(sinks=[sink], analysis_in="thread") as session:
        for step in (0, 1, 2):
            assert session.snapshot(model, step)
            assert session.wait_idle()
            session.poll()
    acc = read_events(tmp_path)
    width = round(figures.WIDTH * figures.DPI)
    heights = {tags.CORRELATION_FLOW: figures.SUMMARY_SIZE[1],
               tags.ALPHA_HISTOGRAM: figures.SUMMARY_SIZE[1],
               tags.ALPHA_HEATMAP: 4.0,  # 3 rows: the smallest heatmap, 2.6 + 1.25 in rounded up
               "ww_esd_plot/0": figures.ESD_SIZE[1], "ww_esd_plot/4": figures.ESD_SIZE[1]}
    for tag, inches in heights.items():
        events = acc.Images(tag)
        assert [e.step for e in events] == [0, 1, 2], tag
        png = Image.open(io.BytesIO(events[-1].encoded_image_string))
        assert png.size == (events[-1].width, events[-1].height) == (width, round(inches * 150))
    assert width >= 900  # larger than the 760-800 pixels before issue 20

    # every text of the last frame's pictures, as TensorBoard shows them on a 360-px card
    board = sink.dashboard
    last = board.last
    rows = last.details.set_index("longname")
    assert rows.rand_num_spikes["0"] >= 1 and board.low_evidence == {"4": 10}
    drawn = {
        "heatmap": figures.alpha_heatmap_figure(*board.heatmap(), low_evidence=board.low_evidence),
        "flow": figures.correlation_flow_figure(last.details, step=2,
                                                min_evals_for_trust=last.min_evals_for_trust),
        "histogram": figures.alpha_histogram_figure(last.details, step=2),
        "esd": figures.layer_esd_figure({"longname": "0", **rows.loc["0"].to_dict()},
                                        last.spectra["0"], last.rand_spectra["0"], step=2),
    }
    for name, fig in drawn.items():
        assert on_card(fig) >= figures.MIN_TEXT_PX, name
    heatmap = drawn["heatmap"]
    texts = [t.get_text() for t in heatmap.findobj(matplotlib.text.Text)]
    traps = int(rows.rand_num_spikes["0"])
    assert f"alpha by layer and step; traps at step 2: {traps} in 1 layer" in texts
    assert "4 (10)" in [t.get_text() for t in heatmap.axes[0].get_yticklabels()]
    assert "< 50 eigenvalues" in drawn["flow"].axes[0].get_legend_handles_labels()[1]


def test_heatmap_colour_is_continuous_with_2_and_6_on_its_scale():
    cmap = figures.alpha_colormap()
    lo, hi = ALPHA_SCALE_RANGE
    colour = {a: cmap((a - lo) / (hi - lo)) for a in (4.1, 2.45, 2.0, 1.97)}
    assert colour[4.1] != colour[2.45]  # a drift inside the band shows
    assert np.allclose(colour[2.0], colour[1.97], atol=0.03)  # 2.00 -> 1.97 is no jump
    fig = figures.alpha_heatmap_figure(["a", "b"], [0, 1], [[4.1, 2.45], [2.0, np.nan]],
                                       [[0, 3], [0, 0]])
    scale = fig.axes[1]  # the colour bar
    marked = sorted(round(line.get_ydata()[0], 6) for line in scale.lines)
    assert marked == [2.0, 6.0]
    cells = [t.get_text() for t in fig.axes[0].texts]
    assert {"4.1", "2.5", "2.0", "3 traps"} <= set(cells)


def test_colour_scale_is_the_browser_views():
    """One scale wherever a user looks: the figures' stops are heatmap.js's."""
    text = HEATMAP_JS.read_text()
    body = re.search(r"const STOPS = \[(.*?)\];", text, re.S).group(1)
    stops = tuple((float(a), (int(r), int(g), int(b))) for a, r, g, b in re.findall(
        r"\[([\d.]+),\s*\[(\d+),\s*(\d+),\s*(\d+)\]\]", body))
    assert stops == ALPHA_SCALE
    ends = re.search(r"ALPHA_RANGE = \[([\d.]+),\s*([\d.]+)\]", text).groups()
    assert tuple(map(float, ends)) == ALPHA_SCALE_RANGE


def test_a_deep_model_s_heatmap_labels_every_kth_row_and_stays_readable():
    names = [f"bert.encoder.layer.{i // 6}.attention.output.dense.{i % 6}" for i in range(150)]
    rng = np.random.default_rng(0)
    fig = figures.alpha_heatmap_figure(names, list(range(40)), rng.uniform(1, 8, (150, 40)),
                                       rng.integers(0, 2, (150, 40)))
    assert fig.get_figheight() <= 11.5
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert 25 <= len(labels) <= 60 and all(len(label) <= figures.LABEL_CHARS for label in labels)
    assert on_card(fig) >= figures.MIN_TEXT_PX
