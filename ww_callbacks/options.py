"""The options every integration shares, declared once: :data:`OPTIONS` (name, default, type,
accepted values, one line of documentation), validated once at construction
(:func:`check_options`, :class:`WatchOptions`), with the old names that still work (with a
:class:`DeprecationWarning`) mapped here too (:data:`DEPRECATED`).

Every host (Lightning, Keras, the torch ``Watcher``, Hugging Face) takes its own parameters
(cadence, ``log_dir``, sinks, policies, ...) plus ``**options``: any of :data:`OPTIONS`, under
the same name and default everywhere; an unknown keyword or a bad value is refused when the host
is made, with a message naming the option and the values it accepts. README.md's options table
is generated from this declaration (:func:`options_table`; ``tests/test_options.py`` checks that
they agree).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .esd import ESD_EVERY
from .layers.base import LAYER_TYPES
from .layers.lora import ADAPTER_MODES
from .layers.select import parse_layer_filter
from .layers.tied import TIED_VALUES

#: Layer-selection defaults (see :func:`ww_callbacks.layers.select_layers`): a layer is analysed
#: when its smaller dimension has at least ``MIN_EVALS`` and at most ``MAX_EVALS`` eigenvalues
#: and its larger one is at most ``MAX_N``.
MIN_EVALS = 8
MAX_EVALS = 15000
MAX_N = 50000
#: A layer whose spectrum has fewer eigenvalues than this (``num_evals``) is "low evidence": its
#: fit and trap count rest on too few values to move the model-level ``ww/`` means (see
#: :func:`ww_callbacks.scalars.model_summary`). 50 is where WeightWatcher's own advice starts to
#: trust a fit (:data:`ww_callbacks.bands.FEW_EIGENVALUES`, there for the tail).
MIN_EVALS_FOR_TRUST = 50

#: When training waits for an analysis: ``"never"`` (a snapshot that finds the previous one still
#: pending replaces it, counted in ``ww/snapshots_dropped``), ``"epoch"`` (an epoch's snapshot
#: waits for the previous analysis, and the epoch end for its own: monitored ``ww/`` values and
#: policies see every epoch) or ``"always"`` (every snapshot first waits until the previous one
#: is analysed and delivered, and epoch ends wait as with ``"epoch"``: nothing is dropped).
Wait = Literal["never", "epoch", "always"]
WAIT_VALUES = ("never", "epoch", "always")
FIX_FINGERS = (None, "clip_xmax")
#: ``analysis_device`` strings: a torch device type, optionally with an index (``"cuda:1"``).
DEVICE_TYPES = ("auto", "cpu", "cuda", "mps", "xpu")


# ----------------------------------------------------------------------------- checks


def _is_int(value: Any) -> bool:
    """An integer, numpy's included; never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class OptionError(ValueError):
    """A bad value (or an unknown name) of an option, named in the message."""


def _bad(name: str, accepted: str, value: Any) -> OptionError:
    return OptionError(f"ww_callbacks: option {name}={value!r} is not accepted; {name} must be "
                       f"{accepted}")


def int_at_least(low: int, *, none: bool = False) -> Callable[[str, Any], Any]:
    """A check: an integer >= ``low`` (numpy integers too, as ``int``), or None when allowed."""
    accepted = f"an integer >= {low}" + (" or None" if none else "")

    def check(name: str, value: Any) -> Any:
        if value is None and none:
            return None
        if not _is_int(value) or value < low:
            raise _bad(name, accepted, value)
        return int(value)

    check.accepted = accepted  # type: ignore[attr-defined]
    return check


def boolean(name: str, value: Any) -> bool:
    """A check: True or False (numpy's bool too)."""
    if isinstance(value, bool) or type(value).__name__ in ("bool_", "bool"):
        return bool(value)
    raise _bad(name, "True or False", value)


boolean.accepted = "True or False"  # type: ignore[attr-defined]


def one_of(*values: Any) -> Callable[[str, Any], Any]:
    """A check: one of ``values``."""
    accepted = f"one of {values}"

    def check(name: str, value: Any) -> Any:
        if not any(value is v or (isinstance(value, str) and value == v) for v in values):
            raise _bad(name, accepted, value)
        return value

    check.accepted = accepted  # type: ignore[attr-defined]
    return check


def _optional_bool(name: str, value: Any) -> bool | None:
    return None if value is None else boolean(name, value)


_optional_bool.accepted = "None, True or False"  # type: ignore[attr-defined]


def _max_duty(name: str, value: Any) -> float | str | None:
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    if not _is_real(value) or math.isnan(value) or not 0 < value <= 1:
        raise _bad(name, "'auto', None or a number in (0, 1]", value)
    return float(value)


_max_duty.accepted = "'auto', None or a number in (0, 1]"  # type: ignore[attr-defined]


def _seed(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise _bad(name, "a non-negative integer or None", value)
    return int(value)


_seed.accepted = "a non-negative integer or None"  # type: ignore[attr-defined]


def _device(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        kind, _, index = value.partition(":")
        if kind in DEVICE_TYPES and (not index or (index.isdigit() and kind != "auto")):
            return value
    elif type(value).__module__.startswith("torch") and type(value).__name__ == "device":
        return value
    raise _bad(name, "'auto', 'cpu', 'cuda', 'cuda:N' (a torch device type, with an index), "
               "a torch.device or None", value)


_device.accepted = "'auto', 'cpu', 'cuda', 'cuda:N', a torch.device or None"  # type: ignore


def _layers(name: str, value: Any) -> Any:
    """None, a layer id, a type name, or a list/tuple/set of ids and names (see
    :func:`ww_callbacks.layers.select_layers`)."""
    accepted = ("None, a layer id, a layer type name (" + ", ".join(LAYER_TYPES)
                + "), or a list of layer ids (all >= 0 to keep, all < 0 to drop), type names "
                "and layer names ('-name' drops); a single layer name goes in a list")
    if value is None:
        return None
    if _is_int(value):
        return int(value)
    if isinstance(value, str):
        if value.lower() in LAYER_TYPES:
            return value
        raise _bad(name, accepted, value)
    if not isinstance(value, list | tuple | set | frozenset):
        raise _bad(name, accepted, value)
    items = [int(item) if _is_int(item) else item for item in value]
    if any(isinstance(item, str) and not item for item in items):
        raise _bad(name, accepted, value)
    try:
        parse_layer_filter(items)  # the rules of select_layers (ids, type names, names)
    except (TypeError, ValueError) as err:
        raise OptionError(f"{_bad(name, accepted, value)} ({err})") from None
    return items if isinstance(value, list) else type(value)(items)


_layers.accepted = "None, a layer id, a type name, or a list of ids and names"  # type: ignore


# ----------------------------------------------------------------------------- declaration


#: Where the analysis runs (``analysis_in``; see :mod:`ww_callbacks.process_worker`).
ANALYSIS_IN = ("auto", "process", "thread")

@dataclass(frozen=True)
class Option:
    """One shared option: its name, default, type (as documented), check and documentation."""

    name: str
    default: Any
    type: str
    check: Callable[[str, Any], Any]
    doc: str

    @property
    def accepted(self) -> str:
        """The accepted values, in words."""
        return getattr(self.check, "accepted", self.type)


#: Every shared option, in the order of the README's table.
OPTIONS: tuple[Option, ...] = (
    Option("traps_every", 1, "int >= 0", int_at_least(0),
           "every k-th analysis also randomises the weights to count correlation traps "
           "(0: never)"),
    Option("layers", None, "None | id | type | list", _layers,
           "which layers are analysed (and acted on), as `analyze(layers=)`: ids, type names, "
           "names"),
    Option("min_evals", MIN_EVALS, "int >= 0 | None", int_at_least(0, none=True),
           "smallest number of eigenvalues of an analysed layer (0/None: no minimum)"),
    Option("max_evals", MAX_EVALS, "int >= 1 | None", int_at_least(1, none=True),
           "largest number of eigenvalues of an analysed layer (None: no limit); a larger "
           "layer is not analysed: one warning names it, and `skipped` lists it as "
           "'num_evals X > max_evals 15000'"),
    Option("max_N", MAX_N, "int >= 1 | None", int_at_least(1, none=True),
           "largest larger dimension of an analysed layer (None: no limit); a larger layer "
           "(a big vocabulary's embedding) is not analysed: one warning names it, and "
           "`skipped` lists it as 'N X > max_N 50000'"),
    Option("min_evals_for_trust", MIN_EVALS_FOR_TRUST, "int >= 0", int_at_least(0),
           "a layer with fewer eigenvalues (`num_evals`) is low evidence: left out of the `ww/` "
           "means (unless every layer is) and counted in `ww/layers_low_evidence`; the means "
           "over every layer, as WeightWatcher 0.7.7's summary, are `ww/all/...` (0: every "
           "layer in the `ww/` means, as before)"),
    Option("mp_fit", False, "bool", boolean, "also fit the Marchenko-Pastur bulk"),
    Option("fix_fingers", None, "None | 'clip_xmax'", one_of(*FIX_FINGERS),
           "refit without the largest eigenvalues ('fingers') as WeightWatcher does"),
    Option("analysis_device", "auto", "str | torch.device | None", _device,
           "where spectra are computed: 'auto' (the GPU the model trains on, else the CPU), "
           "'cpu', 'cuda', ..."),
    Option("keep_spectra", True, "bool", boolean,
           "keep each analysis's eigenvalues for the pictures (ESD plots)"),
    Option("esd_every", ESD_EVERY, "int >= 0", int_at_least(0),
           "compact ESDs of every layer to `ww_spectra.jsonl` at the first analysis, every k-th, "
           "on a new trap or band change, and the final one (0: not on a cadence)"),
    Option("seed", 0, "int >= 0 | None", _seed,
           "seed of the analysis's private generator (shuffles for the traps)"),
    Option("adapters", "effective", "'effective' | 'only' | 'both'", one_of(*ADAPTER_MODES),
           "peft LoRA layers: the effective weight, the update alone, or both"),
    Option("tied", "once", "'once' | 'each'", one_of(*TIED_VALUES),
           "a weight shared by several modules: analysed once (other names in `aliases`) or "
           "each time, as WeightWatcher 0.7.7"),
    Option("base", None, "None | 'initial'", one_of(None, "initial"),
           "'initial': analyse the update since the first snapshot, W - W_initial"),
    Option("blas_threads", 1, "int >= 1 | None", int_at_least(1, none=True),
           "BLAS threads of the analysis (None: no limit)"),
    Option("analysis_in", "auto", "'auto' | 'process' | 'thread'", one_of(*ANALYSIS_IN),
           "where the analysis runs: 'process' (a child process at nice 10, snapshots in shared "
           "memory), 'thread' (a thread of the training process); 'auto': a process when "
           "training and analysis run on the CPU, a thread on a GPU (the environment variable "
           "`WW_CALLBACKS_ANALYSIS_IN` sets what 'auto' means)"),
    Option("max_duty", "auto", "'auto' | float in (0, 1] | None", _max_duty,
           "largest share of the analysis thread's CPU time ('auto': 0.5 on CPU training, "
           "none on a GPU; None: no limit)"),
    Option("strict", False, "bool", boolean,
           "a failed analysis or policy raises instead of warning"),
    Option("distributed", None, "bool | None", _optional_bool,
           "a session on every rank, snapshots as collectives, each rank analysing its share, "
           "rank 0 writing (None: whenever a process group of more than one rank is "
           "initialized)"),
)
BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}

#: Options that are not in :data:`OPTIONS` (their defaults differ per host) but are checked the
#: same way everywhere.
HOST_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "every_n_steps": int_at_least(0, none=True),
    "every_n_train_steps": int_at_least(0, none=True),
    "every_n_epochs": int_at_least(0, none=True),
    "wait": one_of(*WAIT_VALUES),
}

#: Old option names: old -> (new name, how the old value becomes the new one). They still work,
#: with a :class:`DeprecationWarning`.
DEPRECATED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "wait_for_epoch": ("wait", lambda flag: "epoch" if flag else "never"),
    "wait_for_analysis": ("wait", lambda flag: "always" if flag else "never"),
    "every_n_batches": ("every_n_steps", lambda value: value),
    "wandb_run": ("wandb", lambda value: value),
    "writer": ("tensorboard", lambda value: value),
}


@dataclass(frozen=True)
class WatchOptions:
    """The shared options of one host, validated (see :data:`OPTIONS`)."""

    traps_every: int = 1
    layers: Any = None
    min_evals: int | None = MIN_EVALS
    max_evals: int | None = MAX_EVALS
    max_N: int | None = MAX_N
    min_evals_for_trust: int = MIN_EVALS_FOR_TRUST
    mp_fit: bool = False
    fix_fingers: str | None = None
    analysis_device: Any = "auto"
    keep_spectra: bool = True
    esd_every: int = ESD_EVERY
    seed: int | None = 0
    adapters: str = "effective"
    tied: str = "once"
    base: str | None = None
    blas_threads: int | None = 1
    analysis_in: str = "auto"
    max_duty: float | str | None = "auto"
    strict: bool = False
    distributed: bool | None = None

    def __post_init__(self) -> None:
        for option in OPTIONS:
            object.__setattr__(self, option.name,
                               option.check(option.name, getattr(self, option.name)))

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any], *, host: str = "this host",
                    extra: Iterable[str] = ()) -> WatchOptions:
        """The options given to a host as keywords; an unknown name is refused (``extra``: other
        names the caller handles itself, left out here)."""
        extra = set(extra)
        unknown = sorted(set(options) - set(BY_NAME) - extra)
        if unknown:
            raise OptionError(f"ww_callbacks: {host} has no option {', '.join(map(repr, unknown))}"
                              f"; the shared options are {', '.join(BY_NAME)}")
        return cls(**{k: v for k, v in options.items() if k in BY_NAME})

    def as_dict(self) -> dict[str, Any]:
        """Every option by name (what the session takes)."""
        return {option.name: getattr(self, option.name) for option in OPTIONS}

    def changed(self) -> dict[str, Any]:
        """The options that differ from their default (what a host's ``repr``/state shows)."""
        return {name: value for name, value in self.as_dict().items()
                if value is not BY_NAME[name].default and value != BY_NAME[name].default}


def check_option(name: str, value: Any) -> Any:
    """``value`` of the shared or host option ``name``, checked (an :class:`OptionError`
    naming it and its accepted values otherwise)."""
    check = BY_NAME[name].check if name in BY_NAME else HOST_CHECKS[name]
    return check(name, value)


def check_wait(wait: str) -> str:
    """``wait`` when it is one of :data:`WAIT_VALUES`; a clear error otherwise."""
    if not isinstance(wait, str) or wait not in WAIT_VALUES:
        raise ValueError(f"wait must be one of {WAIT_VALUES}, not {wait!r}")
    return wait


def deprecated(old: str, new: str, stacklevel: int = 3) -> None:
    """Warn (:class:`DeprecationWarning`) that option ``old`` is now ``new``; the caller then
    uses the old option's value as the new one's."""
    warnings.warn(f"ww_callbacks: option {old!r} is deprecated, use {new!r}",
                  DeprecationWarning, stacklevel=stacklevel)


def map_deprecated(options: dict[str, Any], stacklevel: int = 4) -> dict[str, Any]:
    """``options`` with each old name of :data:`DEPRECATED` replaced by its new one (warned);
    a value given under an old name wins over the new name's default (the old behaviour)."""
    out = dict(options)
    for old, (new, convert) in DEPRECATED.items():
        if old in out:
            value = out.pop(old)
            if value is None:
                continue
            converted = convert(value)
            deprecated(old, f"{new}={converted!r}" if new == "wait" else new,
                       stacklevel=stacklevel)
            out[new] = converted
    return out


def renamed(new_value: Any, renames: dict[str, tuple[str, Any]]) -> Any:
    """The value of an option that also has old names: ``renames`` maps each old name to
    ``(new name, value given under the old name or None)``; an old name that was given warns
    (:func:`deprecated`) and its value wins."""
    for old, (new, value) in renames.items():
        if value is not None:
            deprecated(old, new, stacklevel=4)
            return value
    return new_value


def wait_from_flag(old: str, flag: bool | None, true_value: str, wait: str) -> str:
    """``wait`` given an old boolean option (``wait_for_epoch``, ``wait_for_analysis``; None:
    not given): True means ``true_value``, False ``"never"``, with a deprecation warning."""
    if flag is None:
        return wait
    deprecated(old, f"wait={true_value!r}" if flag else "wait='never'", stacklevel=4)
    return true_value if flag else "never"


# ----------------------------------------------------------------------------- README table


def options_table() -> str:
    """The README's table of the shared options (markdown), from :data:`OPTIONS`."""
    rows = ["| option | default | accepts | what it does |", "| --- | --- | --- | --- |"]
    for option in OPTIONS:
        rows.append(f"| `{option.name}` | `{option.default!r}` | {option.accepted} | "
                    f"{option.doc} |")
    return "\n".join(rows)
