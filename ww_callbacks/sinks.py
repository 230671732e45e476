"""Sinks: where each analysis goes besides the history file (TensorBoard, W&B, a CSV file, a
logger, yours), chosen by name or given as objects.

The protocol (:class:`Sink`): ``write(result, scalars)`` and ``close()``; optionally

- ``in_worker = True``: ``write`` is called in the analysis thread right after the history file
  (thread-safe writers such as TensorBoard's), not on the training thread;
- ``reopen()``: called before the next write after a failed one (:mod:`ww_callbacks.faults`);
- ``prepare(result)``: for a sink written on the training thread, called in the analysis thread
  right after the history file (before ``write``, in analysis order), for its slow thread-safe
  work on the result (W&B: its table rows); it must not raise, and ``write`` must still work for
  a result it did not see (a sink written by hand);
- ``main_process_only``: True (the default when absent) for a sink that writes only on the main
  process of a multi-process run (rank 0); False for one that every rank keeps.

Every host takes ``sinks=[...]``, a list whose entries are a sink object, a registered name
(``"tensorboard"``, ``"wandb"``, ``"csv"``) or a ``(name, options)`` tuple whose dict is the
keyword arguments of that sink: ``sinks=["csv", ("tensorboard", {"images_every": 0}),
MySink()]``. The older ``tensorboard=`` / ``wandb=`` options (with ``tensorboard_options=`` /
``wandb_options=``) are aliases of ``("tensorboard", options)`` / ``("wandb", options)`` whose
value may also be the host's own writer or run.

Adding a sink by name costs one file and one line: the file defines the sink and a factory
``factory(value, log_dir, options) -> sink or None`` (``value``: True for a name in ``sinks``, or
what ``<name>=`` was given; ``log_dir``: the run's folder or None; ``options``: its dict), and
one call ``register_sink_factory(name, "module:factory")`` registers it (the module is imported
when a sink of that name is first made). The core never imports an integration:
``ww_callbacks.integrations`` registers ``"tensorboard"`` and ``"wandb"`` when it is imported.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .results import AnalysisResult

SinkFactory = Callable[[Any, "str | os.PathLike | None", Mapping[str, Any]], Any]


class Sink(Protocol):
    """Receives every result (TensorBoard, W&B, a logger, ...).

    By default on the training thread, from :meth:`Watcher.poll
    <ww_callbacks.session.WatchSession.poll>` (W&B and the training libraries' loggers want that). A
    sink whose class sets ``in_worker = True`` (thread-safe writers such as TensorBoard's) is
    called in the worker thread instead, right after the history file, so its heavy work
    (histograms, images) never runs on the training thread. Optional: ``reopen()`` and
    ``main_process_only`` (see the module docstring).
    """

    def write(self, result: AnalysisResult, scalars: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def in_worker(sink: Any) -> bool:
    """True when ``sink`` asks to be written in the analysis thread (``in_worker = True``)."""
    return bool(getattr(sink, "in_worker", False))


def preparer(sink: Any) -> Callable[[Any], Any] | None:
    """The sink's ``prepare`` method (see the module docstring), or None when it has none or
    is written in the analysis thread anyway."""
    prepare = getattr(sink, "prepare", None)
    return prepare if callable(prepare) and not in_worker(sink) else None


def main_process_only(sink: Any) -> bool:
    """True unless ``sink`` declares ``main_process_only = False`` (it writes on every rank)."""
    return bool(getattr(sink, "main_process_only", True))


def reopen_of(sink: Any) -> Callable[[], Any] | None:
    """The sink's ``reopen`` method, or None when it has none."""
    reopen = getattr(sink, "reopen", None)
    return reopen if callable(reopen) else None


_FACTORIES: dict[str, SinkFactory | str] = {}


def register_sink_factory(name: str, factory: SinkFactory | str) -> None:
    """Make ``name`` a sink every host builds by name: ``factory(value, log_dir, options)``, or
    ``"module:attribute"`` naming it (imported when a sink of that name is first made)."""
    _FACTORIES[name] = factory


def sink_names() -> list[str]:
    """The names registered so far."""
    return sorted(_FACTORIES)


def _factory(name: str) -> SinkFactory:
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ValueError(f"ww_callbacks: no sink named {name!r} (import "
                         f"ww_callbacks.integrations to register "
                         f"'tensorboard' and 'wandb'; known: {sink_names()})")
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = _FACTORIES[name] = getattr(importlib.import_module(module), attribute)
    return factory


def build_sinks(requested: Mapping[str, tuple[Any, Mapping[str, Any] | None]],
                log_dir: str | os.PathLike | None) -> list[Any]:
    """A sink for each ``name: (value, options)`` whose value is set (not None or False), in
    the order given."""
    sinks = []
    for name, (value, options) in requested.items():
        if value is None or value is False:
            continue
        sink = _factory(name)(value, log_dir, dict(options or {}))
        if sink is not None:
            sinks.append(sink)
    return sinks


def _entry(entry: Any) -> tuple[str, Mapping[str, Any]] | None:
    """``(name, options)`` for a named entry of ``sinks``; None for a sink object."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, tuple | list):  # (a list: the same read back from JSON)
        if (len(entry) != 2 or not isinstance(entry[0], str)
                or not isinstance(entry[1], Mapping)):
            raise ValueError(f"ww_callbacks: a sink given as a tuple is (name, options dict), "
                             f"not {entry!r}")
        return entry[0], entry[1]
    if not callable(getattr(entry, "write", None)):
        raise TypeError(f"ww_callbacks: sinks takes sink objects (with write(result, scalars) "
                        f"and close()), names ({sink_names()}) or (name, options) tuples, "
                        f"not {entry!r}")
    return None


def check_sinks(entries: Iterable[Any]) -> list[Any]:
    """``entries`` as a list, each checked to be a sink, a registered name or a ``(name,
    options)`` tuple: a clear error at a host's construction otherwise (the hosts live in
    ``ww_callbacks.integrations``, whose import registers its names)."""
    entries = list(entries)
    for entry in entries:
        named = _entry(entry)
        if named is not None and named[0] not in _FACTORIES:
            _factory(named[0])  # raises, naming the known sinks
    return entries


def open_sinks(entries: Iterable[Any], log_dir: str | os.PathLike | None, *,
               aliases: Mapping[str, tuple[Any, Mapping[str, Any] | None]] = {},  # noqa: B006
               ) -> tuple[list[Any], list[Any]]:
    """The sinks of one session: ``(all, built)``. ``aliases`` (``{"tensorboard": (value,
    options), ...}``: the ``tensorboard=``/``wandb=`` options) come first, then ``entries`` in
    order, names and ``(name, options)`` tuples built by their factory, objects as given.
    ``built``: the ones made here (the session closes them in every case). A name given twice
    (say ``tensorboard=True`` and ``sinks=["tensorboard"]``) is refused."""
    built = build_sinks(aliases, log_dir)
    given = {name for name, (value, _) in aliases.items() if value is not None
             and value is not False}
    out = list(built)
    for entry in entries:
        named = _entry(entry)
        if named is None:
            out.append(entry)
            continue
        name, options = named
        if name in given:
            raise ValueError(f"ww_callbacks: the sink {name!r} is asked for twice (e.g. "
                             f"{name}=... and sinks=[{name!r}]); give it once")
        given.add(name)
        sink = build_sinks({name: (True, options)}, log_dir)
        built.extend(sink)
        out.extend(sink)
    return out, built


def for_this_process(sinks: Iterable[Any], is_main: bool) -> list[Any]:
    """The sinks a process keeps: every one on the main process; elsewhere only those that
    declare ``main_process_only = False`` (names stay on the main process: they are built
    there)."""
    sinks = list(sinks)
    if is_main:
        return sinks
    return [s for s in sinks if _entry(s) is None and not main_process_only(s)]


#: The sinks of the core, by name (one line each; the integrations register theirs on import).
register_sink_factory("csv", "ww_callbacks.csv_sink:csv_sink")
