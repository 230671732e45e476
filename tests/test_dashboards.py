"""The dashboards of issue 12: pictures, alerts and cadence, read back from real TensorBoard event
files (TensorBoard's ``EventAccumulator``) and a real offline W&B run; the figures themselves; the
tag registry."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

pytest.importorskip("tensorboard")
pytest.importorskip("matplotlib")

from tensorboard.plugins.custom_scalar import layout_pb2  # noqa: E402

from tests.events import read_events  # noqa: E402
from ww_callbacks import tags  # noqa: E402
from ww_callbacks.bands import FEW_EIGENVALUES  # noqa: E402
from ww_callbacks.figures import (  # noqa: E402
    DPI,
    ESD_SIZE,
    figure_to_rgb,
    layer_esd_figure,
    save_analysis_figures,
)
from ww_callbacks.history import load_history  # noqa: E402
from ww_callbacks.integrations.tensorboard import TensorBoardSink  # noqa: E402
from ww_callbacks.policies import LayerLRBalancer, TorchTarget, param_groups_per_layer  # noqa: E402
from ww_callbacks.session import WatchSession as Watcher  # noqa: E402

PLOTS = [tags.ALPHA_HEATMAP, tags.CORRELATION_FLOW, tags.ALPHA_HISTOGRAM]


def trapped_mlp() -> nn.Module:
    """An MLP whose middle layer holds one large element: a correlation trap (one MP spike of
    the shuffled spectrum, ``rand_num_spikes`` = 1)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    with torch.no_grad():
        model[2].weight[3, 5] = 3.0
    return model


class Recorder:
    def __init__(self):
        self.results = []

    def write(self, result, scalars):
        self.results.append(result)

    def close(self):
        pass


def watch(model: nn.Module, sinks: list, steps=(0, 1, 2, 3, 4), nan_at: int | None = None,
          trap_at: int | None = None, **kwargs) -> Recorder:
    """Snapshot at ``steps``, nudging the weights in between; at ``nan_at`` the last layer gets a
    NaN, at ``trap_at`` layer 2 a planted trap. Every analysis is delivered before the next
    snapshot."""
    recorder = Recorder()
    g = torch.Generator().manual_seed(1)
    with Watcher(sinks=[recorder, *sinks], **kwargs) as watcher:
        for step in steps:
            if step == nan_at:
                with torch.no_grad():
                    model[4].weight[0, 0] = math.nan
            if step == trap_at:
                with torch.no_grad():
                    model[2].weight[3, 5] = 3.0
            assert watcher.snapshot(model, step)
            assert watcher.wait_idle()
            watcher.poll()
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.002)
    return recorder



def test_tensorboard_images_alerts_and_final_step(tmp_path, capsys):
    sink = TensorBoardSink(log_dir=tmp_path, images_every=2, plot_on_change=False,
                           picture_duty=None)  # every frame the cadence asks for
    recorder = watch(trapped_mlp(), [sink], nan_at=3)
    assert recorder.results[0].details.set_index("longname").rand_num_spikes["2"] >= 1
    acc = read_events(tmp_path)
    images = acc.Tags()["images"]
    # model-level pictures at the 2nd and 4th analyses (steps 1, 3) and the final one (4),
    # drawn at close because it was not on schedule
    for tag in PLOTS:
        assert tag in images
        assert [im.step for im in acc.Images(tag)] == [1, 3, 4]
        png = acc.Images(tag)[-1]
        assert png.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.width >= 760 and png.height >= 440
    for layer in ("0", "2"):
        assert [im.step for im in acc.Images(f"ww_esd_plot/{layer}")] == [1, 3, 4]
    # the layer with NaN has no ESD at steps 3 and 4 (no spectrum), only at step 1
    assert [im.step for im in acc.Images("ww_esd_plot/4")] == [1]

    # the Text tab: ww/alerts, a markdown list per analysis with alerts
    assert "ww/alerts" in acc.PluginTagToContent("text")
    alerts = {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors("ww/alerts")}
    assert "correlation trap appeared in 2 (1)" in alerts[0]
    assert "NaN/Inf in the weights of 4" in alerts[3]
    assert alerts[3].startswith("- step 3: ")
    assert "step 3: NaN/Inf in the weights of 4" in capsys.readouterr().err  # console line


def test_tensorboard_draws_when_a_layer_gains_a_trap(tmp_path):
    """A trap appearing off schedule draws the model pictures and that layer's ESD at once."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    sink = TensorBoardSink(log_dir=tmp_path, images_every=100, picture_duty=None)
    recorder = Recorder()
    with Watcher(sinks=[recorder, sink]) as watcher:
        for step in (0, 1):
            if step == 1:
                with torch.no_grad():
                    model[2].weight[3, 5] = 3.0
            watcher.snapshot(model, step)
            watcher.wait_idle()
            watcher.poll()
        sink.pictures.wait_idle()  # (pictures are drawn in the sink's own thread)
        acc = read_events(tmp_path)  # before close: what the trap alone made the sink draw
        assert [im.step for im in acc.Images("ww_esd_plot/2")] == [1]
        assert [im.step for im in acc.Images(tags.CORRELATION_FLOW)] == [1]
        assert "ww_esd_plot/0" not in acc.Tags()["images"]  # no change there, not on schedule
    traps = [r.details.set_index("longname").rand_num_spikes["2"] for r in recorder.results]
    assert traps[0] == 0 and traps[1] >= 1
    acc = read_events(tmp_path)  # close drew the final analysis' other layers, once
    assert [im.step for im in acc.Images("ww_esd_plot/0")] == [1]
    assert [im.step for im in acc.Images("ww_esd_plot/2")] == [1]
    assert [im.step for im in acc.Images(tags.CORRELATION_FLOW)] == [1]


def test_layout_has_policy_charts_only_when_used(tmp_path):
    model = trapped_mlp()
    opt = torch.optim.SGD(param_groups_per_layer(model), lr=0.01)
    sink = TensorBoardSink(log_dir=tmp_path, images_every=0)
    watch(model, [sink], steps=(0, 1), policies=[LayerLRBalancer()],
          target=TorchTarget(model, [opt]))
    acc = read_events(tmp_path)
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors("custom_scalars__config__")[-1]
                           .tensor_proto.string_val[0])
    charts = {ch.title: list(ch.multiline.tag) for c in layout.category for ch in c.chart}
    assert charts["learning-rate multipliers (LayerLRBalancer)"] == ["ww_lr_scale/.*"]
    assert "trap components removed (TrapRemoval)" not in charts
    assert any(t.startswith("ww_lr_scale/") for t in acc.Tags()["scalars"])


def test_esd_figure_marks_traps_edges_and_few_eigenvalues():
    rec = Recorder()
    with Watcher(sinks=[rec]) as watcher:
        watcher.snapshot(trapped_mlp(), 0)
    (result,) = rec.results
    rows = result.details.set_index("longname")
    row = {"longname": "2", **rows.loc["2"].to_dict()}
    assert set(result.rand_spectra) == {"0", "2", "4"}  # kept where traps were counted
    fig = layer_esd_figure(row, result.spectra["2"], result.rand_spectra["2"], step=0)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "randomized ESD" in labels
    assert any(label.startswith("MP bulk edge (log10 λ=") for label in labels)
    assert "trap spike (1)" in labels
    xmin = float(row["xmin"])
    assert f"xmin (log10 λ={math.log10(xmin):.2f})" in labels  # the axis' own units
    # the trap line sits at the largest randomized eigenvalue, on the log10 axis
    trap_lines = [ln for ln in fig.axes[0].lines if ln.get_label() == "trap spike (1)"]
    assert trap_lines[0].get_xdata()[0] == pytest.approx(math.log10(result.rand_spectra["2"][-1]))
    texts = [t.get_text() for t in fig.axes[0].texts]
    few = int(row["num_pl_spikes"]) < FEW_EIGENVALUES
    assert any("caution" in t for t in texts) == few
    small = {**row, "num_pl_spikes": 10}
    fig = layer_esd_figure(small, result.spectra["2"])
    assert any(f"fitted on 10 eigenvalues (< {FEW_EIGENVALUES})" in t.get_text()
               for t in fig.axes[0].texts)
    assert figure_to_rgb(fig).shape == (round(ESD_SIZE[1] * DPI), round(ESD_SIZE[0] * DPI), 3)


def test_save_analysis_figures(tmp_path):
    rec = Recorder()
    log_dir = tmp_path / "run"
    watch(trapped_mlp(), [rec], steps=(0, 1, 2), log_dir=log_dir)
    result = rec.results[-1]
    paths = save_analysis_figures(result.details, tmp_path / "plots", result.spectra,
                                  load_history(log_dir), rand_spectra=result.rand_spectra)
    names = sorted(p.name for p in paths)
    assert names == ["alpha_heatmap.png", "alpha_histogram.png", "correlation_flow.png",
                     "esd_0.png", "esd_2.png", "esd_4.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert len(save_analysis_figures(result.details, tmp_path / "p2")) == 2  # no spectra


def test_tag_registry():
    assert tags.family_of("ww_lr_scale/0").owner == "LayerLRBalancer"
    assert tags.family_of("ww_traps_removed/0").owner == "TrapRemoval"
    assert tags.family_of("ww/stop_reason").owner == "HTSREarlyStopping"
    assert tags.family_of("ww/alpha_mean").prefix == "ww"
    assert tags.family_of("ww_alpha/0").prefix == "ww_alpha"
    assert tags.family_of("loss") is None
    globs = tags.wandb_globs()
    for glob in ("ww/*", "ww_alpha/*", "ww_lr_scale/*", "ww_traps_removed/*", "ww_plots/*",
                 "ww_esd_plot/*"):
        assert glob in globs
    assert tags.declare("ww_lr_scale", "learning-rate multipliers (LayerLRBalancer)",
                        owner="LayerLRBalancer") == "ww_lr_scale"  # the same again: fine
    with pytest.raises(ValueError, match="already declared"):
        tags.declare("ww_lr_scale", "something else")


# ---------------------------------------------------------------------------------- W&B


def test_wandb_pictures_alerts_and_table(wandb_offline):
    wandb = pytest.importorskip("wandb")
    from test_wandb_sink import history_rows, run_file, table_files, wandb_records

    from ww_callbacks.integrations.wandb import STEP_COLUMN, WandbSink

    run = wandb.init(project="ww-test", dir=wandb_offline)
    sink = WandbSink(run, images_every=2, table_every=1, alerts=True, plot_on_change=False,
                     picture_duty=None)
    watch(trapped_mlp(), [sink], steps=(0, 1, 2))
    run.finish()

    records = wandb_records(run_file(wandb_offline))
    rows = history_rows(records)
    image_rows = [r for r in rows if f"{tags.CORRELATION_FLOW}._type" in r]
    # the 2nd analysis (step 1) and the final one (step 2, drawn at close), each on its own step
    assert [r["ww/step"] for r in image_rows] == [1, 2]
    for row in image_rows:
        for tag in [*PLOTS, "ww_esd_plot/0", "ww_esd_plot/2", "ww_esd_plot/4"]:
            assert row[f"{tag}._type"] == "image-file"
            assert row[f"{tag}.format"] == "png"
    media = list(wandb_offline.glob("**/offline-run-*/files/media/images/ww_plots/*.png"))
    assert len(media) == 6
    # alerts: the trap at step 0 as text on the step axis, and raised with run.alert
    (alert_row,) = [r for r in rows if tags.ALERTS in r]
    assert alert_row["ww/step"] == 0 and "correlation trap appeared in 2" in alert_row[tags.ALERTS]
    alerts = [r for r in records if r["type"] == "alert"]
    assert alerts and "correlation trap appeared in 2" in json.dumps(alerts[0])
    # the table: step, layer index and the fit-quality columns
    table = table_files(wandb_offline)[0]
    for column in ("layer_id", "xmin", "D", "num_pl_spikes", "lambda_max", STEP_COLUMN):
        assert column in table["columns"]
    assert [r[table["columns"].index(STEP_COLUMN)] for r in table["data"]] == [0, 0, 0]
    assert [r[table["columns"].index("layer_id")] for r in table["data"]] == [1, 3, 5]
    # every key on the step metric
    metrics = [r["metric"] for r in records if r["type"] == "metric"]
    globs = [m["glob_name"][:-1] for m in metrics if m.get("step_metric") == "ww/step"]
    keys = {k.split(".", 1)[0] if k.startswith("ww_") else k for r in rows for k in r
            if not k.startswith("_")}
    assert all(any(k.startswith(g) for g in globs) for k in keys if k != "ww/step"), keys
    assert np.isfinite([r["ww/alpha_mean"] for r in rows if "ww/alpha_mean" in r]).all()


def test_hf_run_dir_finds_hugging_faces_own_run(tmp_path, monkeypatch):
    """The folder Hugging Face's TensorBoardCallback writes to, so the ww tags can share it."""
    from types import SimpleNamespace

    from ww_callbacks.integrations.tensorboard import hf_run_dir

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    args = SimpleNamespace(output_dir=str(tmp_path))
    assert hf_run_dir(args) is None  # HF has not started its run
    run = tmp_path / "runs" / "Dec02_01-00-00_host"
    run.mkdir(parents=True)
    (tmp_path / "runs" / "empty").mkdir()
    (run / "events.out.tfevents.1.host").write_bytes(b"")
    assert hf_run_dir(args) == str(run)
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "chosen"))
    assert hf_run_dir(args) == str(tmp_path / "chosen")
    assert hf_run_dir(SimpleNamespace(output_dir="x", logging_dir="/given")) == "/given"
