"""The policies of one watch session, driven as one: reset, hooks, failure isolation, the stop
decision and their checkpointable state.

The watcher calls a :class:`PolicySet` and never a policy directly. A policy may be a
:class:`~ww_callbacks.policies.base.Policy` or any object with some of its hooks (the minimum is
``on_result``): the set is the one place that looks up which hooks an object has.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from ..results import AnalysisResult
from .base import Policy, Target


class PolicySet:
    """The policies of one session, in order.

    A failing hook is reported once per policy (its message is queued in :attr:`failures`, which
    the watcher turns into warnings on the training thread) and never stops training; with
    ``strict`` it re-raises.
    """

    def __init__(self, policies: Sequence[Policy] = (), *, strict: bool = False):
        self.policies = list(policies)
        self.strict = strict
        self.failures: deque[str] = deque()
        self._failed: set[int] = set()

    def __iter__(self) -> Iterator[Policy]:
        return iter(self.policies)

    def __len__(self) -> int:
        return len(self.policies)

    def __bool__(self) -> bool:
        return bool(self.policies)

    def _call(self, policy: Policy, hook: str, *args: Any) -> Any:
        """Run one hook and return what it returns (None when the policy has no such hook or
        it failed)."""
        method = getattr(policy, hook, None)
        if method is None:
            return None
        try:
            return method(*args)
        except Exception as err:
            if self.strict:
                raise
            if id(policy) not in self._failed:
                self._failed.add(id(policy))
                self.failures.append(f"ww_callbacks: policy {type(policy).__name__}.{hook} "
                                     f"failed: {err!r}")
            return None

    # ------------------------------------------------------------------ hooks

    def reset(self) -> None:
        """A new run takes the policies: each forgets the previous one."""
        for policy in self.policies:
            self._call(policy, "reset")

    def on_snapshot(self, step: int, target: Target | None) -> None:
        """The weights of ``step`` were just copied: policies that keep states take theirs."""
        for policy in self.policies:
            if getattr(policy, "wants_states", False):
                self._call(policy, "on_snapshot", step, target)

    def on_result(self, result: AnalysisResult) -> None:
        """Every policy decides on ``result`` (analysis thread)."""
        for policy in self.policies:
            self._call(policy, "on_result", result)

    def scalars(self) -> dict[str, float]:
        """What the policies log with the result just decided on."""
        out: dict[str, float] = {}
        for policy in self.policies:
            out.update(self._call(policy, "scalars") or {})
        return out

    def actions(self) -> dict:
        """What the policies decided on the result just decided on (the history's
        ``"actions"`` line): each policy's :meth:`~ww_callbacks.policies.base.Policy.actions`
        merged, and ``stop_reason`` (None while no policy asked to stop)."""
        out: dict = {}
        for policy in self.policies:
            out.update(self._call(policy, "actions") or {})
        out["stop_reason"] = self.stop_reason
        return out

    def act(self, target: Target, step: int | None) -> None:
        """Every policy applies its decision on ``target`` (training thread)."""
        for policy in self.policies:
            self._call(policy, "act", target, step)

    def finish(self, target: Target | None) -> None:
        """Training ended (after the last analysis was delivered)."""
        for policy in self.policies:
            self._call(policy, "finish", target)

    # ------------------------------------------------------------------ decisions

    @property
    def should_stop(self) -> bool:
        """True once a policy asked to stop training."""
        return any(bool(getattr(policy, "should_stop", False)) for policy in self.policies)

    @property
    def stop_reason(self) -> str | None:
        """Why the policies that asked to stop did so, joined by "; " (None while none did)."""
        reasons = [str(getattr(policy, "stop_reason", None) or type(policy).__name__)
                   for policy in self.policies if getattr(policy, "should_stop", False)]
        return "; ".join(reasons) or None

    @property
    def restores_weights(self) -> bool:
        """True when a policy may put back earlier weights at the end of training."""
        return any(getattr(policy, "restore_best_weights", False) for policy in self.policies)

    @property
    def restored(self) -> bool:
        """True once a policy has put back earlier weights."""
        return any(getattr(policy, "restored_step", None) is not None
                   for policy in self.policies)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> list[dict]:
        """``state_dict()`` of each policy, in order (empty for a policy without one)."""
        out = []
        for policy in self.policies:
            method = getattr(policy, "state_dict", None)
            out.append(method() if method is not None else {})
        return out

    def load_state_dict(self, states: Sequence[dict]) -> None:
        """Continue each policy from :meth:`state_dict` of a checkpoint."""
        for policy, state in zip(self.policies, states, strict=False):
            method = getattr(policy, "load_state_dict", None)
            if state and method is not None:
                method(state)
