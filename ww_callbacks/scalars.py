"""Names and values of the scalars every integration logs, in one place.

Per layer: ``ww_alpha/<layer>``, ``ww_alpha_weighted/<layer>``, ``ww_traps/<layer>`` (analyses
with randomisation only). Per model: ``ww/alpha_mean``, ``ww/alpha_weighted_mean``,
``ww/log_norm_mean``, ``ww/num_traps``, ``ww/layers_over_trained`` (alpha < 2),
``ww/layers_under_trained`` (alpha > 6), ``ww/layers_failed``, ``ww/layers_low_evidence``,
``ww/snapshots_dropped``, and ``ww/all/alpha_mean``, ``ww/all/alpha_weighted_mean``,
``ww/all/log_norm_mean``.

The means leave out the low-evidence layers: those whose spectrum has fewer than
``min_evals_for_trust`` eigenvalues (``num_evals``; the option, default 50). A 10-eigenvalue
output layer's alpha and its "5 traps" rest on 10 values and would move ``ww/alpha_mean`` as much
as a 768-eigenvalue block does. ``num_evals`` (not the fit's tail, ``num_pl_spikes``) decides:
it is fixed by the layer's shape, so a layer is low evidence for the whole run and the means do
not jump when a tail grows or shrinks. A model with no layer of that size (a small MLP) keeps
every layer in its means, since there is nothing better to average. The means over every layer
(WeightWatcher 0.7.7's summary, failed fits excluded) are ``ww/all/...``; with
``min_evals_for_trust=0`` the ``ww/`` means are those and no ``ww/all/`` scalar is logged. The
counts (traps, over- and under-trained, failed) cover every layer.
"""

from __future__ import annotations

import math

import pandas as pd

from .analysis import summarize
from .options import MIN_EVALS_FOR_TRUST
from .powerlaw import OVER_TRAINED_ALPHA, SUCCESS, UNDER_TRAINED_ALPHA
from .results import AnalysisResult
from .tags import ALPHA, ALPHA_WEIGHTED, MODEL, TRAPS

#: Column of the analysis -> prefix of its per-layer tags (families of :mod:`.tags`).
LAYER_PREFIXES = {"alpha": ALPHA, "alpha_weighted": ALPHA_WEIGHTED, "rand_num_spikes": TRAPS}
#: Prefix of the model-level scalars (monitorable: ``ww/alpha_mean``, ...).
MODEL_PREFIX = MODEL + "/"
ALPHA_MEAN = "ww/alpha_mean"
LOW_EVIDENCE = "ww/layers_low_evidence"
#: Prefix of the means over every layer (WeightWatcher's summary): ``ww/all/alpha_mean``, ...
ALL_PREFIX = MODEL_PREFIX + "all/"
#: Summary metric -> the name of its ``ww/`` mean.
MEANS = {"alpha": "alpha_mean", "alpha_weighted": "alpha_weighted_mean",
         "log_norm": "log_norm_mean"}
NUM_TRAPS = "ww/num_traps"
DROPPED = "ww/snapshots_dropped"


def layer_tag(prefix: str, longname: str) -> str:
    """``prefix/longname``; TensorBoard and W&B both group by the part before the slash."""
    return f"{prefix}/{longname or 'root'}"


def low_evidence(details: pd.DataFrame, min_evals_for_trust: int) -> pd.Series:
    """Which rows of ``details`` are low evidence: fewer than ``min_evals_for_trust``
    eigenvalues (``num_evals``; a row without the column or with NaN is not)."""
    if not min_evals_for_trust or "num_evals" not in details.columns:
        return pd.Series(False, index=details.index)
    return pd.to_numeric(details["num_evals"], errors="coerce") < min_evals_for_trust


def model_summary(details: pd.DataFrame, min_evals_for_trust: int = MIN_EVALS_FOR_TRUST
                  ) -> dict[str, float]:
    """Model-level ``ww/`` scalars of one analysis: failed fits excluded from the means, and
    the low-evidence layers (fewer than ``min_evals_for_trust`` eigenvalues) too, unless every
    layer is; the means over every layer as ``ww/all/...`` (see the module's documentation)."""
    ok = details[details["status"] == SUCCESS]
    low = low_evidence(details, min_evals_for_trust)
    everyone = summarize(details)
    means = summarize(details[~low]) if (~low).any() else everyone
    out = {f"{MODEL_PREFIX}{name}": means.get(metric, math.nan)
           for metric, name in MEANS.items()}
    out.update({
        "ww/layers_over_trained": float((ok["alpha"] < OVER_TRAINED_ALPHA).sum()),
        "ww/layers_under_trained": float((ok["alpha"] > UNDER_TRAINED_ALPHA).sum()),
        "ww/layers_failed": float(len(details) - len(ok)),
        LOW_EVIDENCE: float(low.sum()),
    })
    if min_evals_for_trust:
        out.update({f"{ALL_PREFIX}{name}": everyone.get(metric, math.nan)
                    for metric, name in MEANS.items()})
    if "rand_num_spikes" in details.columns:
        traps = details["rand_num_spikes"]
        out[NUM_TRAPS] = float(traps[traps > 0].sum())
    return out


def summarized_result(step: int, epoch: int | None, details: pd.DataFrame, *, wall_time: float,
                      duration_s: float, randomized: bool, spectra: dict,
                      min_evals_for_trust: int) -> AnalysisResult:
    """One analysis' :class:`~ww_callbacks.results.AnalysisResult`, its summary made with the
    ``min_evals_for_trust`` it records (the thread, the analysis process and a distributed
    merge all build it here, so the two never differ)."""
    return AnalysisResult(step, epoch, details, model_summary(details, min_evals_for_trust),
                          wall_time, duration_s, randomized, spectra,
                          min_evals_for_trust=min_evals_for_trust)


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
