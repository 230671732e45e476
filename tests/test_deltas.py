"""Deltas (issue 14): ``analyze(model, base=...)`` analyses ``W - W_base`` per layer, equal to
analysing the difference by hand and to WeightWatcher 0.7.7's ``base_model=``; the watcher's
``base="initial"`` analyses the update since the first snapshot."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from ww_callbacks import analyze  # noqa: E402
from ww_callbacks.session import WatchSession as Watcher  # noqa: E402

METRICS = ["N", "M", "rf", "alpha", "D", "lambda_max", "log_norm", "stable_rank", "entropy"]


def _filled(module: nn.Module, seed: int, scale: float = 0.1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module


def _tuned(base: nn.Module, seed: int, scale: float) -> nn.Module:
    """A 'fine-tuned' copy of ``base``: its weights plus Gaussian noise of ``scale``."""
    tuned = copy.deepcopy(base)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return tuned


def _pair():
    """A base model and a 'fine-tuned' copy: base plus a low-rank-ish plus noisy update."""
    with torch.random.fork_rng():
        base = nn.Sequential(nn.Linear(40, 64), nn.Conv2d(8, 16, 3), nn.Embedding(90, 24),
                             nn.LSTM(24, 16), nn.Linear(64, 10))
    _filled(base, 0)
    return base, _tuned(base, 1, 0.02)


def _by_hand(tuned: nn.Module, base: nn.Module) -> dict[str, torch.Tensor]:
    b = base.state_dict()
    return {k: v.detach().double() - b[k].detach().double() for k, v in tuned.state_dict().items()}


@pytest.mark.parametrize("base_as", ["module", "state_dict", "safetensors"])
def test_delta_equals_the_difference_by_hand(base_as, tmp_path):
    base, tuned = _pair()
    if base_as == "module":
        given = base
    elif base_as == "state_dict":
        given = base.state_dict()
    else:
        safetensors_torch = pytest.importorskip("safetensors.torch")
        given = tmp_path / "base.safetensors"
        safetensors_torch.save_file({k: v.contiguous() for k, v in base.state_dict().items()},
                                    str(given))
    ours = analyze(tuned, base=given, min_evals=1)
    ref = analyze(_by_hand(tuned, base), min_evals=1)
    assert list(ours.longname) == list(ref.longname)
    assert "3.weight_hh_l0.forget" in list(ours.longname)
    for col in METRICS:
        np.testing.assert_allclose(ours[col], ref[col], rtol=1e-10, err_msg=col)
    plain = analyze(tuned, min_evals=1)
    assert not np.allclose(plain.lambda_max, ours.lambda_max)


def test_unmatched_or_misshaped_layers_are_skipped_with_a_reason():
    base = _filled(nn.Sequential(nn.Linear(40, 64), nn.Linear(64, 10)), 0)
    tuned = _filled(nn.Sequential(nn.Linear(40, 64), nn.Linear(64, 12), nn.Linear(12, 30)), 1)
    df = analyze(tuned, base=base, min_evals=1)
    assert list(df.longname) == ["0"]
    reasons = {s["longname"]: s["reason"] for s in df.attrs["skipped"]}
    assert "does not match" in reasons["1"]
    assert "no layer of this name in base=" in reasons["2"]


def test_peft_model_against_its_base_is_the_update():
    peft = pytest.importorskip("peft")
    with torch.random.fork_rng():
        base = nn.Sequential()
        base.add_module("fc", nn.Linear(32, 48))
        base.add_module("out", nn.Linear(48, 16))
    _filled(base, 0)
    tuned = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["fc"], init_lora_weights=False))
    _filled(tuned.base_model.model.fc.lora_B, 3)
    delta = analyze(tuned, base=base, min_evals=1)
    only = analyze(tuned, adapters="only", min_evals=1)
    # longnames of the peft model ("base_model.model.fc") are paired with the base's ("fc")
    row = delta.set_index("longname").loc["base_model.model.fc"]
    ref = only.set_index("longname").loc["base_model.model.fc.lora_BA.default"]
    for col in ("alpha", "lambda_max", "log_norm", "matrix_rank"):
        assert row[col] == pytest.approx(ref[col], rel=1e-6), col
    assert delta.set_index("longname").loc["base_model.model.out"].status == "failed"  # zero


@pytest.mark.reference
def test_delta_equals_weightwatcher_base_model():
    """WeightWatcher 0.7.7 takes the base in its constructor (``analyze(base_model=...)`` is
    silently ignored there: it gives the plain model's numbers) and subtracts float32 weights,
    so the two agree to float32 rounding of the difference."""
    ww = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.CRITICAL)
    with torch.random.fork_rng():
        base = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 96),
                             nn.Conv2d(16, 32, 3))
    _filled(base, 0)
    tuned = _tuned(base, 4, 0.05)
    ours = analyze(tuned, base=base)
    state = np.random.get_state()
    try:
        ref = ww.WeightWatcher(model=tuned, base_model=base).analyze()
    finally:
        np.random.set_state(state)
    merged = ours.merge(ref, on="layer_id", suffixes=("", "_ref"))
    assert len(merged) == len(ref) == 3
    for col in ("alpha", "D", "lambda_max", "log_norm", "alpha_weighted", "stable_rank",
                "entropy", "xmin"):
        np.testing.assert_allclose(merged[col], merged[col + "_ref"].astype(float), rtol=1e-6,
                                   err_msg=col)


def test_watcher_base_initial_watches_the_update(tmp_path):
    model = _filled(nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 48)), 0)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    seen = []

    class Recorder:
        def write(self, result, scalars):
            seen.append(result)

        def close(self):
            pass

    g = torch.Generator().manual_seed(2)
    with Watcher(log_dir=tmp_path, sinks=[Recorder()], base="initial", max_duty=None,
                 traps_every=0, min_evals=1) as watcher:
        watcher.snapshot(model, step=0)
        watcher.wait_idle()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
        watcher.snapshot(model, step=5)
        watcher.wait_idle()
        watcher.poll()
    assert [r.step for r in seen] == [0, 5]
    assert (seen[0].details.status == "failed").all()  # a zero update at the start
    by_hand = {k: v.detach().double() - initial[k].double() for k, v in model.state_dict().items()}
    ref = analyze(by_hand, min_evals=1)
    last = seen[1].details
    assert list(last.longname) == list(ref.longname)
    np.testing.assert_allclose(last.alpha, ref.alpha, rtol=1e-10)
    np.testing.assert_allclose(last.lambda_max, ref.lambda_max, rtol=1e-10)
    skipped = {s["longname"] for s in last.attrs["skipped"]}
    assert {"0.bias", "2.bias"} <= skipped


def test_watcher_base_is_checked():
    with pytest.raises(ValueError, match="base"):
        Watcher(base="previous")
