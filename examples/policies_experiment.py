"""Do the HTSR policies help? Correlation traps, early stopping and per-layer LRs on digits.

An MLP (64 -> 512 -> 256 -> 10, ReLU) learns scikit-learn's digits (nothing is downloaded) with
mini-batch SGD (momentum 0.9, constant learning rate), analysed after every epoch by the torch
:class:`~ww_callbacks.integrations.torch.Watcher` (power-law alpha and correlation traps of each
layer). Three questions, each over several seeds:

(a) learning-rate sweep: which learning rates make correlation traps, after how many epochs
    (analyses) the first one is seen, and what they do to alpha and test accuracy;
(b) :class:`~ww_callbacks.policies.HTSREarlyStopping` (rule ``trap_alpha``, patience 3,
    ``restore_best_weights=True``) against training to the end, at every learning rate of the
    sweep (at the small ones any stop is a false alarm);
(c) :class:`~ww_callbacks.policies.LayerLRBalancer` (TempBalance: per-layer learning rate from
    alpha, ``[0.5, 1.5]`` x the learning rate, recomputed after every epoch) against the best
    single learning rate, both chosen on a validation split carved from the training set.

The data split is fixed (``numpy.random.default_rng(split_seed)``): 500 test images, and the rest
split into 997 to train on and 300 for validation. Every run of a seed starts from the same
initial weights and sees the batches in the same order (``torch.manual_seed`` and a
``torch.Generator``), so the runs of one seed differ only in learning rate and policy. The
watcher analyses every epoch's weights before the next epoch starts (``max_duty=None``,
``wait_idle``), so the policies decide on every analysis and the results do not depend on timing.

    python examples/policies_experiment.py                  # 5 seeds, 40 epochs (~5-10 min)
    python examples/policies_experiment.py --quick          # smoke run, well under a minute
    python examples/policies_experiment.py --out policies.json   # every per-seed number
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

from ww_callbacks.integrations.torch import Watcher
from ww_callbacks.policies import HTSREarlyStopping, LayerLRBalancer, param_groups_per_layer
from ww_callbacks.results import AnalysisResult

BASE_LR = 0.01
MULTIPLIERS = (1, 2, 4, 8, 16, 32)
QUICK_MULTIPLIERS = (1, 32)
BATCH_SIZE = 32
SPLIT_SEED = 0
#: ``min_evals`` of the balancer variant that leaves out the output layer (10 eigenvalues).
NOHEAD_MIN_EVALS = 50
KINDS = {"full": "none", "early_stop": "early_stop", "balance": "balance",
         "balance_nohead": "balance_nohead"}


# ----------------------------------------------------------------------------- data and model


@dataclass
class Data:
    """The fixed split of digits: train (fit), validation and test tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_data(split_seed: int = SPLIT_SEED, n_test: int = 500, n_val: int = 300) -> Data:
    """Digits scaled to [0, 1], split with a private ``numpy`` generator into train (the rest),
    validation (``n_val``) and test (``n_test``)."""
    digits = load_digits()
    order = np.random.default_rng(split_seed).permutation(len(digits.target))
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    test, val, train = (order[:n_test], order[n_test:n_test + n_val],
                        order[n_test + n_val:])
    return Data(x[train], y[train], x[val], y[val], x[test], y[test])


def make_model() -> nn.Sequential:
    """64 -> 512 -> 256 -> 10 MLP: 64, 256 and 10 eigenvalues per layer (the first layer's 64
    are all the 8 x 8 inputs allow)."""
    return nn.Sequential(OrderedDict(fc1=nn.Linear(64, 512), relu1=nn.ReLU(),
                                     fc2=nn.Linear(512, 256), relu2=nn.ReLU(),
                                     fc3=nn.Linear(256, 10)))


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``x`` classified as ``y``."""
    return float((model(x).argmax(1) == y).float().mean())


class _Collect:
    """A watcher sink that keeps every delivered analysis."""

    def __init__(self) -> None:
        self.results: list[AnalysisResult] = []

    def write(self, result: AnalysisResult, scalars: dict[str, float]) -> None:
        self.results.append(result)

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- one run


@dataclass
class Run:
    """What one training run recorded, epoch by epoch (index 0: the initial weights)."""

    lr: float
    seed: int
    policy: str
    test_acc: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    train_loss: list[float | None] = field(default_factory=list)  # None: before training
    min_alpha: list[float] = field(default_factory=list)  # per analysis, min over the layers
    traps: list[int] = field(default_factory=list)  # per analysis, sum over the layers
    alphas: list[dict[str, float]] = field(default_factory=list)
    trap_layers: list[dict[str, int]] = field(default_factory=list)
    epochs_run: int = 0
    stopped_epoch: int | None = None
    restored_epoch: int | None = None
    final_test_acc: float = math.nan  # of the model as the run leaves it (restored, if so)
    final_val_acc: float = math.nan
    lr_scales: list[dict[str, float]] = field(default_factory=list)  # balancer, per epoch
    stop_reason: str | None = None
    seconds: float = 0.0

    def first_trap_epoch(self) -> int | None:
        """Epochs trained when an analysis first showed a correlation trap (None: never)."""
        return next((e for e, t in enumerate(self.traps) if t > 0), None)


def train(data: Data, lr: float, seed: int, epochs: int, policy: str = "none") -> Run:
    """Train one model; ``policy``: ``"none"``, ``"early_stop"``, ``"balance"`` or
    ``"balance_nohead"`` (the balancer on the layers with at least :data:`NOHEAD_MIN_EVALS`
    eigenvalues: the 10-eigenvalue output layer keeps the plain learning rate)."""
    start = time.perf_counter()
    torch.manual_seed(seed)  # initial weights: the same for every run of this seed
    batches = torch.Generator().manual_seed(seed)  # batch order: the same too
    model = make_model()
    min_evals = NOHEAD_MIN_EVALS if policy == "balance_nohead" else 8
    policies: list[Any] = []
    if policy == "early_stop":
        policies.append(HTSREarlyStopping(restore_best_weights=True, verbose=False))
        params: Any = model.parameters()
    elif policy in ("balance", "balance_nohead"):
        policies.append(LayerLRBalancer())
        params = param_groups_per_layer(model, lr=lr, min_evals=min_evals)
    elif policy == "none":
        params = model.parameters()
    else:
        raise ValueError(f"unknown policy {policy!r}")
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    run = Run(lr=lr, seed=seed, policy=policy)
    run.test_acc.append(accuracy(model, data.x_test, data.y_test))
    run.val_acc.append(accuracy(model, data.x_val, data.y_val))
    run.train_loss.append(None)
    sink = _Collect()
    n = len(data.x_train)
    with Watcher(model, log_dir=None, every_n_steps=None, every_n_epochs=1, traps_every=1,
                 optimizer=opt, policies=policies, max_duty=None, tensorboard=False,
                 sinks=[sink], min_evals=min_evals) as ww:
        # the initial weights were snapshotted on entering; let their analysis finish, or the
        # end of the first epoch may replace it while the worker thread is still starting
        ww.wait_idle()
        for epoch in range(epochs):
            model.train()
            total = 0.0
            for idx in torch.randperm(n, generator=batches).split(BATCH_SIZE):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
                loss.backward()
                opt.step()
                ww.step(epoch=epoch)
                total += float(loss.detach()) * len(idx)
            ww.epoch_end(epoch)
            ww.wait_idle()  # decide on this epoch's analysis before the next epoch
            ww.poll(ww.global_step)
            model.eval()
            run.train_loss.append(total / n)
            run.test_acc.append(accuracy(model, data.x_test, data.y_test))
            run.val_acc.append(accuracy(model, data.x_val, data.y_val))
            run.epochs_run = epoch + 1
            if policy.startswith("balance"):
                run.lr_scales.append(dict(policies[0].current))
            if ww.should_stop:
                run.stopped_epoch = epoch + 1
                run.stop_reason = ww.stop_reason
                break
    # leaving the block delivered the last analysis and, after a stop, restored the weights
    steps_per_epoch = math.ceil(n / BATCH_SIZE)
    for result in sorted(sink.results, key=lambda r: r.step):
        details = result.details
        run.alphas.append({str(k): float(a) for k, a in zip(details["longname"],
                                                            details["alpha"], strict=True)})
        spikes = (details["rand_num_spikes"] if "rand_num_spikes" in details
                  else np.zeros(len(details)))
        run.trap_layers.append({str(k): int(s) for k, s in zip(details["longname"], spikes,
                                                               strict=True)})
        alphas = details["alpha"][details["status"] == "success"] if "status" in details \
            else details["alpha"]
        run.min_alpha.append(float(alphas.min()) if len(alphas) else math.nan)
        run.traps.append(int(np.nansum(spikes)))
        if result.step % steps_per_epoch:
            raise RuntimeError(f"analysis at step {result.step}: not at an epoch end")
    if ww.dropped or len(run.traps) != run.epochs_run + 1:
        raise RuntimeError(f"{len(run.traps)} analyses for {run.epochs_run} epochs (+ initial), "
                           f"{ww.dropped} dropped")
    for p in policies:
        restored = getattr(p, "restored_step", None)
        if restored is not None:
            run.restored_epoch = int(restored) // steps_per_epoch
    model.eval()
    run.final_test_acc = accuracy(model, data.x_test, data.y_test)
    run.final_val_acc = accuracy(model, data.x_val, data.y_val)
    run.seconds = time.perf_counter() - start
    return run


# ----------------------------------------------------------------------------- summaries


def _ms(values: Sequence[float], fmt: str = ".3f") -> str:
    """``mean ± std`` (sample std) of the finite values, ``-`` when there are none."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if not len(v):
        return "-"
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return f"{v.mean():{fmt}} ± {std:{fmt.lstrip('+')}}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _mult(lr: float, base_lr: float) -> str:
    return f"{lr:g} ({lr / base_lr:g}x)"


def part_a(sweep: dict[float, list[Run]], base_lr: float) -> str:
    """Per learning rate: accuracy, traps, min alpha and when the first trap appeared."""
    rows = []
    for lr, runs in sweep.items():
        first = [r.first_trap_epoch() for r in runs]
        seen = [f for f in first if f is not None]
        rows.append([
            _mult(lr, base_lr),
            _ms([r.test_acc[-1] for r in runs]),
            _ms([max(r.test_acc[1:]) for r in runs]),
            f"{sum(f is not None for f in first)}/{len(runs)}",
            f"{sum(r.traps[-1] > 0 for r in runs)}/{len(runs)}",
            _ms([r.traps[-1] for r in runs], ".1f"),
            _ms([r.min_alpha[-1] for r in runs], ".2f"),
            _ms(seen, ".1f") if seen else "-",
            f"{min(seen)}-{max(seen)}" if seen else "-",
        ])
    return _table(["LR", "test acc (end)", "test acc (best epoch)", "seeds with traps (ever)",
                   "seeds with traps (end)", "traps at end (sum of layers)",
                   "min alpha (end)", "epochs to first trap", "range"], rows)


def part_a_layers(sweep: dict[float, list[Run]], base_lr: float) -> str:
    """Per learning rate and layer: alpha and traps at the end (mean over the seeds)."""
    rows = []
    for lr, runs in sweep.items():
        for name in runs[0].alphas[-1]:
            rows.append([_mult(lr, base_lr), name,
                         _ms([r.alphas[-1][name] for r in runs], ".2f"),
                         _ms([r.trap_layers[-1][name] for r in runs], ".1f")])
    return _table(["LR", "layer", "alpha (end)", "traps (end)"], rows)


def part_b(sweep: dict[float, list[Run]], stopped: dict[float, list[Run]],
           base_lr: float) -> str:
    """Early stopping against training to the end, per learning rate."""
    rows = []
    for lr, runs in stopped.items():
        full = sweep[lr]
        n_stop = sum(r.stopped_epoch is not None for r in runs)
        saved = [len(f.test_acc) - 1 - r.epochs_run for r, f in zip(runs, full, strict=True)]
        diff = [r.final_test_acc - f.final_test_acc for r, f in zip(runs, full, strict=True)]
        rows.append([
            _mult(lr, base_lr), f"{n_stop}/{len(runs)}",
            _ms([r.stopped_epoch for r in runs if r.stopped_epoch is not None], ".1f"),
            _ms([r.restored_epoch for r in runs if r.restored_epoch is not None], ".1f"),
            _ms([r.epochs_run for r in runs], ".1f"), _ms(saved, ".1f"),
            _ms([f.final_test_acc for f in full]),
            _ms([r.test_acc[-1] for r in runs if r.stopped_epoch is not None]),
            _ms([r.final_test_acc for r in runs]), _ms(diff, "+.3f"),
        ])
    return _table(["LR", "stopped", "stop epoch", "restored epoch", "epochs run",
                   "epochs saved", "test acc, to the end", "test acc at the stop (stopped runs)",
                   "test acc, early stopping (restored if stopped)",
                   "difference (ES - end)"], rows)


def part_c(sweep: dict[float, list[Run]], variants: dict[str, dict[float, list[Run]]],
           base_lr: float) -> tuple[str, str, dict[str, Any]]:
    """Best single learning rate (by validation) against each balancer variant (``variants``:
    label -> runs per learning rate); the whole grid too."""

    def best_by_val(store: dict[float, list[Run]]) -> float:
        val = {lr: float(np.mean([r.final_val_acc for r in runs])) for lr, runs in store.items()}
        return max(val, key=lambda lr: val[lr])

    def test(runs: list[Run]) -> str:
        return _ms([r.final_test_acc for r in runs])

    best_single = best_by_val(sweep)
    grid = []
    for lr in sweep:
        row = [_mult(lr, base_lr), _ms([r.final_val_acc for r in sweep[lr]]), test(sweep[lr])]
        for store in variants.values():
            d = [b.final_test_acc - s.final_test_acc
                 for b, s in zip(store[lr], sweep[lr], strict=True)]
            row += [_ms([r.final_val_acc for r in store[lr]]), test(store[lr]), _ms(d, "+.3f")]
        grid.append(row)
    header = ["LR", "val acc, single LR", "test acc, single LR"]
    for label in variants:
        header += [f"val acc, {label}", f"test acc, {label}", f"{label} - single (test)"]
    pick = [["best single LR (by val)", _mult(best_single, base_lr), test(sweep[best_single])],
            ["single LR at the base LR", _mult(base_lr, base_lr), test(sweep[base_lr])]]
    best: dict[str, Any] = {"best_single_lr": best_single}
    for label, store in variants.items():
        own = best_by_val(store)
        best[f"best_lr {label}"] = own
        pick += [[f"{label} at the best single LR", _mult(best_single, base_lr),
                  test(store[best_single])],
                 [f"{label} at its own best LR (by val)", _mult(own, base_lr), test(store[own])],
                 [f"{label} at the base LR", _mult(base_lr, base_lr), test(store[base_lr])]]
    return (_table(header, grid), _table(["setting", "LR", "test acc (mean ± std)"], pick),
            best)


# ----------------------------------------------------------------------------- driver


def run_experiment(seeds: int = 5, epochs: int = 40, multipliers: Sequence[float] = MULTIPLIERS,
                   base_lr: float = BASE_LR, verbose: bool = True) -> dict[str, Any]:
    """Run parts (a), (b) and (c); returns the tables (Markdown) and every run's numbers."""
    torch.set_num_threads(1)  # small models; other work shares the CPU
    data = load_data()
    lrs = [base_lr * m for m in multipliers]
    if base_lr not in lrs:
        lrs.insert(0, base_lr)
    start = time.perf_counter()
    runs: dict[str, dict[float, list[Run]]] = {kind: {} for kind in KINDS}
    for lr in lrs:
        for kind, policy in KINDS.items():
            runs[kind][lr] = [train(data, lr, seed, epochs, policy) for seed in range(seeds)]
        if verbose:
            print(f"lr {lr:g}: done after {time.perf_counter() - start:.0f} s", flush=True)
    sweep, stopped = runs["full"], runs["early_stop"]
    # the early-stopping runs must follow the same path as the full runs until they stop
    same_path = all(
        np.allclose(r.test_acc, f.test_acc[:len(r.test_acc)])
        for lr in lrs for r, f in zip(stopped[lr], sweep[lr], strict=True))
    # restored weights must score what the full run scored at the restored epoch
    restored_ok = all(
        math.isclose(r.final_test_acc, f.test_acc[r.restored_epoch])
        for lr in lrs for r, f in zip(stopped[lr], sweep[lr], strict=True)
        if r.restored_epoch is not None)
    grid, pick, best = part_c(sweep, {"balancer": runs["balance"],
                                      "balancer w/o head": runs["balance_nohead"]}, base_lr)
    tables = {"a": part_a(sweep, base_lr), "a_layers": part_a_layers(sweep, base_lr),
              "b": part_b(sweep, stopped, base_lr), "c_grid": grid, "c": pick}
    return {
        "config": {"seeds": seeds, "epochs": epochs, "base_lr": base_lr,
                   "lrs": lrs, "batch_size": BATCH_SIZE, "optimizer": "SGD momentum 0.9",
                   "split": {"train": len(data.x_train), "val": len(data.x_val),
                             "test": len(data.x_test), "seed": SPLIT_SEED},
                   "model": "64-512-256-10 ReLU MLP"},
        "seconds": time.perf_counter() - start,
        "early_stop_runs_follow_full_runs": bool(same_path),
        "restored_weights_match_full_runs": bool(restored_ok),
        **best,
        "tables": tables,
        "runs": {kind: {str(lr): [vars(r) for r in group] for lr, group in store.items()}
                 for kind, store in runs.items()},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: run the experiment, print the tables, write ``--out`` (JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=None, help="default 40 (--quick: 5)")
    parser.add_argument("--base-lr", type=float, default=BASE_LR)
    parser.add_argument("--multipliers", type=str, default=None,
                        help="learning rates as multiples of --base-lr, comma-separated "
                             f"(default {','.join(map(str, MULTIPLIERS))})")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 seeds at most, 5 epochs, LRs 1x and 32x")
    parser.add_argument("--out", type=str, default=None, help="write every number as JSON")
    args = parser.parse_args(argv)
    seeds, epochs = args.seeds, args.epochs
    multipliers: Sequence[float] = MULTIPLIERS
    if args.quick:
        seeds, epochs, multipliers = min(seeds, 2), epochs or 5, QUICK_MULTIPLIERS
    if args.multipliers:
        multipliers = [float(m) for m in args.multipliers.split(",")]
    out = run_experiment(seeds, epochs or 40, multipliers, args.base_lr)
    t = out["tables"]
    cfg = out["config"]
    print(f"\ndigits {cfg['split']}, {cfg['model']}, {cfg['optimizer']}, batch {BATCH_SIZE}, "
          f"{epochs or 40} epochs, {seeds} seeds; one analysis per epoch")
    print("\n(a) learning-rate sweep (traps = rand_num_spikes; epochs to first trap over the "
          "seeds that had one)\n" + t["a"])
    print("\n(a) per layer at the end\n" + t["a_layers"])
    print("\n(b) HTSREarlyStopping(trap_alpha, patience 3, restore_best_weights) vs to the end\n"
          + t["b"])
    print(f"early-stopping runs follow the full runs until they stop: "
          f"{out['early_stop_runs_follow_full_runs']}; restored weights score as the full run "
          f"at that epoch: {out['restored_weights_match_full_runs']}")
    print(f"\n(c) LayerLRBalancer vs single LR, whole grid (w/o head: min_evals="
          f"{NOHEAD_MIN_EVALS}, the 10 x 256 output layer is neither analysed nor rescaled)\n"
          + t["c_grid"])
    print("\n(c) chosen on validation\n" + t["c"])
    print(f"\n{out['seconds']:.0f} s")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1, default=float)
        print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
