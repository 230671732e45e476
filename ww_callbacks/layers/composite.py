"""Weights that are computed from several arrays: a LoRA layer's effective weight
``W0 + scaling * B @ A``, its update ``scaling * B @ A`` alone, or the difference ``W - W_base``
from a base model.

A :class:`Composite` stands in a :class:`~ww_callbacks.layers.base.LayerWeights` where a plain
array would be. It keeps references to its *parts* (never copies them at extraction) and is turned
into one float64 array only when the matrices are built (:mod:`ww_callbacks.matrices`), in the
analysis thread. A snapshot copies it with :meth:`Composite.host_copy` and its own copier, which
copies the parts that cannot change (:func:`is_frozen`: frozen torch parameters, plain arrays) once
and reuses them while torch's in-place version counter says they did not change, so live watching
of a LoRA fine-tune copies only the adapters (:class:`~ww_callbacks.snapshot.FrozenCopies`).
The arithmetic is written once for numpy and torch (``xp`` is either module).
"""

from __future__ import annotations

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
        """The same composite over ``copy(part)`` of each of its parts: the snapshot's copier,
        which copies frozen parts once and reuses them while unchanged (what a snapshot of a
        LoRA fine-tune needs; :class:`~ww_callbacks.snapshot.FrozenCopies`)."""
        parts = {name: part.host_copy(copy) if isinstance(part, Composite) else copy(part)
                 for name, part in self.parts.items()}
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


def __getattr__(name: str) -> Any:
    """``FrozenCopies``, the snapshot's cache of frozen parts, for its old path here (it moved to
    :mod:`ww_callbacks.snapshot`, the copier that owns it), with a :class:`DeprecationWarning`."""
    if name == "FrozenCopies":
        import warnings

        from ..snapshot import FrozenCopies

        warnings.warn("ww_callbacks: ww_callbacks.layers.composite.FrozenCopies is deprecated, "
                      "use ww_callbacks.snapshot.FrozenCopies", DeprecationWarning, stacklevel=2)
        return FrozenCopies
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Composite", "Difference", "LoraWeight", "difference", "is_composite", "is_frozen",
           "LORA_CONV", "LORA_EMBEDDING", "LORA_LINEAR"]
