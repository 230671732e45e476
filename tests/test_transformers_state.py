"""The Hugging Face callback's exported state (``ExportableState.state()``) holds its arguments,
so that Hugging Face's own ``restore_callback_states_from_checkpoint`` rebuilds the same
callback (options, cadence, sinks by name), not a default one."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from tests.test_transformers import make_trainer  # noqa: E402
from ww_callbacks.history import load_history  # noqa: E402
from ww_callbacks.integrations.transformers import WeightWatcherCallback  # noqa: E402

OPTIONS = dict(every_n_steps=2, every_n_epochs=None, tensorboard=False, wait="always",
               traps_every=2, max_duty=0.5, min_evals=4, sinks=["csv"])


def _config(callback: WeightWatcherCallback) -> dict:
    return {"cadence": callback.cadence, "wait": callback.wait, "options": callback.options,
            "sinks": callback.sinks, "tensorboard": callback.tensorboard,
            "log_dir": callback.log_dir}


def test_state_args_rebuild_the_same_callback(tmp_path):
    callback = WeightWatcherCallback(log_dir=str(tmp_path), **OPTIONS)
    args = json.loads(json.dumps(callback.state()["args"]))  # as trainer_state.json keeps it
    assert args["traps_every"] == 2 and args["max_duty"] == 0.5 and args["sinks"] == ["csv"]
    assert _config(WeightWatcherCallback(**args)) == _config(callback)


def test_hugging_face_restores_the_same_callback(tmp_path):
    callback = WeightWatcherCallback(**OPTIONS)
    trainer = make_trainer(tmp_path, [callback], [], epochs=1, save_strategy="steps",
                           save_steps=5)
    trainer.train()
    first = list(load_history(tmp_path, level="model")["step"])

    callback = WeightWatcherCallback(tensorboard=False)  # defaults: HF replaces it
    trainer = make_trainer(tmp_path, [callback], [], epochs=1,
                           restore_callback_states_from_checkpoint=True)
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-5"))
    rebuilt = [cb for cb in trainer.callback_handler.callbacks
               if isinstance(cb, WeightWatcherCallback)]
    assert len(rebuilt) == 1 and rebuilt[0] is not callback
    expected = WeightWatcherCallback(**OPTIONS)
    assert _config(rebuilt[0]) == {**_config(expected), "log_dir": rebuilt[0].log_dir}
    assert first == [0, 2, 4, 6, 8]
    assert list(load_history(tmp_path, level="model")["step"]) == [0, 2, 4, 5, 6, 8]
