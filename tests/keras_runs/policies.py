"""The policies with one Keras backend, in its own process (KERAS_BACKEND is fixed at import).

    KERAS_BACKEND=jax python tests/keras_runs/policies.py OUT_DIR

Real ``model.fit`` runs on the digits: HTSR early stopping restores the weights of the step it
says it restored, per-layer learning rates land on the sub-optimizers of a MultiOptimizer, and a
planted correlation trap is removed (and kept without the policy); plus the weight round trip of
:class:`KerasTarget` for each writable layer kind. tests/test_keras_policies.py reports each check
by name: each outcome (and what it measured) goes to OUT_DIR/checks.json (:mod:`checks`); exits
non-zero when a check failed.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
from checks import run_checks  # (this folder is on sys.path: scripts run as files)
from fit_digits import _data, _model

import ww_callbacks
from ww_callbacks.integrations.keras import WeightWatcherCallback
from ww_callbacks.policies import (
    STOP_CODES,
    STOP_REASON,
    HTSREarlyStopping,
    KerasTarget,
    LayerLRBalancer,
    TrapRemoval,
    multi_optimizer_per_layer,
)

#: Keras >= 3.15: per-layer learning rates (MultiOptimizer); older ones must say to upgrade.
HAS_MULTI = hasattr(keras.optimizers, "MultiOptimizer")
BATCH = 128
EPOCH_STEPS = math.ceil(1797 / BATCH)  # optimizer steps per epoch on the digits
LAYERS = ["fc1", "fc2", "head"]


def _callback(out: Path, policies: list, traps_every: int = 0) -> WeightWatcherCallback:
    # no duty-cycle rest: every epoch's snapshot is analysed before the next one arrives;
    # strict: a policy that fails (e.g. a write refused) fails the fit instead of warning
    return WeightWatcherCallback(log_dir=out, tensorboard=False, traps_every=traps_every,
                                 max_duty=None, strict=True, policies=policies)


def _sub_optimizer_of(multi, model: keras.Model, layer: str):
    """The sub-optimizer a built MultiOptimizer gives ``layer``'s kernel, read from Keras's own
    assignment: Keras has no public accessor for it, hence its private index (the check must not
    go through KerasTarget, which it checks)."""
    kernel = {v.path: v for v in model.trainable_variables}[model.get_layer(layer).kernel.path]
    return multi.optimizers[multi._var_to_optimizer_idx[multi._var_key(kernel)]]


def _step(model: keras.Model) -> int:
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class Recorder(keras.callbacks.Callback):
    """Copies of all weights at the start and at each epoch end (placed after the ww callback,
    so at the same point of training as its epoch-end snapshots), by optimizer step."""

    def __init__(self):
        super().__init__()
        self.states: dict[int, list[np.ndarray]] = {}

    def _record(self) -> None:
        model = self.model  # (JAX: syncs the training state)
        self.states[_step(model)] = [np.array(w, copy=True) for w in model.get_weights()]

    def on_train_begin(self, logs=None):
        self._record()

    def on_epoch_end(self, epoch, logs=None):
        self._record()


def check_early_stopping(out: Path) -> dict:
    """Plateau rule with a min_delta no analysis can beat: the first analysis from start_step
    on is the best, the next two are signals, so training stops early and the weights of the
    best step come back."""
    x, y = _data()
    model = _model(1)
    policy = HTSREarlyStopping("plateau", patience=2, min_delta=1e9, start_step=EPOCH_STEPS,
                               restore_best_weights=True, verbose=False)
    recorder = Recorder()
    epochs = 20
    hist = model.fit(x, y, epochs=epochs, batch_size=BATCH, verbose=0,
                     callbacks=[_callback(out / "es", [policy]), recorder])
    ran = len(hist.history["loss"])
    assert ran < epochs, ran
    codes = hist.history[STOP_REASON]
    assert len(codes) == ran, hist.history
    assert codes[-1] == STOP_CODES["plateau"], codes
    assert all(code == 0 for code in codes[:-1]), codes
    assert policy.should_stop and policy.stopped_step is not None
    restored = policy.restored_step
    assert restored is not None and restored == policy.best_step, (restored, policy.best_step)
    assert EPOCH_STEPS <= restored < policy.stopped_step, (restored, policy.stopped_step)
    assert restored in recorder.states, (restored, sorted(recorder.states))
    now = model.get_weights()
    expected = recorder.states[restored]
    assert all(np.array_equal(a, b) for a, b in zip(now, expected, strict=True))
    last = recorder.states[max(recorder.states)]
    assert max(recorder.states) > restored
    assert not all(np.array_equal(a, b) for a, b in zip(now, last, strict=True))
    return {"es_epochs": ran, "es_codes": codes, "es_restored_step": restored,
            "es_stopped_step": policy.stopped_step}


class DeliverMidEpoch(keras.callbacks.Callback):
    """Placed before the ww callback: at one batch of each epoch, waits until the analysis of the
    last epoch-end snapshot is done, so the ww callback delivers it at the next batch and the
    policies act mid-epoch (where, on JAX, a write that skipped the state sync would be lost)."""

    def __init__(self, ww: WeightWatcherCallback, batch: int = 5):
        super().__init__()
        self.ww, self.batch = ww, batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            self.ww.watcher.wait_idle()


class LearningRates(keras.callbacks.Callback):
    """Placed after the ww callback: at each epoch end, each layer's learning rate as the
    training state has it (JAX syncs it into the variables first) and the multipliers that the
    policy believes in effect."""

    def __init__(self, multi, policy: LayerLRBalancer):
        super().__init__()
        self.multi, self.policy, self.seen = multi, policy, []

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        rates = {}
        for name in LAYERS:
            sub = _sub_optimizer_of(self.multi, model, name)
            rates[name] = float(keras.ops.convert_to_numpy(sub.learning_rate))
        self.seen.append((rates, dict(self.policy.current)))


def check_lr_balance(out: Path) -> dict:
    """LayerLRBalancer over a MultiOptimizer with one Adam per layer: at every epoch end (policy
    decisions delivered mid-epoch) and after fit, each layer's learning rate in the optimizer is
    1e-3 times the multiplier in effect, and the multipliers differ."""
    x, y = _data()
    model = _model(2, compile=False)
    multi = multi_optimizer_per_layer(model, keras.optimizers.Adam(1e-3))
    model.compile(optimizer=multi,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    policy = LayerLRBalancer(ramp_steps=3)
    cb = _callback(out / "lr", [policy])
    recorder = LearningRates(multi, policy)
    hist = model.fit(x, y, epochs=4, batch_size=BATCH, verbose=0,
                     callbacks=[DeliverMidEpoch(cb), cb, recorder])
    assert np.isfinite(hist.history["loss"]).all(), hist.history["loss"]
    for epoch, (rates, current) in enumerate(recorder.seen):
        for name in LAYERS:
            np.testing.assert_allclose(rates[name], 1e-3 * current.get(name, 1.0), rtol=1e-6,
                                       err_msg=f"epoch {epoch}, {name}")
    assert len({tuple(sorted(c.items())) for _, c in recorder.seen}) >= 2, recorder.seen
    target = cb.watcher.target
    assert isinstance(target, KerasTarget)
    assert target.lr_layers() == LAYERS, target.lr_layers()
    rates = target.learning_rates()
    assert sorted(policy.current) == sorted(LAYERS), policy.current
    for name in LAYERS:
        np.testing.assert_allclose(rates[name], 1e-3 * policy.current[name], rtol=1e-6)
    # read from the optimizer itself, not through the target: each layer's own sub-optimizer
    for name in LAYERS:
        sub = _sub_optimizer_of(multi, model, name)
        lr = float(keras.ops.convert_to_numpy(sub.learning_rate))
        np.testing.assert_allclose(lr, 1e-3 * policy.current[name], rtol=1e-6)
    scales = sorted(policy.current.values())
    assert scales[-1] - scales[0] > 0.1, policy.current
    logged = cb.watcher.last_result.scalars
    assert all(f"ww_lr_scale/{name}" in logged for name in LAYERS), sorted(logged)
    return {"lr_scales": {n: round(policy.current[n], 4) for n in LAYERS},
            "lr_rates": {n: float(rates[n]) for n in LAYERS}}


def _plant_trap(model: keras.Model) -> None:
    kernel = model.get_layer("fc1").kernel
    w = np.array(keras.ops.convert_to_numpy(kernel))
    w[5, 7] = 50.0 * np.abs(w).max()
    kernel.assign(w)


def _spikes(model: keras.Model) -> dict[str, int]:
    details = ww_callbacks.analyze(model, randomize=True, progress=False)
    return {str(n): int(k) for n, k in zip(details.longname, details.rand_num_spikes,
                                           strict=True)}


def check_traps(out: Path) -> dict:
    """A planted trap in fc1 is removed by TrapRemoval during fit, and kept without it."""
    x, y = _data()
    report = {}
    for remove in (True, False):
        model = _model(3)
        _plant_trap(model)
        before = _spikes(model)
        assert before["fc1"] > 0, before
        policy = TrapRemoval(verbose=False)
        policies = [policy] if remove else []
        hist = model.fit(x, y, epochs=2, batch_size=BATCH, verbose=0,
                         callbacks=[_callback(out / f"traps_{remove}", policies, traps_every=1)])
        assert np.isfinite(hist.history["loss"]).all(), hist.history["loss"]
        assert all(np.isfinite(w).all() for w in model.get_weights())
        after = _spikes(model)
        if remove:
            assert after["fc1"] == 0, after
            assert policy.removed.get("fc1", 0) > 0, policy.removed
            report["traps_removed"] = dict(policy.removed)
            report["traps_after_removal"] = after
        else:
            assert after["fc1"] > 0, after
            assert not policy.removed
            report["traps_kept"] = after
    return report


def check_target() -> dict:
    """KerasTarget without fit: weights written back land in the variables in the analysis'
    layout for every writable kind; LoRA layers are refused; learning-rate layers are found
    through an unbuilt OptimizerMap; a plain optimizer has none (with a warning)."""
    keras.utils.set_random_seed(4)
    tokens = keras.Input((6,), dtype="int32")
    emb = keras.layers.Embedding(50, 16, name="emb")(tokens)
    att = keras.layers.MultiHeadAttention(2, 8, name="mha")(emb, emb)
    seq = keras.layers.Conv1D(12, 3, name="conv1d")(att)
    image = keras.layers.Reshape((10, 12, 1))(keras.layers.Flatten()(
        keras.layers.Dense(120, name="dense")(keras.layers.Flatten()(seq))))
    up = keras.layers.Conv2DTranspose(4, 3, name="deconv")(image)
    down = keras.layers.Conv2D(8, 3, name="conv2d")(up)
    head = keras.layers.Dense(10, name="lora")(keras.layers.Flatten()(down))
    model = keras.Model(tokens, head)
    model.get_layer("lora").enable_lora(2)
    target = KerasTarget(model)
    names = target.layer_names()
    for want in ("emb", "mha.query", "mha.attention_output", "conv1d", "dense", "deconv",
                 "conv2d", "lora"):
        assert want in names, names
    written = []
    for name in names:
        layer = target.layer_weight(name)
        new = np.arange(layer.weight.size, dtype=np.float32).reshape(layer.weight.shape) / 1e3
        if name == "lora":
            try:
                target.set_layer_weight(name, new)
            except ValueError:
                continue
            raise AssertionError("a LoRA layer was written")
        target.set_layer_weight(name, new)
        np.testing.assert_allclose(target.layer_weight(name).weight, new, rtol=1e-6)
        written.append(name)
    # the analysis reads the written weights too
    rows = {row.longname: row for row in ww_callbacks.layers.extract_layers(model)[0]}
    for name in written:
        np.testing.assert_allclose(rows[name].weight, target.layer_weight(name).weight)
    if not HAS_MULTI:
        for call in (lambda: multi_optimizer_per_layer(_model(5), keras.optimizers.SGD(0.1)),
                     lambda: KerasTarget(_model(5)).lr_layers()):
            try:
                call()
            except RuntimeError as err:
                assert "3.15" in str(err), err
            else:
                raise AssertionError("no RuntimeError without MultiOptimizer")
        return {"target_written": written}
    # learning rates: found through an OptimizerMap before the MultiOptimizer is built
    plain = _model(5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert KerasTarget(plain).lr_layers() == []
    assert any("MultiOptimizer" in str(w.message) for w in caught), caught
    mapped = _model(5, compile=False)
    mapped.compile(optimizer=multi_optimizer_per_layer(mapped, keras.optimizers.SGD(0.1)),
                   loss="mse")
    target = KerasTarget(mapped)
    assert target.lr_layers() == LAYERS, target.lr_layers()
    target.set_lr_scales({"fc1": 0.5, "head": 2.0})
    rates = target.learning_rates()
    np.testing.assert_allclose([rates["fc1"], rates["fc2"], rates["head"]], [0.05, 0.1, 0.2],
                               rtol=1e-6)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    scheduled = _model(6, compile=False)
    scheduled.compile(optimizer=multi_optimizer_per_layer(
        scheduled, keras.optimizers.SGD(schedule)), loss="mse")
    try:
        KerasTarget(scheduled).set_lr_scales({"fc1": 0.5})
    except ValueError as err:
        assert "LearningRateSchedule" in str(err) or "ExponentialDecay" in str(err), err
    else:
        raise AssertionError("a schedule was scaled")
    return {"target_written": written}


def main() -> None:
    out = Path(sys.argv[1])
    checks = [("target", check_target), ("early_stopping", lambda: check_early_stopping(out)),
              ("lr_balance", lambda: check_lr_balance(out)), ("traps", lambda: check_traps(out))]
    skipped = {}
    if not HAS_MULTI:  # check_target checks that per-layer learning rates then say to upgrade
        checks = [(name, check) for name, check in checks if name != "lr_balance"]
        skipped["lr_balance"] = (f"Keras {keras.__version__} has no MultiOptimizer (>= 3.15): "
                                 "per-layer learning rates are refused with an upgrade message")
    run_checks(out, keras.backend.backend(), checks, skipped)


if __name__ == "__main__":
    main()
