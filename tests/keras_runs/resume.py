"""A ``BackupAndRestore`` resume continues the policies' state, with one Keras backend in its own
process (KERAS_BACKEND is fixed at import).

    KERAS_BACKEND=jax python tests/keras_runs/resume.py OUT_DIR

A fit with :class:`HTSREarlyStopping` (plateau rule: every analysis after the first is a signal;
patience 100, so it never stops) is interrupted after its epoch-1 backup; the fit that
``BackupAndRestore`` resumes gets a fresh policy object, which must continue the streak kept in
``<backup_dir>/ww_state.json`` instead of starting at 0. Each check is reported by name
(:mod:`checks`).
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import keras
from checks import run_checks  # (this folder is on sys.path: scripts run as files)
from fit_digits import _data, _model

from ww_callbacks.history import load_history
from ww_callbacks.integrations.keras import STATE_FILE, WeightWatcherCallback
from ww_callbacks.policies import HTSREarlyStopping

BATCH = 128
EPOCH_STEPS = math.ceil(1797 / BATCH)


class Interrupt(keras.callbacks.Callback):
    """Fails the fit at the end of one epoch (after the callbacks before it saved)."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def _plateau() -> HTSREarlyStopping:
    return HTSREarlyStopping("plateau", patience=100, min_delta=100.0, verbose=False)


def _fit(out: Path, policy: HTSREarlyStopping, extra: list) -> None:
    backup = out / "backup"
    # wait="epoch": every epoch end has its own analysis decided on before the state is saved
    ww = WeightWatcherCallback(log_dir=out / "ww", tensorboard=False, traps_every=0,
                               max_duty=None, wait="epoch", policies=[policy],
                               backup_dir=backup)
    _model(3).fit(*_data(), epochs=4, batch_size=BATCH, verbose=0,
                  callbacks=[ww, keras.callbacks.BackupAndRestore(str(backup)), *extra])


def check_old_names() -> dict:
    """``every_n_batches`` and ``wandb_run`` still work, with a DeprecationWarning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cb = WeightWatcherCallback(every_n_batches=7, wandb_run=False, tensorboard=False)
    assert cb.cadence.every_n_steps == 7 and cb.wandb is False
    assert {str(w.message).split("'")[1] for w in caught
            if w.category is DeprecationWarning} == {"every_n_batches", "wandb_run"}, caught
    return {}


def check_resume(out: Path) -> dict:
    """The resumed fit continues the streak kept next to the backup's files."""
    first = _plateau()
    try:
        _fit(out, first, [Interrupt(1)])
    except RuntimeError:
        pass
    saved = json.loads((out / "backup" / STATE_FILE).read_text())
    assert sorted(saved, key=int) == [str(EPOCH_STEPS), str(2 * EPOCH_STEPS)], saved
    kept_streak = saved[str(2 * EPOCH_STEPS)]["policies"][0]["streak"]
    assert kept_streak == first.streak == 2, (kept_streak, first.streak)

    resumed = _plateau()
    _fit(out, resumed, [])
    steps = load_history(out / "ww", level="model").step.tolist()
    assert steps == [k * EPOCH_STEPS for k in range(5)], steps
    # epochs 2 and 3 continue the streak; a fresh policy would be at 1 (3E sets its best)
    assert resumed.streak == kept_streak + 2, resumed.streak
    assert resumed.best_alpha == first.best_alpha
    assert not (out / "backup").exists()  # removed with the backup at the end of the fit
    return {"kept_streak": kept_streak, "resumed_streak": resumed.streak, "steps": steps}


def main() -> None:
    out = Path(sys.argv[1])
    run_checks(out, keras.backend.backend(), [
        ("old_names", check_old_names),
        ("resume", lambda: check_resume(out)),
    ])


if __name__ == "__main__":
    main()
