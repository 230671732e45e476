"""TensorBoard event files written without TensorFlow or torch.

:class:`EventWriter` has the writer methods :class:`~.tensorboard.TensorBoardSink` uses
(``add_scalar``, ``add_histogram``, ``add_image``, ``add_text``, ``add_custom_scalars``, ``flush``,
``close``). It serializes TensorBoard's own protocol buffers (``tensorboard.compat.proto``, which
import only protobuf) and frames them as TFRecords itself: uint64 length, masked CRC-32C of the
length, the data, masked CRC-32C of the data.

Why not TensorBoard's ``EventFileWriter`` or torch's ``SummaryWriter``: both import TensorFlow
when it is installed (``tensorboard.compat.tf``), and importing TensorFlow moves numpy's global
random state (measured: after ``np.random.seed(0)``, ``np.random.rand()`` gave 0.4376 instead of
0.5488), which a callback must never do. Writing synchronously also means nothing waits in a queue:
each ``flush`` puts every event on disk for a running TensorBoard.
"""

from __future__ import annotations

import importlib
import itertools
import os
import socket
import struct
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ww_callbacks.faults import not_writable

INSTALL_HINT = "pip install ww_callbacks[tensorboard]"

# ----------------------------------------------------------------------------- TFRecord framing


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, as TFRecords use it."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The masked CRC of TFRecords: rotate right by 15 bits, add 0xA282EAD8."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, data, masked CRC of the data."""
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", masked_crc32c(header)) + data
            + struct.pack("<I", masked_crc32c(data)))


# ----------------------------------------------------------------------------- protos


def _proto(name: str) -> Any:
    """A module of ``tensorboard.compat.proto`` (or the plugin's), with the install hint when
    TensorBoard is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(f"writing TensorBoard events needs the tensorboard package: "
                          f"{INSTALL_HINT}") from err


def layout_proto(layout: Mapping[str, Mapping[str, list]]) -> Any:
    """The ``layout_pb2.Layout`` of an ``add_custom_scalars``-style dict
    (``{category: {chart title: ["Multiline", [tag regexes]]}}``)."""
    layout_pb2 = _proto("tensorboard.plugins.custom_scalar.layout_pb2")
    return layout_pb2.Layout(category=[
        layout_pb2.Category(title=category, chart=[
            layout_pb2.Chart(title=title,
                             multiline=layout_pb2.MultilineChartContent(tag=list(spec[1])))
            for title, spec in charts.items()])
        for category, charts in layout.items()])


_WRITERS = itertools.count()


#: Most bytes an :class:`EventWriter` keeps in memory while its disk refuses them (a full
#: disk): a few analyses' scalars and histograms; beyond it the oldest waiting events are dropped.
MAX_PENDING = 16 << 20
#: Back-off between attempts to write to a disk that refused the last write: the first retry is
#: at once, then each wait doubles from this up to :data:`MAX_BACKOFF_S`.
FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 30.0


class EventWriter:
    """Writes TensorBoard event files into ``log_dir`` (created): no TensorFlow, no torch.

    Thread-safe (one lock around each event). ``filename_suffix``: appended to the file name.

    Events are buffered in memory and written by :meth:`flush` in whole records. A failed flush
    (a full disk) truncates the file back to its last complete record, keeps the events waiting
    (up to :data:`MAX_PENDING` bytes) and raises; later flushes retry the same file with a
    doubling back-off (:data:`FIRST_BACKOFF_S` to :data:`MAX_BACKOFF_S`; while waiting, a flush
    raises the last error again without touching the disk), so a disk that fills during a run
    costs neither a torn record nor one new events file per analysis."""

    def __init__(self, log_dir: str | os.PathLike, filename_suffix: str = ""):
        self._event_pb2 = _proto("tensorboard.compat.proto.event_pb2")
        self._summary_pb2 = _proto("tensorboard.compat.proto.summary_pb2")
        self.log_dir = os.fspath(log_dir)
        self._lock = threading.Lock()
        self._suffix = filename_suffix
        self._pending = bytearray()
        self._fd = -1
        self._good = 0  # bytes of complete records in the file
        self._error: OSError | None = None  # the last failed flush's error, while failing
        self._backoff = 0.0
        self._retry_at = 0.0
        self.dropped = 0  # bytes of waiting events dropped past MAX_PENDING
        try:
            os.makedirs(self.log_dir, exist_ok=True)
            self._open_file()
        except OSError as err:
            raise not_writable(self.log_dir, err) from err
        self._write(self._event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        try:
            self.flush()
        except OSError:  # a full disk already: the header waits, the next flushes retry
            pass

    def _open_file(self) -> None:
        """A new events file (exclusive creation, not through a symlink)."""
        # names sort in creation order (TensorBoard reads a folder's files by name): the
        # process's writer count breaks ties within one second (a sink reopened after a fault)
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_WRITERS):06d}.{id(self)}{self._suffix}")
        path = os.path.join(self.log_dir, name)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
                           | getattr(os, "O_CLOEXEC", 0), 0o644)
        self.path = path
        self._good = 0

    def new_file(self) -> None:
        """Continue in a new events file (the events still waiting go into it); the current
        file keeps its complete records."""
        header = tfrecord(self._event_pb2.Event(wall_time=time.time(),
                                                file_version="brain.Event:2").SerializeToString())
        with self._lock:
            old = self._fd
            self._open_file()
            self._pending[:0] = header
            self._retry_at = 0.0  # a new file: try it at once
        if old >= 0:
            os.close(old)

    @property
    def failing(self) -> bool:
        """True while the last flush failed (events are waiting)."""
        return self._error is not None

    # ------------------------------------------------------------------ events

    def _write(self, event: Any) -> None:
        record = tfrecord(event.SerializeToString())
        with self._lock:
            if self._fd < 0:
                raise ValueError("EventWriter is closed")
            self._pending += record
            if len(self._pending) > MAX_PENDING:  # the disk refuses them for long: the oldest
                cut = len(self._pending) - MAX_PENDING  # whole records go
                view, start = memoryview(self._pending), 0
                while start < cut:
                    start += 16 + struct.unpack("<Q", view[start:start + 8])[0]
                view.release()
                del self._pending[:start]
                self.dropped += start

    def _add(self, value: Any, global_step: int | None, walltime: float | None) -> None:
        event = self._event_pb2.Event(summary=self._summary_pb2.Summary(value=[value]),
                                      wall_time=time.time() if walltime is None else walltime)
        if global_step is not None:
            event.step = int(global_step)
        self._write(event)

    def add_scalar(self, tag: str, value: float, global_step: int | None = None,
                   walltime: float | None = None) -> None:
        """A scalar (Scalars tab)."""
        self._add(self._summary_pb2.Summary.Value(tag=tag, simple_value=float(value)),
                  global_step, walltime)

    def add_histogram(self, tag: str, values: Any, global_step: int | None = None,
                      walltime: float | None = None, bins: int = 30, **_: Any) -> None:
        """A histogram of ``values`` in ``bins`` equal bins (Histograms tab)."""
        pb = self._summary_pb2
        v = np.asarray(values, dtype=np.float64).ravel()
        counts, edges = np.histogram(v, bins=bins)
        hist = pb.HistogramProto(
            min=float(v.min()), max=float(v.max()), num=float(v.size), sum=float(v.sum()),
            sum_squares=float(np.dot(v, v)), bucket_limit=[float(e) for e in edges[1:]],
            bucket=[float(c) for c in counts])
        self._add(pb.Summary.Value(tag=tag, histo=hist), global_step, walltime)

    def add_png(self, tag: str, png: bytes, height: int, width: int,
                global_step: int | None = None, walltime: float | None = None) -> None:
        """An already encoded RGB PNG image (Images tab)."""
        pb = self._summary_pb2
        image = pb.Summary.Image(height=int(height), width=int(width), colorspace=3,
                                 encoded_image_string=png)
        self._add(pb.Summary.Value(tag=tag, image=image), global_step, walltime)

    def add_image(self, tag: str, image: Any, global_step: int | None = None,
                  walltime: float | None = None, dataformats: str = "HWC") -> None:
        """An ``(height, width, 3)`` uint8 image, stored as PNG (Images tab)."""
        from ww_callbacks.figures import rgb_to_png

        if dataformats != "HWC":
            raise ValueError("EventWriter.add_image takes HWC images")
        array = np.asarray(image, dtype=np.uint8)
        self.add_png(tag, rgb_to_png(array), array.shape[0], array.shape[1], global_step,
                     walltime)

    def add_text(self, tag: str, text: str, global_step: int | None = None,
                 walltime: float | None = None) -> None:
        """A markdown text (Text tab), as TensorBoard's text plugin stores it."""
        pb = self._summary_pb2
        tensor_pb2 = _proto("tensorboard.compat.proto.tensor_pb2")
        shape_pb2 = _proto("tensorboard.compat.proto.tensor_shape_pb2")
        types_pb2 = _proto("tensorboard.compat.proto.types_pb2")
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=[text.encode("utf-8")],
            tensor_shape=shape_pb2.TensorShapeProto(dim=[shape_pb2.TensorShapeProto.Dim(size=1)]))
        metadata = pb.SummaryMetadata(plugin_data=pb.SummaryMetadata.PluginData(
            plugin_name="text"))
        self._add(pb.Summary.Value(tag=tag, tensor=tensor, metadata=metadata), global_step,
                  walltime)

    def add_custom_scalars(self, layout: Mapping[str, Mapping[str, list]],
                           global_step: int = 0) -> None:
        """The custom-scalars layout (Custom Scalars tab): one string tensor holding the layout
        proto; the plugin reads the latest one."""
        pb = self._summary_pb2
        tensor_pb2 = _proto("tensorboard.compat.proto.tensor_pb2")
        shape_pb2 = _proto("tensorboard.compat.proto.tensor_shape_pb2")
        types_pb2 = _proto("tensorboard.compat.proto.types_pb2")
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=[layout_proto(layout).SerializeToString()],
            tensor_shape=shape_pb2.TensorShapeProto())
        metadata = pb.SummaryMetadata(plugin_data=pb.SummaryMetadata.PluginData(
            plugin_name="custom_scalars"))
        self._add(pb.Summary.Value(tag="custom_scalars__config__", tensor=tensor,
                                   metadata=metadata), global_step, None)

    # ------------------------------------------------------------------ file

    def flush(self, *, force: bool = False) -> None:
        """Put every event written so far on disk (visible to a running TensorBoard). Raises the
        OS's error when the disk refuses them (they stay waiting, the file ends on a complete
        record); while backing off after a failure, raises that error again without trying
        (``force``: try anyway)."""
        with self._lock:
            if self._fd < 0 or not self._pending:
                return
            if self._error is not None and not force and time.monotonic() < self._retry_at:
                raise OSError(self._error.errno, self._error.strerror)  # the same cause
            view = memoryview(self._pending)
            written = 0
            try:
                while written < len(view):
                    written += os.write(self._fd, view[written:])
            except OSError as err:
                view.release()
                try:  # no torn record: the file ends where the last flush ended
                    os.ftruncate(self._fd, self._good)
                except OSError:
                    pass
                self._error = err
                self._backoff = min(MAX_BACKOFF_S, self._backoff * 2 or FIRST_BACKOFF_S)
                self._retry_at = time.monotonic() + self._backoff
                raise
            view.release()
            self._good += written
            self._pending.clear()
            self._error, self._backoff, self._retry_at = None, 0.0, 0.0

    def close(self) -> None:
        """Flush (one last try, whatever the back-off) and close the file. Safe to call twice;
        raises when the last events could not be written (the file is closed all the same)."""
        with self._lock:
            fd = self._fd
        if fd < 0:
            return
        try:
            self.flush(force=True)
        finally:  # closed even when the flush fails (a full disk): no handle leaks
            with self._lock:
                self._fd = -1
                self._pending.clear()
            os.close(fd)


__all__ = ["EventWriter", "INSTALL_HINT", "MAX_PENDING", "crc32c", "layout_proto", "masked_crc32c",
           "tfrecord"]
