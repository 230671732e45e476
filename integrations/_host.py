"""What every host (Lightning, Keras, the torch ``Watcher``, Hugging Face) does alike, once:

- its options: host parameters plus ``**options`` checked against the shared declaration
  (:func:`host_options`, :class:`~ww_callbacks.options.WatchOptions`), old names mapped;
- rank-0 gating of the log folder and the sinks (:func:`outputs_for_rank`);
- closing a session left over from an earlier, interrupted run (:func:`close_leftover`) and the
  "is it open" guard (:func:`open_session`);
- the policies' torch target (:func:`torch_target`);
- the latest ``ww/`` values for the host's own logs (:class:`LatestValues`): one way, from the
  session's :meth:`~ww_callbacks.session.WatchSession.decision`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ww_callbacks.options import (
    HOST_CHECKS,
    OptionError,
    WatchOptions,
    check_option,
    map_deprecated,
)
from ww_callbacks.sinks import check_sinks, for_this_process

#: The key added to a host's logs next to the ``ww/`` values: the step the analysis is of.
WW_STEP = "ww/step"


def host_options(host: str, options: Mapping[str, Any], explicit: dict[str, Any], *,
                 nullable: Sequence[str] = ()) -> WatchOptions:
    """The shared options a host was given as ``**options``, checked (an
    :class:`~ww_callbacks.options.OptionError` naming the option otherwise, an unknown keyword
    included). Old names are mapped (:data:`~ww_callbacks.options.DEPRECATED`, with a
    :class:`DeprecationWarning`); one whose new name is a parameter of the host updates
    ``explicit`` (the host's own parameters, given by name; the old name's value wins, as it
    always did). The host parameters with a shared check (cadence, ``wait``) are checked too;
    ``nullable``: those of them for which this host takes None."""
    options = map_deprecated(dict(options), stacklevel=5)
    for name in list(options):
        if name in explicit:
            explicit[name] = options.pop(name)
    for name, value in explicit.items():
        if name in HOST_CHECKS and not (value is None and name in nullable):
            explicit[name] = check_option(name, value)
    if "sinks" in explicit:
        explicit["sinks"] = check_sinks(explicit["sinks"])
    return WatchOptions.from_kwargs(options, host=host)


def outputs_for_rank(is_main: bool, *, log_dir: Any, sinks: Sequence[Any],
                     tensorboard: Any = False, wandb: Any = None) -> dict[str, Any]:
    """The outputs of a session on this process: the main process keeps them all; another rank
    writes no history and no dashboards, and keeps only the sinks that declare
    ``main_process_only = False``."""
    if is_main:
        return {"log_dir": log_dir, "sinks": list(sinks), "tensorboard": tensorboard,
                "wandb": wandb}
    return {"log_dir": None, "sinks": for_this_process(sinks, False), "tensorboard": False,
            "wandb": None}


def open_session(session: Any) -> Any:
    """``session`` while it runs; None before it is made and once it is closed."""
    return None if session is None or session.closed else session


def close_leftover(session: Any) -> None:
    """Stop a session an earlier run left open (it raised before its end hook), without taking
    its pending snapshot."""
    if open_session(session) is not None:
        session.close(final=False)


def torch_target(model: Any, optimizers: Sequence[Any], schedulers: Sequence[Any]
                 ) -> Callable[..., Any]:
    """The factory of the policies' target for a torch model (what
    :meth:`~ww_callbacks.session.WatchSession.use_target` calls with the layer selection)."""

    def make(**selection: Any) -> Any:
        from ww_callbacks.integrations.torch_target import TorchTarget

        return TorchTarget(model, list(optimizers), list(schedulers), **selection)

    return make


class LatestValues:
    """The ``ww/`` values of the newest delivered analysis, for the host's own logs (Keras
    ``logs``, Lightning ``pl_module.log``, Hugging Face ``logs`` and ``log_history``), taken
    from :meth:`~ww_callbacks.session.WatchSession.decision` with ``ww/step``, the step the
    analysis is of. :meth:`take` gives them each time (``only_new=False``) or once per analysis
    (``only_new=True``)."""

    def __init__(self) -> None:
        self.step: int | None = None

    def reset(self) -> None:
        """A new run: nothing handed over yet."""
        self.step = None

    def take(self, decision: Mapping[str, Any], *, only_new: bool = False,
             step_type: type = float) -> dict[str, Any] | None:
        """``decision``'s values plus ``ww/step``; None before the first analysis and, with
        ``only_new``, when this analysis was already handed over."""
        step = int(decision.get("step", -1))
        if step < 0 or (only_new and step == self.step):
            return None
        self.step = step
        return {**decision["metrics"], WW_STEP: step_type(step)}


def json_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments of a host that a JSON checkpoint can keep (Hugging Face's
    ``trainer_state.json``): plain values as they are, tuples as lists, sinks given by name;
    objects (policies, sink objects, writers, runs) left out."""
    import json

    kept = {}
    for name, value in args.items():
        if name == "sinks":
            value = [list(s) if isinstance(s, tuple) else s for s in value
                     if isinstance(s, str | tuple)]
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        kept[name] = value
    return kept


__all__ = ["LatestValues", "OptionError", "WW_STEP", "close_leftover", "host_options",
           "json_args", "open_session", "outputs_for_rank", "torch_target"]
