"""Per-layer learning rates from alpha (:class:`LayerLRBalancer`, after TempBalance).

A layer with a larger alpha is less trained and gets a larger learning rate: the alphas of the
latest analysis are mapped linearly from ``[min alpha, max alpha]`` onto ``[s1, s2]`` (TempBalance,
NeurIPS 2023: ``[0.5, 1.5]``). The multipliers act on top of whatever schedule the optimizer
follows (see :class:`~ww_callbacks.policies.TorchTarget`), and a new set is ramped in
linearly over ``ramp_steps`` optimizer steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from ..powerlaw import SUCCESS
from ..results import AnalysisResult
from ..scalars import layer_tag
from ..tags import declare
from .base import Policy, Target

LR_SCALE_PREFIX = declare("ww_lr_scale", "learning-rate multipliers (LayerLRBalancer)",
                          owner="LayerLRBalancer")


def tempbalance_scales(alphas: Mapping[str, float], s1: float = 0.5,
                       s2: float = 1.5) -> dict[str, float]:
    """TempBalance's map: each layer's alpha, linearly from ``[min, max]`` of the finite alphas
    onto ``[s1, s2]``. Layers without a finite alpha get 1; when all alphas are equal, every
    layer gets the middle of the range."""
    finite = {name: a for name, a in alphas.items() if a is not None and math.isfinite(a)}
    out = {name: 1.0 for name in alphas}
    if not finite:
        return out
    lo, hi = min(finite.values()), max(finite.values())
    for name, a in finite.items():
        out[name] = (s1 + s2) / 2 if hi == lo else s1 + (a - lo) / (hi - lo) * (s2 - s1)
    return out


class LayerLRBalancer(Policy):
    """Rebalance the learning rate of each layer from its alpha after every analysis.

    ``scale_range``: ``(s1, s2)`` of :func:`tempbalance_scales`; ``mapping``: any other function
    ``{layer: alpha} -> {layer: multiplier}`` instead. ``ramp_steps``: optimizer steps over which
    a new set of multipliers replaces the previous one (0: at once). ``start_step``: analyses of
    earlier steps are not used (e.g. the initial weights). Layers the optimizer cannot address
    on their own (no param group or sub-optimizer of their own: build them with
    :func:`~ww_callbacks.policies.param_groups_per_layer`) keep their learning rate.
    Each multiplier is logged as ``ww_lr_scale/<layer>`` with the analysis it comes from.
    The map is set by the extreme alphas: a tiny layer (a 10-class head has 10 eigenvalues and a
    noisy alpha) can pin one end; leave it out of the watched layers (``min_evals``, ``layers``)
    if that is not wanted.
    """

    def __init__(self, *, scale_range: tuple[float, float] = (0.5, 1.5),
                 mapping: Callable[[Mapping[str, float]], Mapping[str, float]] | None = None,
                 ramp_steps: int = 0, start_step: int = 0):
        s1, s2 = scale_range
        if not 0 < s1 <= s2:
            raise ValueError(f"scale_range must be 0 < s1 <= s2, got {scale_range}")
        self.scale_range = (float(s1), float(s2))
        self.mapping = mapping
        self.ramp_steps = max(0, int(ramp_steps))
        self.start_step = int(start_step)
        self.reset()

    def reset(self) -> None:
        """A new run (new optimizer): no multipliers yet."""
        self.targets: dict[str, float] = {}  # decided multipliers (analysis thread)
        self.current: dict[str, float] = {}  # multipliers in effect (training thread)
        self._decided_at = 0  # counts decisions, so act() notices a new one
        self._applied = 0
        self._ramp_from: dict[str, float] = {}
        self._ramp_start: int | None = None
        self._polls = 0

    def on_result(self, result: AnalysisResult) -> None:
        """New target multipliers from the alphas of this analysis."""
        if result.step < self.start_step:
            return
        details = result.details
        ok = details[details["status"] == SUCCESS]
        alphas = {str(n): float(a) for n, a in zip(ok["longname"], ok["alpha"], strict=True)}
        if not alphas:
            return
        scales = (dict(self.mapping(alphas)) if self.mapping is not None
                  else tempbalance_scales(alphas, *self.scale_range))
        self.targets = {name: float(s) for name, s in scales.items()}
        self._decided_at += 1

    def scalars(self) -> dict[str, float]:
        """``ww_lr_scale/<layer>`` of the decided multipliers."""
        return {layer_tag(LR_SCALE_PREFIX, name): s for name, s in self.targets.items()}

    def actions(self) -> dict:
        """``lr_scale``: the decided multiplier of each layer's learning rate."""
        return {"lr_scale": dict(self.targets)}

    def act(self, target: Target, step: int | None) -> None:
        """Move the multipliers in effect towards the decided ones (ramp), on the optimizer."""
        self._polls += 1
        now = self._polls if step is None else int(step)
        if self._decided_at != self._applied:
            self._applied = self._decided_at
            names = set(self.targets) & set(target.lr_layers())
            self._ramp_from = {name: self.current.get(name, 1.0) for name in names}
            self._ramp_start = now
        if self._ramp_start is None:
            return
        done = 1.0 if self.ramp_steps == 0 else min(1.0, (now - self._ramp_start) / self.ramp_steps)
        scales = {name: start + (self.targets[name] - start) * done
                  for name, start in self._ramp_from.items()}
        if scales != {k: self.current.get(k) for k in scales}:
            target.set_lr_scales(scales)
            self.current.update(scales)
        if done >= 1.0:
            self._ramp_start = None

    def state_dict(self) -> dict:
        return {"targets": dict(self.targets), "current": dict(self.current)}

    def load_state_dict(self, state: dict) -> None:
        self.targets = dict(state.get("targets", {}))
        self.current = dict(state.get("current", {}))
