"""The torch ``Watcher`` in a plain ``torch.distributed.run`` loop (2 ranks, gloo) under DDP (also
with peft LoRA adapters and with ``base="initial"``), FSDP2 (also with ``base="initial"``),
FSDP1 (``use_orig_params`` both ways) and tensor parallelism (DTensors, ``Shard(0)`` and
``Shard(1)``): one history, written by rank 0, no duplicated step, every row equal to
``analyze()`` of the full state dict at that step; each rank gathered only its share. Policies
(FSDP2, DDP): early stopping stops every rank at the same step and restores each rank's own
shards, learning-rate multipliers are the same on every rank, trap removal (FSDP2) writes each
rank's shards. Lightning ``ModelParallelStrategy``, Lightning DDP (policies included) and
DeepSpeed ZeRO-3 likewise."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.distributed.launch import torchrun

HAS_PEFT = importlib.util.find_spec("peft") is not None
LORA_CASES = ["ddp_lora", "fsdp2_lora"] if HAS_PEFT else []
#: ddp_lora: peft LoRA under DDP read with adapters="both"; *_base: base="initial"
CASES = ["ddp", "fsdp2", "fsdp1_flat", "fsdp1_orig", "tp", "ddp_base", "fsdp2_base",
         pytest.param("ddp_lora", marks=pytest.mark.skipif(not HAS_PEFT, reason="needs peft"))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cases = ["ddp", "fsdp2", "fsdp1_flat", "fsdp1_orig", "tp", "ddp_base", "fsdp2_base",
             *LORA_CASES]
    return torchrun("watch_cases.py", tmp_path_factory.mktemp("watch"), *cases,
                    "policies_fsdp2", "policies_ddp", "duty", "traps", "declined_final")


def assert_history_matches(history, refs) -> list[int]:
    """Every analysis in ``history`` equals ``analyze()`` of the full state dict at its step, to
    1e-9 relative (layer ids aside: a state dict counts entries); returns the steps."""
    steps = [int(s) for s in history.drop_duplicates("step")["step"]]
    assert steps == sorted(set(steps)), "no step twice (before: each rank appended)"
    for step in steps:
        rows = history[history["step"] == step].reset_index(drop=True)
        ref = refs[step]
        assert list(rows["longname"]) == list(ref["longname"])
        for col in ref.columns:
            if col == "layer_id" or col not in rows.columns:
                continue
            if ref[col].dtype.kind in "fiub":
                np.testing.assert_allclose(rows[col].to_numpy(float), ref[col].to_numpy(float),
                                           rtol=1e-9, atol=0, err_msg=f"step {step} {col}")
            else:
                assert list(rows[col]) == list(ref[col]), (step, col)
    return steps


@pytest.mark.parametrize("case", CASES)
def test_one_history_equal_to_full_state_dict_analyses(runs, case):
    rank0, rank1 = runs[0][case], runs[1][case]
    assert not rank0.get("error"), rank0.get("error")
    assert not rank1.get("error"), rank1.get("error")
    steps = assert_history_matches(rank0["history"], rank0["refs"])
    # the initial and the final weights are always analysed, the others unless a rank's worker
    # dropped them for a newer snapshot (then the step is discarded and counted)
    assert {0, 6} <= set(steps)
    assert rank0["dropped"] == 6 // 2 + 1 - len(steps)
    assert rank1["history_path"] == "None", "only rank 0 keeps a history"


def test_final_weights_declined_then_taken_are_no_drop(runs):
    """The ranks decline the last due snapshot together (a worker busy), then close takes the
    final weights after all: every step analysed, nothing counted dropped on any rank (the
    decline was counted until the final weights were taken, not both)."""
    rank0, rank1 = runs[0]["declined_final"], runs[1]["declined_final"]
    assert not rank0.get("error"), rank0.get("error")
    assert not rank1.get("error"), rank1.get("error")
    assert rank0["declined_before_close"] == rank1["declined_before_close"] == 1
    assert rank0["steps"] == [0, 2, 4, 6]
    assert rank0["dropped"] == rank1["dropped"] == 0


@pytest.mark.parametrize("case", CASES)
def test_each_rank_analyses_its_share(runs, case):
    owned = [runs[r][case]["owned"] for r in (0, 1)]
    assert owned[0] and owned[1] and not set(owned[0]) & set(owned[1])
    total = sum(runs[r][case]["gathered_bytes"] for r in (0, 1))
    assert all(runs[r][case]["gathered_bytes"] < total for r in (0, 1))
    for r in (0, 1):  # at the last snapshot: its owned share, at most half plus one parameter
        share = runs[r][case]
        assert share["gathered_bytes"] == share["owned_share_bytes"]
        assert share["gathered_bytes"] <= share["total_bytes"] / 2 + share["max_param_bytes"]


@pytest.mark.skipif(not HAS_PEFT, reason="needs peft")
def test_sharded_lora_is_refused_clearly(runs):
    """peft LoRA layers in a sharded model (FSDP2 here) would be read as their base layer and
    their wrapper's weight (two wrong rows each): the Watcher refuses them on every rank with a
    message saying what is supported."""
    for rank in (0, 1):
        refused = runs[rank]["fsdp2_lora"].get("refused")
        assert refused and "LoRA" in refused and "not supported" in refused, runs[rank]


@pytest.mark.parametrize("kind", ["fsdp2", "ddp"])
def test_policies_act_identically_on_every_rank(runs, kind):
    rank0, rank1 = runs[0][f"policies_{kind}"], runs[1][f"policies_{kind}"]
    assert not rank0.get("error"), rank0.get("error")
    assert not rank1.get("error"), rank1.get("error")
    # the stop decided on step 2's analysis reaches every rank at the next snapshot (step 4)
    assert rank0["stopped_step"] == rank1["stopped_step"] == 2
    assert rank0["steps_run"] == rank1["steps_run"] == 4
    assert rank0["groups"] > 2
    assert rank0["lrs"] == rank1["lrs"]
    # restore_best_weights: each rank put back its own shards of step 0 (the best)
    assert rank0["restored_step"] == rank1["restored_step"] == 0
    assert rank0["restored_weights_equal"] and rank1["restored_weights_equal"]
    assert len(set(rank0["lrs"])) > 2, "the balancer changed the learning rates"


@pytest.fixture(scope="module")
def lightning_runs(tmp_path_factory):
    """One launch, one ``Trainer.fit`` per case (see tests/distributed/lightning_cases.py)."""
    return torchrun("lightning_cases.py", tmp_path_factory.mktemp("lightning"),
                    "model_parallel", "ddp", "ddp_policies")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["model_parallel", "ddp", "ddp_policies"])
def test_lightning_one_history_split_analysis(lightning_runs, case):
    """Lightning ``ModelParallelStrategy`` (FSDP2 in ``configure_model``) and ``strategy="ddp"``
    (replicated weights): the callback runs on both ranks, each analyses a disjoint share of the
    layers, rank 0 writes one history equal to the full state dict's analyses (before, under
    DDP rank 0 analysed every layer alone)."""
    rank0, rank1 = lightning_runs[0][case], lightning_runs[1][case]
    assert not rank0.get("error"), rank0.get("error")
    assert not rank1.get("error"), rank1.get("error")
    steps = assert_history_matches(rank0["history"], rank0["refs"])
    # start, both epoch ends (the end of training is the last one); the policies stop the fit
    # at the end of epoch 0
    assert steps == ([0, 3] if case == "ddp_policies" else [0, 3, 6])
    assert rank1["history_path"] == "None"
    owned = [rank0["owned"], rank1["owned"]]
    assert owned[0] and owned[1] and not set(owned[0]) & set(owned[1])
    # (an owned attention in_proj is named by its first slice, q_proj)
    assert set(owned[0]) | set(owned[1]) <= set(rank0["history"]["longname"])


@pytest.mark.slow
def test_lightning_ddp_policies_act_identically_on_every_rank(lightning_runs):
    """DDP with ``LayerLRBalancer`` and ``HTSREarlyStopping(restore_best_weights=True)`` given to
    the callback: both ranks' policies decide on the same merged analyses, so both stop at the
    end of epoch 0 (``wait="epoch"``, the default with policies: every rank's part of the
    epoch's analysis is merged at its end, so the stop is decided on the epoch's own weights),
    hold the same learning rates and restore the step-0 weights themselves."""
    rank0, rank1 = lightning_runs[0]["ddp_policies"], lightning_runs[1]["ddp_policies"]
    assert not rank0.get("error"), rank0.get("error")
    assert not rank1.get("error"), rank1.get("error")
    assert rank0["stopped_step"] == rank1["stopped_step"] == 3
    assert rank0["global_step"] == rank1["global_step"] == 3  # of max_epochs=4: 12
    assert rank0["lrs"] == rank1["lrs"] and len(set(rank0["lrs"])) > 2
    assert rank0["restored_step"] == rank1["restored_step"] == 0
    assert rank0["restored_weights_equal"] and rank1["restored_weights_equal"]


def test_busy_workers_skip_the_snapshot_on_every_rank(runs):
    """Default ``max_duty``: rank 0 takes a snapshot only when every rank's worker is idle, so
    none is analysed on one rank and replaced on the other (a lost step); the final weights
    are always analysed."""
    rank0, rank1 = runs[0]["duty"], runs[1]["duty"]
    assert not rank0.get("error"), rank0.get("error")
    assert rank0["discarded"] == 0
    assert rank0["taken"] == rank1["taken"] == len(rank0["steps"]) < 31
    assert rank0["dropped"] == rank1["dropped"] > 0
    assert rank0["steps"][0] == 0 and rank0["steps"][-1] == 30


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                    reason="DeepSpeed is not installed (pip install deepspeed; see setup.cfg)")
def test_deepspeed_zero3_watcher(tmp_path):
    rank0, rank1 = (r["zero3"] for r in torchrun("watch_cases.py", tmp_path, "zero3"))
    assert not rank0.get("error"), rank0.get("error")
    assert not rank1.get("error"), rank1.get("error")
    steps = assert_history_matches(rank0["history"], rank0["refs"])
    assert {0, 6} <= set(steps)
    assert rank1["history_path"] == "None"


def test_trap_removal_writes_each_ranks_shards(runs):
    """FSDP2: the planted trap is found, every rank removes the same components (rank 0's new
    matrix cut into each rank's shards) and the outlier is gone from the full weights."""
    rank0, rank1 = runs[0]["traps"], runs[1]["traps"]
    assert not rank0.get("error"), rank0.get("error")
    assert not rank1.get("error"), rank1.get("error")
    assert rank0["removed"] == rank1["removed"] and rank0["removed"].get("blocks.0.fc1", 0) > 0
    assert rank0["before"] == 25.0 and abs(rank0["after"]) < 1.0
    assert rank0["after"] == rank1["after"]


@pytest.fixture(scope="module")
def hf_runs(tmp_path_factory):
    """One launch: a Hugging Face ``Trainer`` per case (see
    tests/distributed/transformers_cases.py)."""
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    return torchrun("transformers_cases.py", tmp_path_factory.mktemp("transformers"),
                    "ddp", "ddp_resume", "ddp_policies")


@pytest.mark.slow
def test_transformers_trainer_ddp(hf_runs):
    """``Trainer(use_cpu=True)`` under torchrun (accelerate's multi-CPU DDP): the callback runs
    on both processes, each analyses a disjoint share of the layers, the main process alone
    writes the history (every step's rows equal to ``analyze()`` of the state dict then),
    TensorBoard events and the ``ww/`` logs."""
    rank0, rank1 = hf_runs[0]["ddp"], hf_runs[1]["ddp"]
    assert not rank0.get("error"), rank0.get("error")
    assert not rank1.get("error"), rank1.get("error")
    assert rank0["distributed_type"] == rank1["distributed_type"] == "DistributedType.MULTI_CPU"
    steps = assert_history_matches(rank0["history"], rank0["refs"])
    assert {0, 8} <= set(steps)
    # rank 0's one sink is TensorBoard's; the ww/ values reach HF's logs through the session's
    # decision() (integrations/_host.LatestValues), no longer through a second, internal sink
    assert rank0["events"] and rank0["ww_logged"] and rank0["sinks"] == 1
    assert rank1["history_path"] == "None" and rank1["sinks"] == 0 and not rank1["ww_logged"]
    owned = [rank0["owned"], rank1["owned"]]
    assert owned[0] and owned[1] and not set(owned[0]) & set(owned[1])
    assert set(owned[0]) | set(owned[1]) <= set(rank0["history"]["longname"])


@pytest.mark.slow
def test_transformers_trainer_ddp_resume(hf_runs):
    """Resumed from the step-4 checkpoint on both processes: the history keeps steps 0-4 of the
    first run and continues (no step twice). Rank 0 alone has the history, from which a resumed
    session learns that step 4 is already analysed: the other rank gets it from rank 0 (without
    that, rank 1 snapshotted step 4 again alone and the run hung)."""
    first, rank0, rank1 = hf_runs[0]["ddp"], hf_runs[0]["ddp_resume"], hf_runs[1]["ddp_resume"]
    assert not rank0.get("error"), rank0.get("error")
    assert not rank1.get("error"), rank1.get("error")
    assert rank0["global_step"] == rank1["global_step"] == 8
    refs = {**{s: r for s, r in first["refs"].items() if s <= 4},
            **{s: r for s, r in rank0["refs"].items() if s > 4}}
    steps = assert_history_matches(rank0["history"], refs)
    assert {0, 4, 8} <= set(steps)
    assert rank1["history_path"] == "None"


@pytest.mark.slow
def test_transformers_trainer_ddp_policies(hf_runs):
    """Early stopping and a learning-rate balancer on both processes decide on the same merged
    analyses: ``control.should_training_stop`` comes at the same step on both, the learning
    rates are the same, each process restores the step-0 weights itself."""
    rank0, rank1 = hf_runs[0]["ddp_policies"], hf_runs[1]["ddp_policies"]
    assert not rank0.get("error"), rank0.get("error")
    assert not rank1.get("error"), rank1.get("error")
    assert rank0["stopped_step"] == rank1["stopped_step"] == 2
    assert rank0["global_step"] == rank1["global_step"] == 4  # of max_steps=8
    assert rank0["lrs"] == rank1["lrs"] and len(set(rank0["lrs"])) > 2
    assert rank0["restored_step"] == rank1["restored_step"] == 0
    assert rank0["restored_weights_equal"] and rank1["restored_weights_equal"]
    assert_history_matches(rank0["history"], rank0["refs"])
