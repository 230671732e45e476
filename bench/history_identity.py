"""Are the history lines of a fixed-seed run the same as before? A check for refactors of the watch
session (issue 19): "behaviour and history lines stay as they are".

Trains four tiny fixed-seed runs, one per host: Lightning (digits MLP), Keras (digits MLP, torch
backend), the plain-torch ``Watcher`` (digits MLP) and a Hugging Face ``Trainer`` (tiny BERT from
``tests/distributed/hf_models.py``), each with ``wait="always"`` (and ``max_duty=None``) so every
requested step is analysed, whatever the machine's load. Each run is its own process (Keras fixes
its backend at import; no state is shared). Each history line is written back with what differs
from run to run removed: ``wall_time``, ``duration_s`` and the ``writer`` (run id, pid, host).

    python bench/history_identity.py write OUT_DIR       # the four normalised histories
    python bench/history_identity.py compare OLD NEW     # say what differs, line by line
    python bench/history_identity.py                     # write to a temporary folder and
                                                         # compare with tests/data/history_identity

Exit status 0 when identical, 1 when some line differs (each difference named: which host, which
line (step), which field, old and new value). The golden folder was written from ``ec64746`` (the
tree before the session refactor); a later change that adds a record field on purpose (another
issue) shows up here as that field, not as noise; the fields in ``ADDED_SINCE`` (each with its
reason) are removed from the new lines before the comparison.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "history_identity"
HOSTS = ("lightning", "keras", "torch", "transformers")
#: Fields that differ from run to run (clock, process), removed from each record.
VOLATILE = ("wall_time", "duration_s", "writer")
#: Fields added on purpose after the golden was written (by another issue), removed from the new
#: records before they are compared: (field, or ``summary.`` + key; a trailing ``*`` matches a
#: prefix) -> why. Everything else must stay byte-identical.
ADDED_SINCE = {
    "min_evals_for_trust": "issue 20: the low-evidence threshold each record was summarised with",
    "summary.ww/layers_low_evidence": "issue 20: layers fitted on fewer eigenvalues than that",
    "summary.ww/all/*": "issue 20: WeightWatcher's all-layer means, the ww/ means leave the "
                        "low-evidence layers out",
}
#: Since issue 20 the ``ww/`` means leave the low-evidence layers out; the golden's means (over
#: every layer, WeightWatcher's) are now ``ww/all/...``: new field -> the one compared with it.
COMPARED_AS = {f"ww/{name}": f"ww/all/{name}"
               for name in ("alpha_mean", "alpha_weighted_mean", "log_norm_mean")}


def normalise(history: Path) -> list[str]:
    """The history's lines with the volatile fields removed, keys sorted."""
    lines = []
    for line in history.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        for key in VOLATILE:
            record.pop(key, None)
        lines.append(json.dumps(record, sort_keys=True))
    return lines


# ---------------------------------------------------------------------------- the four runs
# (each runs in its own process: `python bench/history_identity.py run HOST LOG_DIR`)


def _digits():
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


def _torch_mlp():
    import torch
    import torch.nn as nn

    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                          nn.Linear(128, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _loader():
    import torch

    x, y = _digits()
    data = torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y))
    return torch.utils.data.DataLoader(data, batch_size=64, shuffle=True,
                                       generator=torch.Generator().manual_seed(0))


def run_lightning(log_dir: Path) -> None:
    import lightning as L
    import torch
    import torch.nn as nn

    from ww_callbacks.integrations.lightning import WeightWatcherCallback

    class MLP(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _torch_mlp()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    cb = WeightWatcherCallback(log_dir=log_dir, wait="always", max_duty=None,
                               every_n_train_steps=10)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, logger=False,
                        callbacks=[cb])
    trainer.fit(MLP(), _loader())


def run_keras(log_dir: Path) -> None:
    import keras

    from ww_callbacks.integrations.keras import WeightWatcherCallback

    x, y = _digits()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, activation="relu"),
                              keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cb = WeightWatcherCallback(log_dir=log_dir, wait="always", max_duty=None, tensorboard=False,
                               every_n_steps=10)
    model.fit(x, y, epochs=2, batch_size=64, verbose=0, shuffle=False, callbacks=[cb])


def run_torch(log_dir: Path) -> None:
    import torch
    import torch.nn as nn

    from ww_callbacks.integrations.torch import Watcher

    model = _torch_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with Watcher(model, log_dir=log_dir, tensorboard=False, every_n_steps=10, every_n_epochs=1,
                 optimizer=opt, wait="always", max_duty=None) as ww:
        for epoch in range(2):
            for x, y in _loader():
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                ww.step(epoch=epoch)
            ww.epoch_end(epoch)


def run_transformers(log_dir: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from transformers import Trainer, TrainingArguments

    from tests.distributed.hf_models import RandomTokens, tiny_bert
    from ww_callbacks.integrations.transformers import WeightWatcherCallback

    cb = WeightWatcherCallback(log_dir=str(log_dir), every_n_steps=5, wait="always",
                               max_duty=None, tensorboard=False)
    args = TrainingArguments(output_dir=str(log_dir / "hf"), num_train_epochs=2,
                             per_device_train_batch_size=8, logging_steps=5, report_to=[],
                             use_cpu=True, disable_tqdm=True, learning_rate=1e-3, seed=0,
                             save_strategy="no")
    Trainer(model=tiny_bert(), args=args, train_dataset=RandomTokens(), callbacks=[cb]).train()


def write(out: Path) -> None:
    """Run the four hosts (each in its own process) and write their normalised histories."""
    out.mkdir(parents=True, exist_ok=True)
    for host in HOSTS:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3",
                   "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "disabled"}
            env.pop("TENSORBOARD_LOGGING_DIR", None)
            subprocess.run([sys.executable, __file__, "run", host, tmp], check=True, env=env,
                           cwd=ROOT, timeout=900)
            lines = normalise(Path(tmp) / "ww_history.jsonl")
        (out / f"{host}.jsonl").write_text("".join(line + "\n" for line in lines))
        print(f"{host}: {len(lines)} lines", flush=True)


# ---------------------------------------------------------------------------- comparison


def _differences(old: dict, new: dict, where: str = "") -> list[str]:
    """Each field of two records that differs, as 'path: old -> new'."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{where}.{key}" if where else str(key)
            if key not in new:
                out.append(f"{path}: removed (was {old[key]!r})")
            elif key not in old:
                out.append(f"{path}: added ({new[key]!r})")
            else:
                out += _differences(old[key], new[key], path)
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{where}: {len(old)} items -> {len(new)}"]
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            name = a.get("longname", i) if isinstance(a, dict) else i
            out += _differences(a, b, f"{where}[{name}]")
        return out
    same = old == new or (old != old and new != new)  # NaN == NaN here
    return [] if same else [f"{where}: {old!r} -> {new!r}"]


def _matches(key: str, pattern: str) -> bool:
    return key.startswith(pattern[:-1]) if pattern.endswith("*") else key == pattern


def without_added(line: str) -> tuple[str, set[str]]:
    """A normalised line with the fields of :data:`ADDED_SINCE` removed and the means of
    :data:`COMPARED_AS` taken from their all-layer field, and what was done."""
    record, removed = json.loads(line), set()
    summary = record.get("summary")
    if isinstance(summary, dict):
        for name, compared in COMPARED_AS.items():
            if name in summary and compared in summary:
                summary[name] = summary[compared]
                removed.add(f"summary.{name} compared as summary.{compared}")
    for pattern in ADDED_SINCE:
        where, _, key = pattern.rpartition(".")
        holder = record.get(where) if where else record
        if not isinstance(holder, dict):
            continue
        for name in [k for k in holder if _matches(k, key)]:
            del holder[name]
            removed.add(pattern)
    return json.dumps(record, sort_keys=True), removed


def compare(old_dir: Path, new_dir: Path) -> bool:
    """Print, per host, whether the normalised histories are byte-identical (once the fields
    added on purpose since, :data:`ADDED_SINCE`, are removed), else what differs."""
    identical = True
    for host in HOSTS:
        old_path, new_path = old_dir / f"{host}.jsonl", new_dir / f"{host}.jsonl"
        if not old_path.exists() or not new_path.exists():
            print(f"{host}: missing ({old_path if not old_path.exists() else new_path})")
            identical = False
            continue
        old, new = old_path.read_bytes(), new_path.read_bytes()
        n = old.count(b"\n")
        if old == new:
            print(f"{host}: {n} lines, byte-identical (timestamps, durations, writer removed)")
            continue
        stripped = [without_added(line) for line in new.decode().splitlines()]
        if "".join(f"{line}\n" for line, _ in stripped).encode() == old:
            added = sorted(set().union(*(fields for _, fields in stripped)))
            print(f"{host}: {n} lines, byte-identical (timestamps, durations, writer removed) "
                  f"once the fields added since are removed: {', '.join(added)}")
            continue
        identical = False
        old_lines, new_lines = old.decode().splitlines(), new.decode().splitlines()
        print(f"{host}: DIFFERENT ({len(old_lines)} lines before, {len(new_lines)} after)")
        for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=False)):
            if a == b:
                continue
            ra, rb = json.loads(a), json.loads(b)
            for diff in _differences(ra, rb)[:12]:
                print(f"  line {i + 1} (step {ra.get('step')}): {diff}")
        for extra in old_lines[len(new_lines):]:
            print(f"  line only before: step {json.loads(extra).get('step')}")
        for extra in new_lines[len(old_lines):]:
            print(f"  line only after: step {json.loads(extra).get('step')}")
    return identical


def main(argv: list[str]) -> int:
    if argv[:1] == ["run"]:
        {"lightning": run_lightning, "keras": run_keras, "torch": run_torch,
         "transformers": run_transformers}[argv[1]](Path(argv[2]))
        return 0
    if argv[:1] == ["write"]:
        write(Path(argv[1]))
        return 0
    if argv[:1] == ["compare"]:
        return 0 if compare(Path(argv[1]), Path(argv[2])) else 1
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        print(f"compared with {GOLDEN.relative_to(ROOT)}:")
        return 0 if compare(GOLDEN, Path(tmp)) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
