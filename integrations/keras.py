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
:class:`~ww_callbacks.integrations.keras_target.KerasTarget` made at the start of training; it reads
``self.model`` only when a policy reads or writes values (a trap to remove, learning rates to
set, weights to keep or restore), so a policy that has nothing to do costs nothing. When a policy
asks to stop (:class:`~ww_callbacks.policies.HTSREarlyStopping`), training stops at the end of
that epoch with ``ww/stop_reason`` in its logs; the best weights are restored when training ends.
Per-layer learning rates (:class:`~ww_callbacks.policies.LayerLRBalancer`) need a
``MultiOptimizer`` with a sub-optimizer per layer
(:func:`~ww_callbacks.integrations.keras_target.multi_optimizer_per_layer`, also importable from
here; Keras >= 3.15).

Resuming with ``keras.callbacks.BackupAndRestore``: give this callback the same folder
(``backup_dir=``). At each epoch end it keeps its state (the policies' included) in
``<backup_dir>/ww_state.json``, next to the backup's files (and removed with them when the fit
ends), and a fit that ``BackupAndRestore`` resumes continues the history and the policies from the
state of the step it resumes at, instead of starting the policies afresh.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras

from ww_callbacks.cadence import Cadence
from ww_callbacks.integrations.keras_target import KerasTarget, multi_optimizer_per_layer
from ww_callbacks.options import Wait
from ww_callbacks.policies.base import Policy
from ww_callbacks.session import WatchSession

from ._host import LatestValues, close_leftover, host_options

__all__ = ["KerasTarget", "WeightWatcherCallback", "multi_optimizer_per_layer"]

#: The file this callback keeps in ``BackupAndRestore``'s folder (states by step: the backup is
#: written after this callback's epoch end, so the newest two are kept).
STATE_FILE = "ww_state.json"


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

    ``every_n_epochs`` (default 1) and/or ``every_n_steps`` (optimizer steps) set the cadence,
    plus the initial and final weights; ``traps_every``: every k-th analysis also counts
    correlation traps. ``log_dir`` holds ``ww_history.jsonl`` and, with ``tensorboard=True``,
    TensorBoard events; ``wandb``: a W&B run (or ``True`` for ``wandb.run``);
    ``tensorboard_options`` / ``wandb_options``: keyword arguments of those sinks. Every other
    keyword is one of the shared options of :data:`ww_callbacks.options.OPTIONS` (``traps_every``,
    ``layers``, ``min_evals``, ``max_evals``, ``max_N``, ``mp_fit``, ``fix_fingers``,
    ``analysis_device``, ``keep_spectra``, ``seed``, ``adapters``, ``tied``, ``base``,
    ``blas_threads``, ``max_duty``, ``strict``, ``distributed``), checked here. ``policies``:
    :mod:`ww_callbacks.policies` that act on the model (see the module docstring; the same
    ``layers`` and limits select the layers they act on). ``wait``: ``"never"`` (default; the
    first epoch's logs still wait for the analysis of the initial weights), ``"epoch"`` or
    ``"always"`` (:data:`ww_callbacks.options.Wait`). ``backup_dir``: the folder of a
    ``BackupAndRestore`` callback, to resume the policies with it (module docstring).
    ``every_n_batches`` and ``wandb_run`` are the old names of ``every_n_steps`` and ``wandb``
    (deprecated).
    """

    def __init__(self, *, every_n_epochs: int | None = 1, every_n_steps: int | None = None,
                 log_dir: str | os.PathLike | None = "ww_logs",
                 tensorboard: Any = True, tensorboard_options: Mapping[str, Any] | None = None,
                 wandb: Any = None, wandb_options: Mapping[str, Any] | None = None,
                 policies: Sequence[Policy] = (), sinks: Sequence[Any] = (),
                 wait: Wait = "never", backup_dir: str | os.PathLike | None = None,
                 **options: Any):
        super().__init__()
        given = dict(every_n_steps=every_n_steps, every_n_epochs=every_n_epochs, wait=wait,
                     wandb=wandb, sinks=sinks)
        #: The shared options (:class:`~ww_callbacks.options.WatchOptions`), checked here.
        self.options = host_options("the Keras WeightWatcherCallback", options, given)
        self.cadence = Cadence(every_n_steps=given["every_n_steps"],
                               every_n_epochs=given["every_n_epochs"])
        self.wait = given["wait"]
        self.log_dir = log_dir
        self.tensorboard = tensorboard
        self.tensorboard_options = dict(tensorboard_options or {})
        self.wandb = given["wandb"]
        self.wandb_options = dict(wandb_options or {})
        self.backup_dir = backup_dir
        self._watcher_kwargs = {**self.options.as_dict(), "policies": policies}
        self._extra_sinks = given["sinks"]
        self._latest = LatestValues()  # the ww/ values added to each epoch's logs
        self.watcher: WatchSession | None = None
        self._step = 0
        self._epoch = 0
        self._started = False
        self._epoch_start = 0  # optimizer steps done when the current epoch began

    @property
    def wandb_run(self) -> Any:
        """The old name of :attr:`wandb`."""
        return self.wandb

    # ------------------------------------------------------------------ helpers

    def _session(self) -> WatchSession:
        tensorboard, options = self.tensorboard, dict(self.tensorboard_options)
        if tensorboard is True and self.log_dir is not None:
            from ww_callbacks.integrations.tensorboard import EventWriter

            # TensorBoard's own event writer (pure Python): tf.summary ops run from the analysis
            # thread slowed a TensorFlow fit by 7% (bench/RESULTS.md), and torch may be absent
            tensorboard, options = EventWriter(self.log_dir), {"owns_writer": True, **options}
        return WatchSession(cadence=self.cadence, wait=self.wait, log_dir=self.log_dir,
                            sinks=self._extra_sinks, tensorboard=tensorboard,
                            tensorboard_options=options, wandb=self.wandb,
                            wandb_options=self.wandb_options, get_model=_model_getter(self),
                            **self._watcher_kwargs)

    @property
    def state_path(self) -> Path | None:
        """Where this callback keeps its state next to ``BackupAndRestore``'s files (None
        without ``backup_dir``)."""
        return None if self.backup_dir is None else Path(self.backup_dir) / STATE_FILE

    # ------------------------------------------------------------------ keras hooks

    def on_train_begin(self, logs: dict | None = None) -> None:
        close_leftover(self.watcher)  # a second fit() with the same callback
        self.watcher = self._session()
        # on_train_end does not run when fit() raises; the worker thread ends by itself when
        # idle, and the session is closed when the callback goes away
        self.watcher.bind(self)
        self._started = False

    def _start(self, epoch: int) -> None:
        """First batch of this fit: state restored by ``BackupAndRestore`` is in place now. The
        step is the optimizer's iteration count; analyses recorded after it (by a run that died
        after its last backup) are dropped from the history, so a resumed fit continues it, and
        the policies continue from the state kept at that step."""
        self._started = True
        self._epoch = epoch
        self._step = self._iterations()
        path = self.state_path
        self.watcher.resume(self._step, None if path is None or self._step == 0
                            else self.watcher.saved_state(path, self._step))
        self.watcher.use_target(lambda **selection: KerasTarget(
            self.model, get_model=_model_getter(self), **selection))
        self.watcher.begin(self._step, epoch)  # skipped when this step is already analysed

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
        of this epoch, so the step needs no reading of the model (the session reads it only when
        a snapshot is due)."""
        if self.watcher is None or not self._started:
            return
        self._step = self._epoch_start + batch
        self.watcher.poll(self._step)
        self.watcher.step_end(self._step, self._epoch)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.watcher is not None and not self._started:
            self._start(epoch)
        self._epoch = epoch
        self._epoch_start = self._step

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.watcher is None:
            return
        self._step = self._iterations()
        self.watcher.epoch_end(self._step, epoch)
        decision = self.watcher.decision(self._step, settle=True)
        values = self._latest.take(decision)
        if logs is not None and values is not None:
            logs.update(values)
        if decision["should_stop"]:
            self.model.stop_training = True
        if self.state_path is not None:
            self.watcher.save_state(self.state_path, self._step)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.watcher is None:
            return
        if self._started:  # (a fit may stop inside an epoch)
            self._step = self._iterations()
        self.watcher.end(self._step, self._epoch)
