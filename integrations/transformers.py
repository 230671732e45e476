"""Hugging Face ``Trainer`` integration: :class:`WeightWatcherCallback`.

::

    from ww_callbacks.integrations.transformers import WeightWatcherCallback

    trainer = Trainer(model=model, args=args, train_dataset=train,
                      callbacks=[WeightWatcherCallback(every_n_steps=100)])
    trainer.train()

The callback snapshots the weights at the start of training, every ``every_n_steps`` optimizer
steps and/or every ``every_n_epochs`` epochs, and at the end; a background thread analyses them
while training goes on. On several processes (``torchrun``: DDP, or accelerate's FSDP and
DeepSpeed) it runs on every process: each snapshot is a collective, each process analyses its
share of the layers (:mod:`ww_callbacks.distributed`), the main process
(``state.is_world_process_zero``) alone writes the history, TensorBoard, W&B and ``logs``, and
every process's policies decide on the same analyses (``control.should_training_stop`` is set
at the same step on every process). Tested under DDP (``use_cpu=True``); accelerate's FSDP is
not: accelerate 1.16.0 cannot run it on CPU (``AcceleratorState`` turns FSDP on only for GPU-like
distributed types, ``accelerate/state.py`` line 947; ``fsdp=True`` with ``use_cpu=True`` trains
under DDP).

Where the results go:

- ``ww_history.jsonl`` in ``log_dir`` (every analysis, written before anything else sees it);
- TensorBoard (``report_to`` holds ``"tensorboard"``, or ``tensorboard=True``): a
  :class:`~ww_callbacks.integrations.tensorboard.TensorBoardSink` writing event files into
  ``log_dir``, with the analysed step as TensorBoard's step;
- W&B (``report_to`` holds ``"wandb"``, or ``wandb=True``): a
  :class:`~ww_callbacks.integrations.wandb.WandbSink` on the active run (the one Hugging Face's
  ``WandbCallback`` started), with ``ww/step`` as the x-axis of the ``ww`` metrics;
- ``logs`` / ``trainer.state.log_history``: the model-level ``ww/`` scalars of the newest
  analysis (``ww/alpha_mean``, ..., and ``ww/step``, the step it analysed) are added to the next
  ``on_log`` call's logs; those of the final analysis to the last entry of the history.

Hugging Face's own reporters run before user callbacks and log at the trainer's current step, so
they cannot place a result at the (earlier) step it analysed; that is why this callback writes
to TensorBoard and W&B itself, and why the ``ww/`` values added to ``logs`` reach only the
callbacks after it (the progress bar, your own) and ``log_history``.

If ``trainer.train()`` raises, no hook runs afterwards (``TrainerCallback`` has no exception
hook). The analysis thread is a daemon thread that then stops when the first of these happens:
the callback is closed (:meth:`WeightWatcherCallback.close`, e.g. in a ``finally``), the next
``trainer.train()`` starts, the trainer and callback are garbage-collected, or the process ends.
Analyses finished before the failure are in the history file.

Resuming (``trainer.train(resume_from_checkpoint=...)``) removes the analyses from the
checkpoint's step on from the history file, since those steps are trained and analysed again,
and the policies continue from the state they had at the checkpoint: the callback is an
``ExportableState``, so every checkpoint's ``trainer_state.json`` holds its state under
``stateful_callbacks["WeightWatcherCallback"]``, with its arguments (options, cadence, sinks
given by name). ``TrainingArguments.restore_callback_states_from_checkpoint=True`` rebuilds the
callback from those arguments; policies and sink objects cannot be kept in JSON, so with them
leave it off (the default): the callback reads its checkpointed state itself.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ww_callbacks.cadence import Cadence
from ww_callbacks.faults import WatcherWarning
from ww_callbacks.options import Wait
from ww_callbacks.policies.base import Policy
from ww_callbacks.session import WatchSession

from ._host import (
    WW_STEP,
    LatestValues,
    close_leftover,
    host_options,
    json_args,
    open_session,
    outputs_for_rank,
    torch_target,
)

try:
    from transformers.trainer_callback import ExportableState
except ImportError:  # pragma: no cover - transformers < 4.41 keeps no callback state
    class ExportableState:  # type: ignore[no-redef]
        """Stand-in: this transformers version does not checkpoint callback states."""

logger = logging.getLogger(__name__)

__all__ = ["WeightWatcherCallback"]

#: The key added to ``logs`` next to the ``ww/`` scalars: the step the analysis is of.
__all__ += ["WW_STEP"]


def _reports_to(args: TrainingArguments, name: str) -> bool:
    """Whether ``args.report_to`` names the integration ``name``."""
    report_to = getattr(args, "report_to", None)
    if report_to is None:
        return False
    if isinstance(report_to, str):
        report_to = [report_to]
    return name in report_to or "all" in report_to


def _epoch_index(state: TrainerState) -> int:
    """The 0-based epoch the trainer is in (``state.epoch`` runs from e to e + 1 through epoch
    e, and is exactly e + 1 at its end)."""
    return max(0, math.ceil(state.epoch or 0.0) - 1)


class WeightWatcherCallback(TrainerCallback, ExportableState):
    """Live WeightWatcher (HTSR) diagnostics for a Hugging Face ``Trainer``.

    ``every_n_steps`` / ``every_n_epochs``: when to snapshot the weights (optimizer steps /
    epochs; None or 0: never on that clock); the initial and final weights are always analysed.
    ``traps_every``: every k-th analysis also counts correlation traps (0: never).
    ``log_dir``: where the history file and the TensorBoard events go (None:
    ``args.logging_dir`` where the arguments have one, else ``$TENSORBOARD_LOGGING_DIR``, else
    ``args.output_dir``). ``tensorboard`` / ``wandb``: write to TensorBoard / the active W&B run
    (None: when ``args.report_to`` names them). ``tensorboard_options`` / ``wandb_options``:
    keyword arguments of :class:`~ww_callbacks.integrations.tensorboard.TensorBoardSink` /
    :class:`~ww_callbacks.integrations.wandb.WandbSink`. ``policies``, ``sinks`` (objects,
    names, ``(name, options)``) and every other keyword, one of the shared options of
    :data:`ww_callbacks.options.OPTIONS` (``traps_every``, ``layers``, ``min_evals``,
    ``max_evals``, ``max_N``, ``mp_fit``, ``fix_fingers``, ``analysis_device``, ``keep_spectra``,
    ``seed``, ``adapters``, ``tied``, ``base``, ``blas_threads``, ``max_duty``, ``strict``,
    ``distributed``), configure the analysis; they are checked here (a typo raises now, not at
    ``trainer.train()``). Sinks passed in are closed at the end of each training run.
    ``wait``: ``"never"`` (default: training never waits, and a snapshot that finds the previous
    one still waiting replaces it, counted in ``ww/snapshots_dropped``), ``"epoch"`` or
    ``"always"`` (before each snapshot, wait until the previous one is analysed, so that none is
    dropped; training then pauses whenever the analysis is slower than the cadence).
    ``wait_for_analysis=True`` is the old name of ``wait="always"`` (deprecated).

    After training, ``callback.watcher`` holds the (closed) watcher: ``last_result``,
    ``history_path``, ``results_delivered``.
    """

    def __init__(self, *, every_n_steps: int | None = None, every_n_epochs: int | None = 1,
                 log_dir: str | os.PathLike | None = None,
                 tensorboard: bool | None = None, wandb: Any = None,
                 tensorboard_options: Mapping[str, Any] | None = None,
                 wandb_options: Mapping[str, Any] | None = None,
                 policies: Sequence[Policy] = (), sinks: Sequence[Any] = (),
                 wait: Wait = "never", **options: Any):
        given = dict(every_n_steps=every_n_steps, every_n_epochs=every_n_epochs, wait=wait,
                     tensorboard=tensorboard, wandb=wandb, sinks=sinks)
        #: The shared options (:class:`~ww_callbacks.options.WatchOptions`), checked here: a
        #: typo or a bad value raises now, not at ``trainer.train()``.
        self.options = host_options("the Hugging Face WeightWatcherCallback", options, given)
        self.cadence = Cadence(every_n_steps=given["every_n_steps"],
                               every_n_epochs=given["every_n_epochs"])
        self.wait = given["wait"]
        self.log_dir = log_dir
        self.tensorboard = given["tensorboard"]
        self.wandb = given["wandb"]
        self.tensorboard_options = dict(tensorboard_options or {})
        self.wandb_options = dict(wandb_options or {})
        self.policies = list(policies)
        self.sinks = given["sinks"]
        #: What ``state()`` exports as ``args``, so that Hugging Face's
        #: ``restore_callback_states_from_checkpoint`` rebuilds this callback as it is.
        self._args = {**{k: v for k, v in given.items() if k != "wait"}, "wait": self.wait,
                      "log_dir": None if log_dir is None else os.fspath(log_dir),
                      "tensorboard_options": self.tensorboard_options,
                      "wandb_options": self.wandb_options, **self.options.changed()}
        self.watcher: WatchSession | None = None
        #: The session state a re-created callback was given by the Trainer (see the module
        #: docstring); read at the start of training.
        self.resume_state: dict | None = None
        self._latest = LatestValues()

    @property
    def _running(self) -> bool:
        return open_session(self.watcher) is not None

    # ------------------------------------------------------------------ setup

    def resolve_log_dir(self, args: TrainingArguments) -> Path:
        """The folder of the history file and the TensorBoard events for these arguments."""
        log_dir = (self.log_dir or getattr(args, "logging_dir", None)
                   or os.environ.get("TENSORBOARD_LOGGING_DIR") or args.output_dir or "ww_logs")
        return Path(os.path.expanduser(str(log_dir)))

    def state(self) -> dict:
        """What the Trainer keeps in each checkpoint (``ExportableState``): the session's state
        (policies included), as JSON."""
        saved = self.watcher.portable_state() if self._running else {}
        return {"args": json_args(self._args), "attributes": {"resume_state": saved}}

    def _checkpointed_state(self, args: TrainingArguments, state: TrainerState) -> dict | None:
        """This callback's state in the checkpoint the trainer resumed from (None: none)."""
        if self.resume_state:  # the Trainer re-created this callback (restore_callback_states)
            return self.resume_state
        if (getattr(args, "restore_callback_states_from_checkpoint", False)
                and (self.policies or json_args(self._args) != self._args)):
            warnings.warn("ww_callbacks: restore_callback_states_from_checkpoint=True re-creates "
                          "this callback from its JSON arguments, without its policies and "
                          "sink objects; leave it off (the callback reads its checkpointed "
                          "state itself)", WatcherWarning, stacklevel=3)
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(saved, list):
            saved = saved[0] if saved else None
        return (saved or {}).get("attributes", {}).get("resume_state") or None

    # ------------------------------------------------------------------ Trainer hooks

    def on_train_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, model: Any = None, **kwargs: Any) -> None:
        """Create the watcher and analyse the initial weights: on the main process, or on every
        process when training runs on several (a torch process group: DDP, accelerate's FSDP or
        DeepSpeed), where each analyses its share of the layers and the main process alone
        records, logs and writes TensorBoard / W&B; every process's policies decide on the
        same analyses, so the stop comes at the same step everywhere."""
        from ww_callbacks.distributed.detect import on_every_rank

        options = self.options.as_dict()
        distributed = on_every_rank(options.pop("distributed"))
        if not state.is_world_process_zero and not distributed:
            return
        close_leftover(self.watcher)  # the previous train() raised: its session was not closed
        self._latest.reset()
        main = state.is_world_process_zero  # records and writes; the other ranks analyse only
        outputs = outputs_for_rank(
            main, log_dir=self.resolve_log_dir(args) if main else None, sinks=self.sinks,
            tensorboard=(_reports_to(args, "tensorboard") if self.tensorboard is None
                         else self.tensorboard) if main else False,
            wandb=(_reports_to(args, "wandb") if self.wandb is None else self.wandb)
            if main else None)
        self.watcher = WatchSession(
            cadence=self.cadence, wait=self.wait, tensorboard_options=self.tensorboard_options,
            wandb_options=self.wandb_options, policies=self.policies, distributed=distributed,
            **outputs, **options)
        self.watcher.bind(self)
        self.watcher.use_target(torch_target(model, [kwargs.get("optimizer")],
                                             [kwargs.get("lr_scheduler")]))
        if state.global_step > 0:  # resumed from a checkpoint: the later steps are redone
            self.watcher.resume(state.global_step, self._checkpointed_state(args, state))
        self.watcher.begin(state.global_step, _epoch_index(state), model)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    model: Any = None, **kwargs: Any) -> None:
        """Deliver finished analyses, let the policies act; snapshot when the step is due;
        stop training when a policy asks to."""
        if not self._running:
            return
        self.watcher.poll(state.global_step)
        self.watcher.step_end(state.global_step, _epoch_index(state), model)
        if self.watcher.should_stop and not control.should_training_stop:
            control.should_training_stop = True
            logger.info("ww_callbacks: stopping training: %s", self.watcher.stop_reason)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState,
                     control: TrainerControl, model: Any = None, **kwargs: Any) -> None:
        """Snapshot when the epoch is due."""
        if self._running:
            self.watcher.epoch_end(state.global_step, _epoch_index(state), model)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        """Add the newest analysis's ``ww/`` scalars (once) to ``logs`` and to the
        ``log_history`` entry the trainer just made of them."""
        if not self._running or logs is None:
            return
        self.watcher.poll(state.global_step)
        if not state.is_world_process_zero:  # the main process alone logs (and writes)
            return
        fresh = self._latest.take(self.watcher.decision(), only_new=True, step_type=int)
        if fresh is None:
            return
        logs.update(fresh)
        history = state.log_history
        if (history and history[-1].get("step") == state.global_step
                and all(k in history[-1] for k in logs if k not in fresh)):
            history[-1].update(fresh)

    def on_train_end(self, args: TrainingArguments, state: TrainerState,
                     control: TrainerControl, model: Any = None, **kwargs: Any) -> None:
        """Analyse the final weights, wait for every analysis, deliver and close."""
        if not self._running:
            return
        self.watcher.end(state.global_step, _epoch_index(state), model)
        if not state.is_world_process_zero:  # the main process alone logs (and writes)
            return
        fresh = self._latest.take(self.watcher.decision(), only_new=True, step_type=int)
        if fresh is None:
            return
        history = state.log_history
        if history and history[-1].get("step") == state.global_step:
            history[-1].update(fresh)  # the trainer's final entry (train_loss, train_runtime...)
        else:
            history.append({**fresh, "step": state.global_step})

    # ------------------------------------------------------------------ shutdown

    def close(self, *, final: bool = False) -> None:
        """Stop the analysis thread now: wait for the analysis in progress, deliver what is
        finished, close the sinks. A snapshot still waiting is analysed only with
        ``final=True``. For ``try: trainer.train() finally: callback.close()``; safe to call
        twice, and called by ``on_train_end``."""
        if self._running:
            self.watcher.close(final=final)
