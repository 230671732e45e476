"""``analyze(model)`` under real 2-process gloo groups (``torch.distributed.run``): FSDP2, FSDP1
(``use_orig_params`` both ways, and before any forward), a 2-D mesh, tensor parallelism
(``Shard(0)`` and ``Shard(1)`` DTensors, uneven shards), DDP and DeepSpeed ZeRO-3. Each compares
rank 0's frame with single-process analyses of the full state dict and checks how many bytes
each rank gathered."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.distributed.launch import torchrun
from ww_callbacks.distributed.ownership import assign_owners

#: fsdp1_fresh: analysed before any forward (FSDP1 not lazily initialised yet); mesh2d: FSDP2
#: over a "dp" and tensor parallel over a "tp" mesh dimension (2 placements: full_tensor path)
CASES = ["ddp", "fsdp2", "fsdp1_orig", "fsdp1_flat", "fsdp1_fresh", "tp", "mesh2d"]
REL = 1e-9


def assert_frames_close(got: pd.DataFrame, want: pd.DataFrame, *, skip=()) -> None:
    """Same rows and columns; numbers equal to ``REL`` relative, everything else equal."""
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want) and len(got) > 0
    for col in got.columns:
        if col in skip:
            continue
        a, b = got[col].to_numpy(), want[col].to_numpy()
        if want[col].dtype.kind in "fiub" and got[col].dtype.kind in "fiub":
            np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=REL, atol=0,
                                       err_msg=col)
        else:
            assert list(a) == list(b), col


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    return torchrun("analyze_cases.py", out, *CASES, "one_rank")


def _case(runs, case):
    ranks = [r[case] for r in runs]
    for r in ranks:
        assert not r.get("error"), r.get("error")
    return ranks


@pytest.mark.parametrize("case", CASES)
def test_rank0_frame_equals_single_process_analysis(runs, case):
    rank0, _ = _case(runs, case)
    # the bare model loaded with the full state dict: every column, layer ids included
    assert_frames_close(rank0["rows"], rank0["ref_bare"])
    # analyze() of the full state dict itself: its layer ids count state-dict entries instead
    assert_frames_close(rank0["rows"], rank0["ref_sd"], skip=("layer_id",))


@pytest.mark.parametrize("case", CASES)
def test_each_rank_gathers_only_its_share(runs, case):
    ranks = _case(runs, case)
    owned = [r["sharding"]["owned_layers"] for r in ranks]
    assert all(owned), "both ranks analyse"
    assert not set(owned[0]) & set(owned[1])
    assert sorted(owned[0] + owned[1]) == sorted(ranks[0]["rows"]["longname"])
    for r in ranks:
        s = r["sharding"]
        assert s["gathered_bytes"] == s["owned_share_bytes"]
        assert s["gathered_bytes"] <= s["total_bytes"] / 2 + s["max_param_bytes"]
        assert s["transient_bytes"] <= s["max_param_bytes"] or case.startswith("fsdp1")


def test_correlation_traps_do_not_depend_on_the_split(runs):
    """Each layer shuffles with its own seed: two ranks draw what one rank alone draws."""
    split, alone = runs[0]["ddp"]["randomized"]
    assert "rand_num_spikes" in split.columns
    assert_frames_close(split, alone.drop(columns="_ww_position"))


def test_called_on_one_rank_raises_instead_of_hanging(runs):
    result = runs[0]["one_rank"]
    assert result["error"] and "every rank must call it" in result["error"]
    assert result["seconds"] < 30


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                    reason="DeepSpeed is not installed (pip install deepspeed; see setup.cfg)")
def test_deepspeed_zero3(tmp_path):
    rank0, rank1 = (r["zero3"] for r in torchrun("analyze_cases.py", tmp_path, "zero3"))
    assert not rank0.get("error"), rank0.get("error")
    assert_frames_close(rank0["rows"], rank0["ref_bare"])
    assert_frames_close(rank0["rows"], rank0["ref_sd"], skip=("layer_id",))
    for r in (rank0, rank1):
        assert r["sharding"]["gathered_bytes"] == r["sharding"]["owned_share_bytes"]
        assert r["sharding"]["transient_bytes"] == 0


# ----------------------------------------------------------------------------- no processes


def test_assignment_is_balanced_and_deterministic():
    costs = [5.0, 1.0, 4.0, 3.0, 3.0, 2.0]
    owners = assign_owners(costs, 2)
    assert owners == assign_owners(list(costs), 2)
    loads = [sum(c for c, o in zip(costs, owners, strict=True) if o == r) for r in range(2)]
    assert max(loads) - min(loads) <= max(costs)
    assert assign_owners(costs, 1) == [0] * len(costs)
    assert set(assign_owners(costs, 8)) <= set(range(8))


def test_import_does_not_import_torch_distributed():
    code = ("import sys, ww_callbacks, ww_callbacks.distributed; "
            "print('torch.distributed' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_process_group_is_a_local_analysis():
    torch = pytest.importorskip("torch")
    from ww_callbacks.distributed import wants_collective

    assert not wants_collective(torch.nn.Linear(4, 4))
    assert not wants_collective({"w": np.ones((4, 4))})


def test_wrappers_are_seen_through():
    torch = pytest.importorskip("torch")
    from ww_callbacks.layers.wrappers import bare_modules

    class DistributedDataParallel(torch.nn.Module):  # named like the wrapper it stands for
        def __init__(self, module):
            super().__init__()
            self.module = module

    inner = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    assert [n for n, _ in bare_modules(DistributedDataParallel(inner))] == \
        [n for n, _ in inner.named_modules()]


def test_analysis_device_auto_is_the_cpu_without_a_gpu():
    torch = pytest.importorskip("torch")
    from ww_callbacks.analysis import analyze
    from ww_callbacks.devices import resolve_analysis_device
    from ww_callbacks.session import WatchSession as Watcher

    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 16))
    assert resolve_analysis_device(model, "auto") is None  # CPU weights: numpy
    assert resolve_analysis_device(model, "cpu") == "cpu"
    assert resolve_analysis_device({"w": np.ones((4, 4))}, "auto") is None
    assert Watcher().analysis_device == "auto"
    auto, default = analyze(model, device="auto"), analyze(model)
    np.testing.assert_array_equal(auto["alpha"], default["alpha"])
