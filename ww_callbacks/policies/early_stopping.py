"""Stop training on HTSR signals (:class:`HTSREarlyStopping`).

The default rule is the strongest published warning sign of over-training: a layer whose alpha is
below 2 *and* that holds a correlation trap, seen in ``patience`` consecutive analyses (a single
analysis is noisy, and mean alpha alone is not reliable: it can rise while test accuracy still
improves). Each test is a pure function of one analysis' per-layer table, so the decision is easy to
test and to reuse (e.g. by a CLI over checkpoints).
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import pandas as pd

from ..names import terminal
from ..powerlaw import OVER_TRAINED_ALPHA, SUCCESS
from ..results import AnalysisResult
from ..tags import declare
from .base import Policy, Target

log = logging.getLogger("ww_callbacks.policies")

#: ``ww/stop_reason`` is logged as a number (scalar loggers take no text): 0 while training goes
#: on, else the code of the rule that stopped it.
STOP_CODES = {"trap_alpha": 1, "fraction": 2, "traps": 3, "plateau": 4}
STOP_REASON = declare("ww/stop_reason", "stop reason (HTSREarlyStopping)", per_layer=False,
                      owner="HTSREarlyStopping")


def _ok(details: pd.DataFrame) -> pd.DataFrame:
    return details[details["status"] == SUCCESS] if "status" in details else details


def _has_traps(details: pd.DataFrame) -> bool:
    return "rand_num_spikes" in details.columns


def trap_alpha_layers(details: pd.DataFrame, alpha: float = OVER_TRAINED_ALPHA) -> list[str]:
    """Layers with alpha below ``alpha`` that hold at least one correlation trap."""
    ok = _ok(details)
    hit = ok[(ok["alpha"] < alpha) & (ok["rand_num_spikes"] > 0)]
    return [str(name) for name in hit["longname"]]


def over_trained_fraction(details: pd.DataFrame, alpha: float = OVER_TRAINED_ALPHA) -> float:
    """Share of the successfully fitted layers with alpha below ``alpha`` (0 without layers)."""
    ok = _ok(details)
    return float((ok["alpha"] < alpha).mean()) if len(ok) else 0.0


def trap_layers(details: pd.DataFrame) -> list[str]:
    """Layers holding at least one correlation trap."""
    ok = _ok(details)
    return [str(name) for name in ok.loc[ok["rand_num_spikes"] > 0, "longname"]]


class HTSREarlyStopping(Policy):
    """Ask the integration to stop training when an HTSR rule holds ``patience`` analyses in a row.

    ``rule``:

    - ``"trap_alpha"`` (default): some layer has alpha < ``alpha_threshold`` and a correlation
      trap (analyses without trap columns, see ``traps_every``, neither count nor reset);
    - ``"fraction"``: at least ``fraction`` of the layers have alpha < ``alpha_threshold``;
    - ``"traps"``: some layer holds at least one correlation trap;
    - ``"plateau"``: ``ww/alpha_mean`` has not fallen by more than ``min_delta`` below its best
      for ``patience`` analyses (as Keras's ``EarlyStopping(mode="min")``).

    ``start_step``: analyses of earlier steps are ignored (the initial weights, a warm-up).
    ``restore_best_weights``: when training stops, the weights of the last analysed snapshot
    before the signal began (for ``"plateau"``: of the best one) are put back; when the signal
    starts with the first analysis after the initial weights, those are what comes back (set
    ``start_step`` to leave the initial weights out). This keeps a copy
    of all weights per pending snapshot in host memory (usually one or two). ``verbose``: print the
    reason when the stop is decided. The reason is ``stop_reason`` (text), ``ww/stop_reason`` (a
    code of :data:`STOP_CODES`, logged with every analysis) and ``stopped_step``.
    """

    def __init__(self, rule: str = "trap_alpha", *, patience: int = 3,
                 alpha_threshold: float = OVER_TRAINED_ALPHA, fraction: float = 0.5,
                 min_delta: float = 0.0, start_step: int = 0,
                 restore_best_weights: bool = False, verbose: bool = True):
        if rule not in STOP_CODES:
            raise ValueError(f"unknown rule {rule!r}; choose one of {sorted(STOP_CODES)}")
        if patience < 1:
            raise ValueError("patience must be at least 1")
        self.rule = rule
        self.patience = int(patience)
        self.alpha_threshold = float(alpha_threshold)
        self.fraction = float(fraction)
        self.min_delta = float(min_delta)
        self.start_step = int(start_step)
        self.restore_best_weights = restore_best_weights
        self.wants_states = restore_best_weights
        self.verbose = verbose
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """A new run: no streak, no stop, no kept weights."""
        self.should_stop = False
        self.stop_reason: str | None = None
        self.stopped_step: int | None = None
        self.streak = 0  # consecutive analyses with the signal
        self.best_alpha = math.inf  # plateau rule
        self.best_step: int | None = None  # the step whose weights would be restored
        self.restored_step: int | None = None
        self._best_state: Any = None
        self._states: dict[int, Any] = {}
        self._announced = False

    # ------------------------------------------------------------------ decision (pure)

    def signal(self, details: pd.DataFrame, summary: dict[str, float]) -> tuple[bool | None, str]:
        """Whether this analysis shows the rule's signal (None: it cannot tell, e.g. no trap
        columns), and a sentence saying what was seen."""
        a = self.alpha_threshold
        if self.rule in ("trap_alpha", "traps") and not _has_traps(details):
            return None, "no correlation-trap columns in this analysis"
        if self.rule == "trap_alpha":
            names = trap_alpha_layers(details, a)
            return bool(names), f"alpha < {a:g} with correlation traps in {', '.join(names)}"
        if self.rule == "traps":
            names = trap_layers(details)
            return bool(names), f"correlation traps in {', '.join(names)}"
        if self.rule == "fraction":
            share = over_trained_fraction(details, a)
            return share >= self.fraction, (f"{share:.0%} of the layers have alpha < {a:g} "
                                            f"(limit {self.fraction:.0%})")
        mean = float(summary.get("ww/alpha_mean", math.nan))
        if math.isnan(mean):
            return None, "no alpha_mean"
        return mean > self.best_alpha - self.min_delta, (
            f"alpha_mean {mean:.3f} did not fall below the best {self.best_alpha:.3f} by more than "
            f"{self.min_delta:g}")

    def on_result(self, result: AnalysisResult) -> None:
        """Count consecutive signals; decide to stop after ``patience`` of them."""
        if self.should_stop or result.step < self.start_step:
            self._forget_states(result.step, keep=None)
            return
        seen, why = self.signal(result.details, result.summary)
        if seen is None:
            self._forget_states(result.step, keep=None)
            return
        if self.rule == "plateau" and not seen:
            self.best_alpha = float(result.summary["ww/alpha_mean"])
        if seen:
            self.streak += 1
            self._forget_states(result.step, keep=None)
        else:
            self.streak = 0
            self._forget_states(result.step, keep=result.step)
        if self.streak >= self.patience:
            self.should_stop = True
            self.stopped_step = int(result.step)
            self.stop_reason = (f"{self.rule}: {why} in {self.streak} consecutive analyses "
                                f"(last at step {result.step})")

    def scalars(self) -> dict[str, float]:
        """``ww/stop_reason``: 0, or the code of the rule once it decided to stop."""
        return {STOP_REASON: float(STOP_CODES[self.rule] if self.should_stop else 0)}

    # ------------------------------------------------------------------ weights to restore

    def on_snapshot(self, step: int, target: Target | None) -> None:
        """Keep a copy of every weight of this step, in case it turns out to be the best."""
        if not self.restore_best_weights or target is None or self.should_stop:
            return
        state = target.get_state()
        with self._lock:
            self._states[int(step)] = state

    def _forget_states(self, step: int, keep: int | None) -> None:
        """Copies of snapshots up to ``step`` are no longer needed; ``keep``: the new best."""
        with self._lock:
            if keep is not None and keep in self._states:
                self._best_state = self._states[keep]
                self.best_step = keep
            for s in [s for s in self._states if s <= step]:
                del self._states[s]

    def act(self, target: Target, step: int | None) -> None:
        """Print the reason once the stop is decided."""
        if self.should_stop and not self._announced:
            self._announced = True
            message = f"ww_callbacks: HTSR early stopping: {self.stop_reason}"
            log.info(message)
            if self.verbose:
                print(terminal(message), flush=True)  # the reason may name a layer

    def finish(self, target: Target | None) -> None:
        """End of training: restore the best weights when the policy stopped it."""
        if not (self.should_stop and self.restore_best_weights) or target is None:
            return
        with self._lock:
            state, step = self._best_state, self.best_step
            self._states.clear()
        if state is None:
            message = "ww_callbacks: no snapshot before the signal to restore"
        else:
            target.set_state(state)
            self.restored_step = step
            message = f"ww_callbacks: restored the weights of step {step}"
        log.info(message)
        if self.verbose:
            print(message, flush=True)

    # ------------------------------------------------------------------ resume

    def __getstate__(self) -> dict:
        """Picklable (spawned DDP processes get a copy): without the lock and weight copies."""
        state = dict(self.__dict__)
        state.pop("_lock", None)
        state["_states"], state["_best_state"] = {}, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def state_dict(self) -> dict:
        return {"streak": self.streak, "best_alpha": self.best_alpha,
                "should_stop": self.should_stop, "stop_reason": self.stop_reason,
                "stopped_step": self.stopped_step, "best_step": self.best_step}

    def load_state_dict(self, state: dict) -> None:
        self.streak = int(state.get("streak", 0))
        self.best_alpha = float(state.get("best_alpha", math.inf))
        self.should_stop = bool(state.get("should_stop", False))
        self.stop_reason = state.get("stop_reason")
        self.stopped_step = state.get("stopped_step")
        self.best_step = state.get("best_step")

