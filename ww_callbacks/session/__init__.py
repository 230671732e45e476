"""The watch session: one class, :class:`WatchSession`, that every host holds (the Lightning,
Keras and Hugging Face callbacks, the plain-torch ``Watcher``) or that a plain loop uses
directly. It is composed of parts with one job each (see :mod:`.watch_session`):

- :mod:`.admission`: when a due snapshot is copied, skipped, or taken after all;
- :mod:`.host_copies`: which layers are copied, and by what;
- :mod:`.delivery`: the history first, then the policies, then the sinks, with retries and the
  one funnel for their warnings;
- :mod:`.drops`: what ``ww/snapshots_dropped`` counts;
- :mod:`.state`: ``state_dict`` / ``load_state_dict`` / ``resume`` / portable and saved states;
- :mod:`.lifecycle`: the live registry, the exit hook, the finalizer, stopping the worker.
"""

from __future__ import annotations

from .lifecycle import INTERRUPT_GRACE_S, INTERRUPT_STOP_S
from .state import STATES_KEPT, read_states
from .watch_session import WAIT_TIMEOUT_S, WatchSession

__all__ = ["WatchSession", "read_states", "STATES_KEPT", "WAIT_TIMEOUT_S", "INTERRUPT_GRACE_S",
           "INTERRUPT_STOP_S"]
