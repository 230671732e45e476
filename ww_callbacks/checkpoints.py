"""Read checkpoints from disk one tensor at a time, for the command line (``ww-callbacks``).

:func:`open_checkpoint` turns a path into an ordered mapping ``name -> tensor`` whose values are
read only when the analysis converts them, so memory holds one layer at a time (the
``analyze`` loop converts, analyses and drops each layer before the next). Accepted:

- a ``.safetensors`` file: read with a small reader of the format (8-byte header length, JSON
  header, raw little-endian data) that ``seek``s to each tensor and reads just its bytes, so
  nothing of the file stays mapped (a memory map keeps every touched page in the resident set);
  bfloat16 is widened to float32 and float16 kept (``analyze`` upcasts it), per tensor;
- a folder of sharded safetensors with its ``model.safetensors.index.json``;
- a torch checkpoint (``torch.load(weights_only=True, mmap=True)``: never arbitrary unpickling):
  a state dict, or a checkpoint dict holding one under a usual key (Lightning's ``state_dict``,
  nanoGPT's ``model``, ``model_state_dict``, DeepSpeed's ``module``, ``ema``; see
  :mod:`ww_callbacks.state_dicts`);
- a Hugging Face model folder (``config.json`` beside ``model.safetensors``, sharded
  safetensors, or ``pytorch_model.bin`` files).

Order: names are sorted with numbers compared as numbers (``layers.2`` before ``layers.10``),
over the whole checkpoint, so a model gets the same ``layer_id`` whether it is stored in one file
or sharded (the safetensors format itself stores names sorted as strings).

Every problem with the input raises :class:`CheckpointError` with a one-line message saying what
was expected; the command line prints it and exits with status 2.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .state_dicts import (
    STATE_DICT_KEYS,
    FoundStateDict,
    describe,
    find_state_dict,
    strip_wrappers,
)

SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_INDEX = "pytorch_model.bin.index.json"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
#: A safetensors header larger than this is not a header (the format's own limit is 100 MB).
MAX_HEADER_BYTES = 100_000_000

_NUMPY_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_ITEM_BYTES = {"BF16": 2, **{k: np.dtype(v).itemsize for k, v in _NUMPY_DTYPES.items()}}


class CheckpointWeights(dict):
    """The ``name -> tensor`` mapping :func:`open_checkpoint` returns, with ``note`` (where in
    the file the weights were found and what was renamed, see
    :mod:`ww_callbacks.state_dicts`; None when there is nothing to say) and ``contents`` (what a
    torch checkpoint holds at its top level, for the message when no layer is found) and
    ``stored_order`` (the names in the file's own order, the model's for a torch file: which of
    two tied weights comes first, see :mod:`ww_callbacks.layers.tied`)."""

    def __init__(self, weights: Mapping[str, Any], *, note: str | None = None,
                 contents: str = "", stored_order: list[str] | None = None):
        super().__init__(weights)
        self.note = note
        self.contents = contents
        self.stored_order = stored_order


class CheckpointError(ValueError):
    """A path that is not a readable checkpoint; the message is one line saying what was
    expected."""


def natural_key(name: str) -> list:
    """Sort key that puts ``layers.2`` before ``layers.10``."""
    return [(1, int(part), "") if part.isdigit() else (0, 0, part)
            for part in re.split(r"(\d+)", name)]


class LazyTensor:
    """One tensor of a checkpoint: its shape is known, its values are read from disk each time
    it is converted to a numpy array (``np.asarray``), so nothing is kept once a layer is done."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype: str,
                 load: Callable[[], np.ndarray]):
        self.name = name
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self._load = load

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self._load()
        return arr if dtype is None else arr.astype(dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self)[index]

    def __repr__(self) -> str:
        return f"LazyTensor({self.name!r}, shape={self.shape}, dtype={self.dtype})"


# ----------------------------------------------------------------------------- safetensors


def _safetensors_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and the offset where its data starts; checks the
    file is long enough for every tensor the header lists."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes; expected "
                                  "an 8-byte header length, a JSON header, then tensor data)")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(f"{path}: truncated or not a safetensors file (header of "
                                  f"{length} bytes announced, file has {size} bytes)")
        try:
            header = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: not a safetensors file (header is not JSON: "
                                  f"{err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object)")
    header.pop("__metadata__", None)
    data_start = 8 + length
    needed = max((int(info["data_offsets"][1]) for info in header.values()), default=0)
    if data_start + needed > size:
        raise CheckpointError(f"{path}: truncated safetensors file (its header lists "
                              f"{data_start + needed} bytes, the file has {size})")
    return header, data_start


def _read_safetensor(path: Path, start: int, info: dict, name: str) -> np.ndarray:
    """Read one tensor's bytes (and only them) and return it as a numpy array."""
    dtype = info["dtype"]
    shape = tuple(int(s) for s in info["shape"])
    begin, end = (int(x) for x in info["data_offsets"])
    count = int(np.prod(shape, dtype=np.int64))
    if dtype not in _ITEM_BYTES:
        raise CheckpointError(f"{path}: tensor {name} has dtype {dtype}; readable dtypes are "
                              + ", ".join(sorted(_ITEM_BYTES)))
    if end - begin != count * _ITEM_BYTES[dtype]:
        raise CheckpointError(f"{path}: tensor {name} has {end - begin} bytes for shape {shape} "
                              f"of {dtype}")
    raw_dtype = np.uint16 if dtype == "BF16" else np.dtype(_NUMPY_DTYPES[dtype]).newbyteorder("<")
    with open(path, "rb") as fh:
        fh.seek(start + begin)
        arr = np.fromfile(fh, dtype=raw_dtype, count=count)
    if arr.size != count:
        raise CheckpointError(f"{path}: truncated safetensors file (tensor {name} is short)")
    if dtype == "BF16":  # bfloat16 is the top half of a float32: widen exactly
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False).reshape(shape)


def _safetensors_entries(path: Path) -> dict[str, LazyTensor]:
    header, start = _safetensors_header(path)
    entries = {}
    for name, info in header.items():
        try:
            shape = tuple(int(s) for s in info["shape"])
            dtype = str(info["dtype"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed safetensors header entry {name!r}") from None
        entries[name] = LazyTensor(
            name, shape, dtype,
            lambda path=path, start=start, info=info, name=name:
                _read_safetensor(path, start, info, name))
    return entries


def _sharded_safetensors(folder: Path, index_file: Path) -> dict[str, LazyTensor]:
    try:
        weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{index_file}: not a safetensors index (expected JSON with a "
                              f"'weight_map' of name -> shard file): {err}") from None
    entries: dict[str, LazyTensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = folder / shard
        if not shard_path.is_file():
            raise CheckpointError(f"{index_file} names shard {shard}, which is missing")
        entries.update(_safetensors_entries(shard_path))
    missing = set(weight_map) - set(entries)
    if missing:
        raise CheckpointError(f"{index_file}: {len(missing)} tensors of the index are in no shard"
                              f" (first: {sorted(missing)[0]})")
    return entries


# ----------------------------------------------------------------------------- torch


def _torch_entries(path: Path) -> dict[str, Any]:
    """A weights-only torch checkpoint's state dict (Lightning: its ``state_dict``), memory
    mapped when the file's format allows it."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading torch checkpoints needs torch "
                              "(pip install torch)") from None
    import pickle

    try:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):  # a legacy (non-zip) file cannot be memory mapped
                raise
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f"it holds a pickled {found.group(1)}" if found else "it holds pickled objects"
        raise CheckpointError(f"{path}: not a weights-only torch checkpoint ({what}; "
                              "ww-callbacks loads tensors only and never unpickles arbitrary "
                              "objects: save the state dict, or convert to .safetensors)") \
            from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint: {first}") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, expected a state dict "
                              "(name -> tensor) or a checkpoint dict holding one")
    found = find_state_dict(state)
    if not found.weights:
        raise CheckpointError(f"{path}: no weights found (looked for tensors at the top level "
                              f"and under {', '.join(STATE_DICT_KEYS)}); {describe(state)}")
    return CheckpointWeights(found.weights, note=found.note(), contents=describe(state))


def _sharded_torch(folder: Path, index_file: Path) -> dict[str, Any]:
    try:
        weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{index_file}: not a checkpoint index: {err}") from None
    entries: dict[str, Any] = {}
    for shard in sorted(set(weight_map.values())):
        entries.update(_torch_entries(folder / shard))
    return entries


# ----------------------------------------------------------------------------- public


def _folder_entries(folder: Path) -> dict[str, Any]:
    if (folder / SAFETENSORS_INDEX).is_file():
        return _sharded_safetensors(folder, folder / SAFETENSORS_INDEX)
    files = sorted(folder.glob("*.safetensors"))
    if files:
        entries: dict[str, Any] = {}
        for file in files:
            entries.update(_safetensors_entries(file))
        return entries
    if (folder / TORCH_INDEX).is_file():
        return _sharded_torch(folder, folder / TORCH_INDEX)
    torch_files = sorted(f for f in folder.iterdir() if f.suffix in TORCH_SUFFIXES)
    if len(torch_files) == 1:
        return _torch_entries(torch_files[0])
    raise CheckpointError(f"{folder}: no checkpoint found (expected *.safetensors, "
                          f"{SAFETENSORS_INDEX}, {TORCH_INDEX} or one of "
                          f"{'/'.join(TORCH_SUFFIXES)})")


def open_checkpoint(path: str | os.PathLike) -> CheckpointWeights:
    """The tensors of the checkpoint at ``path`` as an ordered ``name -> tensor`` mapping whose
    values are read lazily (safetensors) or memory mapped (torch); ``analyze`` accepts it as is.
    Names are those of the bare model (wrapper prefixes such as ``_orig_mod.`` removed, as the
    ``Watcher`` names layers); ``.note`` says where the weights were found.

    Raises :class:`CheckpointError` for a missing, unreadable, truncated or unsafe file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder (expected a checkpoint: "
                              ".safetensors, a torch/Lightning file or a model folder)")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: permission denied")
    try:
        if path.is_dir():
            entries = _folder_entries(path)
        elif path.suffix == ".safetensors":
            entries = _safetensors_entries(path)
        elif path.suffix == ".json" and path.name.endswith("index.json"):
            entries = (_sharded_safetensors(path.parent, path) if "safetensors" in path.name
                       else _sharded_torch(path.parent, path))
        else:
            entries = _torch_entries(path)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read: {err.strerror or err}") from None
    if not entries:
        raise CheckpointError(f"{path}: holds no tensors")
    note, contents = getattr(entries, "note", None), getattr(entries, "contents", "")
    entries, renamed = strip_wrappers(entries)
    if renamed and not note:
        note = FoundStateDict({}, renamed=renamed).note()
    return CheckpointWeights({name: entries[name] for name in sorted(entries, key=natural_key)},
                             note=note, contents=contents, stored_order=list(entries))


def iter_tensors(path: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, array)`` pairs of a checkpoint, one tensor read at a time, in model order;
    bfloat16/float16 tensors come as float32."""
    from .matrices import to_numpy

    for name, tensor in open_checkpoint(path).items():
        yield name, to_numpy(tensor if hasattr(tensor, "detach") else np.asarray(tensor))


__all__ = ["CheckpointError", "CheckpointWeights", "LazyTensor", "iter_tensors", "natural_key",
           "open_checkpoint"]
