"""Keras 3 callback: watch a model's layers during ``model.fit`` on any backend.

    import keras
    from ww_callbacks.integrations.keras import WeightWatcherCallback

    model.fit(x, y, epochs=10, callbacks=[WeightWatcherCallback(log_dir="ww_logs"),
                                          keras.callbacks.EarlyStopping(monitor="ww/alpha_mean")])

Put this callback **first** in the list: it adds the model-level ``ww/`` values (``ww/alpha_mean``,
``ww/num_traps``, ...) to each epoch's ``logs`` so that ``History``, ``CSVLogger``, Keras's
``EarlyStopping`` and ``ModelCheckpoint`` see them. The values are those of the latest analysis
that has finished (analyses run in a background thread; training does not wait for them, except
once, at the end of the first epoch, if the analysis of the initial weights is not done yet).
Per-layer values (``ww_alpha/<layer>``, ...) go to TensorBoard (written with TensorBoard's own
event writer, so neither torch nor TensorFlow ops are needed) and W&B with the same tag names as
the Lightning callback. The weights are read (``self.model``, which makes the JAX backend sync its
state) only on the batches where a snapshot is due. The callback works between steps in
``on_train_batch_begin`` and has no ``on_train_batch_end``, so Keras keeps dispatching batch ends
asynchronously.

Policies (:mod:`ww_callbacks.policies`) act through a
:class:`~ww_callbacks.policies.keras_target.KerasTarget` made at the start of training; it reads
``self.model`` only when a policy reads or writes values (a trap to remove, learning rates to
set, weights to keep or restore), so a policy that has nothing to do costs nothing. When a policy
asks to stop (:class:`~ww_callbacks.policies.HTSREarlyStopping`), training stops at the end of
that epoch with ``ww/stop_reason`` in its logs; the best weights are restored when training ends.
Per-layer learning rates (:class:`~ww_callbacks.policies.LayerLRBalancer`) need a
``MultiOptimizer`` with a sub-optimizer per layer
(:func:`~ww_callbacks.policies.keras_target.multi_optimizer_per_layer`, also importable from
here; Keras >= 3.15).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from typing import Any

import keras

from ww_callbacks.cadence import Cadence
from ww_callbacks.policies.keras_target import KerasTarget, multi_optimizer_per_layer
from ww_callbacks.watcher import DEFAULT_MAX_DUTY, Policy, Sink, Watcher

__all__ = ["KerasTarget", "WeightWatcherCallback", "multi_optimizer_per_layer"]


def _close_quietly(watcher_ref: weakref.ref) -> None:
    watcher = watcher_ref()
    if watcher is not None:
        watcher.close(timeout=5.0, final=False)


def _model_getter(callback: keras.callbacks.Callback) -> Any:
    """A function returning ``callback.model`` (on JAX, reading it syncs the training state into
    the variables, and makes the next step read back what was written to them); it holds the
    callback weakly, so the watcher's target does not keep the callback alive."""
    ref = weakref.ref(callback)

    def get_model() -> Any:
        owner = ref()
        if owner is None:
            raise RuntimeError("ww_callbacks: the Keras callback is gone")
        return owner.model

    return get_model


class WeightWatcherCallback(keras.callbacks.Callback):
    """HTSR diagnostics of every layer while ``model.fit`` runs, analysed in the background.

    ``every_n_epochs`` (default 1) and/or ``every_n_batches`` set the cadence, plus the initial
    and final weights; ``traps_every``: every k-th analysis also counts correlation traps.
    ``log_dir`` holds ``ww_history.jsonl`` and, with ``tensorboard=True``, TensorBoard events;
    ``wandb_run``: a W&B run (or ``True`` for ``wandb.run``). Analysis options (``layers``,
    ``min_evals``, ``max_evals``, ``max_N``, ``mp_fit``, ``fix_fingers``, ``strict``,
    ``blas_threads``, ``max_duty``, ``base="initial"``: the update since the start) are those of
    :class:`ww_callbacks.watcher.Watcher`.
    ``policies``: :mod:`ww_callbacks.policies` that act on the model (see the module docstring;
    the same ``layers`` and limits select the layers they act on).
    """

    def __init__(self, *, every_n_epochs: int | None = 1, every_n_batches: int | None = None,
                 traps_every: int = 1, log_dir: str | os.PathLike | None = "ww_logs",
                 tensorboard: bool = True, wandb_run: Any = None, layers: Any = None,
                 min_evals: int = 8, max_evals: int = 15000, max_N: int = 50000,
                 mp_fit: bool = False, fix_fingers: str | None = None, strict: bool = False,
                 blas_threads: int | None = 1, max_duty: float | None = DEFAULT_MAX_DUTY,
                 policies: Sequence[Policy] = (), sinks: Sequence[Sink] = (),
                 base: str | None = None):
        super().__init__()
        self.cadence = Cadence(every_n_steps=every_n_batches, every_n_epochs=every_n_epochs)
        self.log_dir = log_dir
        self.tensorboard = tensorboard
        self.wandb_run = wandb_run
        self._watcher_kwargs = dict(
            layers=layers, min_evals=min_evals, max_evals=max_evals, max_N=max_N,
            traps_every=traps_every, mp_fit=mp_fit, fix_fingers=fix_fingers, strict=strict,
            blas_threads=blas_threads, max_duty=max_duty, policies=policies, base=base)
        self._extra_sinks = list(sinks)
        self.watcher: Watcher | None = None
        self._finalizer: weakref.finalize | None = None
        self._step = 0
        self._epoch = 0
        self._started = False
        self._epoch_start = 0  # optimizer steps done when the current epoch began

    # ------------------------------------------------------------------ helpers

    def _sinks(self) -> list[Sink]:
        sinks = list(self._extra_sinks)
        if self.tensorboard and self.log_dir is not None:
            from ww_callbacks.integrations.tensorboard import EventWriter, TensorBoardSink

            # TensorBoard's own event writer (pure Python): tf.summary ops run from the analysis
            # thread slowed a TensorFlow fit by 7% (bench/RESULTS.md), and torch may be absent
            sinks.append(TensorBoardSink(EventWriter(self.log_dir), owns_writer=True))
        if self.wandb_run is not None and self.wandb_run is not False:
            from ww_callbacks.integrations.wandb import WandbSink

            sinks.append(WandbSink(None if self.wandb_run is True else self.wandb_run))
        return sinks

    def _snapshot(self) -> None:
        # ``self.model`` syncs the JAX backend's state: touched only when a snapshot is due
        self.watcher.snapshot(self.model, self._step, self._epoch)

    # ------------------------------------------------------------------ keras hooks

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.watcher is not None:  # a second fit() with the same callback
            self.watcher.close(final=False)
        self.watcher = Watcher(log_dir=self.log_dir, sinks=self._sinks(), **self._watcher_kwargs)
        # on_train_end does not run when fit() raises; the worker thread ends by itself when
        # idle, and this finaliser closes the sinks when the callback goes away
        self._finalizer = weakref.finalize(self, _close_quietly, weakref.ref(self.watcher))
        self._started = False

    def _start(self, epoch: int) -> None:
        """First batch of this fit: state restored by ``BackupAndRestore`` is in place now. The
        step is the optimizer's iteration count; analyses recorded after it (by a run that died
        after its last backup) are dropped from the history, so a resumed fit continues it."""
        self._started = True
        self._epoch = epoch
        self._step = self._iterations()
        self.watcher.resume_from(self._step)
        if self.watcher.policies:
            self.watcher.target = KerasTarget(self.model, get_model=_model_getter(self),
                                              **self.watcher.layer_selection)
        if self.cadence.on_train_start:
            self._snapshot()  # skipped by the watcher when this step is already analysed

    def _iterations(self) -> int:
        """The optimizer's step count (reading ``self.model`` syncs JAX's state: call it at
        epoch boundaries only, where Keras has synced it anyway)."""
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        return int(keras.ops.convert_to_numpy(iterations)) if iterations is not None else 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Between two optimizer steps: deliver results, let policies act, snapshot when due.

        A *begin* hook, not an end hook: Keras gives up its asynchronous dispatch of batch ends
        (and pulls every batch's logs to the host) as soon as a callback defines
        ``on_train_batch_end``, which alone cost a TensorFlow fit 7% (bench/RESULTS.md). Here
        the previous step is done and the next has not started, and ``batch`` counts the steps
        of this epoch, so the step needs no reading of the model."""
        if self.watcher is None or not self._started:
            return
        self._step = self._epoch_start + batch
        self.watcher.poll(self._step)
        if self.cadence.step_due(self._step):
            self._snapshot()  # (the watcher skips a step already taken, e.g. an epoch end)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.watcher is not None and not self._started:
            self._start(epoch)
        self._epoch = epoch
        self._epoch_start = self._step

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.watcher is None:
            return
        self._step = self._iterations()
        if self.cadence.epoch_due(epoch):
            self._snapshot()
        self.watcher.poll(self._step)
        stop = self.watcher.should_stop
        if stop:  # decided in the worker: its result (with ww/stop_reason) may still be queued
            self.watcher.wait_idle()
            self.watcher.poll(self._step)
        elif self.watcher.last_result is None:  # the first epoch: the initial weights' values
            self.watcher.wait_for_result(self._step)
        result = self.watcher.last_result
        if logs is not None and result is not None:
            logs.update(self.watcher.model_scalars())
            logs["ww/step"] = float(result.step)
        if stop:
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.watcher is None:
            return
        if self._started:  # (a fit may stop inside an epoch)
            self._step = self._iterations()
        if self.cadence.on_train_end:
            self._snapshot()
        self.watcher.close()
        if self._finalizer is not None:
            self._finalizer.detach()
