"""Find a distributed model's watched weights with their global shapes, and assemble each one's
full matrix on its owning rank only.

Kinds of weights, found per parameter:

- ``plain``: a replicated weight of a model that also has sharded ones: the owner copies its own
  (a model without sharded weights, e.g. under DDP, is a :class:`ReplicatedLayers`: its layers
  are found as a single process finds them, peft LoRA layers and ``adapters=`` included).
- ``dtensor``: FSDP2 / tensor parallelism. Sharded on one dimension of a 1-D mesh: the shards are
  gathered to the owner (``dist.gather``; the other ranks only send). Anything else (2-D meshes,
  HSDP, FSDP+TP, partial placements): ``full_tensor()`` on every rank, dropped at once except on
  the owner (one layer in flight).
- ``fsdp1``: ``FullyShardedDataParallel`` units (``use_orig_params`` True or False): global shapes
  from each unit's flat-parameter metadata; the matrices from a per-unit
  ``summon_full_params(recurse=False, writeback=False)``, the weights looked up again inside it.
- ``deepspeed``: ZeRO-3 parameters: their ``ds_tensor`` partitions gathered to the owner.

Live parameters are never converted: every matrix is copied first (``.numpy()`` on a live FSDP
parameter's storage makes it non-resizable and the next reshard fails).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..layers import LayerWeights, Skip, select_layers
from ..layers.torch_modules import module_layers, weight_attributes
from ..layers.wrappers import bare_modules
from .ownership import analysis_cost, assign_owners

PLAIN, DTENSOR, FSDP1, DEEPSPEED = "plain", "dtensor", "fsdp1", "deepspeed"
_FSDP1_ATTRIBUTES = ("weight", "in_proj_weight", "q_proj_weight", "k_proj_weight",
                     "v_proj_weight")


@dataclass
class WatchedParam:
    """One parameter that holds watched layers (several for a packed Q/K/V projection)."""

    module: Any
    attr: str
    shape: tuple[int, ...]
    dtype: Any
    kind: str
    unit: Any = None  # the FSDP1 unit whose flat parameter holds it
    layers: list[LayerWeights] = field(default_factory=list)  # shape-only (meta) weights
    positions: list[int] = field(default_factory=list)  # the layers' places in the frame
    owner: int = 0

    @property
    def nbytes(self) -> int:
        """Size of the full parameter."""
        import math

        return math.prod(self.shape) * self.dtype.itemsize


def _fsdp1_shapes(model: Any) -> dict[tuple[int, str], tuple[Any, tuple[int, ...], Any]]:
    """(id(module), attribute) -> (FSDP unit, global shape, dtype) from every FSDP1 unit's flat
    parameter metadata (valid whether or not the unit is sharded right now)."""
    import torch.distributed.fsdp as fsdp

    out: dict[tuple[int, str], tuple[Any, tuple[int, ...], Any]] = {}
    for unit in model.modules():
        if not isinstance(unit, fsdp.FullyShardedDataParallel):
            continue
        handle = getattr(unit, "_handle", None)
        if handle is None:
            continue
        flat = handle.flat_param
        for info, shape in zip(flat._param_infos, flat._shapes, strict=True):
            out[(id(info.module), info.param_name)] = (unit, tuple(int(s) for s in shape),
                                                       flat.dtype)
    return out


def _describe(module: Any, attr: str, fsdp1: dict) -> tuple[str, tuple[int, ...], Any, Any]:
    """(kind, global shape, dtype, FSDP1 unit) of one parameter."""
    from torch.distributed.tensor import DTensor

    if (id(module), attr) in fsdp1:
        unit, shape, dtype = fsdp1[(id(module), attr)]
        return FSDP1, shape, dtype, unit
    tensor = getattr(module, attr)
    if isinstance(tensor, DTensor):
        return DTENSOR, tuple(tensor.shape), tensor.dtype, None
    if hasattr(tensor, "ds_shape") and hasattr(tensor, "ds_tensor"):
        return DEEPSPEED, tuple(int(s) for s in tensor.ds_shape), tensor.dtype, None
    return PLAIN, tuple(tensor.shape), tensor.dtype, None


class _OwnedShare:
    """What a rank owns of ``self.params`` (each with ``owner`` and ``nbytes``): shared by the
    sharded and the replicated layer sets."""

    params: list[Any]
    rank: int

    @property
    def owned(self) -> list[Any]:
        """The parameters (weights) this rank analyses."""
        return [p for p in self.params if p.owner == self.rank]

    def owned_share_bytes(self, rank: int | None = None) -> int:
        """Bytes of the full weights ``rank`` (default: this one) owns."""
        rank = self.rank if rank is None else rank
        return sum(p.nbytes for p in self.params if p.owner == rank)


class ShardedLayers(_OwnedShare):
    """The watched layers of a (possibly sharded) model as every rank sees them: the same list,
    global shapes, names of the bare model, owners; :meth:`gather` assembles the owned ones.

    ``layers``, ``min_evals``, ``max_evals``, ``max_N``, ``pool``: the selection of
    :func:`ww_callbacks.analyze`. Call it on every rank (construction does not communicate;
    :meth:`gather` does).
    """

    def __init__(self, model: Any, layers: Any = None, *, min_evals: int | None = 8,
                 max_evals: int | None = 15000, max_N: int | None = 50000, pool: bool = True,
                 rank: int | None = None, world_size: int | None = None):
        import torch

        from ..layers.lora import is_lora_layer
        from .collective import rank_and_size

        if any(is_lora_layer(module) for module in model.modules()):
            # each LoRA layer would be read as its base layer plus its wrapper's own weight
            # (two rows, neither W0 + scaling * B @ A): refuse rather than report wrong rows
            raise NotImplementedError(
                "ww_callbacks: peft LoRA layers in a model sharded across ranks (FSDP, FSDP2, "
                "tensor parallel, ZeRO-3) are not supported yet; under DDP (replicated "
                "weights) they are")
        here, size = rank_and_size()
        self.rank = here if rank is None else rank
        self.world_size = size if world_size is None else world_size
        fsdp1 = _fsdp1_shapes(model)
        found: list[LayerWeights] = []
        skipped: list[Skip] = []
        param_of: dict[int, WatchedParam] = {}  # id(meta layer weight) -> its parameter
        for layer_id, (longname, module) in enumerate(bare_modules(model)):
            attrs = weight_attributes(module)
            if not attrs:
                attrs = [a for a in _FSDP1_ATTRIBUTES if (id(module), a) in fsdp1]
            for attr in attrs:
                kind, shape, dtype, unit = _describe(module, attr, fsdp1)
                param = WatchedParam(module, attr, shape, dtype, kind, unit)
                meta = torch.empty(shape, dtype=dtype, device="meta")
                is_attention = isinstance(module, torch.nn.MultiheadAttention)
                got, skip = module_layers(layer_id, longname, module,
                                          {attr: meta} if is_attention else meta)
                if skip is not None:
                    skipped.append(skip)
                for layer in got:
                    param_of[id(layer)] = param
                found.extend(got)
        kept, filtered = select_layers(found, layers, min_evals=min_evals, max_evals=max_evals,
                                       max_N=max_N, pool=pool)
        self.layers: list[LayerWeights] = kept  #: shape-only, in the order of the frame
        self.skipped: list[Skip] = skipped + filtered
        self.params: list[WatchedParam] = []
        for position, layer in enumerate(kept):
            param = param_of[id(layer)]
            if not param.layers:
                self.params.append(param)
            param.layers.append(layer)
            param.positions.append(position)
        costs = [sum(analysis_cost(layer) for layer in p.layers) for p in self.params]
        for param, owner in zip(self.params, assign_owners(costs, self.world_size), strict=True):
            param.owner = owner
        #: bytes of full matrices this rank assembled at the last gather (its owned share)
        self.gathered_bytes = 0
        #: the largest matrix or FSDP1 unit this rank held at once without owning it
        self.transient_bytes = 0

    def gather(self, device: Any = "cpu") -> list[tuple[int, LayerWeights]]:
        """Assemble the owned parameters' full matrices (a collective: call on every rank at the
        same point) and return ``(position, layer)`` for every owned layer, weights being private
        copies on ``device`` (None: the device the weights live on)."""
        full: dict[int, Any] = {}
        self.gathered_bytes = 0
        self.transient_bytes = 0
        units: list[Any] = []
        for param in self.params:
            if param.kind == FSDP1 and not any(param.unit is u for u in units):
                units.append(param.unit)
        for unit in units:
            self._gather_fsdp1(unit, full, device)
        for index, param in enumerate(self.params):
            fresh = True  # assembled here from copies: moved, not copied again
            if param.kind == DTENSOR:
                tensor, fresh = self._gather_dtensor(param)
            elif param.kind == DEEPSPEED:
                tensor = self._gather_deepspeed(param)
            elif param.kind == PLAIN:
                tensor = getattr(param.module, param.attr) if param.owner == self.rank else None
                fresh = False
            else:
                continue
            if tensor is not None:
                full[index] = _private_copy(tensor, device) if not fresh else \
                    tensor.to(tensor.device if device is None else device)
        out: list[tuple[int, LayerWeights]] = []
        for index, param in enumerate(self.params):
            if index not in full:
                continue
            weight = full[index]
            self.gathered_bytes += weight.numel() * weight.element_size()
            out.extend(zip(param.positions, _rebuild(param, weight), strict=True))
        return sorted(out, key=lambda item: item[0])

    # ------------------------------------------------------------------ per kind

    def _gather_fsdp1(self, unit: Any, full: dict[int, Any], device: Any) -> None:
        import torch.distributed.fsdp as fsdp

        mine = [(i, p) for i, p in enumerate(self.params) if p.unit is unit]
        with fsdp.FullyShardedDataParallel.summon_full_params(unit, recurse=False,
                                                              writeback=False):
            handle = unit._handle
            unit_bytes = handle.flat_param.numel() * handle.flat_param.element_size()
            if not any(p.owner == self.rank for _, p in mine):
                self.transient_bytes = max(self.transient_bytes, unit_bytes)
            for index, param in mine:
                if param.owner == self.rank:  # looked up again: the summon swapped the views
                    full[index] = _private_copy(getattr(param.module, param.attr), device)

    def _gather_dtensor(self, param: WatchedParam) -> tuple[Any, bool]:
        """(the full matrix on the owner, None elsewhere; whether it is a new tensor)."""
        import torch
        import torch.distributed as dist
        from torch.distributed.tensor import Replicate, Shard

        tensor = getattr(param.module, param.attr).detach()
        mesh = tensor.device_mesh
        placement = tensor.placements[0] if len(tensor.placements) == 1 else None
        if mesh.ndim == 1 and isinstance(placement, Replicate):
            return (tensor.to_local() if param.owner == self.rank else None), False
        group = mesh.get_group() if mesh.ndim == 1 else None
        members = dist.get_process_group_ranks(group) if group is not None else []
        if type(placement) is not Shard or param.owner not in members:
            whole = tensor.full_tensor()  # every rank: one layer in flight, kept by the owner
            if param.owner != self.rank:
                self.transient_bytes = max(self.transient_bytes, param.nbytes)
                return None, True
            return whole, True
        dim, size = placement.dim, len(members)
        length = param.shape[dim]
        sizes = [len(c) for c in torch.arange(length).chunk(size)]
        sizes += [0] * (size - len(sizes))
        local = tensor.to_local()
        me = members.index(self.rank)
        if local.shape[dim] != sizes[me]:
            raise RuntimeError(f"ww_callbacks: unexpected shard of {param.attr} "
                               f"({tuple(local.shape)} on rank {self.rank})")
        padded_shape = list(local.shape)
        padded_shape[dim] = max(sizes)
        send = local.new_zeros(padded_shape)
        send.narrow(dim, 0, sizes[me]).copy_(local)
        if param.owner != self.rank:
            dist.gather(send, None, dst=param.owner, group=group)
            return None, True
        received = [torch.empty_like(send) for _ in members]
        dist.gather(send, received, dst=param.owner, group=group)
        parts = [r.narrow(dim, 0, n) for r, n in zip(received, sizes, strict=True)]
        return torch.cat(parts, dim), True

    def _gather_deepspeed(self, param: WatchedParam) -> Any:
        import torch
        import torch.distributed as dist

        live = getattr(param.module, param.attr)
        group = getattr(live, "ds_process_group", None)
        members = dist.get_process_group_ranks(group) if group is not None else \
            list(range(dist.get_world_size()))
        send = live.ds_tensor.detach().reshape(-1).clone()
        numel = int(live.ds_numel)
        if param.owner != self.rank:
            dist.gather(send, None, dst=param.owner, group=group)
            return None
        received = [torch.empty_like(send) for _ in members]
        dist.gather(send, received, dst=param.owner, group=group)
        return torch.cat(received)[:numel].view(param.shape)


def _private_copy(tensor: Any, device: Any) -> Any:
    """A detached copy that shares no storage with a live parameter."""
    tensor = tensor.detach()
    target = tensor.device if device is None else device
    return tensor.to(target, copy=True)


def _rebuild(param: WatchedParam, weight: Any) -> list[LayerWeights]:
    """The parameter's layers with the full matrix in place of the shape-only stand-in."""
    import torch

    if isinstance(param.module, torch.nn.MultiheadAttention):
        layer0 = param.layers[0]
        longname = layer0.longname.rsplit(".", 1)[0]
        got, _ = module_layers(layer0.layer_id, longname, param.module, {param.attr: weight})
        by_name = {layer.longname: layer for layer in got}
        return [replace(layer, weight=by_name[layer.longname].weight) for layer in param.layers]
    return [replace(layer, weight=weight) for layer in param.layers]


@dataclass
class ReplicatedParam:
    """One watched layer of a replicated model and its owner (the interface of
    :class:`WatchedParam` that callers read)."""

    layers: list[LayerWeights]
    positions: list[int]
    owner: int
    nbytes: int


def _weight_bytes(layer: LayerWeights) -> int:
    """Bytes of one layer's full weight (a LoRA composite: its effective matrix, as float32)."""
    import math

    weight = layer.weight
    itemsize = getattr(getattr(weight, "dtype", None), "itemsize", 4)
    return math.prod(tuple(weight.shape)) * int(itemsize)


class ReplicatedLayers(_OwnedShare):
    """:class:`ShardedLayers` for a model whose weights every rank holds whole (DDP, or a plain
    module under a process group): the layers are found exactly as a single process finds them
    (:func:`ww_callbacks.layers.extract_layers`, so peft LoRA layers and ``adapters=`` are read
    the same way), every rank computes the same owners from their shapes, and :meth:`gather`
    only copies the owned ones (no communication; frozen weights and a LoRA layer's frozen
    ``W0`` copied once, see :class:`~ww_callbacks.snapshot.Snapshotter`).
    """

    def __init__(self, model: Any, layers: Any = None, *, min_evals: int | None = 8,
                 max_evals: int | None = 15000, max_N: int | None = 50000, pool: bool = True,
                 adapters: str = "effective", rank: int | None = None,
                 world_size: int | None = None):
        from ..layers import extract_layers
        from ..snapshot import Snapshotter
        from .collective import rank_and_size

        here, size = rank_and_size()
        self.rank = here if rank is None else rank
        self.world_size = size if world_size is None else world_size
        found, skipped = extract_layers(model, adapters=adapters)
        kept, filtered = select_layers(found, layers, min_evals=min_evals, max_evals=max_evals,
                                       max_N=max_N, pool=pool)
        self.layers: list[LayerWeights] = kept  #: live weights, in the order of the frame
        self.skipped: list[Skip] = skipped + filtered
        owners = assign_owners([analysis_cost(layer) for layer in kept], self.world_size)
        self.params = [ReplicatedParam([layer], [position], owner, _weight_bytes(layer))
                       for position, (layer, owner) in enumerate(zip(kept, owners, strict=True))]
        self._copier = Snapshotter([layer for p in self.owned for layer in p.layers])
        self.gathered_bytes = 0  #: bytes of the owned layers copied at the last gather
        self.transient_bytes = 0  #: nothing is held without being owned

    def gather(self, device: Any = "cpu") -> list[tuple[int, LayerWeights]]:
        """Private host copies of the owned layers, ``(position, layer)`` (no communication;
        ``device``, other than the CPU, receives the plain tensors' copies)."""
        copier = self._copier
        copies = [replace(layer, weight=copier.host_copy(layer.weight))
                  for layer in copier.layers]
        if device is not None and str(device) != "cpu":
            copies = [replace(layer, weight=layer.weight.to(device))
                      if hasattr(layer.weight, "to") and hasattr(layer.weight, "device")
                      else layer for layer in copies]
        self.gathered_bytes = sum(p.nbytes for p in self.owned)
        positions = [position for p in self.owned for position in p.positions]
        return list(zip(positions, copies, strict=True))

    def close(self) -> None:
        """Forget the frozen copies."""
        self._copier.close()


def watched_layers(model: Any, layers: Any = None, *, adapters: str = "effective",
                   **selection: Any) -> ShardedLayers | ReplicatedLayers:
    """The layers of ``model`` as every rank sees them, with their owners: a
    :class:`ShardedLayers` when some weight is split across ranks
    (:func:`~ww_callbacks.distributed.detect.is_sharded`), else a :class:`ReplicatedLayers`.
    ``selection``: ``min_evals``, ``max_evals``, ``max_N``, ``pool``, ``rank``, ``world_size``."""
    from .detect import is_sharded

    if not is_sharded(model):
        return ReplicatedLayers(model, layers, adapters=adapters, **selection)
    if adapters != "effective":
        raise NotImplementedError(
            f"ww_callbacks: adapters={adapters!r} is not supported when the weights are sharded "
            "across ranks (FSDP, FSDP2, tensor parallel, ZeRO-3) yet; leave adapters at "
            "'effective' (replicated weights, e.g. DDP, support every adapters= mode)")
    return ShardedLayers(model, layers, **selection)
