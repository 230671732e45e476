"""What a resumed run needs from its session: the counters, the policies' state, and the history
cut after the step training resumes at (so it has no duplicates). Kept with the host's checkpoint
(:meth:`Resumable.state_dict`), as plain JSON (:meth:`Resumable.portable_state`), or in a file
of its own by step (:meth:`Resumable.save_state`) for hosts whose backups cannot hold it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..faults import WatcherWarning
from ..history import read_records

#: States kept in a :meth:`Resumable.save_state` file: the newest two, so that a host backup
#: written after it at the same point (or a crash between the two) still finds its step's state.
STATES_KEPT = 2


def read_states(path: Path) -> dict[str, dict]:
    """The states of a :meth:`Resumable.save_state` file by step (empty: no file; a file that
    cannot be read is reported and taken as empty)."""
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


def resumed_counts(taken: int, delivered: int, dropped: int,
                   recorded: int | None) -> tuple[int, int]:
    """``(delivered, dropped)`` of a resumed run. Nothing is in flight after a resume: each of
    the ``taken`` snapshots before the checkpoint was analysed (its record is in the history,
    ``recorded`` once cut at the checkpoint's step; None: no history) or is counted as dropped,
    so ``delivered + dropped == taken`` holds again. Without this the count drifted by the
    analyses in flight (or left to the end) at each saved state."""
    if recorded is not None:
        delivered = max(delivered, min(recorded, taken))
    return delivered, max(0, taken - delivered)


class Resumable:
    """The state part of :class:`~ww_callbacks.session.WatchSession` (it provides
    ``admission``, ``drops``, ``delivery``, ``policies``, ``distributed`` and ``dropped``)."""

    def state_dict(self) -> dict:
        """What a resumed run needs: counters and the step the checkpoint was taken at."""
        return {"version": 1, "snapshots_taken": self.admission.snapshots_taken,
                "results_delivered": self.delivery.results_delivered, "dropped": self.dropped,
                "last_step": self.admission.last_step, "policies": self.policy_states()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` kept with the host's checkpoint: counters, the
        policies' state; analyses recorded after the checkpoint's step are removed from the
        history (the resumed run redoes them), so the history has no duplicates."""
        admission = self.admission
        admission.snapshots_taken = int(state.get("snapshots_taken", 0))
        self.delivery.results_delivered = int(state.get("results_delivered", 0))
        self.drops.earlier = int(state.get("dropped", 0))
        admission.last_step = int(state.get("last_step", -1))
        if admission.last_step >= 0:  # the checkpoint's last snapshot is not taken again
            admission.last_snapshot_step = admission.last_step
        self.load_policy_states(state.get("policies", ()))
        history, recorded = self.delivery.history, None
        if history is not None:
            history.truncate_after(admission.last_step)
            if history.path.exists():
                recorded = len(read_records(history.path))
        self.delivery.results_delivered, self.drops.earlier = resumed_counts(
            admission.snapshots_taken, self.delivery.results_delivered, self.drops.earlier,
            recorded)

    def resume(self, step: int, state: Mapping[str, Any] | None = None) -> None:
        """Continue an interrupted run at ``step`` when the host kept no :meth:`state_dict`
        (Keras ``BackupAndRestore``, Hugging Face checkpoints): analyses recorded after ``step``
        are removed (they are trained again), counters continue from what is left, and a step
        already recorded is not snapshotted again; with ``state`` (a :meth:`state_dict` the host
        kept after all, e.g. :meth:`saved_state`), the policies continue from theirs instead of
        starting afresh. A distributed session: call it on every rank (each takes rank 0's
        counters)."""
        history = self.delivery.history
        admission = self.admission
        if history is not None and history.path.exists():
            history.truncate_after(step)
            steps = [record["step"] for record in read_records(history.path)]
            admission.snapshots_taken = len(steps)
            if step in steps:
                admission.last_snapshot_step = step
                admission.last_step = max(admission.last_step, step)
        # rank 0 alone has the history: every rank takes its counters (without this a 2-rank
        # Hugging Face run resumed at an analysed step hung: rank 1 snapshotted it alone)
        if self.distributed:
            self._share_resume_counters()
        if state:
            self.load_policy_states(state.get("policies", ()))

    def resume_from(self, step: int) -> None:
        """:meth:`resume` without a state (the older name)."""
        self.resume(step)

    def _share_resume_counters(self) -> None:
        """A distributed session resuming: rank 0's counters on every rank (a collective)."""
        from ..distributed.detect import process_group_size

        if process_group_size() <= 1:
            return
        import torch.distributed as dist

        admission = self.admission
        counters = [(admission.snapshots_taken, admission.last_snapshot_step,
                     admission.last_step)]
        dist.broadcast_object_list(counters, src=0)
        (admission.snapshots_taken, admission.last_snapshot_step,
         admission.last_step) = counters[0]

    def policy_states(self) -> list[dict]:
        """``state_dict()`` of each policy, in order (for checkpoints)."""
        return self.policies.state_dict()

    def load_policy_states(self, states: Sequence[dict]) -> None:
        """Continue the policies from :meth:`policy_states` of a checkpoint."""
        self.policies.load_state_dict(states)

    def portable_state(self) -> dict:
        """:meth:`state_dict` as plain JSON types (numpy scalars become numbers), for hosts
        that keep it in a JSON file (Hugging Face's ``trainer_state.json``, the Keras backup)."""
        return json.loads(json.dumps(self.state_dict(), default=_plain))

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
