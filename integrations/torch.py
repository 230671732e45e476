"""Plain PyTorch training loops: a :class:`Watcher` you call once per optimizer step.

Example (runnable; see also ``examples/torch_digits.py``)::

    import torch
    import torch.nn as nn
    from ww_callbacks.integrations.torch import Watcher

    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(512, 64), torch.randint(0, 10, (512,))
    with Watcher(model, log_dir="ww_logs", every_n_steps=20, optimizer=opt) as ww:
        for _ in range(100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            ww.step()
    # tensorboard --logdir ww_logs ; ww_callbacks.history.load_history("ww_logs")
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from ww_callbacks.cadence import Cadence
from ww_callbacks.faults import WatcherWarning
from ww_callbacks.options import Wait
from ww_callbacks.session import WatchSession

from ._host import host_options, outputs_for_rank, torch_target

__all__ = ["Watcher"]

#: How long the final analysis may take at interpreter exit when the script did not call
#: :meth:`Watcher.close` (as ``close()``'s own default).
EXIT_TIMEOUT_S = 120.0


def _from_session(name: str) -> property:
    """A read-only view of the session's attribute ``name``."""
    doc = getattr(WatchSession, name, None).__doc__ if isinstance(
        getattr(WatchSession, name, None), property) else f"The session's ``{name}``."
    return property(lambda self: getattr(self.session, name), doc=doc)


def _session_method(name: str) -> Any:
    """The session's method ``name``, called on :attr:`Watcher.session`."""
    def method(self: Watcher, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.session, name)(*args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(WatchSession, name).__doc__
    return method


class Watcher:
    """Watch a model in any training loop.

    Call :meth:`step` once per optimizer step, after ``optimizer.step()``: it counts the steps,
    snapshots the weights when due (every ``every_n_steps`` steps, plus the initial weights at
    step 0) and hands finished analyses to the sinks. The analysis runs in a background thread;
    ``step`` never waits for it (a snapshot that finds the worker busy replaces the pending one,
    counted in ``dropped``; ``wait="always"`` analyses every one). Use it as a context manager,
    or call :meth:`close` at the end: that analyses the final weights, waits for the analysis and
    closes the sinks.

    - ``model``: the ``torch.nn.Module`` to watch (or pass it to :meth:`step`).
    - ``log_dir``: folder of the history ``ww_history.jsonl`` and of the TensorBoard events
      (``tensorboard --logdir ww_logs``); None: no files (a writer is still used).
    - ``tensorboard``: True (events in ``log_dir``), a ``SummaryWriter`` to log into (yours is
      never closed), or False; ``tensorboard_options``: keyword arguments of
      :class:`~ww_callbacks.integrations.tensorboard.TensorBoardSink` (``images_every``, ...).
    - ``wandb``: a ``wandb`` run to log into as well (or True: the active run; needs
      ``pip install wandb``); ``wandb_options``: keyword arguments of its sink.
    - ``every_n_steps`` / ``every_n_epochs``: cadence (0 or None: never on that clock; epochs
      are seen through :meth:`epoch_end`).
    - ``traps_every``: every k-th analysis also counts correlation traps (0: never).
    - ``optimizer``: registers a step pre-hook that captures the initial weights right before the
      first update and, on a GPU, orders each update after the last snapshot's copy; policies
      that change learning rates steer its param groups.
    - ``schedulers``: the optimizer's learning-rate schedulers, so that per-layer multipliers
      (:class:`~ww_callbacks.policies.LayerLRBalancer`) survive their steps.
    - ``policies``: :mod:`ww_callbacks.policies` (early stopping: check :attr:`should_stop` in
      your loop; learning-rate balancing; trap removal). They act inside :meth:`step`.
    - ``wait``: ``"never"``, ``"epoch"`` or ``"always"`` (:data:`ww_callbacks.options.Wait`).
    - ``distributed``: under a torch process group of more than one rank (DDP, FSDP, FSDP2,
      tensor parallel, ZeRO-3), create the Watcher on every rank: each snapshot is a collective,
      each rank analyses its share of the layers in its worker, rank 0 writes the one history
      and feeds the sinks (the other ranks ignore ``log_dir``, ``tensorboard``, ``wandb`` and
      ``sinks``), every rank's policies decide on the same analyses. None (default): True when
      such a group is initialized when the Watcher is made; False: every rank analyses on its
      own (replicated weights only).
    - ``sinks``: more sinks (objects, names such as ``"csv"``, ``(name, options)`` tuples).
    - every other keyword is one of the
      shared options of :data:`ww_callbacks.options.OPTIONS` (``traps_every``, ``layers``,
      ``min_evals``, ``max_evals``, ``max_N``, ``mp_fit``, ``fix_fingers``, ``analysis_device``,
      ``keep_spectra``, ``seed``, ``adapters``, ``tied``, ``base``, ``blas_threads``, ``max_duty``,
      ``strict``, ``distributed``), checked here. ``writer`` and ``wandb_run`` are the old names of
      ``tensorboard=<writer>`` and ``wandb`` (deprecated).

    It holds a :class:`~ww_callbacks.session.WatchSession` (:attr:`session`), which does the
    work; this class counts the steps and epochs of the loop and drives it.

    The initial weights (step 0) are taken when the ``with`` block is entered or, with
    ``optimizer``, just before its first step; without either, the first :meth:`step` call
    snapshots the weights as they are then. A watcher restored with :meth:`load_state_dict`
    takes no step-0 snapshot.
    """

    def __init__(self, model: Any = None, *, log_dir: str | os.PathLike | None = "ww_logs",
                 tensorboard: Any = True, tensorboard_options: dict | None = None,
                 wandb: Any = None, wandb_options: dict | None = None,
                 every_n_steps: int | None = 100, every_n_epochs: int | None = None,
                 optimizer: Any = None, schedulers: Any = (), wait: Wait = "never",
                 policies: Sequence[Any] = (), sinks: Sequence[Any] = (), **options: Any):
        given = dict(every_n_steps=every_n_steps, every_n_epochs=every_n_epochs, wait=wait,
                     tensorboard=tensorboard, wandb=wandb, sinks=sinks)
        shared = host_options("the torch Watcher", options, given)
        from ww_callbacks.distributed.detect import on_every_rank, process_group_rank

        distributed = on_every_rank(shared.distributed)  # a plain loop runs it on every rank
        outputs = outputs_for_rank(not distributed or process_group_rank() == 0,
                                   log_dir=log_dir, sinks=given["sinks"],
                                   tensorboard=given["tensorboard"], wandb=given["wandb"])
        #: The shared options (:class:`~ww_callbacks.options.WatchOptions`), checked here.
        self.options = shared
        self.model = model
        self.optimizer = optimizer
        self.schedulers = [schedulers] if hasattr(schedulers, "step") else list(schedulers)
        self.global_step = 0  # optimizer steps seen by step()
        self.epoch: int | None = None
        #: The :class:`~ww_callbacks.session.WatchSession` this loop drives.
        self.session = WatchSession(
            cadence=Cadence(every_n_steps=given["every_n_steps"],
                            every_n_epochs=given["every_n_epochs"]),
            wait=given["wait"], tensorboard_options=tensorboard_options,
            wandb_options=wandb_options, get_model=self._current_model, policies=policies,
            **outputs, **{**shared.as_dict(), "distributed": distributed})
        self.session.exit_close = self._close_at_exit  # the final weights even without close()
        self._hook = None
        if optimizer is not None:
            self._hook = optimizer.register_step_pre_hook(self._before_optimizer_step)

    # ------------------------------------------------------------------ training loop

    def step(self, model: Any = None, step: int | None = None, epoch: int | None = None) -> None:
        """Call once per optimizer step, after ``optimizer.step()``.

        ``step``: the global step (default: this watcher's own count, 1 after the first
        update); ``epoch``: recorded with the analyses. Snapshots the weights when the step is
        due (never twice at the same step), then delivers finished analyses to the sinks."""
        self._check_open()
        self.global_step = self.global_step + 1 if step is None else int(step)
        if epoch is not None:
            self.epoch = int(epoch)
        model = self._model(model)
        session = self.session
        if session.last_snapshot_step is None and session.last_step < 0:
            session.take(self.global_step, self.epoch, model)  # nothing captured the initial
        else:
            session.step_end(self.global_step, self.epoch, model)
        session.poll(self.global_step)

    def epoch_end(self, epoch: int, model: Any = None) -> None:
        """Call at the end of each epoch (counted from 0) when using ``every_n_epochs``: snapshots
        when the epoch is due, then delivers finished analyses."""
        self._check_open()
        self.epoch = int(epoch)
        if model is not None:
            self._model(model)
        self.session.epoch_end(self.global_step, self.epoch)

    def close(self, timeout: float | None = 120.0, *, deliver: bool = True,
              final: bool = True) -> None:
        """Analyse the final weights (``final=True``; skipped when they were just snapshotted),
        wait for the analysis, deliver, close the sinks and remove the optimizer hook. Exiting
        the ``with`` block because of an exception skips the final analysis. Safe to call
        twice."""
        if self.closed:
            return
        try:
            if final and deliver and self.model is not None:
                self.session.take(self.global_step, self.epoch, self.model, force=True)
        finally:
            if self._hook is not None:
                self._hook.remove()
                self._hook = None
            self.session.close(timeout, deliver=deliver, final=final)

    def _close_at_exit(self, failed: bool) -> None:
        """The script ends without :meth:`close` (the plain form's last line forgotten; also a
        watcher whose function returned: its session keeps it until exit). Unless the script
        died of an exception, analyse the final weights (the model is still alive), deliver and
        close, with one line on stderr saying so; when that is not possible, warn that the final
        analysis is missing. (The session's exit hook calls it: :attr:`WatchSession.exit_close
        <ww_callbacks.session.WatchSession.exit_close>`.)"""
        session = self.session
        if not failed and (self.model is None or session.distributed):
            why = ("under a process group it is a collective, and the other ranks may be gone"
                   if session.distributed else "it has no model")
            warnings.warn(f"ww_callbacks: the Watcher was not closed and its final weights "
                          f"were not analysed at exit ({why}); call ww.close() after training",
                          WatcherWarning, stacklevel=2)
        if failed or self.model is None or session.distributed:
            session.close(timeout=5.0, deliver=False, final=not failed)
            return
        print(f"ww_callbacks: the Watcher was not closed: analysing the final weights (step "
              f"{self.global_step}) before exit; call ww.close() after training to do it there",
              file=sys.stderr, flush=True)
        try:
            self.close(EXIT_TIMEOUT_S)
        except Exception as err:  # whatever happens at exit, the interpreter must still end
            warnings.warn(f"ww_callbacks: the final weights could not be analysed at exit: "
                          f"{err!r}", WatcherWarning, stacklevel=2)
            session.close(timeout=5.0, deliver=False, final=False)

    def __enter__(self) -> Watcher:
        """Snapshot the initial weights (step 0) when the model is known."""
        if self.model is not None:
            self._take_initial(self.model)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(final=exc_type is None)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """The session's counters plus this loop's step and epoch (save it with your
        checkpoint)."""
        return {**self.session.state_dict(), "global_step": self.global_step,
                "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        """Continue a resumed run: counters, step count, no new step-0 snapshot; analyses after
        the checkpoint are removed from the history."""
        self.session.load_state_dict(state)
        self.global_step = int(state.get("global_step", max(self.session.last_step, 0)))
        self.epoch = state.get("epoch")

    # ------------------------------------------------------------------ the session's views

    closed = _from_session("closed")
    dropped = _from_session("dropped")
    snapshots_taken = _from_session("snapshots_taken")
    results_delivered = _from_session("results_delivered")
    last_result = _from_session("last_result")
    last_step = _from_session("last_step")
    last_snapshot_step = _from_session("last_snapshot_step")
    history = _from_session("history")
    history_path = _from_session("history_path")
    sinks = _from_session("sinks")
    built_sinks = _from_session("built_sinks")
    policies = _from_session("policies")
    target = _from_session("target")
    faults = _from_session("faults")
    skipped = _from_session("skipped")
    layer_selection = _from_session("layer_selection")
    analysis_device = _from_session("analysis_device")
    traps_every = _from_session("traps_every")
    cadence = _from_session("cadence")
    wait = _from_session("wait")
    should_stop = _from_session("should_stop")
    stop_reason = _from_session("stop_reason")

    snapshot = _session_method("snapshot")
    collect = _session_method("collect")
    wait_for_result = _session_method("wait_for_result")  # deprecated: wait_idle
    is_new_step = _session_method("is_new_step")
    model_scalars = _session_method("model_scalars")
    set_log_dir = _session_method("set_log_dir")
    resume = _session_method("resume")
    resume_from = _session_method("resume_from")
    portable_state = _session_method("portable_state")
    save_state = _session_method("save_state")
    saved_state = _session_method("saved_state")
    policy_states = _session_method("policy_states")
    load_policy_states = _session_method("load_policy_states")

    def wait_idle(self, timeout: float = 60.0, *, before_step: int | None = None) -> bool:
        """Block until every analysis asked for so far is done (see
        :meth:`WatchSession.wait_idle <ww_callbacks.session.WatchSession.wait_idle>`)."""
        return self.session.wait_idle(timeout, before_step=before_step)

    def poll(self, step: int | None = None) -> list:
        """Deliver finished analyses and let the policies act (``step``: the optimizer step just
        finished, for ramps); :meth:`step` does it already."""
        return self.session.poll(step)

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("ww_callbacks: this Watcher is closed (its `with` block ended or "
                               "close() was called); make a new one")

    def _current_model(self) -> Any:
        return self._model(None)

    def _model(self, model: Any) -> Any:
        """The watched model (``model`` replaces it); makes the policies' target for it."""
        if model is not None and model is not self.model:
            self.model = model
            self.session.target = None
        if self.model is None:
            raise ValueError("ww_callbacks: no model to watch: pass it to Watcher(model) or "
                             "to step(model)")
        if self.session.policies and self.session.target is None:
            self.session.use_target(torch_target(self.model, [self.optimizer], self.schedulers))
        return self.model

    def _take_initial(self, model: Any) -> None:
        session = self.session
        if session.last_snapshot_step is None and session.last_step < 0 and not self.closed:
            session.take(self.global_step, self.epoch, self._model(model))

    def _before_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.model is not None:
            self._take_initial(self.model)
        self.session.before_optimizer_step()
