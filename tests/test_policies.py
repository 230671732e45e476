"""The policies (ww_callbacks.policies) in the core and in plain torch loops: decisions, the
learning-rate multipliers under real schedulers, trap removal, early stopping with restored
weights, all with real optimizer steps on scikit-learn's digits."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
from sklearn.datasets import load_digits  # noqa: E402

import ww_callbacks  # noqa: E402
from ww_callbacks.integrations.torch import Watcher  # noqa: E402
from ww_callbacks.layers import CONV, MATRIX, LayerWeights  # noqa: E402
from ww_callbacks.matrices import from_oriented_stack, oriented_stack  # noqa: E402
from ww_callbacks.policies import (  # noqa: E402
    STOP_CODES,
    HTSREarlyStopping,
    LayerLRBalancer,
    TorchTarget,
    TrapRemoval,
    count_traps,
    param_groups_per_layer,
    svd_sharpness,
    tempbalance_scales,
)
from ww_callbacks.results import AnalysisResult  # noqa: E402
from ww_callbacks.scalars import model_summary  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")




@functools.lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    return torch.tensor(data.data, dtype=torch.float32) / 16.0, torch.tensor(data.target)


def mlp(seed: int = 0, hidden: int = 128) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))


def train_step(model: nn.Module, opt: torch.optim.Optimizer, step: int) -> None:
    x, y = digits()
    idx = torch.arange(step * 64, step * 64 + 64) % len(x)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
    opt.step()


def plant_trap(layer: nn.Linear, value: float = 40.0) -> None:
    """One huge element: a correlation trap that survives shuffling."""
    with torch.no_grad():
        layer.weight[3, 5] = value * layer.weight.abs().max()


def result_of(details: pd.DataFrame, step: int) -> AnalysisResult:
    return AnalysisResult(step, None, details, model_summary(details), 0.0, 0.0, True)


def details_with(alphas: dict[str, float], traps: dict[str, int] | None = None) -> pd.DataFrame:
    rows = [{"longname": n, "alpha": a, "status": "success"} for n, a in alphas.items()]
    df = pd.DataFrame(rows)
    if traps is not None:
        df["rand_num_spikes"] = [traps.get(n, 0) for n in alphas]
    return df


# ---------------------------------------------------------------------------- decisions


def test_tempbalance_map():
    scales = tempbalance_scales({"a": 2.0, "b": 4.0, "c": 3.0, "d": math.nan})
    assert scales == {"a": 0.5, "b": 1.5, "c": 1.0, "d": 1.0}
    assert tempbalance_scales({"a": 3.0, "b": 3.0}, 1, 5) == {"a": 3.0, "b": 3.0}


def test_trap_alpha_rule_needs_both_and_patience():
    policy = HTSREarlyStopping(patience=2, verbose=False)
    bad = details_with({"fc1": 1.5, "fc2": 3.0}, {"fc1": 1})
    policy.on_result(result_of(details_with({"fc1": 1.5}, {"fc1": 0}), 1))  # no trap
    policy.on_result(result_of(details_with({"fc1": 3.0}, {"fc1": 2}), 2))  # trap, alpha ok
    assert policy.streak == 0
    policy.on_result(result_of(bad, 3))
    policy.on_result(result_of(details_with({"fc1": 1.5}), 4))  # no trap columns: no evidence
    assert policy.streak == 1 and not policy.should_stop
    policy.on_result(result_of(bad, 5))
    assert policy.should_stop and policy.stopped_step == 5 and "fc1" in policy.stop_reason
    assert policy.scalars() == {"ww/stop_reason": float(STOP_CODES["trap_alpha"])}


def test_other_rules():
    frac = HTSREarlyStopping("fraction", patience=1, fraction=0.5, verbose=False)
    frac.on_result(result_of(details_with({"a": 1.9, "b": 3.0, "c": 3.0}), 1))
    assert not frac.should_stop
    frac.on_result(result_of(details_with({"a": 1.9, "b": 1.8, "c": 3.0}), 2))
    assert frac.should_stop
    plateau = HTSREarlyStopping("plateau", patience=2, min_delta=0.1, verbose=False)
    for step, alpha in enumerate([5.0, 4.0, 3.95, 3.5, 3.45, 3.44]):
        plateau.on_result(result_of(details_with({"a": alpha}), step))
    assert plateau.should_stop and plateau.stopped_step == 5 and plateau.best_step is None
    with pytest.raises(ValueError, match="unknown rule"):
        HTSREarlyStopping("mean")


# ---------------------------------------------------------------------------- learning rates


SCHEDULERS = {
    "LambdaLR": lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.97 ** s),
    "OneCycleLR": lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2,
                                                                  total_steps=40),
    "CosineAnnealingWarmRestarts":
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=7),
    "StepLR": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_lr_multipliers_survive_scheduler_steps(name):
    """Two identical runs, one with per-layer multipliers set after 3 steps: at every later
    step each group's lr is exactly its multiplier times the unscaled run's lr."""
    runs = []
    for _ in range(2):
        model = mlp()
        opt = torch.optim.SGD(param_groups_per_layer(model, lr=0.05), lr=0.05, momentum=0.9)
        runs.append((model, opt, SCHEDULERS[name](opt)))
    assert [g["ww_layer"] for g in runs[0][1].param_groups] == ["0", "2", "4"]
    target = TorchTarget(runs[1][0], [runs[1][1]], [runs[1][2]])
    assert target.lr_layers() == ["0", "2", "4"]
    scales = {"0": 0.5, "2": 1.5, "4": 1.2}
    for step in range(30):
        if step == 3:
            target.set_lr_scales(scales)
        for model, opt, sched in runs:
            train_step(model, opt, step)
            sched.step()
        if step >= 3:
            for ref, scaled in zip(runs[0][1].param_groups, runs[1][1].param_groups, strict=True):
                assert scaled["lr"] == pytest.approx(ref["lr"] * scales[ref["ww_layer"]],
                                                     rel=1e-9), (name, step)
    target.set_lr_scales({"0": 1.0, "2": 1.0, "4": 1.0})  # back to the plain schedule
    for ref, scaled in zip(runs[0][1].param_groups, runs[1][1].param_groups, strict=True):
        assert scaled["lr"] == pytest.approx(ref["lr"], rel=1e-9)


def test_groups_built_by_hand_are_matched_by_weight():
    model = mlp()
    opt = torch.optim.Adam([{"params": [model[0].weight, model[0].bias]},
                            {"params": list(model[2].parameters()) + list(model[4].parameters())}],
                           lr=1e-3)
    target = TorchTarget(model, [opt])
    assert target.lr_layers() == ["0"]  # the second group holds two layers: left alone
    target.set_lr_scales({"0": 2.0, "2": 0.5, "4": 0.5})
    assert [g["lr"] for g in opt.param_groups] == [2e-3, 1e-3]


def test_balancer_in_a_torch_loop_ramps_and_logs(tmp_path):
    model = mlp()
    opt = torch.optim.SGD(param_groups_per_layer(model, lr=0.05), lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + 0.01 * s))
    balancer = LayerLRBalancer(ramp_steps=10)
    seen = []

    class Record:
        def write(self, result, scalars):
            seen.append({k: v for k, v in scalars.items() if k.startswith("ww_lr_scale/")})

        def close(self):
            pass

    with Watcher(model, log_dir=None, every_n_steps=20, optimizer=opt, schedulers=sched,
                 policies=[balancer], sinks=[Record()], max_duty=None) as ww:
        for step in range(60):
            train_step(model, opt, step)
            sched.step()
            ww.step()
            if step % 20 == 0:
                ww.wait_idle()
    assert set(balancer.targets) == {"0", "2", "4"}
    assert min(balancer.targets.values()) == 0.5 and max(balancer.targets.values()) == 1.5
    assert seen and set(seen[-1]) == {"ww_lr_scale/0", "ww_lr_scale/2", "ww_lr_scale/4"}
    for group in opt.param_groups[:3]:
        unscaled = 0.05 / (1 + 0.01 * sched.last_epoch)
        assert group["lr"] == pytest.approx(unscaled * balancer.current[group["ww_layer"]])


# ---------------------------------------------------------------------------- traps


def test_svd_sharpness_removes_planted_traps_dense_and_conv():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.02, (300, 200))
    w[7, 9] = 3.0
    dense = LayerWeights(1, "fc", "fc", "dense", w)
    assert count_traps(dense, np.random.default_rng(1)) > 0
    new, removed = svd_sharpness(dense, np.random.default_rng(1))
    assert removed >= 1 and new.shape == w.shape and np.isfinite(new).all()
    assert count_traps(LayerWeights(1, "fc", "fc", "dense", new), np.random.default_rng(2)) == 0
    k = rng.normal(0, 0.02, (96, 64, 3, 3))
    k[5, 6, 1, 1] = 4.0
    conv = LayerWeights(2, "conv", "conv", "conv2d", k, CONV)
    new, removed = svd_sharpness(conv, np.random.default_rng(1))
    assert removed >= 1 and new.shape == k.shape
    assert count_traps(LayerWeights(2, "c", "c", "conv2d", new, CONV),
                       np.random.default_rng(2)) == 0
    clean = LayerWeights(3, "ok", "ok", "dense", rng.normal(0, 0.02, (300, 200)))
    same, removed = svd_sharpness(clean, np.random.default_rng(1))
    assert removed == 0 and np.array_equal(same, clean.weight)


@pytest.mark.parametrize("shape,layout", [
    ((5, 3), MATRIX), ((3, 5), MATRIX), ((4, 2, 3, 3), CONV), ((2, 4, 3), CONV),
    ((3, 5, 2, 2, 2), CONV),
])
def test_from_oriented_stack_inverts_oriented_stack(shape, layout):
    """The torch-order layout pair: per-position N >= M matrices, and back (numpy); torch
    tensors give the same stack."""
    w = np.random.default_rng(0).normal(size=shape)
    stack = oriented_stack(w, layout)
    assert stack.shape[1] >= stack.shape[2]
    np.testing.assert_array_equal(from_oriented_stack(np.array(stack), shape, layout), w)
    np.testing.assert_array_equal(oriented_stack(torch.from_numpy(w), layout).numpy(), stack)


def test_torch_target_writes_conv_and_attention_slices_in_place():
    """A torch weight is analysed as stored (a q/k/v slice is a view of the packed projection),
    so writing back is a copy into that tensor: the conv kernel and only the query rows change."""
    model = nn.ModuleDict({"conv": nn.Conv2d(3, 8, 3), "att": nn.MultiheadAttention(16, 2)})
    target = TorchTarget(model)
    assert {"conv", "att.q_proj", "att.k_proj"} <= set(target.layer_names())
    packed = model["att"].in_proj_weight.detach().clone()
    for name in ("conv", "att.q_proj"):
        shape = target.layer_weight(name).shape
        new = np.arange(math.prod(shape), dtype=np.float64).reshape(shape) / 1e3
        target.set_layer_weight(name, new)
        np.testing.assert_allclose(target.layer_weight(name).weight.detach().numpy(), new,
                                   rtol=1e-6)
    np.testing.assert_allclose(model["conv"].weight.detach().numpy(),
                               target.layer_weight("conv").weight.detach().numpy())
    now = model["att"].in_proj_weight.detach()
    assert not torch.equal(now[:16], packed[:16]) and torch.equal(now[16:], packed[16:])


def _train_with(policies, steps: int = 40):
    model = mlp(hidden=256)
    plant_trap(model[2])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Watcher(model, log_dir=None, every_n_steps=10, optimizer=opt, policies=policies,
                 max_duty=None, tensorboard=False) as ww:
        for step in range(steps):
            train_step(model, opt, step)
            ww.step()
            ww.wait_idle()
    return model


def test_trap_removal_in_training_only_when_asked():
    kept = _train_with([])
    df = ww_callbacks.analyze(kept, randomize=True).set_index("longname")
    assert df.loc["2", "rand_num_spikes"] > 0  # never runs unless asked
    remover = TrapRemoval(verbose=False)
    model = _train_with([remover])
    df = ww_callbacks.analyze(model, randomize=True).set_index("longname")
    assert df.loc["2", "rand_num_spikes"] == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert remover.removed.get("2", 0) >= 1 and remover.events[0]["layer"] == "2"


# ---------------------------------------------------------------------------- early stopping


def test_early_stopping_in_a_torch_loop_restores_best_weights(tmp_path, capsys):
    """The plateau rule with a huge min_delta signals at every analysis after the first used
    one (step 10): with patience 2 training stops after step 30, and the weights of step 10
    come back."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    policy = HTSREarlyStopping("plateau", patience=2, min_delta=100.0, start_step=1,
                               restore_best_weights=True)
    saved = {}
    with Watcher(model, log_dir=tmp_path, every_n_steps=10, optimizer=opt, policies=[policy],
                 max_duty=None, tensorboard=False) as ww:
        for step in range(1, 101):
            train_step(model, opt, step)
            if step % 10 == 0:
                saved[step] = {k: v.clone() for k, v in model.state_dict().items()}
            ww.step()
            ww.wait_idle()
            ww.poll(step)
            if ww.should_stop:
                break
    assert step == 30 and policy.stopped_step == 30 and policy.best_step == 10
    assert policy.restored_step == 10
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[10][key])
    out = capsys.readouterr().out
    assert "HTSR early stopping: plateau" in out and "restored the weights of step 10" in out
    assert ww.stop_reason == policy.stop_reason
    state = policy.state_dict()
    again = HTSREarlyStopping("plateau")
    again.load_state_dict(state)
    assert again.should_stop and again.stopped_step == 30


def test_a_failing_policy_warns_and_training_goes_on():
    class Broken:
        def on_result(self, result):
            raise RuntimeError("boom")

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.warns(ww_callbacks.faults.WatcherWarning, match="Broken.on_result failed"):
        with Watcher(model, log_dir=None, every_n_steps=5, optimizer=opt, policies=[Broken()],
                     max_duty=None, tensorboard=False) as ww:
            for step in range(12):
                train_step(model, opt, step)
                ww.step()
                ww.wait_idle()
    assert ww.results_delivered >= 3
