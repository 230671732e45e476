"""TensorBoardSink on real results, read back with TensorBoard's own readers."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

pytest.importorskip("tensorboard")
pytest.importorskip("matplotlib")

from tensorboard.plugins.custom_scalar import layout_pb2  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from tests.events import read_events  # noqa: E402
from ww_callbacks.faults import WatcherWarning  # noqa: E402
from ww_callbacks.figures import DPI, ESD_SIZE  # noqa: E402
from ww_callbacks.integrations.tensorboard import (  # noqa: E402
    EventWriter,
    TensorBoardSink,
    esd_figure,
    figure_to_rgb,
)
from ww_callbacks.session import WatchSession as Watcher  # noqa: E402

LAYOUT_TAG = "custom_scalars__config__"


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 96), nn.ReLU(),
                         nn.Linear(96, 10))


def _run(model: nn.Module, sink: TensorBoardSink, steps=(0, 10, 20, 30), **kwargs) -> list:
    """Snapshot ``model`` at ``steps`` (changing its weights in between), one result each."""
    results = []
    g = torch.Generator().manual_seed(1)
    with Watcher(sinks=[sink], **kwargs) as watcher:
        for step in steps:
            assert watcher.snapshot(model, step)
            assert watcher.wait_idle()
            results += watcher.poll()
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.05)
    assert [r.step for r in results] == list(steps)
    return results



def test_scalars_histograms_images_layout(tmp_path):
    sink = TensorBoardSink(log_dir=tmp_path, images_every=2, picture_duty=None)
    results = _run(_mlp(), sink)
    acc = read_events(tmp_path)
    tags = acc.Tags()
    layers = list(results[0].details.longname)
    assert layers == ["0", "2", "4"]

    # every layer's alpha at every step, equal to the analysis (stored as float32)
    for layer in layers:
        events = acc.Scalars(f"ww_alpha/{layer}")
        assert [e.step for e in events] == [r.step for r in results]
        expected = [float(r.details.set_index("longname").alpha[layer]) for r in results]
        np.testing.assert_allclose([e.value for e in events], expected, rtol=1e-6)
        assert f"ww_alpha_weighted/{layer}" in tags["scalars"]
        assert f"ww_traps/{layer}" in tags["scalars"]  # traps_every=1: every analysis
    mean = acc.Scalars("ww/alpha_mean")
    assert mean[-1].value == pytest.approx(results[-1].summary["ww/alpha_mean"], rel=1e-6)
    assert "ww/snapshots_dropped" in tags["scalars"]
    # the snapshot's wall time, not the delivery's
    assert acc.Scalars("ww_alpha/0")[0].wall_time == pytest.approx(results[0].wall_time)

    # ESD histograms of log10 eigenvalues, every write
    for layer in layers:
        hist = acc.Histograms(f"ww_esd/{layer}")
        assert [h.step for h in hist] == [r.step for r in results]
        evals = results[-1].spectra[layer]
        value = hist[-1].histogram_value
        assert value.num == np.count_nonzero(evals > 0)
        assert value.min == pytest.approx(np.log10(evals[evals > 0].min()))
        assert value.max == pytest.approx(np.log10(evals.max()))

    # ESD plots at the 2nd and 4th writes (images_every=2: the initial weights are not
    # plotted, which keeps matplotlib away from the start of training), PNGs of the figure's size
    for layer in layers:
        images = acc.Images(f"ww_esd_plot/{layer}")
        assert [im.step for im in images] == [10, 30]
        assert images[0].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
        assert (images[0].width, images[0].height) == (round(ESD_SIZE[0] * DPI),
                                                       round(ESD_SIZE[1] * DPI))

    # the custom-scalars layout: a string tensor holding a serialized Layout proto, written once
    assert LAYOUT_TAG in tags["tensors"]
    assert list(acc.PluginTagToContent("custom_scalars")) == [LAYOUT_TAG]
    (event,) = acc.Tensors(LAYOUT_TAG)
    layout = layout_pb2.Layout()
    layout.ParseFromString(event.tensor_proto.string_val[0])
    charts = {(c.title, ch.title): list(ch.multiline.tag)
              for c in layout.category for ch in c.chart}
    assert charts[("ww layers", "alpha (all layers)")] == ["ww_alpha/.*"]
    assert charts[("ww layers", "alpha_weighted (all layers)")] == ["ww_alpha_weighted/.*"]
    assert charts[("ww layers", "correlation traps (all layers)")] == ["ww_traps/.*"]
    # no empty chart for a policy that is not used (issue 12)
    assert ("ww layers", "learning-rate multipliers (LayerLRBalancer)") not in charts
    assert {c.title for c in layout.category} == {"ww layers", "ww model"}
    model_tags = [t for (cat, _), ts in charts.items() if cat == "ww model" for t in ts]
    assert "ww/alpha_mean$" in model_tags and "ww/layers_.*" in model_tags


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # tensorboard's vendored html5lib
def test_layout_renders_in_custom_scalars_plugin(tmp_path):
    """TensorBoard's own custom-scalars plugin finds the layout and the regex's curves."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.custom_scalar.custom_scalars_plugin import CustomScalarsPlugin
    from tensorboard.plugins.scalar.scalars_plugin import ScalarsPlugin

    _run(_mlp(), TensorBoardSink(log_dir=tmp_path), steps=(0, 5))
    mux = pem.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    plugins: dict = {}
    provider = data_provider.MultiplexerDataProvider(mux, str(tmp_path))
    tb = base_plugin.TBContext(logdir=str(tmp_path), multiplexer=mux, data_provider=provider,
                               plugin_name_to_instance=plugins)
    plugins["scalars"] = ScalarsPlugin(tb)
    plugin = CustomScalarsPlugin(tb)
    ctx = context.RequestContext()
    layout = json.loads(plugin.layout_impl(ctx, ""))
    titles = [c["title"] for c in layout["category"]]
    assert titles == ["ww layers", "ww model"]
    regex = layout["category"][0]["chart"][0]["multiline"]["tag"][0]
    assert regex == "ww_alpha/.*"
    curves = plugin.scalars_impl(ctx, ".", regex, "")
    assert curves["regex_valid"]
    assert sorted(curves["tag_to_events"]) == ["ww_alpha/0", "ww_alpha/2", "ww_alpha/4"]
    assert all(len(points) == 2 for points in curves["tag_to_events"].values())


def test_scalars_false_and_cadences(tmp_path):
    sink = TensorBoardSink(log_dir=tmp_path, scalars=False, histograms_every=2, images_every=0,
                           layout=False, alerts=False)
    _run(_mlp(), sink, steps=(0, 1, 2))
    tags = read_events(tmp_path).Tags()
    assert not tags["scalars"] and not tags["images"] and not tags["tensors"]
    acc = read_events(tmp_path)
    assert [h.step for h in acc.Histograms("ww_esd/0")] == [0, 2]


def test_image_cap_lowest_alpha_first(tmp_path):
    sink = TensorBoardSink(log_dir=tmp_path, max_images=2, histograms_every=0, images_every=1,
                           picture_duty=None)
    (result,) = _run(_mlp(), sink, steps=(0,))
    lowest = result.details.sort_values("alpha").longname[:2]
    esd_tags = [t for t in read_events(tmp_path).Tags()["images"] if t.startswith("ww_esd_plot/")]
    assert sorted(esd_tags) == sorted(f"ww_esd_plot/{name}" for name in lowest)


def test_passed_writer_is_not_closed(tmp_path):
    writer = SummaryWriter(log_dir=str(tmp_path))
    sink = TensorBoardSink(writer, images_every=0)
    _run(_mlp(), sink, steps=(0,))  # the watcher closes the sink
    writer.add_scalar("after/close", 1.0, global_step=7)  # still usable
    writer.close()
    acc = read_events(tmp_path)
    assert acc.Scalars("after/close")[0].step == 7
    assert "ww_alpha/0" in acc.Tags()["scalars"]


def test_writer_is_flushed_after_every_write(tmp_path):
    """A running TensorBoard sees each result at once: nothing waits in the writer's queue."""
    model = _mlp()
    sink = TensorBoardSink(log_dir=tmp_path, images_every=0)
    watcher = Watcher(sinks=[sink])
    try:
        watcher.snapshot(model, 3)
        watcher.wait_idle()
        watcher.poll()
        assert [e.step for e in read_events(tmp_path).Scalars("ww_alpha/0")] == [3]
    finally:
        watcher.close()


def test_esd_figure_normal_and_degenerate():
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    w = rng.standard_t(3, size=(300, 120)) * 0.05
    evals = np.sort(np.linalg.eigvalsh(w.T @ w))
    cases = [
        (evals, 2.7, float(evals[60]), float(evals[-1])),  # a normal fit
        (evals, -1.0, -1.0, -1.0),  # a failed fit, as analyze reports it
        (evals, float("nan"), float("nan"), float("nan")),
        (np.array([]), -1.0, -1.0, -1.0),  # no eigenvalues
        (np.zeros(10), -1.0, -1.0, -1.0),  # all zero
        (np.full(10, 3.0), 2.0, 3.0, 3.0),  # one distinct value
        (np.array([1e-30, 1.0, np.inf, np.nan]), 2.0, 1.0, 1.0),
    ]
    for ev, alpha, xmin, xmax in cases:
        fig = esd_figure(ev, alpha, xmin, xmax, title="layer")
        assert isinstance(fig, Figure)
        image = figure_to_rgb(fig)
        assert image.dtype == np.uint8 and image.shape == (round(ESD_SIZE[1] * DPI),
                                                           round(ESD_SIZE[0] * DPI), 3)


def test_plots_leave_pyplot_and_the_backend_alone(tmp_path):
    """A fresh interpreter that chose its backend: writing ESD plots imports no pyplot (unless a
    library had already: tensorflow's TensorBoard does) and keeps the backend."""
    code = f"""
import sys, matplotlib
matplotlib.use("svg")
import torch, torch.nn as nn
from ww_callbacks.session import WatchSession as Watcher
from ww_callbacks.integrations.tensorboard import TensorBoardSink
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
sink = TensorBoardSink(log_dir={str(tmp_path)!r}, images_every=1)
before = "matplotlib.pyplot" in sys.modules
with Watcher(sinks=[sink]) as w:
    w.snapshot(model, 0)
after = "matplotlib.pyplot" in sys.modules
print("pyplot-imported" if after and not before else "pyplot-untouched", matplotlib.get_backend())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["pyplot-untouched", "svg"]
    assert read_events(tmp_path).Tags()["images"]


def test_no_matplotlib_skips_images_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    sink = TensorBoardSink(log_dir=tmp_path, images_every=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run(_mlp(), sink, steps=(0, 1))
    ours = [w for w in caught if issubclass(w.category, WatcherWarning)]
    assert len(ours) == 1 and "matplotlib" in str(ours[0].message)
    tags = read_events(tmp_path).Tags()
    assert not tags["images"] and "ww_alpha/0" in tags["scalars"] and tags["histograms"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="images_every"):
        TensorBoardSink(writer=object(), images_every=-1)


def test_no_tensorboard_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    monkeypatch.setitem(sys.modules, "tensorboard.compat.proto.event_pb2", None)
    with pytest.raises(ImportError, match=r"pip install ww_callbacks\[tensorboard\]"):
        TensorBoardSink(log_dir="unused")


class ThreadRecordingSink(TensorBoardSink):
    """The real sink, noting which thread writes."""

    def write(self, result, scalars):
        self.threads = getattr(self, "threads", []) + [threading.current_thread().name]
        super().write(result, scalars)


def test_heavy_work_runs_in_the_worker_thread(tmp_path):
    """With in_worker (the default) the watcher writes from its worker thread, so rendering the
    plots never holds up training; in_worker=False keeps writes on the training thread."""
    for in_worker, thread in ((True, "ww-worker"), (False, threading.current_thread().name)):
        sink = ThreadRecordingSink(log_dir=tmp_path / str(in_worker), in_worker=in_worker,
                                   images_every=1)
        _run(_mlp(), sink, steps=(0, 1))
        assert sink.threads == [thread, thread]
        assert read_events(tmp_path / str(in_worker)).Tags()["images"]


def test_event_writer_without_torch_or_tensorflow(tmp_path):
    """TensorBoard's own event writer (what the Keras callback uses): scalars, histograms, PNG
    images and the custom-scalars layout, read back with TensorBoard's reader."""
    sink = TensorBoardSink(EventWriter(tmp_path), owns_writer=True, images_every=1)
    results = _run(_mlp(), sink, steps=(0, 10))
    acc = read_events(tmp_path)
    tags = acc.Tags()
    for layer in results[0].details.longname:
        events = acc.Scalars(f"ww_alpha/{layer}")
        assert [e.step for e in events] == [0, 10]
        expected = [float(r.details.set_index("longname").alpha[layer]) for r in results]
        np.testing.assert_allclose([e.value for e in events], expected, rtol=1e-6)
        hist = acc.Histograms(f"ww_esd/{layer}")[-1].histogram_value
        evals = results[-1].spectra[layer]
        assert hist.num == np.count_nonzero(evals > 0)
        assert hist.max == pytest.approx(np.log10(evals.max()))
        image = acc.Images(f"ww_esd_plot/{layer}")[0]
        assert image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    assert LAYOUT_TAG in tags["tensors"]
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors(LAYOUT_TAG)[0].tensor_proto.string_val[0])
    assert any(list(ch.multiline.tag) == ["ww_alpha/.*"] for c in layout.category
               for ch in c.chart)
