"""analyze(): inputs it accepts, bad input, options, and the user's random state."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import ww_callbacks  # noqa: E402
from tests.models import trapped, zoo  # noqa: E402
from ww_callbacks import analyze, columns_for, summarize  # noqa: E402


def _mlp(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 96), nn.Linear(96, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def test_columns_and_summary():
    df = analyze(_mlp())
    assert list(df.columns) == columns_for()
    for col in ("layer_id", "name", "longname", "layer_type", "N", "M", "Q", "rf", "num_evals",
                "alpha", "xmin", "xmax", "D", "sigma", "num_pl_spikes", "alpha_weighted",
                "log_norm", "log_spectral_norm", "log_alpha_norm", "spectral_norm", "norm",
                "stable_rank", "status", "warning"):
        assert col in df.columns
    assert list(df.layer_id) == [1, 3, 4] and list(df.longname) == ["0", "2", "3"]
    summary = summarize(df)
    assert summary["alpha"] == pytest.approx(df.alpha.mean())
    assert set(summary) == {"log_norm", "alpha", "alpha_weighted", "log_alpha_norm",
                            "log_spectral_norm", "stable_rank"}


def test_optional_columns():
    df = analyze(trapped(), randomize=True, mp_fit=True, fix_fingers="clip_xmax")
    assert list(df.columns) == columns_for(randomize=True, mp_fit=True, fix_fingers="clip_xmax")
    assert df.rand_num_spikes.iloc[0] == 0 and df.rand_num_spikes.iloc[1:].min() >= 1
    assert "mp_softrank" in summarize(df)


def test_nan_layer_fails_alone():
    model = _mlp()
    with torch.no_grad():
        model[2].weight[3, 4] = float("nan")
        model[3].weight[0, 0] = float("inf")
    df = analyze(model, randomize=True)
    assert list(df.status) == ["success", "failed", "failed"]
    assert df.warning.iloc[1] == "weights contain NaN or Inf"
    assert df.alpha.iloc[1] == -1 and df.alpha.iloc[0] > 1
    assert summarize(df)["alpha"] == pytest.approx(df.alpha.iloc[0])


@pytest.mark.parametrize("weight", [
    np.zeros((40, 20)),
    np.full((40, 20), 0.3),
    np.outer(np.arange(1.0, 41.0), np.arange(1.0, 21.0)),
])
def test_degenerate_matrices_give_defined_rows(weight):
    df = analyze({"layer.weight": weight})
    assert len(df) == 1
    row = df.iloc[0]
    assert row.status == "failed" and row.warning.startswith("power-law fit failed")
    assert row.num_evals == 20
    if weight.any():
        assert row.matrix_rank == 1 and row.rank_loss == 19 and row.stable_rank == pytest.approx(1)


def test_small_and_one_dimensional_layers_are_skipped_with_reason():
    state = {"emb.weight": np.ones((50, 4)), "fc.weight": np.random.default_rng(0).normal(
        size=(30, 20)), "fc.bias": np.zeros(30), "scale": np.ones(7)}
    df = analyze(state)
    assert list(df.longname) == ["fc"]
    reasons = {s["longname"]: s["reason"] for s in df.attrs["skipped"]}
    assert reasons["emb"] == "num_evals 4 < min_evals 8"
    assert reasons["scale"] == "1-D parameter"


def test_half_precision_weights_are_upcast():
    model = _mlp()
    ref = analyze(model)
    for dtype in (torch.float16, torch.bfloat16):
        df = analyze(model.to(dtype))
        assert (df.status == "success").all()
        np.testing.assert_allclose(df.alpha, ref.alpha, rtol=0.05)


def test_empty_model_gives_empty_frame_with_all_columns():
    with pytest.warns(UserWarning, match="no layer to analyse"):
        df = analyze(nn.Sequential(nn.ReLU()), randomize=True)
    assert len(df) == 0 and list(df.columns) == columns_for(randomize=True)


def test_not_a_model_raises_type_error():
    with pytest.raises(TypeError, match="torch.nn.Module, a Keras 3 model"):
        analyze(42)


def test_global_random_state_untouched():
    model = trapped()  # building modules draws from torch's global RNG: do it before
    np.random.seed(1)
    torch.manual_seed(1)
    np_state = np.random.get_state()[1].copy()
    torch_state = torch.get_rng_state().clone()
    analyze(model, randomize=True, mp_fit=True)
    analyze(model, randomize=True, device="cpu")
    assert (np.random.get_state()[1] == np_state).all()
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_seed_makes_randomisation_reproducible():
    a = analyze(trapped(), randomize=True, seed=3)
    b = analyze(trapped(), randomize=True, seed=3)
    pd.testing.assert_frame_equal(a, b)


def test_layer_filters():
    model = zoo()
    all_rows = analyze(model)
    assert list(analyze(model, layers=[1, 3]).layer_id) == [1, 3]
    assert 1 not in set(analyze(model, layers=[-1]).layer_id)
    assert set(analyze(model, layers=["conv2d"]).layer_type) == {"conv2d"}
    assert list(analyze(model, layers=["6"]).longname) == ["6"]
    assert len(analyze(model, layers=["-6"])) == len(all_rows) - 1
    assert set(analyze(model, max_N=500).N) <= set(range(501))
    with pytest.raises(ValueError):
        analyze(model, layers=[1, -2])


def test_multihead_attention_is_split_into_q_k_v():
    g = torch.Generator().manual_seed(0)
    mha = nn.MultiheadAttention(64, 4)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.randn(192, 64, generator=g))
    model = nn.Sequential(mha)
    df = analyze(model)
    assert list(df.longname) == ["0.q_proj", "0.k_proj", "0.v_proj", "0.out_proj"]
    q = mha.in_proj_weight[:64].detach().double().numpy()
    expected = np.sort(np.linalg.eigvalsh(q.T @ q))
    assert df.lambda_max.iloc[0] == pytest.approx(expected[-1], rel=1e-10)
    # the same from the state dict
    df_state = analyze(model.state_dict())
    assert list(df_state.longname) == ["0.q_proj", "0.k_proj", "0.v_proj", "0.out_proj"]
    np.testing.assert_allclose(df_state.alpha, df.alpha, rtol=1e-12)


def test_conv3d_and_conv1d_are_sliced_per_kernel_position():
    model = nn.Sequential(nn.Conv3d(8, 16, (2, 3, 3)), nn.Conv1d(16, 32, 5))
    df = analyze(model)
    assert list(df.layer_type) == ["conv3d", "conv1d"]
    assert list(df.rf) == [18, 5] and list(df.num_evals) == [8 * 18, 16 * 5]


def test_pool_false_gives_a_row_per_slice():
    model = nn.Sequential(nn.Conv2d(16, 32, 3), nn.Linear(40, 20))
    df = analyze(model, pool=False)
    assert list(df.slice_id) == list(range(9)) + [0]
    w = model[0].weight.detach().double().numpy()[:, :, 1, 2] * np.sqrt(9 / 2)
    assert df.lambda_max.iloc[5] == pytest.approx(np.linalg.eigvalsh(w.T @ w)[-1], rel=1e-10)


def test_state_dict_and_safetensors_file(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model = zoo()
    direct = analyze(model)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    from_state = analyze(state)
    np.testing.assert_allclose(from_state.alpha.to_numpy(), direct.alpha.to_numpy(), rtol=1e-12)
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(state, str(path))
    from_file = analyze(str(path))
    np.testing.assert_allclose(from_file.alpha.to_numpy(), direct.alpha.to_numpy(), rtol=1e-12)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    from_pt = analyze(tmp_path / "model.pt")
    np.testing.assert_allclose(from_pt.alpha.to_numpy(), direct.alpha.to_numpy(), rtol=1e-12)


def test_torch_engine_matches_numpy():
    model = zoo()
    ours = analyze(model)
    on_torch = analyze(model, device="cpu")
    np.testing.assert_allclose(on_torch.alpha, ours.alpha, rtol=1e-9)
    np.testing.assert_allclose(on_torch.log_norm, ours.log_norm, rtol=1e-9)
    f32 = analyze(model, device="cpu", dtype="float32")
    np.testing.assert_allclose(f32.alpha, ours.alpha, rtol=1e-3)
    traps = analyze(trapped(), device="cpu", randomize=True)
    assert traps.rand_num_spikes.iloc[0] == 0 and traps.rand_num_spikes.iloc[1:].min() >= 1


def test_quantized_and_frozen_layers():
    model = _mlp()
    for p in model.parameters():
        p.requires_grad_(False)
    assert (analyze(model).status == "success").all()
    qmodel = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = analyze(qmodel)
    assert len(df) == 3 and (df.status == "success").all()
    np.testing.assert_allclose(df.alpha, analyze(model).alpha, rtol=0.1)


def test_public_names():
    assert callable(ww_callbacks.analyze) and callable(ww_callbacks.fit_powerlaw)
    assert callable(ww_callbacks.summarize) and callable(ww_callbacks.load_history)
    assert ww_callbacks.PowerLawFit.__name__ == "PowerLawFit"
