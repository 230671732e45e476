"""The Keras callback's checks under one backend, run in its own process (KERAS_BACKEND is
fixed at import); tests/test_keras_callback.py reports each by name.

    KERAS_BACKEND=jax python tests/keras_runs/fit_digits.py OUT_DIR

Writes each check's outcome (and what it measured) to OUT_DIR/checks.json
(:mod:`checks`); exits non-zero when a check failed.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
from checks import run_checks  # (this folder is on sys.path: scripts run as files)
from sklearn.datasets import load_digits

import ww_callbacks
from ww_callbacks.history import load_history
from ww_callbacks.integrations.keras import WeightWatcherCallback


def _data():
    digits = load_digits()
    return (digits.data / 16.0).astype("float32"), digits.target.astype("int32")


def _model(seed: int, optimizer: keras.optimizers.Optimizer | None = None,
           compile: bool = True) -> keras.Model:
    """A 64-256-128-10 MLP (layers fc1, fc2, head), compiled with Adam(1e-3) unless told."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(256, activation="relu", name="fc1"),
        keras.layers.Dense(128, activation="relu", name="fc2"),
        keras.layers.Dense(10, name="head"),
    ])
    if compile:
        model.compile(optimizer=optimizer or keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _no_batch_end_hook(cb: keras.callbacks.Callback) -> bool:
    """The callback keeps Keras's own (empty) ``on_train_batch_end``."""
    return type(cb).on_train_batch_end is keras.callbacks.Callback.on_train_batch_end


def _workers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "ww-worker"]


def check_fit(out: Path) -> dict:
    x, y = _data()
    model = _model(0)
    log_dir = out / "fit"
    cb = WeightWatcherCallback(log_dir=log_dir, max_duty=None)  # no rest: steps checked below
    hist = model.fit(x, y, epochs=3, batch_size=64, verbose=0, callbacks=[cb])
    keys = [k for k in hist.history if k.startswith("ww/")]
    assert {"ww/alpha_mean", "ww/num_traps", "ww/layers_over_trained"} <= set(keys), keys
    assert all(len(hist.history[k]) == 3 for k in keys), hist.history
    # the final snapshot was taken on the final weights: same alphas as analyze()
    history = load_history(log_dir)
    last = history[history.step == history.step.max()].reset_index(drop=True)
    direct = ww_callbacks.analyze(model, randomize=False)
    names = list(last.longname)
    assert names == list(direct.longname) == ["fc1", "fc2", "head"], names
    np.testing.assert_allclose(last.alpha, direct.alpha, rtol=1e-9)
    # TensorBoard events readable with TensorBoard's reader (TF2 summaries are tensors)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"]) | set(acc.Tags()["tensors"])

    def values(tag):
        if tag in acc.Tags()["scalars"]:
            return [(e.step, e.value) for e in acc.Scalars(tag)]
        return [(e.step, float(e.tensor_proto.float_val[0]) if e.tensor_proto.float_val
                 else float(np.frombuffer(e.tensor_proto.tensor_content, np.float32)[0]))
                for e in acc.Tensors(tag)]

    for layer in ("fc1", "fc2", "head"):
        assert f"ww_alpha/{layer}" in tags, tags
    points = values("ww_alpha/fc1")
    assert len({step for step, _ in points}) >= 2, points
    tb_last = points[-1][1]
    assert abs(tb_last - direct.alpha[0]) < 1e-4 * abs(direct.alpha[0])
    # no batch-end hook (Keras keeps dispatching batch ends asynchronously), and the steps are
    # the optimizer's counts at the epoch ends (29 batches of 64 per epoch)
    assert _no_batch_end_hook(cb)
    steps = sorted(set(history.step))
    assert all(step % 29 == 0 for step in steps) and steps[-1] == 87, steps
    return {"ww_keys": sorted(keys), "steps": steps}


def check_batch_cadence(out: Path) -> dict:
    """every_n_steps: snapshots at multiples of n, taken between steps (batch begins)."""
    x, y = _data()
    model = _model(4)
    cb = WeightWatcherCallback(log_dir=out / "batches", every_n_steps=10, every_n_epochs=None,
                               max_duty=None, tensorboard=False)
    model.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[cb])
    assert _no_batch_end_hook(cb)
    steps = sorted(set(load_history(out / "batches").step))
    assert steps[0] == 0 and steps[-1] == 58 and all(s % 10 == 0 for s in steps[1:-1]), steps
    return {"batch_steps": steps}


def check_early_stopping(out: Path) -> dict:
    x, y = _data()
    model = _model(1)
    stopper = keras.callbacks.EarlyStopping(monitor="ww/alpha_mean", mode="max", patience=1,
                                            min_delta=100.0)
    hist = model.fit(x, y, epochs=10, batch_size=64, verbose=0,
                     callbacks=[WeightWatcherCallback(log_dir=out / "es"), stopper])
    epochs = len(hist.history["loss"])
    assert epochs < 10, epochs
    return {"early_stopped_after": epochs}


class Boom(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 5:
            raise RuntimeError("user failure")


def check_raise(out: Path) -> dict:
    x, y = _data()
    model = _model(2)
    try:
        model.fit(x, y, epochs=2, batch_size=64, verbose=0,
                  callbacks=[WeightWatcherCallback(log_dir=out / "raise"), Boom()])
    except RuntimeError:
        pass
    else:
        raise AssertionError("fit did not raise")
    deadline = time.monotonic() + 10
    while _workers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _workers(), _workers()
    return {"threads_left": 0}


class FailAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def check_backup_and_restore(out: Path) -> dict:
    """A fit interrupted after its epoch-1 backup, then resumed by BackupAndRestore, continues
    the same history: steps strictly increasing, none twice, up to the last step."""
    x, y = _data()
    log_dir, backup = out / "resume", out / "backup"
    model = _model(3)
    try:
        model.fit(x, y, epochs=4, batch_size=64, verbose=0,
                  callbacks=[WeightWatcherCallback(log_dir=log_dir),
                             keras.callbacks.BackupAndRestore(str(backup)), FailAtEpoch(2)])
    except RuntimeError:
        pass
    deadline = time.monotonic() + 10
    while _workers() and time.monotonic() < deadline:  # the dead run's last analysis lands
        time.sleep(0.05)
    model = _model(3)
    model.fit(x, y, epochs=4, batch_size=64, verbose=0,
              callbacks=[WeightWatcherCallback(log_dir=log_dir),
                         keras.callbacks.BackupAndRestore(str(backup))])
    steps = load_history(log_dir, level="model").step.tolist()
    assert steps == sorted(set(steps)), steps
    assert steps[0] == 0 and steps[-1] == 4 * 29, steps
    return {"resumed_steps": steps}


def main() -> None:
    out = Path(sys.argv[1])
    run_checks(out, keras.backend.backend(), [
        ("fit", lambda: check_fit(out)),
        ("batch_cadence", lambda: check_batch_cadence(out)),
        ("early_stopping", lambda: check_early_stopping(out)),
        ("raise", lambda: check_raise(out)),
        ("backup_and_restore", lambda: check_backup_and_restore(out)),
    ])


if __name__ == "__main__":
    main()
