"""See through the modules that only wrap a model (DDP, FSDP1 units, activation checkpointing,
``torch.compile``, DeepSpeed's engine, Lightning's and Fabric's wrappers), so a wrapped model's
layers get the names and ``layer_id`` s of the bare model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: Wrapper class name -> the attribute holding the wrapped module.
WRAPPED_ATTRIBUTE = {
    "DistributedDataParallel": "module",
    "FullyShardedDataParallel": "_fsdp_wrapped_module",
    "CheckpointWrapper": "_checkpoint_wrapped_module",
    "OffloadWrapper": "_checkpoint_wrapped_module",
    "OptimizedModule": "_orig_mod",
    "DeepSpeedEngine": "module",
    "_LightningModuleWrapperBase": "_forward_module",
    "_FabricModule": "_forward_module",
}


def wrapped_module(module: Any) -> Any:
    """The module ``module`` wraps, or None when it is not a known wrapper."""
    for cls in type(module).__mro__:
        attr = WRAPPED_ATTRIBUTE.get(cls.__name__)
        if attr is not None:
            inner = getattr(module, attr, None)
            if inner is not None and hasattr(inner, "named_modules"):
                return inner
    return None


def unwrap(model: Any) -> Any:
    """The innermost module under a chain of wrappers."""
    while (inner := wrapped_module(model)) is not None:
        model = inner
    return model


def bare_modules(model: Any) -> Iterator[tuple[str, Any]]:
    """``named_modules()`` of the model as if no wrapper were there: same order, same names
    (each module once, as ``named_modules`` does)."""
    memo: set[int] = set()

    def walk(module: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        inner = wrapped_module(module)
        if inner is not None:
            yield from walk(inner, prefix)
            return
        if id(module) in memo:
            return
        memo.add(id(module))
        yield prefix, module
        for name, child in module._modules.items():
            if child is not None:
                yield from walk(child, f"{prefix}.{name}" if prefix else name)

    yield from walk(model, "")
