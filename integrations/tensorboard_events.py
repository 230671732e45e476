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


class EventWriter:
    """Writes TensorBoard event files into ``log_dir`` (created): no TensorFlow, no torch.

    Thread-safe (one lock around each event). ``filename_suffix``: appended to the file name."""

    def __init__(self, log_dir: str | os.PathLike, filename_suffix: str = ""):
        self._event_pb2 = _proto("tensorboard.compat.proto.event_pb2")
        self._summary_pb2 = _proto("tensorboard.compat.proto.summary_pb2")
        self.log_dir = os.fspath(log_dir)
        os.makedirs(self.log_dir, exist_ok=True)
        self._lock = threading.Lock()
        # names sort in creation order (TensorBoard reads a folder's files by name): the
        # process's writer count breaks ties within one second (a sink reopened after a fault)
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_WRITERS):06d}.{id(self)}{filename_suffix}")
        self.path = os.path.join(self.log_dir, name)
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        self._write(self._event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()

    # ------------------------------------------------------------------ events

    def _write(self, event: Any) -> None:
        record = tfrecord(event.SerializeToString())
        with self._lock:
            self._file.write(record)

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

    def flush(self) -> None:
        """Put every event written so far on disk (visible to a running TensorBoard)."""
        with self._lock:
            if not self._file.closed:
                self._file.flush()

    def close(self) -> None:
        """Flush and close the file. Safe to call twice."""
        with self._lock:
            if not self._file.closed:
                try:
                    self._file.flush()
                finally:  # closed even when the flush fails (a full disk): no handle leaks
                    self._file.close()


__all__ = ["EventWriter", "INSTALL_HINT", "crc32c", "layout_proto", "masked_crc32c", "tfrecord"]
