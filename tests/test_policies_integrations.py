"""The policies in real Lightning and Hugging Face training runs: the stop happens on the
trainer's cadence with its reason logged and the best weights restored, the per-layer learning
rates hold through a per-step OneCycleLR, and trap removal cleans a planted trap."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

L = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

import ww_callbacks  # noqa: E402
from tests.test_lightning import (  # noqa: E402
    BATCHES,
    DigitsMLP,
    GlooTeardown,
    quiet,
    scalar_events,
)
from ww_callbacks.integrations.lightning import WeightWatcherCallback  # noqa: E402
from ww_callbacks.policies import (  # noqa: E402
    HTSREarlyStopping,
    LayerLRBalancer,
    TrapRemoval,
    param_groups_per_layer,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")




class EpochWeights(L.Callback):
    """Copies of the module's weights at every training-epoch end, by global step."""

    def __init__(self):
        self.saved: dict[int, dict] = {}

    def on_train_epoch_end(self, trainer, pl_module):
        self.saved[trainer.global_step] = {k: v.detach().clone()
                                           for k, v in pl_module.state_dict().items()}


def test_lightning_early_stopping_logs_reason_and_restores(tmp_path, capsys):
    policy = HTSREarlyStopping("plateau", patience=2, min_delta=100.0, start_step=1,
                               restore_best_weights=True)
    cb = WeightWatcherCallback(policies=[policy], wait="epoch")  # every epoch analysed
    weights = EpochWeights()
    tb = TensorBoardLogger(tmp_path, name="tb")
    trainer = L.Trainer(**quiet(max_epochs=10, logger=tb, callbacks=[cb, weights]))
    module = DigitsMLP()
    trainer.fit(module)
    assert trainer.current_epoch == 3  # epochs 0, 1, 2 ran; stopped at the end of epoch 2
    assert policy.stopped_step == 3 * BATCHES and policy.restored_step == BATCHES
    for key, value in module.state_dict().items():
        assert torch.equal(value, weights.saved[BATCHES][key])
    assert cb.last_decision["stop_reason"] == policy.stop_reason
    events = scalar_events(tb.log_dir)["ww/stop_reason"]
    assert events[0].value == 0 and events[-1].value == 4 and events[-1].step == 3 * BATCHES
    assert "HTSR early stopping: plateau" in capsys.readouterr().out


class OneCycleMLP(DigitsMLP):
    """One param group per layer and a per-step OneCycleLR, as a user of the balancer writes."""

    def configure_optimizers(self):
        opt = torch.optim.SGD(param_groups_per_layer(self, lr=0.05), lr=0.05, momentum=0.9)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=3 * BATCHES)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_lightning_lr_balancer_holds_through_onecycle(tmp_path):
    balancer = LayerLRBalancer(ramp_steps=5)
    cb = WeightWatcherCallback(policies=[balancer], wait="epoch")
    tb = TensorBoardLogger(tmp_path, name="tb")
    module = OneCycleMLP()
    trainer = L.Trainer(**quiet(max_epochs=3, logger=tb, callbacks=[cb]))
    trainer.fit(module)
    opt = trainer.optimizers[0]
    sched = trainer.lr_scheduler_configs[0].scheduler
    # the same schedule without multipliers, stepped as often
    twin = DigitsMLP()
    twin_opt = torch.optim.SGD(param_groups_per_layer(twin, lr=0.05), lr=0.05, momentum=0.9)
    twin_sched = torch.optim.lr_scheduler.OneCycleLR(twin_opt, max_lr=0.1,
                                                     total_steps=3 * BATCHES)
    for _ in range(sched.last_epoch):
        twin_opt.step()
        twin_sched.step()
    scales = [balancer.current[g["ww_layer"]] for g in opt.param_groups]
    assert len(set(scales)) == 3 and min(scales) < 1 < max(scales)
    for group, ref, scale in zip(opt.param_groups, twin_opt.param_groups, scales, strict=True):
        assert group["lr"] == pytest.approx(ref["lr"] * scale, rel=1e-9)
        assert group["max_lr"] == pytest.approx(0.1 * scale, rel=1e-9)
    events = scalar_events(tb.log_dir)
    assert {"ww_lr_scale/net.0", "ww_lr_scale/net.2", "ww_lr_scale/net.4"} <= set(events)


class TrappedMLP(DigitsMLP):
    def __init__(self):
        super().__init__(lr=0.01)
        with torch.no_grad():
            self.net[2].weight[3, 5] = 40 * self.net[2].weight.abs().max()


def test_lightning_trap_removal(tmp_path):
    remover = TrapRemoval(verbose=False)
    cb = WeightWatcherCallback(policies=[remover], wait="epoch")
    module = TrappedMLP()
    assert ww_callbacks.analyze(module, randomize=True).set_index("longname").loc[
        "net.2", "rand_num_spikes"] > 0
    L.Trainer(**quiet(max_epochs=2, logger=False, callbacks=[cb])).fit(module)
    df = ww_callbacks.analyze(module, randomize=True).set_index("longname")
    assert df.loc["net.2", "rand_num_spikes"] == 0
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert remover.removed["net.2"] >= 1


def test_hf_trainer_early_stopping(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from tests.test_transformers import make_trainer
    from ww_callbacks.integrations.transformers import WeightWatcherCallback as HFCallback

    policy = HTSREarlyStopping("plateau", patience=2, min_delta=100.0, start_step=1,
                               restore_best_weights=True, verbose=False)
    cb = HFCallback(every_n_steps=2, every_n_epochs=None, policies=[policy],
                    wait="always", tensorboard=False)
    trainer = make_trainer(tmp_path, [cb], report_to=[], epochs=4)
    trainer.train()
    assert policy.should_stop and 6 <= trainer.state.global_step < 4 * 8
    assert policy.restored_step is not None and policy.restored_step < policy.stopped_step
    stops = [e["ww/stop_reason"] for e in trainer.state.log_history if "ww/stop_reason" in e]
    assert stops and stops[-1] == 4



class WeightSums(L.Callback):
    """Per rank: the sum of all weights at every epoch end and at the end of training, in
    ``<marker_dir>/rank<r>.json`` (ddp_spawn runs in other processes)."""

    def __init__(self, marker_dir: str):
        self.marker_dir = marker_dir
        self.sums: dict[str, float] = {}

    def _sum(self, pl_module) -> float:
        return float(sum(p.detach().double().sum() for p in pl_module.parameters()))

    def on_train_epoch_end(self, trainer, pl_module):
        self.sums[str(trainer.global_step)] = self._sum(pl_module)

    def on_train_end(self, trainer, pl_module):
        self.sums["end"] = self._sum(pl_module)
        path = f"{self.marker_dir}/rank{trainer.global_rank}.json"
        with open(path, "w") as fh:
            json.dump(self.sums, fh)


@pytest.mark.slow
def test_lightning_ddp_restores_the_same_weights_on_every_rank(tmp_path):
    """ddp_spawn on gloo: rank 0 decides to stop and restores the best weights; every rank
    stops at the same epoch and ends with rank 0's restored weights."""
    from datetime import timedelta

    from lightning.pytorch.strategies import DDPStrategy

    policy = HTSREarlyStopping("plateau", patience=2, min_delta=100.0, start_step=1,
                               restore_best_weights=True, verbose=False)
    cb = WeightWatcherCallback(policies=[policy], wait="epoch")  # every epoch analysed
    sums = WeightSums(str(tmp_path))
    strategy = DDPStrategy(start_method="spawn", process_group_backend="gloo",
                           timeout=timedelta(seconds=60))
    L.Trainer(**quiet(strategy=strategy, devices=2, max_epochs=8, logger=False,
                      default_root_dir=tmp_path, callbacks=[cb, sums, GlooTeardown()])
              ).fit(DigitsMLP())
    per_rank = 15  # ceil(ceil(1797 / 2) / 64)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(int(k) for k in ranks[0] if k != "end") == [per_rank, 2 * per_rank,
                                                               3 * per_rank]  # stopped
    assert ranks[0]["end"] == ranks[1]["end"] == ranks[0][str(per_rank)]
    assert ranks[0]["end"] != ranks[0][str(3 * per_rank)]
