"""Lightning integration: :class:`WeightWatcherCallback`, live HTSR diagnostics in ``Trainer.fit``.

One callback class works with both ``lightning.pytorch`` and ``pytorch_lightning`` trainers (its
bases are the ``Callback`` classes of whichever of the two packages import). The hooks are thin:
they decide *when* (a :class:`~ww_callbacks.cadence.Cadence`) and call the framework-free
:class:`~ww_callbacks.session.WatchSession`, which copies the weights on the training thread,
analyses them in one background thread and delivers the results on the training thread to

- the history file ``<log_dir>/ww_history.jsonl`` (first, so a failing logger loses nothing);
- every logger of the trainer (``logger.log_metrics(scalars, step=<step of the snapshot>)``),
  plus, for a ``TensorBoardLogger``, the TensorBoard extras (custom-scalars layout, ESD histograms
  and plots: :class:`~ww_callbacks.integrations.tensorboard.TensorBoardSink`) and, for a
  ``WandbLogger``, the W&B extras (:class:`~ww_callbacks.integrations.wandb.WandbSink`);
- the user's own sinks and policies.

At every training-epoch end the latest model summary (``ww/alpha_mean``, ...) is also logged with
``pl_module.log`` (not to the loggers, which already have it at its true step), so that
``EarlyStopping`` and ``ModelCheckpoint`` can monitor a ``ww/`` key.

On several ranks (DDP and the other replicated strategies as well as FSDP,
``ModelParallelStrategy`` and DeepSpeed, which shard the weights) the callback runs a session on
every rank: each snapshot is a collective (:mod:`ww_callbacks.distributed`), each rank analyses
its share of the layers, rank 0 alone writes the history and logs; every rank's policies decide
on the same merged analyses. Rank 0's summary and ``should_stop`` decision are also broadcast
once per epoch, so all ranks log the same values and stop together.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

from ww_callbacks.cadence import Cadence
from ww_callbacks.faults import WatcherWarning
from ww_callbacks.options import Wait
from ww_callbacks.policies.base import Policy
from ww_callbacks.policies.policy_set import PolicySet
from ww_callbacks.results import AnalysisResult
from ww_callbacks.scalars import MODEL_PREFIX
from ww_callbacks.session import WatchSession
from ww_callbacks.sinks import Sink, build_sinks

from ._host import (
    LatestValues,
    close_leftover,
    host_options,
    open_session,
    outputs_for_rank,
    torch_target,
)

__all__ = ["WeightWatcherCallback", "LoggerSink", "default_log_dir"]

INSTALL_HINT = "pip install ww_callbacks[lightning]"


def _import_all(module_names: Sequence[str], attribute: str) -> tuple[type, ...]:
    """``attribute`` of each importable module, in order (missing packages are left out)."""
    import importlib

    found = []
    for name in module_names:
        try:
            found.append(getattr(importlib.import_module(name), attribute))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


_CALLBACK_BASES = _import_all(("lightning.pytorch.callbacks", "pytorch_lightning.callbacks"),
                              "Callback")
if not _CALLBACK_BASES:  # pragma: no cover - the extra is not installed
    raise ImportError("ww_callbacks.integrations.lightning needs lightning or pytorch-lightning: "
                      + INSTALL_HINT)
_TB_LOGGERS = _import_all(("lightning.pytorch.loggers", "pytorch_lightning.loggers"),
                          "TensorBoardLogger")
_CSV_LOGGERS = _import_all(("lightning.pytorch.loggers", "pytorch_lightning.loggers"),
                           "CSVLogger")
_WANDB_LOGGERS = _import_all(("lightning.pytorch.loggers.wandb",
                              "pytorch_lightning.loggers.wandb"), "WandbLogger")


def default_log_dir(trainer: Any) -> str:
    """Where the history goes by default: ``trainer.log_dir`` (the run's folder of a
    TensorBoard or CSV logger, ``default_root_dir`` without a logger). For other loggers (W&B,
    MLflow, ...) ``trainer.log_dir`` is their ``save_dir``, shared by every run, so the run's
    own ``save_dir/name/version`` is used instead (where ``ModelCheckpoint`` puts its
    ``checkpoints/``). Call it on every rank: the result is broadcast from rank 0."""
    loggers = trainer.loggers
    if not loggers or isinstance(loggers[0], _TB_LOGGERS + _CSV_LOGGERS):
        return trainer.log_dir  # broadcasts
    logger = loggers[0]
    save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
    version = logger.version
    version = version if isinstance(version, str) else f"version_{version}"
    return trainer.strategy.broadcast(os.path.join(os.fspath(save_dir), str(logger.name),
                                                   version), src=0)


class LoggerSink:
    """Sends every result's scalars to one Lightning logger, at the step the snapshot was taken.

    ``log_per_layer=False`` keeps only the model-level ``ww/`` scalars (no ``ww_alpha/<layer>``).
    After each write the logger is saved (``logger.save()``, which flushes TensorBoard's writer), as
    Lightning does after its own ``log_metrics``, so a running ``tensorboard`` shows values live.
    The logger itself is never finalized here: the trainer owns it.
    """

    def __init__(self, logger: Any, *, log_per_layer: bool = True):
        self.logger = logger
        self.log_per_layer = log_per_layer

    def write(self, result: AnalysisResult, scalars: dict[str, float]) -> None:
        """Log ``scalars`` at ``result.step`` and flush."""
        if not self.log_per_layer:
            scalars = {k: v for k, v in scalars.items() if k.startswith(MODEL_PREFIX)}
        self.logger.log_metrics(dict(scalars), step=int(result.step))
        self.logger.save()

    def close(self) -> None:
        """Flush what was logged (the trainer finalizes the logger later)."""
        self.logger.save()


def _extra_sinks(logger: Any, tensorboard_options: dict, wandb_options: dict) -> list[Sink]:
    """The TensorBoard / W&B extras for one logger (built by the shared sink factories, on the
    logger's own writer or run): none when their module is not there, a warning (and none) when
    they cannot be made; the scalars reach the logger either way."""
    try:
        if _TB_LOGGERS and isinstance(logger, _TB_LOGGERS):
            return build_sinks({"tensorboard": (logger.experiment,
                                                {"scalars": False, **tensorboard_options})}, None)
        if _WANDB_LOGGERS and isinstance(logger, _WANDB_LOGGERS):
            return build_sinks({"wandb": (logger.experiment, {
                "scalars": False, "step_metric": "trainer/global_step", **wandb_options})}, None)
    except ImportError:
        return []
    except Exception as err:  # an optional extra never stops training
        warnings.warn(f"ww_callbacks: no {type(logger).__name__} extras: {err!r}",
                      WatcherWarning, stacklevel=3)
    return []


def _monitors_ww(trainer: Any) -> bool:
    """True when a callback of ``trainer`` (EarlyStopping, ModelCheckpoint, ...) monitors a
    ``ww/`` key."""
    return any(isinstance(getattr(cb, "monitor", None), str)
               and cb.monitor.startswith(MODEL_PREFIX) for cb in trainer.callbacks)


class WeightWatcherCallback(*_CALLBACK_BASES):
    """Live WeightWatcher (HTSR) diagnostics of the model while ``Trainer.fit`` runs.

    When: ``every_n_epochs`` (default 1: at the end of every epoch; the snapshot is taken at the
    epoch's last training batch, so the analysis overlaps validation) and/or
    ``every_n_train_steps`` (every n optimizer steps), plus the initial weights at the start
    and the final weights at the end of training. ``traps_every``: every k-th analysis also
    randomises the weights to count correlation traps (0: never).

    What: ``layers``, ``min_evals``, ``max_evals``, ``max_N``, ``mp_fit`` and ``fix_fingers`` are
    the options of :func:`ww_callbacks.analyze`. ``blas_threads``: BLAS threads of the analysis
    thread (1 leaves the other cores to training; None: no limit).

    Where: ``log_dir`` receives ``ww_history.jsonl`` (read it with
    :func:`ww_callbacks.history.load_history`); by default the run's folder
    (:func:`default_log_dir`: ``trainer.log_dir``, e.g. ``lightning_logs/version_0``, for
    TensorBoard and CSV loggers; ``save_dir/project/run_id`` for W&B). Every logger
    of the trainer receives the scalars ``ww/alpha_mean``, ``ww/alpha_weighted_mean``,
    ``ww/log_norm_mean``, ``ww/num_traps``, ``ww/layers_over_trained``,
    ``ww/layers_under_trained``, ``ww/layers_failed``, ``ww/snapshots_dropped`` and, with
    ``log_per_layer``, ``ww_alpha/<layer>``, ``ww_alpha_weighted/<layer>``,
    ``ww_traps/<layer>``, each at the global step its snapshot was taken. ``sinks``: more
    :class:`~ww_callbacks.sinks.Sink` s (closed at the end of training); ``policies``:
    :mod:`ww_callbacks.policies` (``HTSREarlyStopping``, ``LayerLRBalancer``, ``TrapRemoval``, or
    any object with ``on_result(result)`` and optionally ``should_stop``). They act on the
    module, ``trainer.optimizers`` and the trainer's LR schedulers, on every rank (each rank's
    run on the same analyses, so they decide alike; best weights are restored by each rank into
    its own weights or shards); a stop is applied on every rank at the next epoch end
    (``ww/stop_reason`` is logged).

    Monitoring: the ``ww/`` summary of the latest analysis is logged at each training-epoch end
    with ``pl_module.log`` so ``EarlyStopping(monitor="ww/alpha_mean")`` and
    ``ModelCheckpoint(monitor="ww/alpha_mean")`` work (``log_epoch_metrics``: None, the default,
    does it when a callback of the trainer monitors a ``ww/`` key; True always, e.g. for your
    own callbacks reading ``trainer.callback_metrics``; the loggers get the values either way).
    By default nothing waits for the analysis: when it is slower than training, a snapshot still
    pending when the next one comes is dropped (counted in ``ww/snapshots_dropped``; the final
    one is always analysed).
    ``wait="epoch"`` (None, the default: ``"epoch"`` when a callback of the trainer monitors a
    ``ww/`` key, else ``"never"`` as on every other host, policies or not; give
    ``wait="epoch"`` for policies that must decide on every epoch) analyses every epoch's
    snapshot: taking it waits for the previous analysis,
    and the epoch end waits for its own, so the monitored value describes the weights of that
    epoch and not an earlier one (``"always"``: every snapshot waits; ``wait_for_epoch`` is the
    old, deprecated name of ``wait="epoch"``). With a validation loop, give ``ModelCheckpoint`` a
    ``save_on_train_epoch_end=True``: by default it checks its monitor at the end of validation,
    which comes before the training-epoch end.

    ``max_duty``: the largest share of time the analysis thread may use, in its CPU time (default
    ``"auto"``: half a core on CPU training, no limit on a GPU; see
    :class:`~ww_callbacks.session.WatchSession`); None: no limit.

    ``tensorboard_options`` / ``wandb_options``: keyword arguments of the TensorBoard / W&B
    extras made for a ``TensorBoardLogger`` / ``WandbLogger``.
    ``adapters`` (peft LoRA layers: ``"effective"``, ``"only"``, ``"both"``) and
    ``base="initial"`` (the update since the start) are those of
    :class:`ww_callbacks.session.WatchSession`.

    Every other keyword is one of the shared options of :data:`ww_callbacks.options.OPTIONS`
    (``traps_every``, ``layers``, ``min_evals``, ``max_evals``, ``max_N``, ``mp_fit``,
    ``fix_fingers``, ``analysis_device``, ``keep_spectra``, ``seed``, ``adapters``, ``tied``,
    ``base``, ``blas_threads``, ``max_duty``, ``strict``, ``distributed``), with the same default
    in every host, checked here (a bad value or an unknown keyword raises now).

    ``strict=True`` raises a failed analysis on the training thread instead of warning
    (:class:`~ww_callbacks.faults.WatcherWarning`).

    Training on a CPU, leave a core to the analysis thread
    (``torch.set_num_threads(os.cpu_count() - 1)``): with torch's default (every core) its
    threads wait on each other whenever an analysis runs, and small models train much slower.

    Example (runs as is; ``tensorboard --logdir lightning_logs`` shows the ``ww`` scalars)::

        import lightning as L
        import torch
        import torch.nn as nn
        from ww_callbacks.integrations.lightning import WeightWatcherCallback

        class MLP(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))

            def training_step(self, batch, batch_idx):
                x, y = batch
                return nn.functional.cross_entropy(self.net(x), y)

            def configure_optimizers(self):
                return torch.optim.Adam(self.parameters(), lr=1e-3)

        data = torch.utils.data.TensorDataset(torch.randn(512, 64), torch.randint(0, 10, (512,)))
        trainer = L.Trainer(max_epochs=3, callbacks=[WeightWatcherCallback()])
        trainer.fit(MLP(), torch.utils.data.DataLoader(data, batch_size=64))
    """

    def __init__(self, *, every_n_train_steps: int | None = None,
                 every_n_epochs: int | None = 1, log_dir: str | os.PathLike | None = None,
                 policies: Sequence[Policy] = (), sinks: Sequence[Any] = (),
                 log_per_layer: bool = True, wait: Wait | None = None,
                 log_epoch_metrics: bool | None = None,
                 tensorboard_options: dict | None = None, wandb_options: dict | None = None,
                 **options: Any):
        super().__init__()
        given = dict(every_n_train_steps=every_n_train_steps, every_n_epochs=every_n_epochs,
                     wait=wait, sinks=sinks)
        #: The shared options (:class:`~ww_callbacks.options.WatchOptions`), checked here.
        self.options = host_options("the Lightning WeightWatcherCallback", options, given,
                                    nullable=("wait",))
        every_n_train_steps, every_n_epochs = given["every_n_train_steps"], given["every_n_epochs"]
        self.cadence = Cadence(every_n_steps=every_n_train_steps, every_n_epochs=every_n_epochs)
        self.every_n_train_steps = every_n_train_steps
        self.every_n_epochs = every_n_epochs
        self.log_dir = log_dir
        self.log_per_layer = log_per_layer
        #: ``"never"``, ``"epoch"``, ``"always"``, or None (decided at ``setup``).
        self.wait = given["wait"]
        self.tensorboard_options = dict(tensorboard_options or {})
        self.wandb_options = dict(wandb_options or {})
        self.log_epoch_metrics = log_epoch_metrics
        self._log_epoch = True
        self.policies = list(policies)
        self.sinks = given["sinks"]
        self._watcher_options = self.options.as_dict()
        self._latest = LatestValues()  # the ww/ values logged at each epoch end
        self._watcher_options.pop("distributed")  # decided per fit (_on_every_rank)
        #: Set to True (rank 0) to stop training on every rank at the next epoch end.
        self.should_stop = False
        #: The last decision applied on this rank (what ``_decision`` returned on rank 0).
        self.last_decision: dict[str, Any] | None = None
        self._watcher: WatchSession | None = None
        self._pending_state: dict | None = None
        self._last_epoch: int | None = None

    # ------------------------------------------------------------------ public state

    @property
    def watcher(self) -> WatchSession | None:
        """The :class:`~ww_callbacks.session.WatchSession` of the current (or last) fit (None
        before ``fit``; on ranks other than 0 only when the trainer runs on several ranks,
        where that session analyses the rank's share and records nothing)."""
        return self._watcher

    @property
    def history_path(self) -> str | None:
        """The ``ww_history.jsonl`` written by rank 0 (None elsewhere, or without a file)."""
        path = self._watcher.history_path if self._watcher is not None else None
        return None if path is None else os.fspath(path)

    @property
    def state_key(self) -> str:
        """Distinct per cadence, so that two such callbacks can share a checkpoint."""
        return self._generate_state_key(every_n_train_steps=self.every_n_train_steps,
                                        every_n_epochs=self.every_n_epochs)

    def state_dict(self) -> dict[str, Any]:
        """The watcher's counters and the step the checkpoint was taken at (rank 0)."""
        if self._watcher is not None:
            return self._watcher.state_dict()
        return dict(self._pending_state or {})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the counters of a checkpointed run; the history loses the analyses recorded
        after the checkpoint's step (the resumed run redoes them), so it has no duplicates.

        Lightning restores callbacks after ``setup`` (where the watcher and its ``log_dir`` are
        made) for most strategies and after ``on_fit_start`` for the others; a state that
        arrives before the watcher exists is kept and applied when it is made."""
        if not state_dict:
            return
        if self._open_watcher() is not None:
            self._watcher.load_state_dict(state_dict)
        else:
            self._pending_state = dict(state_dict)

    # ------------------------------------------------------------------ hooks

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Make the watch session when fitting starts: on every rank when the trainer runs on
        several (DDP, FSDP, ``ModelParallelStrategy``, DeepSpeed: snapshots are collectives,
        each rank analyses its share of the layers, rank 0 records and logs them, every rank's
        policies decide on the same analyses); on the one process otherwise."""
        if stage != "fit":
            return
        # `Trainer.log_dir` broadcasts: it must be read on every rank, or rank 0 stalls.
        log_dir = self.log_dir if self.log_dir is not None else default_log_dir(trainer)
        # computed on every rank: every rank logs the same keys for the monitors, and waits
        # at the same points (a rank that waits for its worker while another does not would
        # find the other's worker busy and skip the snapshot on every rank)
        monitored = _monitors_ww(trainer)
        self._log_epoch = monitored if self.log_epoch_metrics is None \
            else bool(self.log_epoch_metrics)
        distributed = _on_every_rank(trainer, self.options.distributed)
        if not trainer.is_global_zero and not distributed:
            return
        close_leftover(self._watcher)  # a session left over from an interrupted earlier fit
        sinks: list[Any] = []
        if trainer.is_global_zero:  # rank 0 records and logs; the other ranks only analyse
            for logger in trainer.loggers:
                sinks.append(LoggerSink(logger, log_per_layer=self.log_per_layer))
                sinks.extend(_extra_sinks(logger, self.tensorboard_options, self.wandb_options))
        outputs = outputs_for_rank(trainer.is_global_zero, log_dir=log_dir,
                                   sinks=[*sinks, *self.sinks])
        wait = self.wait if self.wait is not None else \
            "epoch" if monitored else "never"
        self._watcher = WatchSession(cadence=self.cadence, wait=wait,
                                     log_dir=outputs["log_dir"], sinks=outputs["sinks"],
                                     policies=self.policies, distributed=distributed,
                                     **self._watcher_options)
        self._last_epoch = None
        if self._pending_state is not None:  # (the same checkpoint on every rank)
            self._watcher.load_state_dict(self._pending_state)
            self._pending_state = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Give the policies the model, its optimizers and schedulers; snapshot the initial
        weights (not again when resuming at an analysed step)."""
        watcher = self._open_watcher()
        if watcher is None:
            return
        watcher.use_target(torch_target(
            pl_module, trainer.optimizers,
            [config.scheduler for config in trainer.lr_scheduler_configs]))
        watcher.begin(int(trainer.global_step), trainer.current_epoch, pl_module)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Deliver finished analyses; snapshot when a step or the end of a due epoch comes."""
        watcher = self._open_watcher()
        if watcher is None:
            return
        watcher.poll(int(trainer.global_step))
        epoch = trainer.current_epoch
        self._last_epoch = epoch
        step = int(trainer.global_step)
        if batch_idx + 1 == trainer.num_training_batches and self.cadence.epoch_due(epoch):
            # the epoch's snapshot at its last batch, so that its analysis overlaps validation
            watcher.take(step, epoch, pl_module, settle=watcher.waits_at_epochs)
        else:
            watcher.step_end(step, epoch, pl_module)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """GPU weights: order the optimizer step after the copy of the last snapshot."""
        watcher = self._open_watcher()
        if watcher is not None:
            watcher.before_optimizer_step()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Rank 0 delivers (and, when a ``ww/`` key is monitored, waits for this epoch's
        analysis); then every rank receives rank 0's decision, logs the ``ww/`` summary with
        ``pl_module.log`` and stops if told to."""
        watcher = self._open_watcher()
        if watcher is not None:  # (epochs of unknown length: no last batch was seen)
            watcher.epoch_end(int(trainer.global_step), trainer.current_epoch, pl_module)
        decision = self._decision() if trainer.is_global_zero else None
        decision = trainer.strategy.broadcast(decision, src=0)
        self._apply_decision(trainer, pl_module, decision)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Snapshot the final weights, wait for every analysis and deliver it (rank 0); then
        weights a policy restored on rank 0 go to every rank."""
        watcher = self._open_watcher()
        if watcher is not None:  # policies finish in end() (e.g. restore the best weights)
            epoch = self._last_epoch if self._last_epoch is not None else trainer.current_epoch
            watcher.end(int(trainer.global_step), epoch, pl_module)
        self._share_restored_weights(trainer, pl_module)

    def _share_restored_weights(self, trainer: Any, pl_module: Any) -> None:
        """Weights a policy restored on rank 0 go to every rank, when the session ran on rank 0
        only (a session on every rank restores each rank's own weights or shards)."""
        policies = PolicySet(self.policies)
        if (trainer.world_size <= 1 or not policies.restores_weights
                or _on_every_rank(trainer, self.options.distributed)):
            return
        if trainer.strategy.broadcast(policies.restored, src=0):
            state = pl_module.state_dict() if trainer.is_global_zero else None
            pl_module.load_state_dict(trainer.strategy.broadcast(state, src=0))

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Training failed: stop the analysis thread now (the pending snapshot is dropped),
        deliver what is finished, leave no thread behind."""
        try:
            self._close(final=False)
        except Exception as err:  # never mask the exception that stopped training
            warnings.warn(f"ww_callbacks: closing the watcher after a failed fit failed too: "
                          f"{err!r}", UserWarning, stacklevel=2)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Close the watcher if the fit ended without ``on_train_end`` (e.g. nothing to train)."""
        if stage == "fit":
            self._close(final=True)

    # ------------------------------------------------------------------ decisions (DDP)

    def _decision(self) -> dict[str, Any]:
        """What rank 0 tells every rank at an epoch end: the session's
        :meth:`~ww_callbacks.session.WatchSession.decision` (``should_stop`` also when this
        callback's own flag is set)."""
        watcher = self._watcher
        decision = {"should_stop": False, "metrics": {}, "step": -1, "stop_reason": None} \
            if watcher is None else watcher.decision()
        return {**decision, "should_stop": bool(self.should_stop) or decision["should_stop"]}

    def _apply_decision(self, trainer: Any, pl_module: Any, decision: dict[str, Any]) -> None:
        """On every rank, with the same ``decision``: log the ``ww/`` summary for monitors
        (to the callback metrics only, the loggers have it at its true step) and stop training
        if rank 0 said so. Every rank logs the same keys, so no rank waits for another."""
        self.last_decision = decision
        # pl_module.log costs ~0.4 ms a key: only for monitors
        values = self._latest.take(decision) if self._log_epoch else None
        # every rank logs the same broadcast values; the "max" over ranks is that value exactly,
        # and syncing it (under DDP only) is what keeps Lightning from warning that an epoch
        # value is not synced, without silencing warnings for the process
        for key, value in (values or {}).items():
            pl_module.log(key, value, on_step=False, on_epoch=True, prog_bar=False,
                          logger=False, sync_dist=True, reduce_fx="max", rank_zero_only=False,
                          batch_size=1)
        if decision["should_stop"]:
            trainer.should_stop = True

    # ------------------------------------------------------------------ helpers

    def _open_watcher(self) -> WatchSession | None:
        """The session while a fit runs (on this rank); None otherwise (before, after close)."""
        return open_session(self._watcher)

    def _close(self, *, final: bool) -> None:
        """Close the session once: ``final`` analyses the pending snapshot, then delivers."""
        watcher = self._open_watcher()
        if watcher is not None:
            watcher.close(final=final)


def _on_every_rank(trainer: Any, distributed: bool | None = None) -> bool:
    """True when ``trainer`` runs on several ranks of a process group: the session runs on
    every rank (:func:`ww_callbacks.distributed.detect.on_every_rank` decides; ``distributed``:
    the option, None: automatic)."""
    from ww_callbacks.distributed.detect import on_every_rank

    return trainer.world_size > 1 and on_every_rank(distributed)
