"""Remove correlation traps from weights (:func:`svd_sharpness`, :class:`TrapRemoval`).

A correlation trap is a spike of the *shuffled* weight matrix's spectrum past its
Marchenko-Pastur bulk: a few large elements that survive shuffling. The SVD-sharpness transform
(WeightWatcher's ``SVDSharpness``) counts those spikes k on a shuffled copy and removes the top-k
singular components from the weight itself; rounds repeat until no trap is left.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from ..analysis import FEW_EVALS_FOR_RANDOM
from ..layers import LayerWeights
from ..matrices import from_oriented_stack, layer_stack, oriented_stack, to_numpy
from ..mp_fit import fit_mp
from ..names import terminal
from ..results import AnalysisResult
from ..scalars import layer_tag
from ..spectra import shuffled_spectrum
from ..tags import declare
from .base import Policy, Target

log = logging.getLogger("ww_callbacks.policies")

REMOVED_PREFIX = declare("ww_traps_removed", "trap components removed (TrapRemoval)",
                         owner="TrapRemoval")


def count_traps(layer: LayerWeights, rng: np.random.Generator) -> int:
    """Correlation traps of one layer: MP spikes of its shuffled spectrum (``rand_num_spikes``)."""
    N, M, rf = layer.geometry()
    stack = layer_stack(layer)
    replicas = 5 if M * rf < FEW_EVALS_FOR_RANDOM else 1
    try:
        return int(fit_mp(shuffled_spectrum(stack, rng, replicas), N, M).num_spikes)
    except (ValueError, FloatingPointError):
        return 0


def svd_sharpness(layer: LayerWeights, rng: np.random.Generator, *,
                  max_rounds: int = 3) -> tuple[np.ndarray, int]:
    """``(new weight, components removed)``: the layer's weight (as stored, float) with the
    singular components behind its correlation traps removed; each round counts the traps k of a
    shuffled copy and zeroes the top k singular values (of each slice, k/rf rounded up, for a
    convolution). Weights without traps come back unchanged (0 removed)."""
    weight = np.array(to_numpy(layer.weight), dtype=np.float64)
    if not np.isfinite(weight).all():
        raise ValueError(f"{layer.longname}: weights contain NaN or Inf")
    removed = 0
    for _ in range(max_rounds):
        current = LayerWeights(layer.layer_id, layer.name, layer.longname, layer.layer_type,
                               weight, layer.layout)
        k = count_traps(current, rng)
        if k <= 0:
            break
        stack = np.array(oriented_stack(weight, layer.layout))
        per_slice = math.ceil(k / stack.shape[0])
        for s in range(stack.shape[0]):
            u, sv, vt = np.linalg.svd(stack[s], full_matrices=False)
            sv[:per_slice] = 0.0
            stack[s] = (u * sv) @ vt
        weight = from_oriented_stack(stack, weight.shape, layer.layout)
        removed += per_slice * stack.shape[0]
    return weight, removed


class TrapRemoval(Policy):
    """Opt-in: remove the correlation traps that an analysis found, in place, between steps.

    After each analysis with trap counts (see ``traps_every``), every layer with
    ``rand_num_spikes > 0`` (restricted to ``layers`` when given) gets :func:`svd_sharpness`
    applied to its *current* weight at the next poll. ``removed`` counts the components taken
    out per layer, logged as ``ww_traps_removed/<layer>``; each change is also a console line
    (``verbose``) and an entry of ``events``. ``seed`` drives a private generator.
    """

    def __init__(self, *, layers: list[str] | None = None, max_rounds: int = 3, seed: int = 0,
                 verbose: bool = True):
        self.layers = None if layers is None else set(layers)
        self.max_rounds = max_rounds
        self.verbose = verbose
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        """A new run: nothing removed or queued yet."""
        self.removed: dict[str, int] = {}
        self.events: list[dict] = []
        self._pending: list[str] = []

    def on_result(self, result: AnalysisResult) -> None:
        """Queue the layers that hold traps."""
        details = result.details
        if "rand_num_spikes" not in details.columns:
            return
        hit = details[details["rand_num_spikes"] > 0]["longname"]
        self._pending = [str(n) for n in hit if self.layers is None or n in self.layers]

    def scalars(self) -> dict[str, float]:
        """``ww_traps_removed/<layer>``: components removed so far."""
        return {layer_tag(REMOVED_PREFIX, n): float(k) for n, k in self.removed.items()}

    def actions(self) -> dict:
        """``traps_pending``: the layers whose traps are removed at the next optimizer step;
        ``traps_removed``: components removed so far per layer (before those)."""
        return {"traps_pending": list(self._pending), "traps_removed": dict(self.removed)}

    def act(self, target: Target, step: int | None) -> None:
        """Sharpen the queued layers now."""
        pending, self._pending = self._pending, []
        for name in pending:
            if name not in target.layer_names():
                continue
            try:
                new, k = svd_sharpness(target.layer_weight(name), self.rng,
                                       max_rounds=self.max_rounds)
            except (ValueError, np.linalg.LinAlgError) as err:
                log.warning("ww_callbacks: trap removal skipped %s: %s", name, err)
                continue
            if k == 0:
                continue
            target.set_layer_weight(name, new)
            self.removed[name] = self.removed.get(name, 0) + k
            self.events.append({"step": step, "layer": name, "components_removed": k})
            message = (f"ww_callbacks: removed {k} singular component(s) behind correlation "
                       f"traps from {name} at step {step}")
            log.info(message)
            if self.verbose:
                print(terminal(message), flush=True)  # a layer name: no terminal escape

    def state_dict(self) -> dict:
        return {"removed": dict(self.removed), "events": list(self.events)}

    def load_state_dict(self, state: dict) -> None:
        self.removed = dict(state.get("removed", {}))
        self.events = list(state.get("events", []))
