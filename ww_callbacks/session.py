"""One watch session: everything an integration needs from the core, so that an integration only
translates its host's hooks (Lightning, Keras, Hugging Face, a plain loop) into calls here.

A :class:`WatchSession` is a :class:`~ww_callbacks.watcher.Watcher` (snapshots, background
analysis, history, sinks, policies) that also owns

- the cadence (:class:`~ww_callbacks.cadence.Cadence`): :meth:`begin`, :meth:`step_end`,
  :meth:`epoch_end` and :meth:`end` snapshot when due, never twice at one step;
- when training waits for an analysis: one option, ``wait`` (:data:`ww_callbacks.options.Wait`);
- the sinks built from one set of options (``tensorboard``, ``tensorboard_options``, ``wandb``,
  ``wandb_options``; factories registered by ``ww_callbacks.integrations``,
  :mod:`ww_callbacks.sinks`), next to the host's own and the user's ``sinks``;
- the policy target, made by a factory the integration supplies (:meth:`use_target`);
- cleanup when the host drops its callback without closing it (:meth:`bind`) and :meth:`close`;
- the resumable state: :meth:`state_dict` / :meth:`load_state_dict` (a checkpoint of the
  host), or :meth:`resume` (a step plus, when the host kept it, the policies' state).
"""

from __future__ import annotations

import json
import os
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .cadence import Cadence
from .options import Wait, check_wait
from .policies.base import Target
from .sinks import in_worker, open_sinks
from .watcher import Sink, Watcher, WatcherWarning

#: How long a snapshot or an epoch end waits for an analysis when ``wait`` asks for it.
WAIT_TIMEOUT_S = 600.0


#: States kept in a :meth:`WatchSession.save_state` file: the newest two, so that a host backup
#: written after it at the same point (or a crash between the two) still finds its step's state.
STATES_KEPT = 2


def read_states(path: Path) -> dict[str, dict]:
    """The states of a :meth:`WatchSession.save_state` file by step (empty: no file; a file
    that cannot be read is reported and taken as empty)."""
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as err:
        warnings.warn(f"ww_callbacks: cannot read {path}: {err!r}; its states are ignored",
                      WatcherWarning, stacklevel=3)
        return {}


def _plain(value: Any) -> Any:
    """A JSON type for a value :func:`json.dumps` does not know (numpy scalars and arrays)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"ww_callbacks: a policy state holds a {type(value).__name__}, which a JSON "
                    "checkpoint cannot keep")


def _abandon(session: WatchSession) -> None:
    """Finalizer of a host object dropped while its session still runs (e.g. a failed fit): stop
    the worker without delivering (the history already has every finished result)."""
    session.close(timeout=5.0, deliver=False, final=False)


class WatchSession(Watcher):
    """A :class:`~ww_callbacks.watcher.Watcher` driven by a training host.

    ``cadence``: when to snapshot (default: every epoch, plus the initial and final weights).
    ``wait``: ``"never"`` (default), ``"epoch"`` or ``"always"`` (see
    :data:`ww_callbacks.options.Wait`). ``tensorboard``: True (event files in ``log_dir``), a
    writer to write into (left open) or False; ``wandb``: True (the active run), a run, or
    None; ``tensorboard_options`` / ``wandb_options``: keyword arguments of those sinks.
    ``sinks``: more sinks (the host's and the user's), after the built ones. ``get_model``: a
    function returning the model, for hosts where reading it has a cost (Keras on JAX syncs its
    state): called only when a snapshot is due. Other keyword arguments are those of
    :class:`~ww_callbacks.watcher.Watcher`.
    """

    def __init__(self, *, cadence: Cadence | None = None, wait: Wait = "never",
                 log_dir: str | os.PathLike | None = None, sinks: Sequence[Sink] = (),
                 tensorboard: Any = False, tensorboard_options: Mapping[str, Any] | None = None,
                 wandb: Any = None, wandb_options: Mapping[str, Any] | None = None,
                 get_model: Callable[[], Any] | None = None, **watcher_options: Any):
        self.cadence = cadence if cadence is not None else Cadence()
        self.wait = check_wait(wait)
        #: The sinks this session built from its options and names (it closes them in every
        #: case); ``sinks`` may name them (:mod:`ww_callbacks.sinks`).
        all_sinks, self.built_sinks = open_sinks(sinks, log_dir, aliases={
            "tensorboard": (tensorboard, tensorboard_options), "wandb": (wandb, wandb_options)})
        super().__init__(log_dir=log_dir, sinks=all_sinks, **watcher_options)
        self.get_model = get_model
        self._finalizer: weakref.finalize | None = None
        self._closed = False

    # ------------------------------------------------------------------ setup

    def use_target(self, factory: Callable[..., Target]) -> None:
        """Make the policies' target with ``factory(**layer_selection)`` (the integration's:
        its framework's model, optimizers and schedulers); nothing without policies."""
        if self.policies:
            self.target = factory(**self.layer_selection)

    def bind(self, owner: Any) -> None:
        """Stop this session when ``owner`` (the host's callback) is garbage-collected before
        :meth:`close` (the host ran no end hook, e.g. training raised). ``owner`` must not be
        referenced by the session."""
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(owner, _abandon, self)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def waits_at_epochs(self) -> bool:
        """True when epoch snapshots wait (``wait`` is ``"epoch"`` or ``"always"``)."""
        return self.wait != "never"

    # ------------------------------------------------------------------ cadence

    def _model(self, model: Any) -> Any:
        if model is None and self.get_model is not None:
            return self.get_model()
        return model

    def take(self, step: int, epoch: int | None = None, model: Any = None, *,
             settle: bool = False, force: bool = False) -> bool:
        """Snapshot the weights of ``step`` unless they were just taken. ``settle``: first wait
        until the previous analysis is done, so that this snapshot replaces none (``wait=
        "always"`` does it for every snapshot, and delivers that analysis first). ``force``: a
        distributed session takes it even while a rank's worker is busy (the final weights)."""
        if self._closed or not self.is_new_step(step):
            return False
        if self.wait == "always":
            self.wait_idle(WAIT_TIMEOUT_S, before_step=step)
            self.poll(step)
        elif settle:
            self.wait_idle(WAIT_TIMEOUT_S, before_step=step)
        model = self._model(model)
        if model is None:  # (a host hook without the model)
            return False
        return self.snapshot(model, step, epoch, force=force)

    def begin(self, step: int, epoch: int | None = None, model: Any = None) -> None:
        """Training starts (or resumes) at ``step``: the initial weights, when the cadence asks
        (not again when resuming at a step already analysed)."""
        if self.cadence.on_train_start:
            self.take(step, epoch, model)

    def step_end(self, step: int, epoch: int | None = None, model: Any = None) -> bool:
        """After optimizer step ``step``: snapshot when the step is due."""
        return self.cadence.step_due(step) and self.take(step, epoch, model)

    def epoch_end(self, step: int, epoch: int, model: Any = None) -> None:
        """End of epoch ``epoch`` (from 0) at ``step``: snapshot when the epoch is due (with
        ``wait``, after the previous analysis, and then wait for this one: on every rank, for a
        distributed session, whose ranks' parts are then merged), then deliver."""
        if self.cadence.epoch_due(epoch):
            self.take(step, epoch, model, settle=self.waits_at_epochs)
            if self.waits_at_epochs:
                self.wait_idle(WAIT_TIMEOUT_S)
                # distributed: this rank's part waits here until the next snapshot's exchange;
                # fetch every rank's now, so the epoch's decision is on the epoch's weights
                self.collect()
        self.poll(step)

    def end(self, step: int, epoch: int | None = None, model: Any = None) -> None:
        """Training ended: the final weights (when the cadence asks), then :meth:`close`, which
        waits for every analysis, delivers, lets the policies finish and closes the sinks."""
        if self.cadence.on_train_end:
            self.take(step, epoch, model, force=True)
        self.close(final=True)

    # ------------------------------------------------------------------ epoch report

    def decision(self, step: int | None = None, *, settle: bool = False) -> dict[str, Any]:
        """What the host acts on and logs at an epoch end: ``should_stop`` and ``stop_reason``
        (the policies'), ``metrics`` (the ``ww/`` values of the latest delivered analysis, see
        :meth:`~ww_callbacks.watcher.Watcher.model_scalars`; empty before the first) and
        ``step``, the step that analysis is of (-1: none yet). ``settle``: when a policy has
        asked to stop, first deliver the result it decided on (so its ``ww/stop_reason`` is in
        the values), and before any result, wait for the first (the initial weights')."""
        stop = self.should_stop
        if settle and stop:  # decided in the worker: its result may still be queued
            self.wait_idle()
            self.poll(step)
        elif settle and self.last_result is None:
            self.wait_for_result(step)
        result = self.last_result
        return {"should_stop": stop, "stop_reason": self.stop_reason,
                "metrics": self.model_scalars(),
                "step": -1 if result is None else int(result.step)}

    # ------------------------------------------------------------------ resume

    def resume(self, step: int, state: Mapping[str, Any] | None = None) -> None:
        """Continue an interrupted run at ``step`` from what the host kept: the history is cut
        after ``step`` (see :meth:`~ww_callbacks.watcher.Watcher.resume_from`) and, with
        ``state`` (a :meth:`state_dict` saved with the host's checkpoint), the policies continue
        from theirs instead of starting afresh."""
        self.resume_from(step)
        if state:
            self.load_policy_states(state.get("policies", ()))

    def save_state(self, path: str | os.PathLike, step: int) -> None:
        """Keep :meth:`portable_state` as the state of ``step`` in the JSON file ``path`` (for
        hosts whose own backups cannot hold it, e.g. next to Keras's ``BackupAndRestore``
        files), with the newest of the states already there (:data:`STATES_KEPT` in all)."""
        path = Path(path)
        states = read_states(path)
        states[str(int(step))] = self.portable_state()
        newest = sorted(states, key=int)[-STATES_KEPT:]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: states[k] for k in newest}))
        os.replace(tmp, path)  # a crash while writing leaves the previous file whole

    def saved_state(self, path: str | os.PathLike, step: int) -> dict | None:
        """The state :meth:`save_state` kept for ``step`` in ``path`` (None: none; with
        policies, a warning says they start afresh)."""
        state = read_states(Path(path)).get(str(int(step)))
        if state is None and self.policies:
            warnings.warn(f"ww_callbacks: no state of step {step} in {path}; the policies start "
                          "afresh", WatcherWarning, stacklevel=2)
        return state

    def portable_state(self) -> dict:
        """:meth:`state_dict` as plain JSON types (numpy scalars become numbers), for hosts
        that keep it in a JSON file (Hugging Face's ``trainer_state.json``, the Keras backup)."""
        return json.loads(json.dumps(self.state_dict(), default=_plain))

    # ------------------------------------------------------------------ shutdown

    def close(self, timeout: float | None = 120.0, *, deliver: bool = True,
              final: bool = True) -> None:
        """As :meth:`Watcher.close <ww_callbacks.watcher.Watcher.close>`; without ``deliver``
        (a finalizer, the end of the interpreter) the built sinks that are safe to close from
        any thread (``in_worker``: the TensorBoard writers) are closed too, so no file stays
        open. Safe to call twice."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._closed:
            return
        self._closed = True
        super().close(timeout, deliver=deliver, final=final)
        if not deliver:
            for sink in self.built_sinks:
                if in_worker(sink):
                    try:
                        sink.close()
                    except Exception as err:  # best effort: nothing may stop a cleanup
                        warnings.warn(f"ww_callbacks: closing sink {type(sink).__name__} "
                                      f"failed: {err!r}", WatcherWarning, stacklevel=2)
