"""Which extracted layers are analysed: the user's ``layers=`` filter and the size limits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .base import LAYER_TYPES, LayerWeights
from .skips import Skip


def parse_layer_filter(spec: Iterable[int | str] | int | str | None):
    """Split a ``layers=`` spec into (keep ids, drop ids, types, keep names, drop names)."""
    if spec is None:
        return set(), set(), set(), set(), set()
    if isinstance(spec, (int, str)):
        spec = [spec]
    keep_ids, drop_ids, types, keep_names, drop_names = set(), set(), set(), set(), set()
    for item in spec:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise TypeError(f"layers= takes layer ids, type names or layer names, not {item!r}")
        if isinstance(item, int):
            (keep_ids if item >= 0 else drop_ids).add(abs(item))
        elif item.lower() in LAYER_TYPES:
            types.add(item.lower())
        elif item.startswith("-"):
            drop_names.add(item[1:])
        else:
            keep_names.add(item)
    if keep_ids and drop_ids:
        raise ValueError("layers=: ids must be all positive (keep) or all negative (drop)")
    if keep_names and drop_names:
        raise ValueError("layers=: names must be all kept or all dropped ('-name')")
    return keep_ids, drop_ids, types, keep_names, drop_names


def _passes(layer: LayerWeights, parsed) -> bool:
    keep_ids, drop_ids, types, keep_names, drop_names = parsed
    names = {layer.name, layer.longname}
    if keep_ids and layer.layer_id not in keep_ids:
        return False
    if layer.layer_id in drop_ids:
        return False
    if types and layer.layer_type not in types:
        return False
    if keep_names and not names & keep_names:
        return False
    return not names & drop_names


def size_problem(layer: LayerWeights, *, min_evals: int | None, max_evals: int | None,
                 max_N: int | None, pool: bool) -> str | None:
    """Why ``layer`` falls outside the size limits, or None when it is inside them."""
    N, M, rf = layer.geometry()
    num_evals = M * rf if pool else M
    if min_evals and num_evals < min_evals:
        return f"num_evals {num_evals} < min_evals {min_evals}"
    if max_evals and num_evals > max_evals:
        return f"num_evals {num_evals} > max_evals {max_evals}"
    if max_N and N > max_N:
        return f"N {N} > max_N {max_N}"
    return None


def select_layers(layers: Sequence[LayerWeights], spec=None, *, min_evals: int | None = 8,
                  max_evals: int | None = 15000, max_N: int | None = 50000,
                  pool: bool = True) -> tuple[list[LayerWeights], list[Skip]]:
    """Apply ``layers=`` and the limits; return the kept layers and a :class:`Skip` per other.

    ``spec``: non-negative ids keep, negative ids drop, type names (``"dense"``, ``"conv2d"``,
    ...) keep, names keep, ``"-name"`` drops; names match ``name`` or ``longname``. Criteria of
    different kinds must all hold. Limits: ``min_evals <= M*rf <= max_evals`` (``M`` alone with
    ``pool=False``) and ``N <= max_N``; 0 or None switches a limit off.
    """
    parsed = parse_layer_filter(spec)
    kept: list[LayerWeights] = []
    skipped: list[Skip] = []
    for layer in layers:
        if not _passes(layer, parsed):
            skipped.append(Skip(layer.layer_id, layer.name, layer.longname, "excluded by layers=",
                                layer.params))
            continue
        try:
            problem = size_problem(layer, min_evals=min_evals, max_evals=max_evals, max_N=max_N,
                                   pool=pool)
        except ValueError as err:
            problem = str(err)
        if problem:
            skipped.append(Skip(layer.layer_id, layer.name, layer.longname, problem, layer.params))
        else:
            kept.append(layer)
    return kept, skipped
