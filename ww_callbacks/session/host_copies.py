"""What a session copies of the model, and with what: the layers chosen once per torch model (its
parameters are updated in place; Keras models and mappings are read again at every snapshot), the
:class:`~ww_callbacks.snapshot.Snapshotter` that copies them, or, when the weights are sharded
over ranks, the collective :class:`~ww_callbacks.distributed.snapshots.DistributedSnapshots`;
and whether the analysis reads them in a child process (``analysis_in``,
:mod:`ww_callbacks.process_worker`), then through shared memory.
"""

from __future__ import annotations

import uuid
import warnings
import weakref
from typing import Any

import numpy as np

from ..devices import resolve_analysis_device
from ..faults import WatcherWarning
from ..layers import LayerWeights, extract_layers, select_layers
from ..layers.tied import check_tied
from ..matrices import to_numpy
from ..options import MIN_EVALS_FOR_TRUST
from ..results import Snapshot
from ..shared_arrays import SegmentPool, shareable
from ..snapshot import Snapshotter
from ..worker import check_analysis_in


class InitialBase:
    """``WatchSession(base="initial")``: the weights of the first analysed snapshot (a run's initial
    weights), kept as host copies for the rest of the run and subtracted from every later
    snapshot, so the analysis watches the update since the start of training. Costs one copy of
    the watched weights; the first analysis itself is of a zero update (its fits fail). A resumed
    run starts from the weights it resumes with."""

    def __init__(self) -> None:
        self.weights: dict[str, np.ndarray] | None = None
        #: Names these weights for an analysis process, which receives them once and keeps them
        #: (:class:`~ww_callbacks.process_worker.ProcessWorker`); unique across sessions.
        self.token = uuid.uuid4().hex

    def for_layers(self, layers: list[LayerWeights]) -> dict[str, np.ndarray]:
        """The base mapping; taken from ``layers`` (copied) the first time it is asked for."""
        if self.weights is None:
            self.weights = {layer.longname: np.array(to_numpy(layer.weight), copy=True)
                            for layer in layers}
        return self.weights


def _is_torch_module(model: Any) -> bool:
    """A torch module (Keras 3 layers on the torch backend have ``named_modules`` too)."""
    is_torch = hasattr(model, "named_modules") and hasattr(model, "parameters")
    return is_torch and not type(model).__module__.startswith("keras")


class HostCopies:
    """The copier of one session's model. ``select``: the layer-selection options (``layers``,
    ``min_evals``, ``max_evals``, ``max_N``); ``analysis``: the analysis options, whose
    ``device`` is resolved here from ``analysis_device`` and the model; ``base``: an
    :class:`InitialBase` or None; ``distributed``: as the session's;
    ``adapters`` and ``tied``: as for :func:`~ww_callbacks.layers.extract_layers`;
    ``analysis_in``: ``"thread"``, ``"process"`` or ``"auto"`` (see :meth:`in_process`);
    ``min_evals_for_trust``: what each analysis' summary leaves out of its means
    (:func:`~ww_callbacks.scalars.model_summary`), wherever the analysis runs."""

    def __init__(self, select: dict[str, Any], analysis: dict[str, Any], *, adapters: str,
                 tied: str, base: Any, distributed: bool | None, analysis_device: Any,
                 analysis_in: str, min_evals_for_trust: int = MIN_EVALS_FOR_TRUST):
        self.select = select
        self.analysis = analysis
        self.min_evals_for_trust = min_evals_for_trust
        self.adapters = adapters
        self.tied = check_tied(tied)
        self.base = base
        self.distributed = distributed
        self.analysis_device = analysis_device
        self.analysis_in = check_analysis_in(analysis_in)
        self.segments: SegmentPool | None = None  # shared memory of the analysis process
        self.snapshotter: Any = None  # of the watched torch model (or the collective one)
        self.collective: Any = None  # a DistributedSnapshots when snapshots are collectives
        self.skipped: list = []  # the Skip records of the watched model (what is not analysed)
        self._model_ref: Any = None
        self._warned_nothing = False  # "no layer to analyse", once
        self._warned_limits = False  # "layers larger than the size limits", once

    def for_model(self, model: Any) -> Any:
        """The snapshotter of ``model``: the same one for the same torch model, else a new one
        (layers chosen again; the first warns when none is left to analyse)."""
        torch_module = _is_torch_module(model)
        if (torch_module and self.snapshotter is not None and self._model_ref is not None
                and self._model_ref() is model):
            return self.snapshotter
        self.analysis["device"] = resolve_analysis_device(model, self.analysis_device)
        if torch_module:
            from ..distributed.detect import collective_snapshots

            if collective_snapshots(model, self.distributed):
                from ..distributed.snapshots import DistributedSnapshots

                self.collective = DistributedSnapshots(
                    model, self.select, self.analysis, adapters=self.adapters, base=self.base,
                    min_evals_for_trust=self.min_evals_for_trust)
                self.snapshotter = self.collective
                self._model_ref = weakref.ref(model)
                return self.collective
        found, skipped = extract_layers(model, adapters=self.adapters, tied=self.tied)
        kept, filtered = select_layers(found, self.select["layers"],
                                       min_evals=self.select["min_evals"],
                                       max_evals=self.select["max_evals"],
                                       max_N=self.select["max_N"])
        if not kept and not self._warned_nothing:
            self._warned_nothing = True
            passed = "; ".join(f"{s.longname}: {s.reason}" for s in (skipped + filtered)[:8])
            warnings.warn(f"ww_callbacks: {type(model).__name__} has no layer to analyse (none "
                          f"supported within the limits min_evals={self.select['min_evals']}, "
                          f"max_evals={self.select['max_evals']}, max_N={self.select['max_N']}"
                          f"{'; passed over: ' + passed if passed else ''}); its analyses "
                          "have no layers and NaN means", WatcherWarning, stacklevel=4)
        self._warn_left_out(filtered)
        self.skipped = skipped + filtered
        snapshotter = self._shared_for(Snapshotter(kept))
        if torch_module:
            self.snapshotter = snapshotter
            self._model_ref = weakref.ref(model)
        return snapshotter

    def _warn_left_out(self, filtered: list) -> None:
        """One warning naming the layers too large for ``max_evals`` / ``max_N`` (they are left
        out of every analysis, the heatmap and the means; silent before)."""
        if self._warned_limits:
            return
        big = [s for s in filtered if "> max_evals" in s.reason or "> max_N" in s.reason]
        if big:
            self._warned_limits = True
            shown = "; ".join(f"{s.longname} ({s.reason})" for s in big[:5])
            more = f" and {len(big) - 5} more" if len(big) > 5 else ""
            warnings.warn(f"ww_callbacks: {len(big)} layer(s) larger than the size limits are "
                          f"not analysed: {shown}{more}; pass max_evals=None / max_N=None (or "
                          "larger values) to analyse them (the cost grows with N * M^2)",
                          WatcherWarning, stacklevel=6)

    def in_process(self, snapshotter: Any) -> bool:
        """Whether analyses go to a child process (:mod:`ww_callbacks.process_worker`):
        ``analysis_in="process"``, or ``"auto"`` when training and analysis run on the CPU."""
        if self.analysis_in == "thread" or self.collective is not None:
            return False
        if self.analysis_in == "process":
            return True
        return not (snapshotter is not None and snapshotter.uses_cuda) \
            and self.analysis["device"] is None

    def process_options(self, snapshot: Snapshot) -> dict | None:
        """``analyze_layers``' options for the analysis process, with ``skipped`` and
        ``min_evals_for_trust`` (the process worker takes those two out), and the
        :class:`InitialBase` under ``"base"`` when there is one (the worker sends its weights to
        the child once); None: analyse here (an analysis on a torch device)."""
        if self.analysis["device"] is not None:
            return None
        options = {k: v for k, v in self.analysis.items() if k != "device"}
        return {**options, "skipped": list(self.skipped), "cancelled": None,
                "min_evals_for_trust": self.min_evals_for_trust, "base": self.base}

    def _shared_for(self, snapshotter: Snapshotter) -> Snapshotter:
        """Let ``snapshotter`` write into shared memory when the analysis runs in a process."""
        if snapshotter.shared is None and self.in_process(snapshotter):
            if self.segments is None:
                self.segments = SegmentPool()
            snapshotter.shared = self.segments if shareable(snapshotter.layers) else None
        return snapshotter

    @property
    def uses_cuda(self) -> bool:
        """True when the watched model's snapshots are copied from a GPU."""
        return self.snapshotter is not None and self.snapshotter.uses_cuda

    def before_optimizer_step(self) -> None:
        """GPU only: order the next optimizer step after the last snapshot's copy."""
        if self.uses_cuda:
            self.snapshotter.before_optimizer_step()

    def close(self) -> None:
        """Release the copy buffers and the shared memory."""
        if self.snapshotter is not None:
            self.snapshotter.close()
        if self.segments is not None:
            self.segments.close()
            self.segments = None
