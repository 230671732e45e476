"""Old home of :mod:`ww_callbacks.distributed.snapshots` (which holds no session: the collective
snapshots of a session running on every rank); its names still import from here, with a
:class:`DeprecationWarning` once per name."""

from __future__ import annotations

from .._moved import moved_names

__getattr__ = moved_names(__name__, {name: "ww_callbacks.distributed.snapshots"
                                     for name in ("DistributedSnapshots", "Part")})
