"""Sinks chosen by name or object (:mod:`ww_callbacks.sinks`): the worked example
:class:`~ww_callbacks.csv_sink.CSVSink` (one file plus one registration line) used by name from
all four hosts (Lightning Trainer, Keras fit, torch Watcher, Hugging Face Trainer), and written
on the main process only under a 2-process torchrun."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

import ww_callbacks.integrations  # noqa: F401  (registers "tensorboard" and "wandb")
from ww_callbacks import sinks as sinks_module
from ww_callbacks.csv_sink import CSV_FILE, CSVSink
from ww_callbacks.history import read_records
from ww_callbacks.sinks import (
    Sink,
    check_sinks,
    for_this_process,
    main_process_only,
    open_sinks,
    register_sink_factory,
    sink_names,
)


class Recorder:
    """A sink object that keeps what it got."""

    def __init__(self, **options):
        self.options, self.steps, self.closed = options, [], False

    def write(self, result, scalars):
        self.steps.append(int(result.step))

    def close(self):
        self.closed = True


def csv_steps(path: Path) -> list[int]:
    """The steps of a ww_scalars.csv, in order, once each."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) == {"step", "epoch", "tag", "value"}
    assert all(np.isfinite(float(r["value"])) for r in rows)
    assert any(r["tag"] == "ww/alpha_mean" for r in rows)
    return list(dict.fromkeys(int(r["step"]) for r in rows))


def history_steps(log_dir: Path) -> list[int]:
    return [r["step"] for r in read_records(Path(log_dir) / "ww_history.jsonl")]


# ---------------------------------------------------------------------------- the registry


@pytest.fixture(autouse=True)
def _registry_restored():
    """A test's own registrations ("recorder") do not outlive it."""
    saved = dict(sinks_module._FACTORIES)
    yield
    sinks_module._FACTORIES.clear()
    sinks_module._FACTORIES.update(saved)


def test_names_tuples_and_objects(tmp_path):
    register_sink_factory("recorder", lambda value, log_dir, options: Recorder(**options))
    mine = Recorder()
    sinks, built = open_sinks(["csv", ("recorder", {"k": 1}), mine], tmp_path)
    assert isinstance(sinks[0], CSVSink) and sinks[0].path == tmp_path / CSV_FILE
    assert sinks[1].options == {"k": 1} and sinks[2] is mine
    assert built == sinks[:2]  # what the session made, it closes; the user's object too
    assert "csv" in sink_names() and "tensorboard" in sink_names()  # integrations registered
    assert isinstance(Sink, type)  # the protocol lives here (and watcher re-exports it)
    from ww_callbacks.watcher import Sink as old_path

    assert old_path is Sink


def test_aliases_come_first_and_a_name_is_given_once(tmp_path):
    register_sink_factory("recorder", lambda value, log_dir, options: Recorder(**options))
    sinks, _ = open_sinks(["csv"], tmp_path, aliases={"recorder": (True, {"a": 2})})
    assert sinks[0].options == {"a": 2} and isinstance(sinks[1], CSVSink)
    with pytest.raises(ValueError, match="asked for twice"):
        open_sinks(["recorder"], tmp_path, aliases={"recorder": (True, None)})


@pytest.mark.parametrize("bad,message", [
    ("nope", "no sink named 'nope'"),
    (("csv",), "is \\(name, options dict\\)"),
    (("csv", "path"), "is \\(name, options dict\\)"),
    (42, "sinks takes sink objects"),
])
def test_bad_entries_are_refused_at_once(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        check_sinks([bad])


def test_main_process_only_is_the_default():
    every = Recorder()
    every.main_process_only = False
    only_main = Recorder()
    assert main_process_only(only_main) and not main_process_only(every)
    assert for_this_process(["csv", only_main, every], True) == ["csv", only_main, every]
    assert for_this_process(["csv", only_main, every], False) == [every]


def test_csv_sink_without_a_folder_is_none_and_takes_options(tmp_path):
    from ww_callbacks.csv_sink import csv_sink

    assert csv_sink(True, None, {}) is None
    sink = csv_sink(True, None, {"path": tmp_path / "x.csv", "per_layer": False})
    assert sink.path == tmp_path / "x.csv" and sink.per_layer is False


# ---------------------------------------------------------------------------- four hosts


def test_torch_watcher_by_name(tmp_path):
    torch = pytest.importorskip("torch")
    from ww_callbacks.integrations.torch import Watcher

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(),
                                torch.nn.Linear(64, 16))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with Watcher(model, log_dir=tmp_path, tensorboard=False, every_n_steps=2, wait="always",
                 optimizer=opt, sinks=["csv"]) as ww:
        for _ in range(4):
            opt.zero_grad()
            model(torch.randn(8, 32)).square().mean().backward()
            opt.step()
            ww.step()
    assert csv_steps(tmp_path / CSV_FILE) == history_steps(tmp_path) == [0, 2, 4]


def test_lightning_by_name(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    torch = pytest.importorskip("torch")
    from ww_callbacks.integrations.lightning import WeightWatcherCallback

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(),
                                           torch.nn.Linear(64, 16))

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 32))
    callback = WeightWatcherCallback(log_dir=tmp_path, sinks=["csv"], wait="always")
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, callbacks=[callback])
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=8))
    assert csv_steps(tmp_path / CSV_FILE) == history_steps(tmp_path) == [0, 4, 8]


def test_keras_by_name(tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "torch")  # as tests/test_keras_layers.py
    keras = pytest.importorskip("keras")
    from ww_callbacks.integrations.keras import WeightWatcherCallback

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(16)])
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    callback = WeightWatcherCallback(log_dir=tmp_path, tensorboard=False, sinks=["csv"],
                                     wait="always")
    model.fit(rng.normal(size=(32, 32)), rng.normal(size=(32, 16)), batch_size=8, epochs=2,
              verbose=0, callbacks=[callback])
    assert csv_steps(tmp_path / CSV_FILE) == history_steps(tmp_path) == [0, 4, 8]


def test_transformers_by_name(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    from tests.distributed.hf_models import RandomTokens, tiny_bert
    from ww_callbacks.integrations.transformers import WeightWatcherCallback

    callback = WeightWatcherCallback(log_dir=tmp_path, sinks=["csv"], every_n_steps=4,
                                     every_n_epochs=None, wait="always")
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=8,
                             per_device_train_batch_size=8, report_to=[], use_cpu=True,
                             disable_tqdm=True, save_strategy="no", seed=0)
    Trainer(model=tiny_bert(), args=args, train_dataset=RandomTokens(),
            callbacks=[callback]).train()
    assert csv_steps(tmp_path / CSV_FILE) == history_steps(tmp_path) == [0, 4, 8]


# ---------------------------------------------------------------------------- torchrun


@pytest.mark.slow
def test_csv_is_written_on_the_main_process_only(tmp_path):
    pytest.importorskip("torch")
    from tests.distributed.launch import torchrun

    ranks = torchrun("sink_cases.py", tmp_path, "csv")
    for result in ranks:
        assert "error" not in result["csv"], result["csv"]["error"]
    zero, one = ranks[0]["csv"], ranks[1]["csv"]
    assert zero["csv"] and zero["csv"].startswith("step,epoch,tag,value")
    assert one["csv"] is None and not (tmp_path / "rank1.csv").exists()
    assert zero["history"] and not one["history"]
    # the sink that declares main_process_only = False is kept (and closed) on every rank
    assert zero["kept_every_rank_sink"] and one["kept_every_rank_sink"]
    assert zero["every_rank_closed"] and one["every_rank_closed"]
