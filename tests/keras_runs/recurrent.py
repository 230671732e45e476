"""Keras recurrent layers on one backend, in its own process (KERAS_BACKEND is fixed at import).

    KERAS_BACKEND=jax python tests/keras_runs/recurrent.py OUT_DIR

A model with ``LSTM``, ``Bidirectional(GRU)`` and ``SimpleRNN`` is trained with ``model.fit`` and
watched by the Keras callback; every gate row must be the hand-cut block of the cell's kernel in
Keras's gate order (LSTM i, f, c, o; GRU z, r, h), analysed like a plain matrix. Prints one JSON
line; exits non-zero on a failed check.
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
from checks import run_checks  # (this folder is on sys.path: scripts run as files)

import ww_callbacks
from ww_callbacks.history import load_history
from ww_callbacks.integrations.keras import WeightWatcherCallback

L = keras.layers
T, F, H_LSTM, H_GRU, H_RNN = 6, 5, 12, 10, 9
GATES = {"lstm.lstm_cell": ("input", "forget", "cell", "output"),
         "bi.forward_gru.gru_cell": ("update", "reset", "new"),
         "bi.backward_gru.gru_cell": ("update", "reset", "new"),
         "rnn.simple_rnn_cell": ()}


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((T, F)),
        L.LSTM(H_LSTM, return_sequences=True, name="lstm"),
        L.Bidirectional(L.GRU(H_GRU, return_sequences=True), name="bi"),
        L.SimpleRNN(H_RNN, name="rnn"),
        L.Dense(1, name="head"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def _cells(model: keras.Model) -> dict[str, object]:
    bi = model.get_layer("bi")
    return {"lstm.lstm_cell": model.get_layer("lstm").cell,
            "bi.forward_gru.gru_cell": bi.forward_layer.cell,
            "bi.backward_gru.gru_cell": bi.backward_layer.cell,
            "rnn.simple_rnn_cell": model.get_layer("rnn").cell}


def check_gates(out: Path) -> dict:
    """Per-gate rows equal the hand-cut blocks; the callback watched them during fit."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, T, F)).astype("float32")
    y = x.sum(axis=(1, 2))[:, None].astype("float32") / 5
    model = _model()
    cb = WeightWatcherCallback(log_dir=out / "rnn", max_duty=None, tensorboard=False,
                               min_evals=1)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[cb])
    df = ww_callbacks.analyze(model, min_evals=1)
    by = df.set_index("longname")
    cells = _cells(model)
    checked = 0
    for cell_name, gates in GATES.items():
        cell = cells[cell_name]
        for attr in ("kernel", "recurrent_kernel"):
            full = np.asarray(keras.ops.convert_to_numpy(getattr(cell, attr)), dtype=np.float64)
            blocks = np.split(full, len(gates), axis=1) if gates else [full]
            for gate, block in zip(gates or ("",), blocks, strict=True):
                name = f"{cell_name}.{attr}" + (f".{gate}" if gate else "")
                row = by.loc[name]
                ref = ww_callbacks.analyze({"m": block}, min_evals=1).iloc[0]
                assert (row.N, row.M) == (max(block.shape), min(block.shape)), name
                for col in ("alpha", "lambda_max", "log_norm", "stable_rank", "entropy"):
                    assert abs(row[col] - ref[col]) <= 1e-9 * abs(ref[col]), (name, col)
                lam = np.linalg.eigvalsh(block.T @ block)[-1]
                assert abs(row.lambda_max - lam) <= 1e-9 * lam, name
                checked += 1
    types = df.set_index("longname").layer_type.to_dict()
    assert types["lstm.lstm_cell.kernel.forget"] == "lstm"
    assert types["bi.backward_gru.gru_cell.recurrent_kernel.new"] == "gru"
    assert types["rnn.simple_rnn_cell.kernel"] == "rnn"
    # the callback watched the gates during fit, and its last analysis is of the final weights
    history = load_history(out / "rnn")
    last = history[history.step == history.step.max()].set_index("longname")
    assert "lstm.lstm_cell.recurrent_kernel.forget" in last.index
    np.testing.assert_allclose(last.loc[df.longname].alpha, df.alpha, rtol=1e-9)
    return {"gate_rows": checked, "rows": len(df),
            "steps": [int(s) for s in sorted(set(history.step))]}


def main() -> None:
    out = Path(sys.argv[1])
    run_checks(out, keras.backend.backend(), [("gates", lambda: check_gates(out))])


if __name__ == "__main__":
    main()
