"""Names and values of the scalars every integration logs, in one place.

Per layer: ``ww_alpha/<layer>``, ``ww_alpha_weighted/<layer>``, ``ww_traps/<layer>`` (analyses
with randomisation only). Per model: ``ww/alpha_mean``, ``ww/alpha_weighted_mean``,
``ww/log_norm_mean``, ``ww/num_traps``, ``ww/layers_over_trained`` (alpha < 2),
``ww/layers_under_trained`` (alpha > 6), ``ww/layers_failed``, ``ww/snapshots_dropped``.
"""

from __future__ import annotations

import math

import pandas as pd

from .analysis import summarize
from .powerlaw import OVER_TRAINED_ALPHA, SUCCESS, UNDER_TRAINED_ALPHA
from .tags import ALPHA, ALPHA_WEIGHTED, MODEL, TRAPS

#: Column of the analysis -> prefix of its per-layer tags (families of :mod:`.tags`).
LAYER_PREFIXES = {"alpha": ALPHA, "alpha_weighted": ALPHA_WEIGHTED, "rand_num_spikes": TRAPS}
#: Prefix of the model-level scalars (monitorable: ``ww/alpha_mean``, ...).
MODEL_PREFIX = MODEL + "/"
ALPHA_MEAN = "ww/alpha_mean"
NUM_TRAPS = "ww/num_traps"
DROPPED = "ww/snapshots_dropped"


def layer_tag(prefix: str, longname: str) -> str:
    """``prefix/longname``; TensorBoard and W&B both group by the part before the slash."""
    return f"{prefix}/{longname or 'root'}"


def model_summary(details: pd.DataFrame) -> dict[str, float]:
    """Model-level ``ww/`` scalars of one analysis (failed fits excluded from means)."""
    ok = details[details["status"] == SUCCESS]
    means = summarize(details)
    out = {
        ALPHA_MEAN: means.get("alpha", math.nan),
        "ww/alpha_weighted_mean": means.get("alpha_weighted", math.nan),
        "ww/log_norm_mean": means.get("log_norm", math.nan),
        "ww/layers_over_trained": float((ok["alpha"] < OVER_TRAINED_ALPHA).sum()),
        "ww/layers_under_trained": float((ok["alpha"] > UNDER_TRAINED_ALPHA).sum()),
        "ww/layers_failed": float(len(details) - len(ok)),
    }
    if "rand_num_spikes" in details.columns:
        traps = details["rand_num_spikes"]
        out[NUM_TRAPS] = float(traps[traps > 0].sum())
    return out


def layer_scalars(details: pd.DataFrame) -> dict[str, float]:
    """Per-layer scalars of one analysis (failed layers are left out: there is no value)."""
    out: dict[str, float] = {}
    ok = details[details["status"] == SUCCESS]
    for column, prefix in LAYER_PREFIXES.items():
        if column not in ok.columns:
            continue
        for longname, value in zip(ok["longname"], ok[column], strict=True):
            out[layer_tag(prefix, longname)] = float(value)
    return out
