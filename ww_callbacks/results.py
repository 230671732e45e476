"""What travels between the training thread and the background worker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .layers import LayerWeights


@dataclass
class Snapshot:
    """Host copies of the watched layers' weights at one training step.

    ``wait`` (set for asynchronous GPU copies) blocks until the copies have landed; the worker
    calls it, never the training thread. ``release`` hands reusable buffers back.
    """

    step: int
    epoch: int | None
    layers: list[LayerWeights]
    randomize: bool
    wall_time: float
    wait: Callable[[], None] | None = None
    release: Callable[[], None] | None = None
    #: Where the weights lie in shared memory (a :class:`~ww_callbacks.shared_arrays.
    #: SharedLayout`) when they were written there for the analysis process; None otherwise.
    shared: Any = None

    def ready(self) -> None:
        """Block until the weights are readable (a no-op for synchronous copies)."""
        if self.wait is not None:
            self.wait()

    def done(self) -> None:
        """Give the snapshot's buffers back; the snapshot must not be used afterwards."""
        if self.release is not None:
            self.release()
            self.release = None


@dataclass
class AnalysisResult:
    """The analysis of one snapshot: per-layer details, model summary and spectra."""

    step: int
    epoch: int | None
    details: pd.DataFrame
    summary: dict[str, float]
    wall_time: float
    duration_s: float
    randomized: bool
    spectra: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: Everything logged for this analysis (model, per-layer and policy scalars), set by the
    #: watcher once the policies have decided on it.
    scalars: dict[str, float] = field(default_factory=dict, repr=False)
    #: The randomized (shuffled) eigenvalues of the layers whose traps were counted, ascending
    #: (longname -> array): what the ESD pictures overlay with the MP bulk edge and trap spikes.
    rand_spectra: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: The compact ESDs of this analysis (longname -> :func:`~ww_callbacks.esd.compact_esd`),
    #: set by the session when its ESD schedule (``esd_every``) stores them (the history's
    #: sidecar holds the same); empty for the analyses it skips. What the sinks show as ESDs.
    esd: dict[str, dict] = field(default_factory=dict, repr=False)
    #: The ``min_evals_for_trust`` the summary was made with (layers with fewer eigenvalues are
    #: low evidence: out of the means, marked in alerts and views); None: not known (a result
    #: made by hand), nothing is marked.
    min_evals_for_trust: int | None = None

    def __post_init__(self) -> None:
        # analyze_layers(keep_spectra=True) leaves them in the table's attrs; they move here so
        # that pandas does not copy them along with every filtered view of ``details``
        kept = self.details.attrs.pop("rand_spectra", None) if self.details is not None else None
        if kept and not self.rand_spectra:
            self.rand_spectra = kept
