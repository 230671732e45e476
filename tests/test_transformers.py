"""WeightWatcherCallback in a real Hugging Face ``Trainer`` run: a tiny BERT built from its config
(no download) on random tokens, CPU only."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import (  # noqa: E402
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from tests.distributed.hf_models import RandomTokens, tiny_bert  # noqa: E402
from ww_callbacks.history import HISTORY_FILE, load_history  # noqa: E402
from ww_callbacks.integrations.transformers import WeightWatcherCallback  # noqa: E402

STEPS_PER_EPOCH = 8  # 64 samples, batches of 8


def make_trainer(out: Path, callbacks: list, report_to: list[str], epochs: int = 2,
                 **options) -> Trainer:
    options = {"save_strategy": "no", **options}
    args = TrainingArguments(output_dir=str(out), num_train_epochs=epochs,
                             per_device_train_batch_size=8, logging_steps=5,
                             report_to=report_to, use_cpu=True, disable_tqdm=True,
                             learning_rate=1e-3, seed=0, **options)
    return Trainer(model=tiny_bert(), args=args, train_dataset=RandomTokens(),
                   callbacks=callbacks)


def ww_workers() -> set[threading.Thread]:
    """The analysis threads alive now."""
    return {t for t in threading.enumerate() if t.name == "ww-worker" and t.is_alive()}


@pytest.fixture(autouse=True)
def _no_tb_env(monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)


def test_trainer_tensorboard_history_and_logs(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    before = ww_workers()
    callback = WeightWatcherCallback(every_n_steps=5, tensorboard_options={"images_every": 0})
    trainer = make_trainer(tmp_path, [callback], ["tensorboard"])
    trainer.train()
    last = 2 * STEPS_PER_EPOCH

    assert ww_workers() <= before  # the worker stopped with on_train_end

    # the history: every analysis, from the initial to the final weights
    assert (tmp_path / HISTORY_FILE).exists()
    model = load_history(tmp_path, level="model")
    steps = list(model["step"])
    assert steps[0] == 0 and steps[-1] == last
    assert set(steps) <= {0, 5, 8, 10, 15, 16}  # due steps and epoch ends; dropped ones absent
    assert len(steps) + callback.watcher.dropped == 6
    assert steps == sorted(set(steps))  # a step is analysed once even when several clocks fire
    layers = load_history(tmp_path)
    final = layers[layers["step"] == last]
    analysed = list(final.loc[final["status"] == "success", "longname"])
    assert any("attention.self.query" in n for n in analysed)
    assert "bert.embeddings.word_embeddings" in analysed

    # TensorBoard: our event file in log_dir (= output_dir here), at the analysed steps
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for name in analysed:
        events = acc.Scalars(f"ww_alpha/{name}")
        assert len(events) >= 2
        assert [e.step for e in events] == steps
        assert events[-1].value == pytest.approx(
            float(final.loc[final["longname"] == name, "alpha"].iloc[0]), rel=1e-6)
    assert "ww/alpha_mean" in tags
    assert any(p.name == "runs" for p in tmp_path.iterdir())  # HF's own TensorBoard run

    # HF's logs: the ww/ scalars reach log_history (the final analysis in the last entry)
    history = trainer.state.log_history
    with_ww = [e for e in history if "ww/alpha_mean" in e]
    assert with_ww and all(e["ww/step"] <= e["step"] for e in with_ww)
    assert "train_loss" in history[-1] and history[-1]["ww/step"] == last
    assert history[-1]["ww/alpha_mean"] == pytest.approx(model["ww/alpha_mean"].iloc[-1])
    assert not any(k.startswith("ww_alpha/") for e in history for k in e)


class Boom(TrainerCallback):
    """Fails training at a given step."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError("boom")


def _wait_for_no_new_workers(before: set, timeout: float = 10.0) -> set:
    deadline = time.monotonic() + timeout
    while (left := ww_workers() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_failed_training_leaves_no_worker_behind(tmp_path):
    before = ww_workers()

    # 1. train() raises and no hook runs after it: the idle worker thread ends by itself
    callback = WeightWatcherCallback(every_n_steps=4, tensorboard=False, wait="always")
    trainer = make_trainer(tmp_path / "a", [callback, Boom(5)], [], epochs=1)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    assert not _wait_for_no_new_workers(before), threading.enumerate()
    assert list(load_history(tmp_path / "a", level="model")["step"])[0] == 0
    callback.close()  # closing afterwards is harmless

    # 2. train() again after a failure: the stale watcher is closed, the new run completes
    callback = WeightWatcherCallback(every_n_steps=4, tensorboard=False, wait="always")
    boom = Boom(3)
    trainer = make_trainer(tmp_path / "c", [callback, boom], [], epochs=1)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    trainer.remove_callback(boom)
    trainer.train()
    assert not _wait_for_no_new_workers(before)
    steps = list(load_history(tmp_path / "c", level="model")["step"])
    assert steps[-1] == STEPS_PER_EPOCH and steps.count(0) == 2  # two runs, one history


def test_trainer_reports_to_wandb_offline(tmp_path, monkeypatch, wandb_offline):
    wandb = pytest.importorskip("wandb")
    from tests.test_wandb_sink import history_rows, run_file, wandb_records

    monkeypatch.setenv("WANDB_PROJECT", "ww-test")
    callback = WeightWatcherCallback(every_n_steps=5)
    trainer = make_trainer(tmp_path / "out", [callback], ["wandb"])
    try:
        trainer.train()
        assert wandb.run is not None  # HF's WandbCallback started it; nobody finished it
    finally:
        if wandb.run is not None:
            wandb.run.finish()
        wandb.teardown()

    records = wandb_records(run_file(tmp_path))
    rows = history_rows(records)
    ww_rows = [r for r in rows if "ww/step" in r and "ww/alpha_mean" in r]
    model = load_history(tmp_path / "out", level="model")
    assert [r["ww/step"] for r in ww_rows] == list(model["step"])
    assert [r["ww/alpha_mean"] for r in ww_rows] == list(model["ww/alpha_mean"])
    assert any("ww_alpha/bert.embeddings.word_embeddings" in r for r in ww_rows)
    assert any("ww/layers._type" in r for r in rows)  # the per-layer table
    assert any("train/loss" in r for r in rows)  # HF's own rows, in the same run
    metrics = [r["metric"] for r in records if r["type"] == "metric"]
    assert {m["glob_name"]: m["step_metric"] for m in metrics if "glob_name" in m} == {
        "*": "train/global_step", "ww/*": "ww/step", "ww_alpha/*": "ww/step",
        "ww_alpha_weighted/*": "ww/step", "ww_traps/*": "ww/step",
        # every family of the tag registry, the policies' included (issue 9, item 5)
        "ww_esd/*": "ww/step", "ww_esd_rand/*": "ww/step", "ww_esd_plot/*": "ww/step",
        "ww_lr_scale/*": "ww/step",
        "ww_plots/*": "ww/step", "ww_traps_removed/*": "ww/step"}
    assert not (tmp_path / "out" / "events.out.tfevents").exists()
    assert not list((tmp_path / "out").glob("events.out.tfevents*"))  # no TensorBoard asked


def test_resume_from_checkpoint_keeps_one_analysis_per_step(tmp_path):
    callback = WeightWatcherCallback(every_n_steps=2, tensorboard=False, wait="always")
    trainer = make_trainer(tmp_path, [callback], [], epochs=1,
                           save_strategy="steps", save_steps=5)
    trainer.train()
    assert list(load_history(tmp_path, level="model")["step"]) == [0, 2, 4, 6, 8]

    callback = WeightWatcherCallback(every_n_steps=2, tensorboard=False, wait="always")
    trainer = make_trainer(tmp_path, [callback], [], epochs=1)
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-5"))
    assert list(load_history(tmp_path, level="model")["step"]) == [0, 2, 4, 5, 6, 8]


def test_resume_continues_the_policy_state(tmp_path):
    """The checkpoint keeps the callback's state (``stateful_callbacks``); a resumed run
    continues HTSREarlyStopping's streak from it instead of starting afresh."""
    import json

    from ww_callbacks.policies import HTSREarlyStopping

    def plateau():  # every analysis after the first is a signal; never stops (patience 100)
        return HTSREarlyStopping("plateau", patience=100, min_delta=100.0, verbose=False)

    first = plateau()
    callback = WeightWatcherCallback(every_n_steps=2, tensorboard=False, wait="always",
                                     policies=[first])
    trainer = make_trainer(tmp_path, [callback], [], epochs=1,
                           save_strategy="steps", save_steps=5)
    trainer.train()
    saved = json.loads((tmp_path / "checkpoint-5" / "trainer_state.json").read_text())
    kept = saved["stateful_callbacks"]["WeightWatcherCallback"]["attributes"]["resume_state"]
    streak = kept["policies"][0]["streak"]
    assert streak >= 1 and kept["last_step"] == 4

    resumed = plateau()
    callback = WeightWatcherCallback(every_n_steps=2, tensorboard=False, wait="always",
                                     policies=[resumed])
    trainer = make_trainer(tmp_path, [callback], [], epochs=1)
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-5"))
    assert list(load_history(tmp_path, level="model")["step"]) == [0, 2, 4, 5, 6, 8]
    assert resumed.streak == streak + 3  # steps 5, 6 and 8 continue the streak
    assert resumed.best_alpha == kept["policies"][0]["best_alpha"]


def test_old_option_name_still_works():
    with pytest.warns(DeprecationWarning, match="wait_for_analysis"):
        callback = WeightWatcherCallback(wait_for_analysis=True)
    assert callback.wait == "always"
