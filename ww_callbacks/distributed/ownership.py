"""Which rank analyses which weight: the same answer on every rank, from global shapes only."""

from __future__ import annotations

from collections.abc import Sequence

from ..layers import LayerWeights


def analysis_cost(layer: LayerWeights) -> float:
    """The analysis cost of one layer, ~ rf * (N*M^2 + M^3): the Gram matrix and its
    eigendecomposition for each of its rf slices."""
    N, M, rf = layer.geometry()
    return float(rf) * (float(N) * M * M + float(M) ** 3)


def assign_owners(costs: Sequence[float], world_size: int) -> list[int]:
    """The owning rank of each item: largest cost first, each to the least loaded rank (ties: the
    lowest rank). Deterministic, so every rank computes the same assignment without talking."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, not {world_size}")
    loads = [0.0] * world_size
    owners = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(world_size), key=lambda r: (loads[r], r))
        owners[index] = rank
        loads[rank] += costs[index]
    return owners
