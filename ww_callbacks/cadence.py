"""When to take a snapshot: every n steps and/or every n epochs (shared by all integrations)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cadence:
    """``every_n_steps`` / ``every_n_epochs`` (None or 0: never on that clock); both may be set.

    ``on_train_start`` and ``on_train_end`` add a snapshot of the initial and the final weights.
    """

    every_n_steps: int | None = None
    every_n_epochs: int | None = 1
    on_train_start: bool = True
    on_train_end: bool = True

    def __post_init__(self):
        for name in ("every_n_steps", "every_n_epochs"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative int or None, not {value!r}")

    def step_due(self, step: int) -> bool:
        """True when global step ``step`` (counted from 1 after the first update) is due."""
        n = self.every_n_steps
        return bool(n) and step > 0 and step % n == 0

    def epoch_due(self, epoch: int) -> bool:
        """True when the end of epoch ``epoch`` (counted from 0) is due."""
        n = self.every_n_epochs
        return bool(n) and (epoch + 1) % n == 0
