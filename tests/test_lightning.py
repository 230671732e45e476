"""The Lightning integration with real trainers (no mocks), on scikit-learn's digits.

Every fit is small (an MLP with 128 hidden units, 29 batches of 64 per epoch, a few epochs), so
each test takes seconds on two cores. Outputs go to ``tmp_path``. The module and helpers are
defined at module level so that ``ddp_spawn`` can pickle them.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import warnings
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

L = pytest.importorskip("lightning.pytorch")
pytest.importorskip("sklearn")

from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import ww_callbacks  # noqa: E402
import ww_callbacks.session.watch_session  # noqa: E402
from ww_callbacks.faults import WatcherWarning  # noqa: E402
from ww_callbacks.history import load_history, read_records  # noqa: E402
from ww_callbacks.integrations.lightning import WeightWatcherCallback  # noqa: E402

BATCHES = 29  # ceil(1797 / 64)
WW_SUMMARY_TAGS = ["ww/alpha_mean", "ww/alpha_weighted_mean", "ww/num_traps",
                   "ww/layers_over_trained", "ww/layers_under_trained", "ww/snapshots_dropped"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------- data and models




@functools.lru_cache(maxsize=1)
def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 8x8 digits, scaled to [0, 1]."""
    digits = load_digits()
    return torch.tensor(digits.data, dtype=torch.float32) / 16.0, torch.tensor(digits.target)


def digits_loader(batch_size: int = 64) -> torch.utils.data.DataLoader:
    x, y = digits_tensors()
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                       batch_size=batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(0))


class _DigitsMixin:
    """A 64-128-128-10 MLP; optional faults: raise at a global step, NaN weights after an
    epoch. Shared by the ``lightning.pytorch`` and ``pytorch_lightning`` modules."""

    def __init__(self, hidden: int = 128, lr: float = 0.05, fail_at_step: int | None = None,
                 nan_at_epoch: int | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, 10))
        self.lr = lr
        self.fail_at_step = fail_at_step
        self.nan_at_epoch = nan_at_epoch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if self.fail_at_step is not None and self.global_step == self.fail_at_step:
            raise RuntimeError(f"training failed at step {self.global_step}")
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def on_train_epoch_end(self) -> None:
        if self.nan_at_epoch is not None and self.current_epoch == self.nan_at_epoch:
            with torch.no_grad():
                self.net[2].weight.fill_(float("nan"))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    def train_dataloader(self):
        return digits_loader()


class DigitsMLP(_DigitsMixin, L.LightningModule):
    """The test module for ``lightning.pytorch``."""


def quiet(**kwargs) -> dict:
    """Trainer arguments of a small, silent CPU run (overridable)."""
    base = dict(accelerator="cpu", devices=1, enable_progress_bar=False,
                enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=10)
    base.update(kwargs)
    return base


def scalar_events(log_dir: str | os.PathLike) -> dict[str, list]:
    """All scalar events of a TensorBoard run folder: tag -> [ScalarEvent]."""
    ea_module = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea_module.EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def history_steps(path: str | os.PathLike) -> list[int]:
    return [r["step"] for r in read_records(path)]


def no_worker_alive() -> bool:
    return not [t for t in threading.enumerate() if t.name == "ww-worker" and t.is_alive()]


# ---------------------------------------------------------------------------- 1, 2: logging


def test_fit_logs_to_tensorboard_and_csv_equal_to_history(tmp_path):
    """Every logger gets the ww scalars at the snapshot steps; TensorBoard's values are the
    history's; the final step is the analysis of the final weights."""
    cb = WeightWatcherCallback(wait="epoch", log_epoch_metrics=True)
    tb = TensorBoardLogger(tmp_path, name="tb")
    csv = CSVLogger(tmp_path, name="csv")
    model = DigitsMLP()
    trainer = L.Trainer(**quiet(max_epochs=3, logger=[tb, csv], callbacks=[cb]))
    trainer.fit(model)

    # the history: the initial weights, then the end of every epoch
    assert Path(cb.history_path) == Path(tb.log_dir) / "ww_history.jsonl"
    layers = load_history(cb.history_path)
    summary = load_history(cb.history_path, level="model").set_index("step")
    assert list(summary.index) == [0, BATCHES, 2 * BATCHES, 3 * BATCHES]
    assert list(summary["epoch"]) == [0, 0, 1, 2]
    assert (layers["status"] == "success").all()
    names = sorted(layers["longname"].unique())
    assert names == ["net.0", "net.2", "net.4"]

    events = scalar_events(tb.log_dir)
    for name in names:
        tag = f"ww_alpha/{name}"
        steps = [e.step for e in events[tag]]
        assert len(set(steps)) >= 2 and steps == sorted(set(steps)), tag  # one value per step
        for event in events[tag]:
            row = layers[(layers["step"] == event.step) & (layers["longname"] == name)]
            assert event.value == pytest.approx(float(row["alpha"].iloc[0]), rel=1e-6)
        assert f"ww_alpha_weighted/{name}" in events and f"ww_traps/{name}" in events
    for tag in WW_SUMMARY_TAGS:
        assert [e.step for e in events[tag]] == list(summary.index), tag
        if tag != "ww/snapshots_dropped":  # a watcher counter, not part of the analysis
            for event in events[tag]:
                assert event.value == pytest.approx(summary.loc[event.step, tag], rel=1e-6), tag
    assert all(e.value == 0 for e in events["ww/snapshots_dropped"])

    # the final step is the analysis of the final weights
    final = ww_callbacks.analyze(model).set_index("longname")
    last = layers[layers["step"] == 3 * BATCHES].set_index("longname")
    for name in names:
        assert last.loc[name, "alpha"] == pytest.approx(final.loc[name, "alpha"], rel=1e-9)
        assert events[f"ww_alpha/{name}"][-1].value == pytest.approx(final.loc[name, "alpha"],
                                                                    rel=1e-6)

    # the second logger has the same scalars at the same steps
    metrics = pd.read_csv(Path(csv.log_dir) / "metrics.csv")
    ww_rows = metrics.dropna(subset=["ww/alpha_mean"]).set_index("step")
    assert list(ww_rows.index) == list(summary.index)
    assert ww_rows["ww/alpha_mean"].to_numpy() == pytest.approx(
        summary["ww/alpha_mean"].to_numpy(), rel=1e-9)
    assert "ww_alpha/net.2" in metrics.columns

    # the summary was logged for monitors, on the callback metrics only (not twice in the logs)
    assert "ww/alpha_mean" in trainer.callback_metrics
    assert cb.last_decision["should_stop"] is False
    assert no_worker_alive()


def test_tensorboard_extras_for_a_tensorboard_logger(tmp_path):
    """A TensorBoardLogger also gets the TensorBoardSink's extras (ESD histograms, layout,
    pictures) and no duplicate scalars (the sink is made with scalars=False). The final frame is
    drawn after ``fit`` returns, into an events file of the sink in the logger's run folder
    (Lightning closes its own writer)."""
    from tests.events import read_events

    cb = WeightWatcherCallback(wait="epoch")
    tb = TensorBoardLogger(tmp_path, name="tb")
    L.Trainer(**quiet(max_epochs=2, logger=tb, callbacks=[cb])).fit(DigitsMLP())
    acc = read_events(tb.log_dir)
    tags = acc.Tags()
    assert {f"ww_esd/{n}" for n in ("net.0", "net.2", "net.4")} <= set(tags["histograms"])
    steps = [e.step for e in acc.Scalars("ww/alpha_mean")]
    assert steps == [0, BATCHES, 2 * BATCHES]  # once per step: no second writer of scalars
    # a 2-epoch fit is far too short for a frame within the pictures' budget: the final one
    for tag in ("ww_plots/alpha_heatmap", "ww_plots/correlation_flow", "ww_esd_plot/net.2"):
        assert [e.step for e in acc.Images(tag)] == [2 * BATCHES], tag
    assert len(list(Path(tb.log_dir).glob("events.out.tfevents.*"))) == 2


def test_pytorch_lightning_trainer(tmp_path):
    """The same class is a ``pytorch_lightning`` callback: its Trainer runs it and it logs."""
    pl = pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.loggers import TensorBoardLogger as PLTensorBoardLogger

    module_cls = type("PLDigitsMLP", (_DigitsMixin, pl.LightningModule), {})
    cb = WeightWatcherCallback(wait="epoch", log_epoch_metrics=True)
    assert isinstance(cb, pl.Callback) and isinstance(cb, L.Callback)
    logger = PLTensorBoardLogger(tmp_path, name="pl")
    trainer = pl.Trainer(**quiet(max_epochs=2, logger=logger, callbacks=[cb]))
    trainer.fit(module_cls())
    assert history_steps(cb.history_path) == [0, BATCHES, 2 * BATCHES]
    events = scalar_events(logger.log_dir)
    assert [e.step for e in events["ww/alpha_mean"]] == [0, BATCHES, 2 * BATCHES]
    assert "ww_alpha/net.0" in events
    assert "ww/alpha_mean" in trainer.callback_metrics


def test_default_mode_never_waits_and_counts_drops(tmp_path):
    """Without wait="epoch" (and no ww/ monitor) training never waits for the analysis: a
    snapshot still pending when the next comes is dropped and counted; the final one is always
    analysed, and what was analysed is what the loggers got."""
    cb = WeightWatcherCallback(every_n_train_steps=2)  # far more than the worker can analyse
    tb = TensorBoardLogger(tmp_path, name="tb")
    L.Trainer(**quiet(max_epochs=2, logger=tb, callbacks=[cb])).fit(DigitsMLP())
    watcher = cb.watcher
    expected = {0, *range(2, 2 * BATCHES + 1, 2), *(k * BATCHES for k in (1, 2))}
    assert watcher.snapshots_taken == len(expected)
    steps = history_steps(cb.history_path)
    assert set(steps) <= expected and steps == sorted(set(steps)) and steps[-1] == 2 * BATCHES
    assert len(steps) + watcher.dropped == watcher.snapshots_taken
    events = scalar_events(tb.log_dir)
    assert [e.step for e in events["ww/alpha_mean"]] == steps
    assert events["ww/snapshots_dropped"][-1].value == watcher.dropped


def test_wandb_logger_offline(tmp_path, monkeypatch):
    """An offline WandbLogger gets the scalars (and the W&B extras when integrations/wandb.py
    is there); the history goes to the run's own folder save_dir/project/run_id."""
    wandb = pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    for name, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"),
                        ("WANDB_DIR", str(tmp_path)), ("WANDB_CONFIG_DIR", str(tmp_path))):
        monkeypatch.setenv(name, value)
    logger = WandbLogger(save_dir=str(tmp_path), project="ww", offline=True)
    cb = WeightWatcherCallback(wait="epoch")
    try:
        L.Trainer(**quiet(max_epochs=2, logger=logger, callbacks=[cb])).fit(DigitsMLP())
        summary = dict(logger.experiment.summary)
    finally:
        wandb.finish()
    assert Path(cb.history_path).parent == tmp_path / "ww" / logger.version
    model = load_history(cb.history_path, level="model")
    assert list(model["step"]) == [0, BATCHES, 2 * BATCHES]
    assert summary["ww/alpha_mean"] == pytest.approx(model["ww/alpha_mean"].iloc[-1], rel=1e-9)
    assert summary["ww_alpha/net.0"] > 0
    try:
        from ww_callbacks.integrations.wandb import WandbSink
    except ImportError:
        return
    assert [s for s in cb.watcher.sinks if isinstance(s, WandbSink)]


def test_step_cadence_and_model_scalars_only(tmp_path):
    """every_n_train_steps without epochs: snapshots at steps 0, 20, 40 and the final 58 (a
    step-based snapshot may be dropped if the previous analysis is still running: the final one
    never is); log_per_layer=False sends only the ww/ scalars to the loggers."""
    cb = WeightWatcherCallback(every_n_train_steps=20, every_n_epochs=None, traps_every=0,
                               log_per_layer=False)
    csv = CSVLogger(tmp_path, name="csv")
    L.Trainer(**quiet(max_epochs=2, logger=csv, callbacks=[cb])).fit(DigitsMLP())
    records = read_records(cb.history_path)
    steps = [r["step"] for r in records]
    assert cb.watcher.snapshots_taken == 4
    assert set(steps) <= {0, 20, 40, 2 * BATCHES} and steps[-1] == 2 * BATCHES
    assert len(steps) + cb.watcher.dropped == 4
    assert not any(r["randomized"] for r in records)
    header = (Path(csv.log_dir) / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "ww/alpha_mean" in header
    assert not [h for h in header if h.startswith("ww_alpha")]
    assert "ww/num_traps" not in header  # traps_every=0: never randomised


def test_gradient_accumulation_snapshots_each_step_once(tmp_path):
    """With 2 micro-batches per optimizer step, a due step is seen by two batch ends but
    analysed once (29 batches: 15 optimizer steps per epoch)."""
    cb = WeightWatcherCallback(every_n_train_steps=5, every_n_epochs=None, traps_every=0)
    L.Trainer(**quiet(max_epochs=2, accumulate_grad_batches=2, logger=CSVLogger(tmp_path),
                      callbacks=[cb])).fit(DigitsMLP())
    assert cb.watcher.snapshots_taken == 7  # steps 0, 5, ..., 30, each once
    steps = history_steps(cb.history_path)
    assert set(steps) <= {0, 5, 10, 15, 20, 25, 30} and steps == sorted(set(steps))
    assert steps[-1] == 30


def test_broken_tensorboard_extras_do_not_stop_training(tmp_path, monkeypatch):
    """If the TensorBoard extras cannot be made, a warning says so and the scalars still
    reach the logger."""
    import ww_callbacks.integrations.tensorboard as tb_module

    def broken(*args, **kwargs):
        raise ValueError("no extras today")

    monkeypatch.setattr(tb_module, "TensorBoardSink", broken)
    cb = WeightWatcherCallback(wait="epoch")
    tb = TensorBoardLogger(tmp_path, name="tb")
    with pytest.warns(WatcherWarning, match="no extras today"):
        L.Trainer(**quiet(max_epochs=1, logger=tb, callbacks=[cb])).fit(DigitsMLP())
    assert [e.step for e in scalar_events(tb.log_dir)["ww/alpha_mean"]] == [0, BATCHES]


# ---------------------------------------------------------------------------- 3: monitors


def test_early_stopping_and_checkpoint_monitor_ww_alpha_mean(tmp_path):
    """EarlyStopping and ModelCheckpoint can monitor ww/alpha_mean; the monitored value is the
    analysis of that epoch's weights (the epoch end waits for it when a ww/ key is monitored)."""
    cb = WeightWatcherCallback()
    stop = EarlyStopping(monitor="ww/alpha_mean", mode="min", patience=1, min_delta=100.0)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="ww/alpha_mean", mode="max",
                           save_top_k=1)
    trainer = L.Trainer(**quiet(max_epochs=10, enable_checkpointing=True,
                                logger=CSVLogger(tmp_path), callbacks=[cb, stop, ckpt]))
    trainer.fit(DigitsMLP())

    # epoch 0 sets the best value, epoch 1 cannot improve by 100: stop after 2 of 10 epochs
    assert stop.stopped_epoch == 1
    assert trainer.current_epoch == 2
    summary = load_history(cb.history_path, level="model").set_index("step")
    assert list(summary.index) == [0, BATCHES, 2 * BATCHES]  # no extra final snapshot
    epoch_ends = summary.loc[[BATCHES, 2 * BATCHES], "ww/alpha_mean"]
    assert float(trainer.callback_metrics["ww/alpha_mean"]) == pytest.approx(
        epoch_ends.iloc[-1], rel=1e-6)
    assert cb.last_decision["step"] == 2 * BATCHES

    assert Path(ckpt.best_model_path).is_file()
    assert float(ckpt.best_model_score) == pytest.approx(epoch_ends.max(), rel=1e-6)


# ---------------------------------------------------------------------------- 4: resume


def test_resume_continues_the_history_without_duplicates(tmp_path):
    """Resuming from last.ckpt into the same log dir continues the history and the counters;
    resuming from an older checkpoint drops the analyses made after it."""
    ckpt_dir = tmp_path / "ckpt"

    def fit(max_epochs: int, ckpt_path: str | None = None) -> WeightWatcherCallback:
        cb = WeightWatcherCallback(traps_every=2, wait="epoch")
        ckpt = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=-1)
        logger = TensorBoardLogger(tmp_path, name="run", version=0)
        trainer = L.Trainer(**quiet(max_epochs=max_epochs, enable_checkpointing=True,
                                    logger=logger, callbacks=[cb, ckpt]))
        trainer.fit(DigitsMLP(), ckpt_path=ckpt_path)
        return cb

    first = fit(3)
    history = first.history_path
    assert history_steps(history) == [0, BATCHES, 2 * BATCHES, 3 * BATCHES]
    state = torch.load(ckpt_dir / "last.ckpt", weights_only=False)["callbacks"][first.state_key]
    assert first.state_key == ("WeightWatcherCallback{'every_n_train_steps': None, "
                               "'every_n_epochs': 1}")
    assert state["snapshots_taken"] == 4 and state["last_step"] == 3 * BATCHES

    second = fit(5, ckpt_path=str(ckpt_dir / "last.ckpt"))
    assert second.history_path == history
    records = read_records(history)
    steps = [r["step"] for r in records]
    assert steps == [k * BATCHES for k in range(6)]  # both runs, increasing, no duplicates
    assert second.state_dict()["snapshots_taken"] == 6  # 4 restored + 2 new
    # traps_every=2 counts on across the restart: every other analysis is randomised
    assert [r["randomized"] for r in records] == [True, False] * 3

    # going back to the end of epoch 1 (step 58): the history loses steps 87..145, then goes on
    third = fit(4, ckpt_path=str(ckpt_dir / "epoch=1-step=58.ckpt"))
    assert history_steps(third.history_path) == [k * BATCHES for k in range(5)]
    assert third.state_dict()["snapshots_taken"] == 5


# ---------------------------------------------------------------------------- 5: faults


class FullDisk:
    """A user sink that always fails."""

    def __init__(self):
        self.calls = 0
        self.closed = False

    def write(self, result, scalars):
        self.calls += 1
        raise OSError("disk full")

    def close(self):
        self.closed = True


def test_failing_sink_warns_once_and_loses_nothing(tmp_path):
    sink = FullDisk()
    cb = WeightWatcherCallback(sinks=[sink], wait="epoch")
    trainer = L.Trainer(**quiet(max_epochs=3, logger=CSVLogger(tmp_path), callbacks=[cb]))
    with pytest.warns(WatcherWarning, match="disk full") as record:
        trainer.fit(DigitsMLP())
    assert sum("disk full" in str(w.message) for w in record) == 1
    assert trainer.state.finished
    assert history_steps(cb.history_path) == [0, BATCHES, 2 * BATCHES, 3 * BATCHES]
    assert sink.calls == 4 and sink.closed  # retried silently, closed at the end


def test_exception_in_training_leaves_no_thread(tmp_path):
    cb = WeightWatcherCallback(every_n_train_steps=3)
    trainer = L.Trainer(**quiet(max_epochs=2, logger=CSVLogger(tmp_path), callbacks=[cb]))
    with pytest.raises(RuntimeError, match="training failed at step 7"):
        trainer.fit(DigitsMLP(fail_at_step=7))
    assert no_worker_alive()
    steps = history_steps(cb.history_path) if Path(cb.history_path).exists() else []
    assert set(steps) <= {0, 3, 6} and steps == sorted(steps)


def test_nan_weights_mark_the_layer_failed(tmp_path):
    """NaN weights from epoch 1 on: that layer is 'failed' in the later analyses, nothing
    crashes, training finishes."""
    cb = WeightWatcherCallback(wait="epoch")
    trainer = L.Trainer(**quiet(max_epochs=3, logger=CSVLogger(tmp_path), callbacks=[cb]))
    trainer.fit(DigitsMLP(nan_at_epoch=1))
    assert trainer.state.finished
    layers = load_history(cb.history_path)
    nan_layer = layers[layers["longname"] == "net.2"].set_index("step")
    assert list(nan_layer["status"]) == ["success", "success", "success", "failed"]
    assert "NaN" in nan_layer.loc[3 * BATCHES, "warning"]
    summary = load_history(cb.history_path, level="model").set_index("step")
    assert summary.loc[3 * BATCHES, "ww/layers_failed"] >= 1


def _record_warnings(seen: list):
    """A ``showwarning`` that notes the thread each warning was issued on."""
    def show(message, category, filename, lineno, file=None, line=None):
        seen.append((category, str(message), threading.current_thread().name))
    return show


def _broken_analysis(*args, **kwargs):
    raise RuntimeError("the analysis broke")


def test_worker_crash_warns_on_the_training_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("WW_CALLBACKS_ANALYSIS_IN", "thread")  # the patch is in this process
    monkeypatch.setattr(ww_callbacks.session.watch_session, "analyze_layers", _broken_analysis)
    cb = WeightWatcherCallback()
    trainer = L.Trainer(**quiet(max_epochs=2, logger=CSVLogger(tmp_path), callbacks=[cb]))
    seen: list = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _record_warnings(seen)
        trainer.fit(DigitsMLP())
    failed = [(cat, msg, thread) for cat, msg, thread in seen if "analysis of step" in msg]
    assert failed, seen
    assert all(cat is WatcherWarning and "the analysis broke" in msg for cat, msg, _ in failed)
    assert {thread for _, _, thread in failed} == {threading.main_thread().name}
    assert trainer.state.finished and no_worker_alive()
    assert not Path(cb.history_path).exists()


def test_worker_crash_raises_when_strict(tmp_path, monkeypatch):
    monkeypatch.setenv("WW_CALLBACKS_ANALYSIS_IN", "thread")  # the patch is in this process
    monkeypatch.setattr(ww_callbacks.session.watch_session, "analyze_layers", _broken_analysis)
    cb = WeightWatcherCallback(strict=True)
    trainer = L.Trainer(**quiet(max_epochs=2, logger=CSVLogger(tmp_path), callbacks=[cb]))
    with pytest.raises(RuntimeError, match=r"analysis of step \d+ failed"):
        trainer.fit(DigitsMLP())
    assert no_worker_alive()


# ---------------------------------------------------------------------------- 6: DDP


class GlooTeardown(L.Callback):
    """Last in a ddp_spawn test's callbacks: every worker destroys its gloo process group in
    ``teardown`` (after a barrier: no collective is left after it), as a gloo user should.
    Lightning destroys the group at exit for NCCL only; a gloo group left to the interpreter's
    teardown can abort the worker when gloo's threads reach Python objects during finalization
    (pytorch/pytorch PR 179291): 'terminate called without an active exception', SIGABRT, rank 1
    of ``test_lightning_ddp_restores_the_same_weights_on_every_rank`` in one CI run of
    2026-12-07, after every assertion's data was written."""

    def teardown(self, trainer, pl_module, stage):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


class StopAfter:
    """A policy that asks to stop once it has seen ``n`` results."""

    def __init__(self, n: int):
        self.n = n
        self.seen = 0
        self.should_stop = False

    def on_result(self, result) -> None:
        self.seen += 1
        self.should_stop = self.seen >= self.n


class RecordingCallback(WeightWatcherCallback):
    """Notes every applied decision in ``<marker_dir>/rank<r>.jsonl``."""

    def __init__(self, marker_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.marker_dir = marker_dir

    def _apply_decision(self, trainer, pl_module, decision) -> None:
        super()._apply_decision(trainer, pl_module, decision)
        line = {"epoch": trainer.current_epoch, "has_watcher": self.watcher is not None,
                **decision}
        with open(os.path.join(self.marker_dir, f"rank{trainer.global_rank}.jsonl"), "a") as fh:
            fh.write(json.dumps(line) + "\n")


def _timeout(seconds: int):
    """pytest-timeout's mark when the plugin is installed (a hang then fails the test); gloo's
    own timeout (60 s, below) turns a stuck collective into an error either way."""
    if importlib.util.find_spec("pytest_timeout") is None:
        return lambda test: test
    return pytest.mark.timeout(seconds)


@pytest.mark.slow
@_timeout(120)
def test_ddp_two_cpu_processes(tmp_path):
    """ddp_spawn on gloo: a session on both ranks (each analyses its share of the layers),
    rank 0 alone writes the history; every rank gets the same decision each epoch, logs the
    same ww/ values (EarlyStopping and ModelCheckpoint monitor them on both ranks) and stops at
    the same epoch when the policy says so."""
    from lightning.pytorch.strategies import DDPStrategy

    markers = tmp_path / "markers"
    markers.mkdir()
    cb = RecordingCallback(str(markers), policies=[StopAfter(3)])
    strategy = DDPStrategy(start_method="spawn", process_group_backend="gloo",
                           timeout=timedelta(seconds=60))
    trainer = L.Trainer(**quiet(
        strategy=strategy, devices=2, max_epochs=6, enable_checkpointing=True,
        logger=TensorBoardLogger(tmp_path, name="ddp"),
        callbacks=[cb, EarlyStopping(monitor="ww/alpha_mean", patience=100),
                   ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="ww/alpha_mean"),
                   GlooTeardown()]))
    trainer.fit(DigitsMLP())

    histories = list(tmp_path.rglob("ww_history.jsonl"))
    assert len(histories) == 1
    per_rank = 15  # ceil(ceil(1797 / 2) / 64)
    assert history_steps(histories[0]) == [0, per_rank, 2 * per_rank]

    ranks = [[json.loads(line) for line in (markers / f"rank{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2  # the policy stopped both ranks after epoch 1
    assert [d["has_watcher"] for d in ranks[0]] == [True, True]
    assert [d["has_watcher"] for d in ranks[1]] == [True, True]  # (rank 0 only before)
    strip = [[{k: v for k, v in d.items() if k != "has_watcher"} for d in r] for r in ranks]
    assert strip[0] == strip[1]  # the same decisions, metrics and steps on both ranks
    assert [d["should_stop"] for d in ranks[0]] == [False, True]
    assert ranks[0][-1]["step"] == 2 * per_rank and "ww/alpha_mean" in ranks[0][-1]["metrics"]
    assert list((tmp_path / "ckpt").glob("*.ckpt"))


# ---------------------------------------------------------------------------- 7: tensorboard


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read().decode("utf-8"))


class TensorBoardProbe(L.Callback):
    """At the end of epoch ``at_epoch`` (training paused), asks the tensorboard server for the
    ww/alpha_mean series until it has ``min_points`` points."""

    def __init__(self, base_url: str, at_epoch: int, min_points: int, timeout: float = 90.0):
        self.base_url = base_url
        self.at_epoch = at_epoch
        self.min_points = min_points
        self.timeout = timeout
        self.points: list = []
        self.run: str | None = None
        self.step_then: int | None = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.at_epoch:
            return
        self.step_then = trainer.global_step
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                tags = _get_json(f"{self.base_url}/data/plugin/scalars/tags")
                runs = [run for run, run_tags in tags.items() if "ww/alpha_mean" in run_tags]
                if runs:
                    self.run = runs[0]
                    query = urllib.parse.urlencode({"run": self.run, "tag": "ww/alpha_mean"})
                    self.points = _get_json(f"{self.base_url}/data/plugin/scalars/scalars?"
                                            + query)
                    if len(self.points) >= self.min_points:
                        return
            except OSError:
                pass  # the server is still starting
            time.sleep(0.5)


@pytest.mark.slow
def test_tensorboard_server_shows_ww_scalars_while_training(tmp_path):
    """A real tensorboard server on 127.0.0.1 serves ww/alpha_mean over its HTTP API during the
    fit (TensorBoard's writer is flushed after every delivery)."""
    pytest.importorskip("tensorboard")
    logdir = tmp_path / "tb"
    logdir.mkdir()
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    server_log = open(tmp_path / "tensorboard.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
         "127.0.0.1", "--port", str(port), "--reload_interval", "1", "--load_fast", "false"],
        stdout=server_log, stderr=subprocess.STDOUT)
    try:
        cb = WeightWatcherCallback(wait="epoch")
        probe = TensorBoardProbe(base_url, at_epoch=3, min_points=4)
        logger = TensorBoardLogger(logdir, name="live")
        L.Trainer(**quiet(max_epochs=6, logger=logger, callbacks=[cb, probe])).fit(DigitsMLP())
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server_log.close()

    assert probe.run == "live/version_0", (tmp_path / "tensorboard.log").read_text()[-2000:]
    summary = load_history(cb.history_path, level="model").set_index("step")
    seen = {int(step): value for _, step, value in probe.points}
    assert len(seen) >= 4
    assert max(seen) <= probe.step_then < summary.index.max()  # seen before training ended
    for step, value in seen.items():
        assert value == pytest.approx(summary.loc[step, "ww/alpha_mean"], rel=1e-6)
    assert all(math.isfinite(v) for v in seen.values())


def test_old_wait_name_still_works():
    with pytest.warns(DeprecationWarning, match="wait_for_epoch"):
        cb = WeightWatcherCallback(wait_for_epoch=True)
    assert cb.wait == "epoch"
    with pytest.raises(ValueError, match="wait must be one of"):
        WeightWatcherCallback(wait="sometimes")
