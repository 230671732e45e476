"""What a policy is, and what it may touch.

A policy turns analyses into actions in two steps, on two threads:

- :meth:`Policy.on_result` *decides*. It is called in the analysis thread, right after the
  history file has the result and before any sink sees it, so what it decides (a stop reason, the
  learning-rate multipliers) is logged with the same result (:meth:`Policy.scalars`). It must be
  quick and must not touch the model.
- :meth:`Policy.act` *acts*. It is called on the training thread, between two optimizer steps,
  each time the integration polls the watcher; it changes the model or the optimizer through a
  :class:`Target` (the integration makes one for its framework). Go through the target for any
  read or write of weights: on Keras's JAX backend it is what syncs the training state.

``should_stop`` and ``stop_reason`` are read by the integrations, which stop training on their own
cadence (epoch ends; under DDP rank 0 decides and broadcasts).
"""

from __future__ import annotations

from typing import Any, Protocol

from ..results import AnalysisResult


class Target(Protocol):
    """The model (and its optimizers) as a policy may change them, for one framework.

    Implementations: :class:`ww_callbacks.integrations.torch_target.TorchTarget` and
    :class:`ww_callbacks.integrations.keras_target.KerasTarget` (each with its framework).
    """

    def get_state(self) -> Any:
        """A private copy of every weight of the model (host memory)."""

    def set_state(self, state: Any) -> None:
        """Put back weights returned by :meth:`get_state`."""

    def layer_names(self) -> list[str]:
        """Long names of the watched layers, as in the analysis' ``longname`` column."""

    def layer_weight(self, longname: str) -> Any:
        """The current weight of one layer as a :class:`~ww_callbacks.layers.LayerWeights`."""

    def set_layer_weight(self, longname: str, weight: Any) -> None:
        """Replace one layer's weight (a numpy array in the layout of :meth:`layer_weight`)."""

    def lr_layers(self) -> list[str]:
        """Layers whose learning rate can be set on their own (one param group / optimizer)."""

    def set_lr_scales(self, scales: dict[str, float]) -> None:
        """Make the learning rate of each named layer's parameters ``scale`` times the scheduled
        one, and keep it so through every scheduler step."""


class Policy:
    """Base class of the policies; override what you need (see the module docstring)."""

    #: True once the policy wants training to end; ``stop_reason`` says why.
    should_stop: bool = False
    stop_reason: str | None = None
    #: True when the policy wants a copy of all weights at each snapshot (``on_snapshot``).
    wants_states: bool = False

    def reset(self) -> None:
        """Forget the previous run (called when a new watcher, i.e. a new fit, takes the
        policy; a resumed run then loads its state with :meth:`load_state_dict`)."""

    def on_result(self, result: AnalysisResult) -> None:
        """Decide from one analysis (analysis thread; quick; no model access)."""

    def scalars(self) -> dict[str, float]:
        """Values to log with the result just decided on (``ww_lr_scale/<layer>``, ...)."""
        return {}

    def actions(self) -> dict:
        """What the policy decided on the result just decided on, for the history's
        ``"actions"`` line (JSON-ready; e.g. ``{"lr_scale": {layer: scale}}``)."""
        return {}

    def on_snapshot(self, step: int, target: Target | None) -> None:
        """The weights of ``step`` were just snapshotted (training thread)."""

    def act(self, target: Target, step: int | None) -> None:
        """Apply what was decided (training thread, between optimizer steps)."""

    def finish(self, target: Target | None) -> None:
        """Training ended (training thread, after the last analysis was delivered)."""

    def state_dict(self) -> dict:
        """What a resumed run needs to continue the policy."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`."""
