"""Read checkpoints from disk one tensor at a time, for the command line (``ww-callbacks``) and
``ww_callbacks.analyze(path)`` (both read through here).

:func:`open_checkpoint` turns a path into an ordered mapping ``name -> tensor`` whose values are
read only when the analysis converts them, so memory holds one layer at a time (the
``analyze`` loop converts, analyses and drops each layer before the next). Accepted:

- a ``.safetensors`` file: its header validated first (:mod:`ww_callbacks.safetensors_header`),
  then a small reader ``seek``s to each tensor and reads just its bytes, so nothing of the file
  stays mapped (a memory map keeps every touched page in the resident set); bfloat16 is widened
  to float32 and float16 kept (``analyze`` upcasts it), per tensor; a dtype it does not decode
  (FP8, FP4/FP6, complex) raises when that tensor is read, which ``analyze`` turns into a failed
  row with the reason;
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

Someone else's checkpoint: the files a shard index names stay in its folder (relative, no
``..``, no symbolic link out of it but links into the Hugging Face cache's ``blobs``), and
only regular files are opened (a FIFO is refused at once).

Every problem with the input raises :class:`CheckpointError` with a one-line message saying what
was expected (never bytes of a file that is not what it claims to be); the command line prints
it and exits with status 2.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .safetensors_header import HeaderError, TensorEntry, open_regular, read_header, shown
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
#: Largest index file read (a shard index of 100k tensors is ~10 MB).
MAX_INDEX_BYTES = 100_000_000
_NUMPY_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16,
    "U8": np.uint8, "BOOL": np.bool_,
}
#: Why the safetensors dtypes that this reader does not decode cannot be analysed.
_UNREADABLE_DTYPES = {
    **{d: "FP8 (its scales live in other tensors): dequantise to BF16/F16/F32 first"
       for d in ("F8_E4M3", "F8_E5M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ")},
    **{d: "a sub-byte float (FP4/FP6): dequantise to BF16/F16/F32 first"
       for d in ("F4", "F6_E2M3", "F6_E3M2")},
    "C64": "complex (spectra of complex weights are not analysed)",
}


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
    """Sort key that puts ``layers.2`` before ``layers.10``. Runs of digits compare by value
    (by length without leading zeros, then as text: no conversion of a 5000-digit run to an int),
    ties by their text."""
    key: list = []
    for part in re.split(r"(\d+)", name):
        if part.isdigit():
            value = part.lstrip("0")
            key.append((1, len(value), value, part))
        else:
            key.append((0, 0, part, ""))
    return key


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


# ----------------------------------------------------------------------------- paths


def _inside(folder: Path, name: Any, index_file: Path) -> Path:
    """The file ``name`` (read from ``index_file``) of ``folder``, refused unless it stays in the
    folder: a relative path without ``..``, resolving (symbolic links followed) inside the folder,
    a regular file (one exception: a link to a file of the Hugging Face cache, see
    :func:`_hf_cache_blob`)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise CheckpointError(f"{index_file}: a shard name is not a file name "
                              f"({shown(name) if isinstance(name, str) else type(name).__name__})")
    rel = PurePosixPath(name)
    if rel.is_absolute() or "\\" in name or ".." in rel.parts:
        raise CheckpointError(f"{index_file} names shard {shown(name)} outside its folder "
                              "(expected a file name in the index's folder)")
    return _member(folder, folder / rel, f"{index_file} names shard {shown(name)}")


def _hf_cache_blob(target: Path) -> bool:
    """True for a file of the Hugging Face cache, ``<cache>/models--<org>--<name>/blobs/<hash>``:
    the cache's snapshot folders, and the ``local_dir`` folders that ``huggingface_hub`` before
    0.23 wrote, link their files there (the one place a model folder's links may point)."""
    return target.parent.name == "blobs" and target.parent.parent.name.startswith(
        ("models--", "datasets--", "spaces--"))


def _member(folder: Path, path: Path, what: str) -> Path:
    """``path`` (a file of ``folder``) if it resolves inside the folder (or the Hugging Face
    cache's ``blobs``) and is a regular file; else :class:`CheckpointError` starting ``what``."""
    root = folder.resolve()
    try:
        target = path.resolve(strict=True)
    except FileNotFoundError:
        raise CheckpointError(f"{what}, which is missing") from None
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise CheckpointError(f"{what}, which cannot be resolved ({type(err).__name__})") \
            from None
    if not (target.is_relative_to(root) or _hf_cache_blob(target)):
        raise CheckpointError(f"{what}, a symbolic link to outside the folder (refused: a "
                              "checkpoint folder is read from inside itself)")
    mode = target.stat().st_mode
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{what}, which is not a regular file")
    return path


def _read_index(index_file: Path, what: str) -> dict[str, str]:
    """The ``weight_map`` (tensor name -> shard file) of a shard index."""
    try:
        with open_regular(index_file) as fh:
            raw = fh.read(MAX_INDEX_BYTES + 1)
        if len(raw) > MAX_INDEX_BYTES:
            raise CheckpointError(f"{index_file}: index larger than {MAX_INDEX_BYTES} bytes")
        weight_map = json.loads(raw.decode("utf-8"))["weight_map"]
    except HeaderError as err:
        raise CheckpointError(str(err)) from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError, TypeError,
            ValueError):
        raise CheckpointError(f"{index_file}: not {what} (expected UTF-8 JSON with a "
                              "'weight_map' of tensor name -> shard file)") from None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_file}: not {what} ('weight_map' is not an object of "
                              "tensor name -> shard file)")
    return weight_map


# ----------------------------------------------------------------------------- safetensors


def _read_safetensor(path: Path, entry: TensorEntry) -> np.ndarray:
    """Read one tensor's bytes (and only them) and return it as a numpy array."""
    dtype = entry.dtype
    if dtype in _UNREADABLE_DTYPES:
        raise CheckpointError(f"dtype {dtype} is {_UNREADABLE_DTYPES[dtype]}")
    raw_dtype = np.dtype("<u2") if dtype == "BF16" \
        else np.dtype(_NUMPY_DTYPES[dtype]).newbyteorder("<")
    count = entry.nbytes // raw_dtype.itemsize
    with open_regular(path) as fh:
        fh.seek(entry.begin)
        arr = np.fromfile(fh, dtype=raw_dtype, count=count)
    if arr.size != count:
        raise CheckpointError(f"{path}: truncated safetensors file (tensor {shown(entry.name)} "
                              "is short)")
    if dtype == "BF16":  # bfloat16 is the top half of a float32: widen exactly
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False).reshape(entry.shape)


def _safetensors_entries(path: Path) -> dict[str, LazyTensor]:
    try:
        header = read_header(path)
    except HeaderError as err:
        raise CheckpointError(str(err)) from None
    return {entry.name: LazyTensor(entry.name, entry.shape, entry.dtype,
                                   lambda path=path, entry=entry: _read_safetensor(path, entry))
            for entry in header.tensors}


def _sharded_safetensors(folder: Path, index_file: Path) -> dict[str, LazyTensor]:
    weight_map = _read_index(index_file, "a safetensors index")
    entries: dict[str, LazyTensor] = {}
    for shard in sorted(set(weight_map.values()), key=str):
        entries.update(_safetensors_entries(_inside(folder, shard, index_file)))
    missing = set(weight_map) - set(entries)
    if missing:
        raise CheckpointError(f"{index_file}: {len(missing)} tensors of the index are in no shard"
                              f" (first: {shown(min(missing))})")
    return entries


# ----------------------------------------------------------------------------- torch


#: What ``allow_hparams_types=True`` adds to torch's weights-only allowlist: standard-library
#: types that Lightning checkpoints' hyperparameters commonly hold, plain data with no code run
#: on load (a path, a namespace of values). Classes of the user's own code (an ``Enum``, a
#: dataclass of theirs) are loaded as inert placeholders (:func:`_placeholder`) instead: their
#: module is never imported, none of their code runs.
HPARAMS_TYPES = ("pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePath",
                 "pathlib.PurePosixPath", "pathlib.PureWindowsPath", "argparse.Namespace")
#: Most distinct classes replaced by placeholders in one checkpoint (each costs one more pass
#: over the checkpoint's pickle; its tensors are memory mapped, not read).
MAX_PLACEHOLDERS = 32
_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([A-Za-z_][\w.]{0,199})")


def _hparams_types() -> list[type]:
    import argparse
    import pathlib

    return [pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePath,
            pathlib.PurePosixPath, pathlib.PureWindowsPath, argparse.Namespace]


class HparamsPlaceholder:
    """What an object of a class outside the allowlist becomes with ``allow_hparams_types``:
    the arguments and state the pickle gave it, kept as data (``args``, ``state``); the real
    class is never imported."""

    qualified_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.state = args, kwargs or None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualified_name}{self.args!r}>"


def _placeholder(qualified: str) -> type:
    """A :class:`HparamsPlaceholder` subclass that torch's weights-only unpickler accepts under
    the name ``qualified`` (``module.Class``): it looks the class up by that name."""
    module, _, name = qualified.rpartition(".")
    return type(name, (HparamsPlaceholder,), {"__module__": module, "__qualname__": name,
                                              "qualified_name": qualified})


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = 0x80


def _torch_load(torch: Any, path: Path, allow_hparams_types: bool) -> Any:
    """``torch.load`` weights-only, memory mapped when the file is a zip archive (a legacy file
    cannot be). With ``allow_hparams_types`` the types of :data:`HPARAMS_TYPES` are allowed and
    any other class the unpickler refuses is replaced by a placeholder, then the file is read
    again (at most :data:`MAX_PLACEHOLDERS` classes)."""
    import pickle

    with open_regular(path) as fh:
        magic = fh.read(4)
    if not (magic == _ZIP_MAGIC or magic[:1] == bytes([_PICKLE_PROTOCOL])):
        raise CheckpointError(f"{path}: not a torch checkpoint (expected a zip archive written "
                              "by torch.save, or a legacy pickle stream)")
    extra = _hparams_types() if allow_hparams_types else []
    replaced: set[str] = set()
    while True:
        try:
            with torch.serialization.safe_globals(extra):
                return torch.load(str(path), map_location="cpu", weights_only=True,
                                  mmap=magic == _ZIP_MAGIC)
        except pickle.UnpicklingError as err:
            found = _GLOBAL.search(str(err))
            if (not allow_hparams_types or found is None or found.group(1) in replaced
                    or "." not in found.group(1) or len(replaced) >= MAX_PLACEHOLDERS):
                raise
            replaced.add(found.group(1))
            extra.append(_placeholder(found.group(1)))


def _torch_entries(path: Path, allow_hparams_types: bool = False) -> dict[str, Any]:
    """A weights-only torch checkpoint's state dict (Lightning: its ``state_dict``), memory
    mapped when the file's format allows it."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading torch checkpoints needs torch "
                              "(pip install torch)") from None
    import pickle

    try:
        state = _torch_load(torch, path, allow_hparams_types)
    except pickle.UnpicklingError as err:
        found = _GLOBAL.search(str(err))
        what = f"it holds a pickled {found.group(1)}" if found else "it holds pickled objects"
        hint = ""
        if found:
            hint = ("; if it is in a Lightning checkpoint's hyperparameters, "
                    "--allow-hparams-types (analyze(..., allow_hparams_types=True)) loads paths "
                    "and Namespaces, and objects of other classes as inert placeholders")
        raise CheckpointError(f"{path}: not a weights-only torch checkpoint ({what}; "
                              "ww-callbacks loads tensors only and never unpickles arbitrary "
                              "objects: save the state dict, or convert to .safetensors"
                              f"{hint})") from None
    except CheckpointError:
        raise
    except RuntimeError as err:  # torch's own words about the zip archive, one line
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else "RuntimeError"
        raise CheckpointError(f"{path}: not a readable torch checkpoint: {first}") from None
    except (EOFError, ValueError, OSError, IndexError, KeyError, TypeError, AttributeError,
            RecursionError, MemoryError, struct.error) as err:  # torch's words may echo bytes
        raise CheckpointError(f"{path}: not a readable torch checkpoint (it is cut short or "
                              f"not written by torch.save: {type(err).__name__})") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, expected a state dict "
                              "(name -> tensor) or a checkpoint dict holding one")
    found = find_state_dict(state)
    if not found.weights:
        raise CheckpointError(f"{path}: no weights found (looked for tensors at the top level "
                              f"and under {', '.join(STATE_DICT_KEYS)}); {describe(state)}")
    return CheckpointWeights(found.weights, note=found.note(), contents=describe(state))


def _sharded_torch(folder: Path, index_file: Path,
                   allow_hparams_types: bool = False) -> dict[str, Any]:
    weight_map = _read_index(index_file, "a torch checkpoint index")
    entries: dict[str, Any] = {}
    for shard in sorted(set(weight_map.values()), key=str):
        entries.update(_torch_entries(_inside(folder, shard, index_file), allow_hparams_types))
    return entries


# ----------------------------------------------------------------------------- public


def _folder_entries(folder: Path, allow_hparams_types: bool = False) -> dict[str, Any]:
    if (folder / SAFETENSORS_INDEX).exists():
        index = _member(folder, folder / SAFETENSORS_INDEX, f"{folder}: {SAFETENSORS_INDEX}")
        return _sharded_safetensors(folder, index)
    files = sorted(folder.glob("*.safetensors"))
    if files:
        entries: dict[str, Any] = {}
        for file in files:
            entries.update(_safetensors_entries(_member(folder, file, f"{folder}: {file.name}")))
        return entries
    if (folder / TORCH_INDEX).exists():
        return _sharded_torch(folder, _member(folder, folder / TORCH_INDEX,
                                              f"{folder}: {TORCH_INDEX}"), allow_hparams_types)
    torch_files = sorted(f for f in folder.iterdir() if f.suffix in TORCH_SUFFIXES)
    if len(torch_files) == 1:
        return _torch_entries(_member(folder, torch_files[0], f"{folder}: {torch_files[0].name}"),
                              allow_hparams_types)
    raise CheckpointError(f"{folder}: no checkpoint found (expected *.safetensors, "
                          f"{SAFETENSORS_INDEX}, {TORCH_INDEX} or one of "
                          f"{'/'.join(TORCH_SUFFIXES)})")


def open_checkpoint(path: str | os.PathLike, *,
                    allow_hparams_types: bool = False) -> CheckpointWeights:
    """The tensors of the checkpoint at ``path`` as an ordered ``name -> tensor`` mapping whose
    values are read lazily (safetensors) or memory mapped (torch); ``analyze`` accepts it as is.
    Names are those of the bare model (wrapper prefixes such as ``_orig_mod.`` removed, as the
    ``Watcher`` names layers); ``.note`` says where the weights were found.
    ``allow_hparams_types``: also load torch checkpoints whose other entries (a Lightning
    checkpoint's hyperparameters) hold the standard-library types of :data:`HPARAMS_TYPES`
    (paths, ``argparse.Namespace``); off by default.

    Raises :class:`CheckpointError` for a missing, unreadable, truncated or unsafe file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder (expected a checkpoint: "
                              ".safetensors, a torch/Lightning file or a model folder)")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"{path}: permission denied")
    if not path.is_dir() and not stat.S_ISREG(path.stat().st_mode):
        raise CheckpointError(f"{path}: not a regular file or folder (expected a checkpoint "
                              "file or a model folder)")
    try:
        if path.is_dir():
            entries = _folder_entries(path, allow_hparams_types)
        elif path.suffix == ".safetensors":
            entries = _safetensors_entries(path)
        elif path.suffix == ".json" and path.name.endswith("index.json"):
            entries = (_sharded_safetensors(path.parent, path) if "safetensors" in path.name
                       else _sharded_torch(path.parent, path, allow_hparams_types))
        else:
            entries = _torch_entries(path, allow_hparams_types)
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


__all__ = ["CheckpointError", "CheckpointWeights", "HPARAMS_TYPES", "LazyTensor", "iter_tensors",
           "natural_key", "open_checkpoint"]
