"""``analyze(model)`` under a process group: a collective that returns the full frame on every
rank, each rank analysing the layers it owns."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..analysis import analyze_layers, columns_for
from .collective import handshake, run_everywhere
from .gather import watched_layers

_POSITION = "_ww_position"


def layer_seed(seed: int | None, position: int) -> int | None:
    """The seed of the layer at ``position``'s shuffles: one stream per layer, so the correlation
    traps do not depend on how the layers are split across ranks."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, position]).generate_state(1)[0])


def analyze_owned(owned: list[tuple[int, Any]], *, randomize: bool, **options: Any) -> \
        pd.DataFrame:
    """Rows of this rank's owned layers (``(position, layer)``), with their positions in a
    hidden column (for :func:`merge_rows`)."""
    frames = []
    if randomize:  # one generator per layer (see layer_seed)
        seed = options.pop("seed")
        for position, layer in owned:
            df = analyze_layers([layer], randomize=True, seed=layer_seed(seed, position),
                                **options)
            df[_POSITION] = position
            frames.append(df)
    elif owned:
        df = analyze_layers([layer for _, layer in owned], randomize=False, **options)
        layer_rows = df.groupby(["longname"], sort=False).ngroup()
        df[_POSITION] = [owned[i][0] for i in layer_rows]
        frames.append(df)
    spectra: dict = {}
    for df in frames:
        spectra.update(df.attrs.pop("spectra", {}))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    out.attrs["spectra"] = spectra
    return out


def merge_rows(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """Every rank's rows in the order of a single-process analysis."""
    frames = [df for df in frames if len(df)]
    if not frames:
        return pd.DataFrame(columns=columns)
    merged = pd.concat(frames, ignore_index=True).sort_values(_POSITION, kind="stable")
    return merged[columns].reset_index(drop=True)


def analyze_distributed(model: Any, *, layers: Any = None, min_evals: int = 8,
                        max_evals: int = 15000, max_N: int = 50000, randomize: bool = False,
                        mp_fit: bool = False, fix_fingers: str | None = None, pool: bool = True,
                        device: Any = None, progress: bool | None = False,
                        dtype: str = "float64", seed: int | None = 0,
                        timeout: float | None = None,
                        adapters: str = "effective") -> pd.DataFrame:
    """:func:`ww_callbacks.analyze` of a model trained on several ranks (FSDP, FSDP2, tensor
    parallel, DeepSpeed ZeRO-3, DDP): call it on every rank; each rank gathers and analyses about
    1/R of the layers; every rank returns the full frame. ``timeout``: seconds to wait for the
    other ranks to call it before raising (default ``collective.DEFAULT_TIMEOUT``).
    ``adapters``: as for :func:`ww_callbacks.analyze` (other than ``"effective"``: replicated
    weights only, see :func:`~.gather.watched_layers`).
    ``df.attrs["sharding"]`` says what this rank owned and gathered."""
    handshake("analyze(model)", timeout)
    sharded = watched_layers(model, layers, adapters=adapters, min_evals=min_evals,
                             max_evals=max_evals, max_N=max_N, pool=pool)
    owned = sharded.gather("cpu" if device is None else device)
    options = dict(mp_fit=mp_fit, fix_fingers=fix_fingers, pool=pool, device=device,
                   progress=False, dtype=dtype, seed=seed)
    frames = run_everywhere(lambda: analyze_owned(owned, randomize=randomize, **options))
    columns = columns_for(randomize=randomize, mp_fit=mp_fit, fix_fingers=fix_fingers, pool=pool)
    df = merge_rows(frames, columns)
    df.attrs["skipped"] = [s.as_dict() for s in sharded.skipped]
    df.attrs["sharding"] = {
        "rank": sharded.rank, "world_size": sharded.world_size,
        "owned_layers": [layer.longname for _, layer in owned],
        "gathered_bytes": sharded.gathered_bytes, "transient_bytes": sharded.transient_bytes,
        "owned_share_bytes": sharded.owned_share_bytes(),
        "max_param_bytes": max((p.nbytes for p in sharded.params), default=0),
        "total_bytes": sum(p.nbytes for p in sharded.params),
    }
    return df
