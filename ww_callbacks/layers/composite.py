"""Weights that are computed from several arrays: a LoRA layer's effective weight
``W0 + scaling * B @ A``, its update ``scaling * B @ A`` alone, or the difference ``W - W_base``
from a base model.

A :class:`Composite` stands in a :class:`~ww_callbacks.layers.base.LayerWeights` where a plain
array would be. It keeps references to its *parts* (never copies them at extraction) and is turned
into one float64 array only when the matrices are built (:mod:`ww_callbacks.matrices`), in the
analysis thread. A snapshot copies it with :meth:`Composite.host_copy`: parts that cannot change
(frozen torch parameters, plain arrays) are copied once and reused while torch's in-place version
counter says they did not change, so live watching of a LoRA fine-tune copies only the adapters.
The arithmetic is written once for numpy and torch (``xp`` is either module).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..arrays import is_torch_tensor, plain_to_numpy, torch_to_float

#: LoRA kinds: how ``B @ A`` becomes a weight of the base layer's layout.
LORA_LINEAR = "linear"
LORA_EMBEDDING = "embedding"
LORA_CONV = "conv"


def is_frozen(part: Any) -> bool:
    """True for a part that training does not change: a torch tensor that does not require a
    gradient, or any non-torch array (numpy arrays held by the caller)."""
    if is_torch_tensor(part):
        return not bool(getattr(part, "requires_grad", False))
    return True


class FrozenCopies:
    """A cache of host copies of frozen parts, keyed by the tensor, torch's in-place version
    counter (``tensor._version``) and its storage address: a frozen tensor is copied again when
    something wrote into it in place or gave it new storage (a user unfreezing and training it,
    ``param.data = ...``). Writes through ``param.data`` in place bypass the version counter and
    are not seen."""

    def __init__(self) -> None:
        self._copies: dict[int, tuple[Any, tuple[int, int], Any]] = {}
        self._lock = threading.Lock()

    def copy(self, part: Any, copy: Callable[[Any], Any]) -> Any:
        """``copy(part)``, reused for a frozen part whose version did not change."""
        if not is_frozen(part):
            return copy(part)
        version = (int(getattr(part, "_version", 0)),
                   int(part.data_ptr()) if hasattr(part, "data_ptr") else 0)
        with self._lock:
            cached = self._copies.get(id(part))
            if cached is not None and cached[0] is part and cached[1] == version:
                return cached[2]
        fresh = copy(part)
        with self._lock:
            self._copies[id(part)] = (part, version, fresh)
        return fresh

    def clear(self) -> None:
        """Forget every cached copy."""
        with self._lock:
            self._copies.clear()


def _as_float64(part: Any, xp: Any, device: Any = None) -> Any:
    """``part`` as a float64 array of ``xp`` (numpy, or torch on ``device``)."""
    if isinstance(part, Composite):
        return part.to_numpy() if xp is np else part.to_torch(device)
    if xp is np:
        return np.asarray(plain_to_numpy(part), dtype=np.float64)
    import torch

    t = part if is_torch_tensor(part) else torch.as_tensor(np.asarray(part))
    return torch_to_float(t).to(device=device, dtype=torch.float64)


@dataclass(frozen=True, eq=False)
class Composite:
    """A weight computed from named parts; subclasses define :meth:`combine` and the shape."""

    parts: Mapping[str, Any]
    _frozen_cache: FrozenCopies = field(default_factory=FrozenCopies, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        """Number of axes of the combined weight."""
        return len(self.shape)

    def combine(self, parts: Mapping[str, Any], xp: Any) -> Any:  # pragma: no cover
        """The weight from float64 ``parts`` of ``xp`` (numpy or torch)."""
        raise NotImplementedError

    def frozen_parts(self) -> list[str]:
        """Names of the parts a snapshot copies once (see :func:`is_frozen`)."""
        return [name for name, part in self.parts.items() if is_frozen(part)]

    def host_copy(self, copy: Callable[[Any], Any]) -> Composite:
        """The same composite over host copies of its parts; frozen parts are copied once and
        reused while unchanged (what a snapshot of a LoRA fine-tune needs)."""
        parts = {name: part.host_copy(copy) if isinstance(part, Composite)
                 else self._frozen_cache.copy(part, copy) for name, part in self.parts.items()}
        return replace(self, parts=parts)

    def to_numpy(self) -> np.ndarray:
        """The combined weight as a float64 numpy array (a new array)."""
        return self.combine({k: _as_float64(v, np) for k, v in self.parts.items()}, np)

    def to_torch(self, device: Any = None) -> Any:
        """The combined weight as a float64 torch tensor on ``device``."""
        import torch

        with torch.no_grad():
            parts = {k: _as_float64(v, torch, device) for k, v in self.parts.items()}
            return self.combine(parts, torch)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.to_numpy()
        return out if dtype is None else out.astype(dtype)


def _transpose2d(x: Any) -> Any:
    return x.T


@dataclass(frozen=True, eq=False)
class LoraWeight(Composite):
    """A peft LoRA layer: ``base + sum_k scaling_k * delta(B_k, A_k)`` (``base`` absent: the
    update alone). Parts: ``"base"`` (optional), ``"A.<adapter>"``, ``"B.<adapter>"``.

    ``kind``: ``"linear"`` (``A`` ``(r, in)``, ``B`` ``(out, r)``, delta ``B @ A``, transposed when
    the base stores ``(in, out)``: ``fan_in_fan_out``), ``"embedding"`` (peft's
    ``lora_embedding_A`` ``(r, num)``, ``_B`` ``(dim, r)``, delta ``(B @ A)^T``), ``"conv"``
    (``A`` ``(r, in, *k)``, ``B`` ``(out, r, 1, ...)``, delta ``B @ A`` per kernel position).
    """

    scalings: Mapping[str, float] = field(default_factory=dict)
    kind: str = LORA_LINEAR
    fan_in_fan_out: bool = False
    weight_shape: tuple[int, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        return self.weight_shape

    @property
    def adapters(self) -> list[str]:
        """The adapter names summed into the weight."""
        return list(self.scalings)

    def delta(self, parts: Mapping[str, Any], adapter: str, xp: Any) -> Any:
        """``scaling * B @ A`` of one adapter in the base weight's layout."""
        a, b = parts[f"A.{adapter}"], parts[f"B.{adapter}"]
        scale = float(self.scalings[adapter])
        if self.kind == LORA_CONV:
            b2 = b.reshape(b.shape[0], b.shape[1])
            return xp.einsum("or,ri...->oi...", b2, a) * scale
        delta = b @ a
        if self.kind == LORA_EMBEDDING or self.fan_in_fan_out:
            delta = _transpose2d(delta)
        return delta * scale

    def combine(self, parts: Mapping[str, Any], xp: Any) -> Any:
        out = parts["base"] if "base" in parts else None
        for adapter in self.scalings:
            delta = self.delta(parts, adapter, xp)
            out = delta if out is None else out + delta
        return out

    @property
    def rank(self) -> int:
        """The summed adapters' rank bound (sum of their ``r``)."""
        return sum(int(self.parts[f"A.{a}"].shape[0]) for a in self.scalings)


@dataclass(frozen=True, eq=False)
class Difference(Composite):
    """``weight - base`` (parts ``"weight"`` and ``"base"``, same shape), for deltas from a base
    model (WeightWatcher's ``base_model``)."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.parts["weight"].shape)

    def combine(self, parts: Mapping[str, Any], xp: Any) -> Any:
        return parts["weight"] - parts["base"]


def is_composite(weight: Any) -> bool:
    """True for a :class:`Composite` weight."""
    return isinstance(weight, Composite)


def difference(weight: Any, base: Any) -> Difference:
    """``weight - base`` as a :class:`Difference`; ``ValueError`` when the shapes differ."""
    shape = tuple(int(s) for s in weight.shape)
    base_shape = tuple(int(s) for s in base.shape)
    if shape != base_shape:
        raise ValueError(f"base weight of shape {base_shape} does not match {shape}")
    return Difference({"weight": weight, "base": base})


__all__ = ["Composite", "Difference", "FrozenCopies", "LoraWeight", "difference", "is_composite",
           "is_frozen", "LORA_CONV", "LORA_EMBEDDING", "LORA_LINEAR"]
