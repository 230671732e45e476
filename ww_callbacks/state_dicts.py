"""Find the weights inside a checkpoint as training scripts write it, and give them the names the
live watchers use.

Training scripts rarely save a bare state dict: nanoGPT saves ``{'model': ..., 'optimizer': ...,
'model_args': ..., 'iter_num': ...}``, Lightning ``{'state_dict': ...}``, many scripts
``{'model_state_dict': ...}``, DeepSpeed ``{'module': ...}``, EMA trainers ``{'ema': ...}``, and
some nest one of these one level deeper. :func:`find_state_dict` looks under those keys (in that
order) and says which one it used; :func:`describe` says what a checkpoint holds when no weights
were found.

Wrappers put their own names into the keys: ``torch.compile`` (``_orig_mod.``), DDP and DeepSpeed
(a leading ``module.``), FSDP (``_fsdp_wrapped_module.``) and activation checkpointing
(``_checkpoint_wrapped_module.``). :func:`bare_name` removes them, so a checkpoint's layers have
the names the ``Watcher`` records (it names the bare model's modules) and ``compare`` matches them.
This module imports nothing of the package: the engine, the checkpoint reader and the command
line all use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Keys under which training scripts keep the model's state dict, in the order they are tried.
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "module", "ema", "model_ema",
                   "state_dict_ema", "ema_state_dict")
#: Name parts that wrappers insert anywhere in a key (removed wherever they appear).
WRAPPER_PARTS = ("_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module")
#: A prefix that DDP and DeepSpeed put before every key (removed when every key has it).
LEADING_WRAPPER = "module."
#: Top-level keys listed by :func:`describe` at most.
DESCRIBED_KEYS = 20


def is_tensor(value: Any) -> bool:
    """True for an array-like value (a torch tensor, a numpy array, a lazy checkpoint tensor)."""
    return hasattr(value, "shape") and hasattr(value, "ndim") and not isinstance(value, type)


def _tensor_count(value: Any) -> int:
    if not isinstance(value, Mapping):
        return 0
    return sum(1 for v in value.values() if is_tensor(v))


def _all_tensors(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) > 0 and all(
        is_tensor(v) for v in value.values())


@dataclass
class FoundStateDict:
    """The state dict found in a checkpoint: ``weights`` (name -> tensor, wrapper parts removed
    from the names), ``key`` (the path of keys it was under, e.g. ``"model"`` or
    ``"checkpoint.state_dict"``; empty for a bare state dict), ``others`` (other known keys
    that also hold weights, not used), ``renamed`` (how many names lost a wrapper part)."""

    weights: dict[str, Any]
    key: str = ""
    others: list[str] = field(default_factory=list)
    renamed: int = 0

    def note(self) -> str | None:
        """One line saying where the weights were found and what was renamed (None: a bare
        state dict with nothing renamed)."""
        parts = []
        if self.key:
            parts.append(f"weights from the checkpoint's {self.key!r} entry")
            if self.others:
                parts.append("also holds " + ", ".join(repr(k) for k in self.others)
                             + " (not used)")
        if self.renamed:
            parts.append(f"wrapper prefixes ({', '.join(p + '.' for p in WRAPPER_PARTS)}, "
                         f"{LEADING_WRAPPER}) removed from {self.renamed} names")
        return "; ".join(parts) or None


def _known_entry(container: Mapping) -> tuple[str, Mapping] | None:
    """The first known key of ``container`` whose value holds tensors, directly or one level
    further under a known key."""
    for key in STATE_DICT_KEYS:
        value = container.get(key)
        if not isinstance(value, Mapping):
            continue
        if _all_tensors(value):
            return key, value
        inner = _known_entry_flat(value)
        if inner is not None:
            return f"{key}.{inner[0]}", inner[1]
        if _tensor_count(value):
            return key, value
    return None


def _known_entry_flat(container: Mapping) -> tuple[str, Mapping] | None:
    for key in STATE_DICT_KEYS:
        value = container.get(key)
        if _tensor_count(value):
            return key, value
    return None


def _locate(obj: Mapping) -> tuple[str, Mapping]:
    """Where the state dict is in ``obj``: ``("", obj)`` for a bare one."""
    if _all_tensors(obj):
        return "", obj
    found = _known_entry(obj)
    if found is not None:
        return found
    for key, value in obj.items():  # one level of nesting under an unknown key
        if isinstance(value, Mapping) and not _all_tensors(value):
            inner = _known_entry_flat(value)
            if inner is not None:
                return f"{key}.{inner[0]}", inner[1]
    holders = [(k, v) for k, v in obj.items() if _all_tensors(v)]
    if len(holders) == 1 and not _tensor_count(obj):  # one unnamed state dict: {'net': {...}}
        return str(holders[0][0]), holders[0][1]
    return "", obj


def bare_name(name: str) -> str:
    """``name`` without the parts wrappers insert (``_orig_mod``, ``_fsdp_wrapped_module``,
    ``_checkpoint_wrapped_module``); the leading ``module.`` is handled by
    :func:`strip_wrappers`, which sees every key."""
    if not any(part in name for part in WRAPPER_PARTS):
        return name
    return ".".join(p for p in name.split(".") if p not in WRAPPER_PARTS)


def strip_wrappers(weights: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """``weights`` with the wrapper parts removed from its names (a leading ``module.`` only when
    every name has it), and how many names changed. When removing them would make two names
    equal, the names are kept as they are."""
    names = [str(k) for k in weights]
    lead = bool(names) and all(n.startswith(LEADING_WRAPPER) for n in names)
    new = [bare_name(n[len(LEADING_WRAPPER):] if lead else n) for n in names]
    if len(set(new)) != len(new):
        return {str(k): v for k, v in weights.items()}, 0
    changed = sum(a != b for a, b in zip(names, new, strict=True))
    return dict(zip(new, weights.values(), strict=True)), changed


def find_state_dict(obj: Any) -> FoundStateDict:
    """The model weights in a loaded checkpoint ``obj`` (see the module docstring for the keys
    tried), with bare names. Values that are not tensors are left out; an ``obj`` that holds no
    weights gives an empty ``weights``."""
    if not isinstance(obj, Mapping):
        return FoundStateDict({})
    key, container = _locate(obj)
    others = [k for k in STATE_DICT_KEYS
              if k != key.split(".")[0] and _tensor_count(obj.get(k))] if key else []
    tensors = {str(k): v for k, v in container.items() if is_tensor(v)}
    weights, renamed = strip_wrappers(tensors)
    return FoundStateDict(weights, key, others, renamed)


def _kind(value: Any) -> str:
    if is_tensor(value):
        return f"{type(value).__name__} {list(getattr(value, 'shape', ()))}"
    if isinstance(value, Mapping):
        n = _tensor_count(value)
        return f"dict of {len(value)}" + (f", {n} tensors" if n else "")
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def describe(obj: Any) -> str:
    """What a loaded checkpoint holds, in one line: its type, or its top-level keys with the
    type of each (for the message that no weights or no layer were found)."""
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}"
    items = list(obj.items())
    shown = ", ".join(f"{str(k)!r} ({_kind(v)})" for k, v in items[:DESCRIBED_KEYS])
    more = f", ... ({len(items) - DESCRIBED_KEYS} more)" if len(items) > DESCRIBED_KEYS else ""
    return f"top-level keys: {shown}{more}" if items else "an empty dict"


__all__ = ["FoundStateDict", "LEADING_WRAPPER", "STATE_DICT_KEYS", "WRAPPER_PARTS", "bare_name",
           "describe", "find_state_dict", "is_tensor", "strip_wrappers"]
