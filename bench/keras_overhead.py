"""Keras ``model.fit`` on the TensorFlow backend with and without the WeightWatcherCallback.

    KERAS_BACKEND=tensorflow python bench/keras_overhead.py [--epochs 40 --repeats 3]

An MLP (hidden width 512) on scikit-learn's digits, the default callback (every epoch plus the
initial and final weights, traps on, ``max_duty="auto"``).
Runs alternate (without, with the analysis in a child process, with it in a thread, ...;
``--variants``; after a colon ``max_duty``, ``process:0.25``, ``thread:none``; after a
second colon ``notb``: no TensorBoard sink) after one warm-up fit of each; prints the median
wall time of each and the ratio with/without (target <= 1.05), the main-thread time of the
callback's hooks per epoch, and how many of the requested snapshots were analysed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _paired import paired_line  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from ww_callbacks.integrations.keras import WeightWatcherCallback  # noqa: E402


class HookTimer(WeightWatcherCallback):
    """The callback, timing its own hooks on the training thread."""

    spent = 0.0
    requested = 0
    analysed = 0

    def _timed(self, name, *args):
        start = time.perf_counter()
        getattr(super(), name)(*args)
        HookTimer.spent += time.perf_counter() - start

    def on_train_batch_begin(self, batch, logs=None):  # (no on_train_batch_end: defining one
        self._timed("on_train_batch_begin", batch, logs)  # makes Keras run every batch end
        # synchronously, which is what the callback avoids)

    def on_epoch_begin(self, epoch, logs=None):
        self._timed("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._timed("on_epoch_end", epoch, logs)

    def on_train_end(self, logs=None):
        self._timed("on_train_end", logs)
        HookTimer.requested += self.watcher.snapshots_taken
        HookTimer.analysed += self.watcher.results_delivered


def fit_once(epochs: int, with_callback: bool, log_dir: str,
             where: str | None = None, tiles: int = 1) -> float:
    """One fit; ``where``: ``analysis_in`` of the callback's session (through
    ``WW_CALLBACKS_ANALYSIS_IN``), optionally ``:max_duty`` (auto, none or a number)."""
    from ww_callbacks.worker import ANALYSIS_IN_ENV

    options = {}
    if where is not None and ":" in where:
        where, duty, *rest = where.split(":")
        options["max_duty"] = None if duty == "none" else duty if duty == "auto" else float(duty)
        if rest == ["notb"]:
            options["tensorboard"] = False

    if where is None:
        os.environ.pop(ANALYSIS_IN_ENV, None)
    else:
        os.environ[ANALYSIS_IN_ENV] = where
    digits = load_digits()
    x, y = (digits.data / 16.0).astype("float32"), digits.target.astype("int32")
    x, y = np.tile(x, (tiles, 1)), np.tile(y, tiles)  # --tiles: longer epochs
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512, activation="relu"),
                              keras.layers.Dense(512, activation="relu"), keras.layers.Dense(10)])
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callbacks = [HookTimer(log_dir=log_dir, **options)] if with_callback else []
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, callbacks=callbacks)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="process,thread")
    parser.add_argument("--tiles", type=int, default=1,
                        help="the digits repeated this many times per epoch (epochs of ~0.2 s "
                             "times this): the long-epoch case")
    args = parser.parse_args()
    variants = args.variants.split(",")
    load = open("/proc/loadavg").read().strip()
    print(f"backend {keras.backend.backend()}, {args.epochs} epochs of {args.tiles} x digits, "
          f"{args.repeats} repeats; "
          f"load {load}")
    spent = {v: 0.0 for v in variants}
    counts = {v: [0, 0] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        fit_once(2, False, tmp)
        for where in variants:
            fit_once(2, True, tmp, where)  # warm-up: graph tracing, imports, the process
        without: list[float] = []
        with_cb: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(args.repeats):
            without.append(fit_once(args.epochs, False, tmp, tiles=args.tiles))
            for where in variants:
                HookTimer.spent = 0.0
                HookTimer.requested = HookTimer.analysed = 0
                with_cb[where].append(fit_once(args.epochs, True,
                                               os.path.join(tmp, f"{where}{r}"), where,
                                               args.tiles))
                spent[where] += HookTimer.spent
                counts[where][0] += HookTimer.requested
                counts[where][1] += HookTimer.analysed
    base = statistics.median(without)
    print(f"without callback: median {base:.2f} s  runs {[round(t, 2) for t in without]}")
    for where in variants:
        ours = statistics.median(with_cb[where])
        per_epoch = spent[where] / (args.repeats * args.epochs) * 1e3
        print(f"with callback, analysis in a {where:12s}: median {ours:.2f} s ratio "
              f"{ours / base:.3f} runs {[round(t, 2) for t in with_cb[where]]}; hooks "
              f"{per_epoch:.2f} ms per epoch; analysed {counts[where][1]} of {counts[where][0]} "
              "requested")
        print(paired_line(where, with_cb[where], without))
    print("load after", open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
