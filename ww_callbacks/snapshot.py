"""Copy the watched weights off the training thread's hands, as cheaply as possible.

- CPU tensors and numpy arrays: a plain copy (``clone``), on the calling thread.
- CUDA tensors: preallocated pinned host buffers (two sets: one the worker reads, one being
  filled) filled by asynchronous copies on a side stream. The training stream is made to wait on
  the copy before the next optimizer step (``before_optimizer_step``), so a snapshot is never
  torn, and the host never blocks: the worker waits for the copy's event itself. When both buffer
  sets are busy the new snapshot is dropped (and counted by the caller).
- Frozen torch weights (``requires_grad=False``: a LoRA fine-tune's base model) on the CPU are
  copied once and reused while torch's version counter and storage say they did not change
  (on a GPU they go through the pinned buffers like the others: asynchronous copies). Composite
  weights (a LoRA layer's ``W0 + s * B @ A``) copy their trainable parts (the adapters) at every
  snapshot and their frozen ``W0`` once, on either path, synchronously (:class:`FrozenCopies`).
  A frozen tensor rewritten in place through ``.data`` (which bypasses the version counter) is
  not seen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from .layers import LayerWeights
from .layers.composite import is_composite, is_frozen
from .matrices import is_torch_tensor
from .results import Snapshot
from .shared_arrays import SegmentPool, shareable


def _copy_host(weight: Any) -> Any:
    """A private host copy of one weight (torch stays torch, anything else becomes numpy)."""
    if is_torch_tensor(weight):
        return weight.detach().to("cpu", copy=True)
    return np.array(weight, copy=True)


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


class _PinnedBuffers:
    """One set of pinned host buffers matching a list of CUDA weights."""

    def __init__(self, layers: list[LayerWeights]):
        import torch

        self.buffers = [None if is_composite(layer.weight) else  # copied by host_copy
                        torch.empty(tuple(layer.weight.shape), dtype=layer.weight.dtype,
                                    device="cpu", pin_memory=True) for layer in layers]
        self.event = torch.cuda.Event()
        self.shapes = [tuple(layer.weight.shape) for layer in layers]


class Snapshotter:
    """Takes :class:`Snapshot` s of a fixed list of layers (the selected ones only, so skipped
    giants such as vocabulary embeddings are never copied)."""

    def __init__(self, layers: list[LayerWeights], *, buffer_sets: int = 2,
                 shared: SegmentPool | None = None):
        self.layers = list(layers)
        #: CPU weights are copied into these shared-memory segments (read in place by the
        #: analysis process) instead of private copies, when every layer fits (plain arrays).
        self.shared = shared if shared is not None and shareable(self.layers) else None
        self._cuda = any(is_torch_tensor(layer.weight) and layer.weight.is_cuda
                         for layer in self.layers)
        self._free: list[_PinnedBuffers] = []
        self._lock = threading.Lock()
        self._pending_event: Any = None
        self._buffer_sets = buffer_sets
        self._made = 0
        self._side_stream: Any = None
        self._frozen = FrozenCopies()

    def host_copy(self, weight: Any) -> Any:
        """A synchronous host copy of one of the layers' weights, whatever its device (frozen
        torch tensors and frozen parts copied once)."""
        return self._host(weight)

    def _host(self, weight: Any) -> Any:
        """A host copy of one weight; frozen torch tensors and frozen parts copied once."""
        if is_composite(weight):
            return weight.host_copy(self._copy_part)
        if is_torch_tensor(weight):
            return self._frozen.copy(weight, _copy_host)
        return _copy_host(weight)

    def _copy_part(self, part: Any) -> Any:
        """A host copy of one part of a composite weight (frozen parts copied once)."""
        return self._frozen.copy(part, _copy_host)

    @property
    def uses_cuda(self) -> bool:
        """True when the weights live on a GPU and copies are asynchronous."""
        return self._cuda

    def take(self, step: int, epoch: int | None, randomize: bool) -> Snapshot | None:
        """Snapshot the weights now; None when no buffer is free (GPU path only)."""
        if self._cuda:
            return self._take_cuda(step, epoch, randomize)
        if self.shared is not None:
            layers, layout, release = self.shared.write(self.layers)
            return Snapshot(step, epoch, layers, randomize, time.time(), release=release,
                            shared=layout)
        layers = [replace(layer, weight=self._host(layer.weight)) for layer in self.layers]
        return Snapshot(step, epoch, layers, randomize, time.time())

    # ------------------------------------------------------------------ CUDA path

    def _acquire(self) -> _PinnedBuffers | None:
        with self._lock:
            if self._free:
                return self._free.pop()
            if self._made < self._buffer_sets:
                self._made += 1
                return _PinnedBuffers(self.layers)
        return None

    def _release(self, buffers: _PinnedBuffers) -> None:
        with self._lock:
            self._free.append(buffers)

    def _take_cuda(self, step: int, epoch: int | None, randomize: bool) -> Snapshot | None:
        import torch

        buffers = self._acquire()
        if buffers is None:
            return None
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream()
        main = torch.cuda.current_stream()
        self._side_stream.wait_stream(main)  # copy the weights as of now
        with torch.cuda.stream(self._side_stream), torch.no_grad():
            for buf, layer in zip(buffers.buffers, self.layers, strict=True):
                if buf is not None:
                    buf.copy_(layer.weight.detach(), non_blocking=True)
            buffers.event.record(self._side_stream)
        self._pending_event = buffers.event
        layers = [replace(layer, weight=buf if buf is not None else self._host(layer.weight))
                  for layer, buf in zip(self.layers, buffers.buffers, strict=True)]
        return Snapshot(step, epoch, layers, randomize, time.time(),
                        wait=buffers.event.synchronize,
                        release=lambda: self._release(buffers))

    def before_optimizer_step(self) -> None:
        """Make the training stream wait (on the GPU, not the host) for the last snapshot's copy,
        so the optimizer cannot change weights that are still being copied."""
        event, self._pending_event = self._pending_event, None
        if event is not None:
            import torch

            torch.cuda.current_stream().wait_event(event)

    def close(self) -> None:
        """Drop the pinned buffers."""
        with self._lock:
            self._free.clear()
            self._made = 0
        self._frozen.clear()
        self._pending_event = None
        self._side_stream = None
