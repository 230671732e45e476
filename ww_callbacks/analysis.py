"""``analyze()``: one row of HTSR metrics per layer, with WeightWatcher 0.7.7's column names.

The steps per layer: extract and select the weights (:mod:`ww_callbacks.layers`), build the scaled
float64 matrices (:mod:`ww_callbacks.matrices`), take their spectrum (:mod:`ww_callbacks.spectra`
or :mod:`ww_callbacks.spectra_torch`), fit the power law (:mod:`ww_callbacks.powerlaw`), then the
norm metrics, the optional Marchenko-Pastur fit and the optional randomisation (correlation traps).
Layers are analysed one at a time, so at most one layer's float64 working set is alive beyond the
spectra.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .layers import LayerWeights, Skip, extract_layers, select_layers
from .layers.base import CONV
from .layers.delta import base_weights, subtract_base
from .matrices import is_torch_tensor, layer_stack
from .metrics import detx_metrics, jensen_shannon_distance, norm_metrics
from .options import MAX_EVALS, MAX_N, MIN_EVALS
from .powerlaw import FAILED, PowerLawFit, failed_fit, fit_powerlaw
from .spectra import Spectrum, shuffled_spectrum, stack_spectrum

BASE_COLUMNS = [
    "layer_id", "name", "longname", "layer_type", "N", "M", "Q", "rf", "num_evals",
    "alpha", "xmin", "xmax", "D", "sigma", "num_pl_spikes", "alpha_weighted", "log_norm",
    "log_spectral_norm", "log_alpha_norm", "spectral_norm", "norm", "stable_rank",
    "matrix_rank", "entropy", "lambda_max", "sv_max", "sv_min", "rank_loss", "weak_rank_loss",
    "has_esd", "detX_num", "num_ERG_spikes", "ERG_gap", "detX_val", "detX_val_unrescaled",
    "status", "warning",
]
FINGER_COLUMNS = ["num_fingers", "raw_alpha"]
MP_COLUMNS = ["num_spikes", "sigma_mp", "mp_softrank", "W_scale", "bulk_max", "bulk_min"]
RANDOM_COLUMNS = [
    "rand_num_spikes", "num_traps", "max_rand_eval", "rand_distance", "ww_softrank", "ww_maxdist",
    "rand_sigma_mp", "rand_mp_softrank", "rand_W_scale", "rand_bulk_max", "rand_bulk_min",
]
SUMMARY_METRICS = [
    "log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm", "stable_rank",
    "mp_softrank",
]
#: Below this many eigenvalues (M * rf) the randomised spectrum pools 5 shuffles, as the reference.
FEW_EVALS_FOR_RANDOM = 100
#: The ``warning`` of a layer whose weights are not all finite (its row is ``failed``).
NON_FINITE = "weights contain NaN or Inf"
#: How a failed row's ``warning`` starts when the layer's weights could not be read (a dtype the
#: reader does not decode); the command line counts these rows under ``--fail-on``.
UNREADABLE = "weights could not be read"
DEFAULT_SEED = 0


def columns_for(*, randomize: bool = False, mp_fit: bool = False, fix_fingers: Any = None,
                pool: bool = True) -> list[str]:
    """The columns ``analyze`` returns for these options, in order."""
    cols = list(BASE_COLUMNS)
    if not pool:
        cols.insert(cols.index("num_evals") + 1, "slice_id")
    if fix_fingers:
        cols += FINGER_COLUMNS
    if mp_fit:
        cols += MP_COLUMNS
    if randomize:
        cols += RANDOM_COLUMNS
    return cols


class AnalysisCancelled(Exception):
    """Raised by :func:`analyze_layers` between two layers when its ``cancelled()`` check says
    so (training was interrupted: nobody waits for this analysis any more)."""


# ----------------------------------------------------------------------------- engines


class _NumpyEngine:
    """Matrices and spectra on the CPU with numpy (float64)."""

    def __init__(self, seed: int | None):
        self.rng = np.random.default_rng(seed)

    def stack(self, layer: LayerWeights, pool: bool) -> np.ndarray:
        return layer_stack(layer, pool=pool)

    def finite(self, stack: np.ndarray) -> bool:
        return bool(np.isfinite(stack).all())

    def spectrum(self, stack: np.ndarray) -> Spectrum:
        return stack_spectrum(stack)

    def shuffled(self, stack: np.ndarray, replicas: int) -> np.ndarray:
        return shuffled_spectrum(stack, self.rng, replicas)


class _TorchEngine:
    """Matrices and spectra with torch on ``device`` (a GPU when there is one)."""

    def __init__(self, device: Any, dtype: str, seed: int | None):
        import torch

        from . import spectra_torch

        self._st = spectra_torch
        self.device = spectra_torch.resolve_device(device)
        self.dtype = spectra_torch.torch_dtype(dtype)
        self.generator = torch.Generator(device=self.device)
        # mix the seed: a generator seeded like the one that drew the weights (torch.manual_seed(0)
        # is common) would shuffle them in a correlated order and fake correlation traps
        mixed = np.random.SeedSequence(DEFAULT_SEED if seed is None else seed).generate_state(2)
        self.generator.manual_seed(int(mixed[0]) << 32 | int(mixed[1]))

    def stack(self, layer: LayerWeights, pool: bool) -> Any:
        return self._st.torch_layer_stack(layer, self.device, self.dtype, pool=pool)

    def finite(self, stack: Any) -> bool:
        import torch

        return bool(torch.isfinite(stack).all())

    def spectrum(self, stack: Any) -> Spectrum:
        return self._st.torch_stack_spectrum(stack)

    def shuffled(self, stack: Any, replicas: int) -> np.ndarray:
        return self._st.torch_shuffled_spectrum(stack, self.generator, replicas)


def _pick_engine(layers: list[LayerWeights], device: Any, dtype: str, seed: int | None):
    """numpy unless ``device=`` is given or the weights already live on an accelerator."""
    if isinstance(device, str) and device == "auto":  # (see ww_callbacks.devices)
        device = None
    if device is None:
        for layer in layers:
            if is_torch_tensor(layer.weight) and layer.weight.device.type != "cpu":
                device = layer.weight.device
                break
    if device is None:
        if dtype != "float64":
            raise ValueError("dtype='float32' needs the torch path: pass device=")
        return _NumpyEngine(seed)
    return _TorchEngine(device, dtype, seed)


# ----------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class _Options:
    randomize: bool
    mp_fit: bool
    fix_fingers: Any
    pool: bool


def _fit_columns(fit: PowerLawFit, evals: np.ndarray, options: _Options) -> dict:
    row = {
        "alpha": fit.alpha, "xmin": fit.xmin, "xmax": fit.xmax, "D": fit.D, "sigma": fit.sigma,
        "num_pl_spikes": int(np.count_nonzero(evals >= fit.xmin)) if fit.ok else -1,
        "status": fit.status, "warning": fit.warning,
    }
    if options.fix_fingers:
        row["num_fingers"] = fit.num_fingers
        row["raw_alpha"] = fit.raw_alpha
    return row


def _mp_columns(evals: np.ndarray, N: int, M: int, prefix: str) -> dict:
    from .mp_fit import fit_mp

    names = ("num_spikes", "sigma_mp", "mp_softrank", "W_scale", "bulk_max", "bulk_min")
    try:
        fit = fit_mp(evals, N, M)
        values = (fit.num_spikes, fit.sigma_mp, fit.mp_softrank, fit.W_scale, fit.bulk_max,
                  fit.bulk_min)
    except (ValueError, FloatingPointError):
        values = (-1, -1.0, -1.0, -1.0, -1.0, -1.0)
    return {prefix + name: value for name, value in zip(names, values, strict=True)}


def _random_columns(engine, stack: Any, evals: np.ndarray, N: int, M: int, rf: int) -> dict:
    replicas = 5 if M * rf < FEW_EVALS_FOR_RANDOM else 1
    rand_evals = engine.shuffled(stack, replicas)
    # the reference draws a second shuffle for the distance; with one replica the first is an
    # equally random draw, so it is reused (a third of the cost of randomisation saved)
    second = rand_evals if replicas == 1 else engine.shuffled(stack, 1)
    row = {
        "max_rand_eval": float(rand_evals.max()),
        # (undefined for an all-zero matrix: a LoRA update before B moved, a layer equal to its
        # base; the distance divides by the spectra's sums)
        "rand_distance": jensen_shannon_distance(evals, second)
        if evals.sum() > 0 and second.sum() > 0 else math.nan,
        "ww_softrank": float(second.max() / evals.max()) if evals.max() > 0 else math.nan,
        "ww_maxdist": float(evals.max() - second.max()),
    }
    mp = _mp_columns(rand_evals, N, M, "rand_")
    row.update(mp)
    row["num_traps"] = row["rand_num_spikes"]
    row["_rand_evals"] = rand_evals  # for the pictures: the randomized ESD and its trap spikes
    return row


def _failed_row(reason: str, options: _Options) -> dict:
    row = _fit_columns(failed_fit(reason), np.empty(0), options)
    row["has_esd"] = False
    return row


def _spectrum_row(engine, stack: Any, N: int, M: int, rf: int, options: _Options) -> dict:
    """All metric columns of one stack of matrices (a layer, or one slice with pool=False)."""
    if M == 0 or N == 0:
        return _failed_row("empty weight", options)
    if not engine.finite(stack):
        return _failed_row(NON_FINITE, options)
    spec = engine.spectrum(stack)
    evals = spec.evals
    fit = fit_powerlaw(evals, fix_fingers=options.fix_fingers)
    row = {
        "num_evals": len(evals), "has_esd": True, "lambda_max": float(evals.max()),
        "sv_max": spec.sv_max, "sv_min": spec.sv_min, "rank_loss": spec.rank_loss,
    }
    row.update(_fit_columns(fit, evals, options))
    row.update(norm_metrics(evals, fit.alpha, N, fit.ok))
    row.update(detx_metrics(evals, row["num_pl_spikes"]))
    row["_evals"] = evals
    if options.mp_fit:
        row.update(_mp_columns(evals, N, M, ""))
    if options.randomize:
        row.update(_random_columns(engine, stack, evals, N, M, rf))
    return row


def _layer_rows(engine, layer: LayerWeights, options: _Options) -> Iterator[dict]:
    N, M, rf = layer.geometry()
    base = {
        "layer_id": layer.layer_id, "name": layer.name, "longname": layer.longname,
        "aliases": ", ".join(layer.aliases),
        "layer_type": layer.layer_type, "N": N, "M": M, "Q": N / M if M else -1.0, "rf": rf,
    }
    try:
        stack = engine.stack(layer, options.pool)
    except (TypeError, ValueError) as err:
        yield {**base, **_failed_row(f"{UNREADABLE}: {err}", options)}
        return
    if options.pool or layer.layout != CONV:
        row = {**base, **_spectrum_row(engine, stack, N, M, rf, options)}
        if not options.pool:
            row["slice_id"] = 0
        yield row
        return
    for slice_id in range(stack.shape[0]):
        row = _spectrum_row(engine, stack[slice_id:slice_id + 1], N, M, rf, options)
        yield {**base, "slice_id": slice_id, **row}


# ----------------------------------------------------------------------------- public API


def _progress_bar(items: list, progress: bool | None, desc: str):
    if progress is None:
        progress = sys.stderr.isatty() and len(items) > 1
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="layer")


def analyze_layers(layers: list[LayerWeights], *, skipped: list[Skip] | tuple = (),
                   randomize: bool = False, mp_fit: bool = False, fix_fingers: str | None = None,
                   pool: bool = True, device: Any = None, progress: bool | None = False,
                   dtype: str = "float64", seed: int | None = DEFAULT_SEED,
                   keep_spectra: bool = False,
                   cancelled: Callable[[], bool] | None = None,
                   base: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Analyse already extracted and selected layers (what :func:`analyze` does after choosing
    them; the background worker calls this on weight snapshots). With ``keep_spectra`` the
    eigenvalues are kept in ``df.attrs["spectra"]`` (longname -> ascending array) and, for the
    layers that were randomized, the randomized ones in ``df.attrs["rand_spectra"]`` (what the
    trap pictures draw: the shuffled ESD, its MP bulk edge ``rand_bulk_max`` and its
    ``rand_num_spikes`` largest eigenvalues, the traps).
    ``cancelled``: checked before each layer; when it returns True the analysis stops there
    with :class:`AnalysisCancelled` (so an interrupted run waits for one layer at most). ``base``:
    ``longname -> weight`` (same layout as the layer's); each layer is analysed as
    ``weight - base[longname]`` (see :mod:`ww_callbacks.layers.delta`)."""
    if base is not None:
        layers, unmatched = subtract_base(list(layers), base)
        skipped = [*skipped, *unmatched]
    if fix_fingers not in (None, False, "clip_xmax"):
        raise ValueError(f"fix_fingers must be None or 'clip_xmax', not {fix_fingers!r}")
    options = _Options(randomize, mp_fit, fix_fingers or None, pool)
    columns = columns_for(randomize=randomize, mp_fit=mp_fit, fix_fingers=fix_fingers, pool=pool)
    if any(layer.aliases for layer in layers):  # tied weights: the other names of the row
        columns.insert(columns.index("longname") + 1, "aliases")
    rows: list[dict] = []
    spectra: dict[str, np.ndarray] = {}
    rand_spectra: dict[str, np.ndarray] = {}
    if layers:
        engine = _pick_engine(layers, device, dtype, seed)
        for layer in _progress_bar(layers, progress, "analyze"):
            if cancelled is not None and cancelled():
                raise AnalysisCancelled(f"cancelled before layer {layer.longname}")
            for row in _layer_rows(engine, layer, options):
                evals = row.pop("_evals", None)
                rand_evals = row.pop("_rand_evals", None)
                if keep_spectra and evals is not None:
                    spectra[layer.longname] = evals
                if keep_spectra and rand_evals is not None:
                    rand_spectra[layer.longname] = np.sort(np.asarray(rand_evals))
                rows.append(row)
    df = pd.DataFrame(rows, columns=columns)
    df.attrs["skipped"] = [s.as_dict() for s in skipped]
    if keep_spectra:
        df.attrs["spectra"] = spectra
        if rand_spectra:
            df.attrs["rand_spectra"] = rand_spectra
    return df


def analyze_local(model: Any, *, layers: Any = None, min_evals: int = MIN_EVALS,
                  max_evals: int = MAX_EVALS, max_N: int = MAX_N, randomize: bool = False,
                  mp_fit: bool = False, fix_fingers: str | None = None, pool: bool = True,
                  device: Any = None, progress: bool | None = None, dtype: str = "float64",
                  seed: int | None = DEFAULT_SEED, keep_spectra: bool = False, base: Any = None,
                  adapters: str = "effective", tied: str = "once",
                  allow_hparams_types: bool = False) -> pd.DataFrame:
    """:func:`ww_callbacks.analyze` in this process alone (the options are its own, ``device``
    already resolved): extract, pair with ``base``, select, then :func:`analyze_layers`. The
    public ``analyze`` (:mod:`ww_callbacks.front_door`) calls it unless a process group of
    several ranks asks for the collective path."""
    found, skipped = extract_layers(model, adapters=adapters, tied=tied,
                                    allow_hparams_types=allow_hparams_types)
    if base is not None:
        found, unmatched = subtract_base(found, base_weights(extract_layers(
            base, allow_hparams_types=allow_hparams_types)[0]))
        skipped = skipped + unmatched
    kept, filtered = select_layers(found, layers, min_evals=min_evals, max_evals=max_evals,
                                   max_N=max_N, pool=pool)
    if not kept:  # (stacklevel: the caller of the front door's analyze)
        warnings.warn("no layer to analyse: the model has no supported layer within the limits",
                      stacklevel=3)
    return analyze_layers(kept, skipped=skipped + filtered, randomize=randomize, mp_fit=mp_fit,
                          fix_fingers=fix_fingers, pool=pool, device=device, progress=progress,
                          dtype=dtype, seed=seed, keep_spectra=keep_spectra)


def summarize(details: pd.DataFrame) -> dict[str, float]:
    """Model-level means of the reference's summary metrics over the layers whose fit succeeded
    (the reference averages failed fits' alpha = -1 too; this does not)."""
    if "status" in details.columns:
        details = details[details["status"] != FAILED]
    return {m: float(details[m].mean()) for m in SUMMARY_METRICS if m in details.columns}


def __getattr__(name: str) -> Any:
    """``analyze``, the public front door (:mod:`ww_callbacks.front_door`, which picks this
    module's local path or the collective one), for the old path
    ``from ww_callbacks.analysis import analyze``; ``InitialBase``, which moved to
    :mod:`ww_callbacks.session.host_copies` (with a :class:`DeprecationWarning`)."""
    if name == "analyze":
        from .front_door import analyze

        return analyze
    if name == "InitialBase":  # moved to the session (it keeps host copies of a run's weights)
        import warnings

        from .session.host_copies import InitialBase

        warnings.warn("ww_callbacks: ww_callbacks.analysis.InitialBase is deprecated, use "
                      "ww_callbacks.session.host_copies.InitialBase", DeprecationWarning,
                      stacklevel=2)
        return InitialBase
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["analyze_local", "analyze_layers", "summarize", "columns_for", "AnalysisCancelled",
           "Skip"]
