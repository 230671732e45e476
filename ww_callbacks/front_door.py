"""The public :func:`analyze` (``ww_callbacks.analyze``): picks the path for the model at hand,
so that the engine below it never calls up.

- one process (or a process group of one rank, or anything but a torch module): the engine's
  local path, :func:`ww_callbacks.analysis.analyze_local`;
- a torch module under a process group of several ranks (FSDP, FSDP2, tensor parallel,
  DeepSpeed ZeRO-3, DDP): the collective path,
  :func:`ww_callbacks.distributed.analyze_distributed`, which itself runs the engine on each
  rank's share of the layers.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .analysis import DEFAULT_SEED, analyze_local
from .devices import resolve_analysis_device
from .distributed.detect import wants_collective
from .options import MAX_EVALS, MAX_N, MIN_EVALS

__all__ = ["analyze"]


def analyze(model: Any, *, layers: Any = None, min_evals: int = MIN_EVALS,
            max_evals: int = MAX_EVALS, max_N: int = MAX_N, randomize: bool = False,
            mp_fit: bool = False, fix_fingers: str | None = None, pool: bool = True,
            device: Any = None,
            progress: bool | None = None, dtype: str = "float64",
            seed: int | None = DEFAULT_SEED, keep_spectra: bool = False, base: Any = None,
            adapters: str = "effective", tied: str = "once",
            allow_hparams_types: bool = False) -> pd.DataFrame:
    """Analyse every selected layer of ``model``; one row per layer (per slice with pool=False).

    ``model``: a torch module, a Keras 3 model, a mapping ``name -> array`` or a checkpoint path.
    Columns are the reference's (``alpha``, ``alpha_weighted``, ``log_norm``, ...); with
    ``randomize=True`` also the correlation-trap columns (``rand_num_spikes`` = ``num_traps``),
    with ``mp_fit=True`` the Marchenko-Pastur ones. ``device`` (``"cuda"``, ``"cpu"``, a
    ``torch.device``) computes spectra with torch there; weights already on a GPU are analysed
    on it; ``"auto"``: the GPU a torch model lives on, else numpy on the CPU.
    ``dtype='float32'`` (torch path only) trades ~1e-4 precision for speed. ``seed`` drives
    the private generator of the shuffles (the global random state is never touched).
    Layers passed over are listed, with the reason, in ``df.attrs["skipped"]``; with
    ``keep_spectra`` the eigenvalues are in ``df.attrs["spectra"]`` (longname -> array).

    ``base`` (a model, state dict or checkpoint path like ``model``, WeightWatcher's
    ``base_model``): analyse ``W - W_base`` per layer, layers paired by longname.
    ``adapters`` (peft LoRA layers): ``"effective"`` (default) analyses ``W0 + scaling * B @ A``,
    ``"only"`` the update ``scaling * B @ A``, ``"both"`` both (rows of ``layer_type="lora"``).
    ``tied``: a weight shared by several modules (``lm_head.weight is wte.weight``) is analysed
    ``"once"`` (default: one row under the first name, the other names in its ``aliases``
    column and in ``attrs["skipped"]`` as "tied to <name>") or ``"each"`` time, one row per
    module as WeightWatcher 0.7.7 does (sharded weights under a process group: each time).

    A checkpoint path is read as the command line reads it
    (:func:`ww_callbacks.checkpoints.open_checkpoint`: one tensor at a time, so memory holds one
    layer; ``.safetensors`` files validated, shard indexes, model folders, torch files loaded
    weights-only). ``allow_hparams_types=True`` also accepts torch checkpoints whose
    hyperparameters hold paths or ``argparse.Namespace`` (off by default). A tensor that cannot
    be read (an FP8 dtype) gives a failed row whose ``warning`` says why.

    Under a torch process group of more than one rank, ``analyze(torch_module)`` is a collective
    (FSDP, FSDP2, tensor parallel, DeepSpeed ZeRO-3, DDP): every rank must call it; each analyses
    about 1/R of the layers and all return the full frame
    (:func:`ww_callbacks.distributed.analyze_distributed`). Called on one rank only it raises
    instead of hanging. (``base`` and ``keep_spectra`` are not available there yet, nor
    ``adapters`` other than ``"effective"`` for sharded weights: a clear error says so.)
    """
    device = resolve_analysis_device(model, device)
    if not wants_collective(model):
        return analyze_local(model, layers=layers, min_evals=min_evals, max_evals=max_evals,
                             max_N=max_N, randomize=randomize, mp_fit=mp_fit,
                             fix_fingers=fix_fingers, pool=pool, device=device,
                             progress=progress, dtype=dtype, seed=seed,
                             keep_spectra=keep_spectra, base=base, adapters=adapters,
                             tied=tied, allow_hparams_types=allow_hparams_types)
    if base is not None or keep_spectra:
        raise NotImplementedError(
            "analyze(): base= and keep_spectra= are not supported under a process group of "
            "several ranks yet (there analyze(model) is a collective, each rank analysing "
            "its share); analyse a full state dict on one rank instead, e.g. "
            "analyze(get_model_state_dict(model, options=StateDictOptions("
            "full_state_dict=True)), base=...)")
    from .distributed.analyze import analyze_distributed  # imports torch.distributed

    return analyze_distributed(model, layers=layers, min_evals=min_evals,
                               max_evals=max_evals, max_N=max_N, randomize=randomize,
                               mp_fit=mp_fit, fix_fingers=fix_fingers, pool=pool,
                               device=device, progress=progress, dtype=dtype, seed=seed,
                               adapters=adapters)
