"""Snapshots in shared memory: written once by the training thread, read in place by the analysis
process (:mod:`ww_callbacks.process_worker`).

The training thread's host copy of the weights goes straight into a shared-memory segment (the
same one copy as a private ``clone``), and the child maps the segment and analyses numpy views
of it: the weights are never pickled nor copied again. Segments are pooled and reused (a fresh
mapping costs a page fault per 4 KiB on the training thread); they are unlinked when the pool is
closed, and at interpreter exit. After a SIGKILL of the training process, multiprocessing's
resource tracker (which every created segment is registered with) unlinks what is left.

The child maps segments with :func:`attach` (copy-on-write, never registered with a resource
tracker of its own, which would unlink the parent's segments when the child exits).
"""

from __future__ import annotations

import atexit
import mmap
import os
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from .layers import LayerWeights
from .layers.composite import is_composite
from .matrices import is_torch_tensor

#: Segments are aligned so that every array starts on a cache line.
ALIGN = 64


@dataclass(frozen=True)
class ArraySlot:
    """Where one layer's weight lies in a segment."""

    offset: int
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class SharedLayout:
    """A snapshot's segment and the place of each layer's weight in it (what travels to the
    child instead of the weights)."""

    segment: str
    size: int
    slots: tuple[ArraySlot, ...]


def numpy_dtype(weight: Any) -> np.dtype | None:
    """The numpy dtype a weight is kept in (torch's bfloat16, which numpy lacks, as float32, as
    the analysis reads it); None when the weight cannot be put in shared memory (a composite
    weight, a GPU tensor, a non-numeric array)."""
    if is_composite(weight):
        return None
    if is_torch_tensor(weight):
        if weight.device.type != "cpu" or weight.is_sparse:
            return None
        name = str(weight.dtype).removeprefix("torch.")
        if name == "bfloat16":
            return np.dtype(np.float32)
        try:
            dtype = np.dtype(name)
        except TypeError:
            return None
    else:
        if not hasattr(weight, "shape") or not hasattr(weight, "dtype"):
            return None
        try:
            dtype = np.dtype(weight.dtype)
        except TypeError:
            return None
    return dtype if dtype.kind in "fiub" else None


def shareable(layers: Iterable[LayerWeights]) -> bool:
    """True when every layer's weight can be written into a segment."""
    return all(numpy_dtype(layer.weight) is not None for layer in layers)


def _layout(layers: list[LayerWeights]) -> tuple[list[ArraySlot], int]:
    slots, offset = [], 0
    for layer in layers:
        dtype = numpy_dtype(layer.weight)
        shape = tuple(int(s) for s in layer.weight.shape)
        slots.append(ArraySlot(offset, shape, dtype.str))
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        offset += -(-nbytes // ALIGN) * ALIGN
    return slots, max(offset, ALIGN)


def _views(buf: Any, slots: Iterable[ArraySlot]) -> list[np.ndarray]:
    return [np.ndarray(slot.shape, dtype=np.dtype(slot.dtype), buffer=buf, offset=slot.offset)
            for slot in slots]


def _fill(view: np.ndarray, weight: Any) -> None:
    """Copy one weight into its slot (the one copy of the snapshot)."""
    if is_torch_tensor(weight):
        import torch

        with torch.no_grad():
            torch.from_numpy(view).copy_(weight.detach())
    else:
        np.copyto(view, np.asarray(weight), casting="unsafe")


class SegmentPool:
    """Shared-memory segments of one session, reused from snapshot to snapshot.

    :meth:`write` (training thread) copies the layers' weights into a free segment and returns
    the layers with numpy views of it, the layout for the child and a release function.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[shared_memory.SharedMemory] = []
        self._all: dict[str, shared_memory.SharedMemory] = {}
        self._closed = False
        self._finalizer = weakref.finalize(self, _unlink_all, self._all)
        _POOLS.add(self)
        if not _EXIT_HOOK:  # registered with the first pool: importing registers nothing
            _EXIT_HOOK.append(True)
            atexit.register(_close_pools_at_exit)

    @property
    def names(self) -> list[str]:
        """The names of the segments this pool holds (for tests: none after :meth:`close`)."""
        with self._lock:
            return list(self._all)

    def _acquire(self, size: int) -> shared_memory.SharedMemory:
        with self._lock:
            if self._closed:
                raise RuntimeError("the segment pool is closed")
            fits = [seg for seg in self._free if size <= seg.size <= 2 * size + ALIGN]
            if fits:
                seg = min(fits, key=lambda s: s.size)
                self._free.remove(seg)
                return seg
            seg = shared_memory.SharedMemory(create=True, size=size)
            self._all[seg.name] = seg
            return seg

    def _release(self, seg: shared_memory.SharedMemory) -> None:
        with self._lock:
            if self._closed or seg.name not in self._all:
                return
            self._free.append(seg)
            while len(self._free) > 3:  # more than the worker ever holds: give memory back
                _unlink(self._all.pop(self._free.pop(0).name))

    def write(self, layers: list[LayerWeights]) -> tuple[list[LayerWeights], SharedLayout, Any]:
        """Copy ``layers``' weights into one segment: the layers with views of it, the layout
        the child maps, and the function that gives the segment back (call it once the child
        has finished with it)."""
        from dataclasses import replace

        slots, size = _layout(layers)
        seg = self._acquire(size)
        views = _views(seg.buf, slots)
        for view, layer in zip(views, layers, strict=True):
            _fill(view, layer.weight)
        copied = [replace(layer, weight=view) for layer, view in zip(layers, views, strict=True)]
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                self._release(seg)

        return copied, SharedLayout(seg.name, size, tuple(slots)), release

    def close(self) -> None:
        """Unlink every segment (mappings still open elsewhere stay readable until closed)."""
        with self._lock:
            self._closed = True
            self._free.clear()
        self._finalizer()
        _POOLS.discard(self)


def _unlink(seg: shared_memory.SharedMemory) -> None:
    try:
        seg.close()
    except BufferError:  # a view still exported (e.g. a snapshot in a traceback): unlink anyway
        pass
    try:
        seg.unlink()
    except (FileNotFoundError, OSError):
        pass


def _unlink_all(segments: dict[str, shared_memory.SharedMemory]) -> None:
    for name in list(segments):
        _unlink(segments.pop(name))


_POOLS: weakref.WeakSet = weakref.WeakSet()
_EXIT_HOOK: list[bool] = []


def _close_pools_at_exit() -> None:  # pragma: no cover - runs at interpreter exit
    for pool in list(_POOLS):
        pool.close()


class Attached:
    """The child's mapping of one segment: numpy views of the layers' weights, writable
    copy-on-write (the analysis never changes the training process's snapshot)."""

    def __init__(self, layout: SharedLayout):
        self._map: Any = None
        self._shm: Any = None
        if os.name == "nt":  # Windows: named file mappings, no resource tracker involved
            self._shm = shared_memory.SharedMemory(name=layout.segment)
            buf = self._shm.buf
        else:
            import _posixshmem

            fd = _posixshmem.shm_open("/" + layout.segment.lstrip("/"), os.O_RDONLY, mode=0o600)
            try:
                self._map = mmap.mmap(fd, layout.size, access=mmap.ACCESS_COPY)
            finally:
                os.close(fd)
            buf = self._map
        self.arrays = _views(buf, layout.slots)

    def close(self) -> None:
        """Drop the views and unmap (views still referenced elsewhere keep it mapped)."""
        self.arrays = []
        for thing in (self._map, self._shm):
            if thing is not None:
                try:
                    thing.close()
                except BufferError:
                    pass


def attach(layout: SharedLayout) -> Attached:
    """Map a snapshot's segment in the analysis process."""
    return Attached(layout)
