"""Transposed convolutions (issue 14): torch ``ConvTranspose1d/2d/3d`` and Keras
``Conv*DTranspose`` give the matrices of the equivalent forward convolution (the one computing the
same function: weight with channels exchanged and taps flipped), checked numerically first."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from ww_callbacks import analyze  # noqa: E402

METRICS = ["N", "M", "rf", "num_evals", "alpha", "D", "lambda_max", "log_norm", "stable_rank",
           "entropy", "sv_max", "sv_min"]
CONV = {1: (nn.ConvTranspose1d, nn.Conv1d, F.conv_transpose1d, F.conv1d),
        2: (nn.ConvTranspose2d, nn.Conv2d, F.conv_transpose2d, F.conv2d),
        3: (nn.ConvTranspose3d, nn.Conv3d, F.conv_transpose3d, F.conv3d)}


def _filled(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module


def _equivalent_conv(tconv: nn.Module, dims: int) -> nn.Module:
    """The forward convolution computing ``tconv`` (stride 1): channels exchanged, taps flipped,
    applied to the input padded by k - 1."""
    t_cls, c_cls, t_fn, c_fn = CONV[dims]
    weight = tconv.weight.detach().transpose(0, 1).flip(list(range(2, 2 + dims)))
    conv = c_cls(tconv.in_channels, tconv.out_channels, tconv.kernel_size, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(weight)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, tconv.in_channels, *[7] * dims, generator=g, dtype=torch.float64)
    pad = [k - 1 for k in reversed(tconv.kernel_size) for _ in (0, 1)]
    expected = t_fn(x, tconv.weight)
    got = c_fn(F.pad(x, pad), conv.weight)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)  # the same function
    return conv


@pytest.mark.parametrize("dims, in_ch, out_ch, kernel", [
    (1, 16, 32, 5), (2, 8, 24, 3), (2, 32, 16, 2), (2, 48, 48, (3, 2)), (3, 6, 12, (2, 3, 3)),
])
def test_transposed_conv_equals_equivalent_conv(dims, in_ch, out_ch, kernel):
    tconv = _filled(CONV[dims][0](in_ch, out_ch, kernel), seed=dims).double()
    conv = _equivalent_conv(tconv, dims)
    ours = analyze(nn.Sequential(tconv), min_evals=1)
    ref = analyze(nn.Sequential(conv), min_evals=1)
    assert list(ours.layer_type) == [f"conv{dims}d"]
    for col in METRICS:
        assert ours[col][0] == pytest.approx(ref[col][0], rel=1e-12), col
    assert (ours.N[0], ours.M[0]) == (max(in_ch, out_ch), min(in_ch, out_ch))
    # one row per kernel position: the same set of per-tap matrices, in flipped order
    per_slice = analyze(nn.Sequential(tconv), pool=False, min_evals=1)
    per_slice_ref = analyze(nn.Sequential(conv), pool=False, min_evals=1)
    np.testing.assert_allclose(np.sort(per_slice.lambda_max), np.sort(per_slice_ref.lambda_max),
                               rtol=1e-12)


def test_transposed_conv_state_dict_and_skips():
    model = nn.Sequential(_filled(nn.ConvTranspose2d(8, 16, 3), 1), nn.ReLU(),
                          _filled(nn.ConvTranspose1d(12, 6, 4, groups=2), 2))
    direct = analyze(model, min_evals=1)
    from_state = analyze(model.state_dict(), min_evals=1)
    assert list(direct.longname) == list(from_state.longname) == ["0", "2"]
    for col in METRICS:
        np.testing.assert_allclose(direct[col], from_state[col], rtol=1e-12, err_msg=col)
    # grouped: (in, out/groups, k) per tap, like a grouped conv's (out, in/groups, k)
    assert (direct.N[1], direct.M[1], direct.rf[1]) == (12, 3, 4)
    skipped = {s["longname"]: s["reason"] for s in direct.attrs["skipped"]}
    assert set(skipped) == {"0.bias", "2.bias"} and "1-D" in skipped["0.bias"]


keras_cases = [(1, "Conv1DTranspose", "Conv1D", (9, 6), 4), (2, "Conv2DTranspose", "Conv2D",
                                                              (7, 7, 6), (3, 2))]


@pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")
@pytest.mark.parametrize("dims, t_name, c_name, input_shape, kernel", keras_cases)
def test_keras_transposed_conv_equals_equivalent_conv(dims, t_name, c_name, input_shape, kernel):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    kernel = (kernel,) * dims if isinstance(kernel, int) else kernel
    L = keras.layers
    keras.utils.set_random_seed(3)
    tconv = getattr(L, t_name)(10, kernel, use_bias=False, name="up")
    conv = getattr(L, c_name)(10, kernel, use_bias=False, name="down")
    t_model = keras.Sequential([keras.Input(input_shape), tconv])
    padded = tuple(s + k - 1 for s, k in zip(input_shape[:dims], kernel, strict=True))
    c_model = keras.Sequential([keras.Input((*padded, input_shape[-1])), conv])
    t_kernel = np.asarray(keras.ops.convert_to_numpy(tconv.kernel))  # (*k, out, in)
    flipped = t_kernel[(slice(None, None, -1),) * dims]
    conv.kernel.assign(np.swapaxes(flipped, -1, -2))  # (*k, in, out)
    x = np.random.default_rng(0).normal(size=(2, *input_shape)).astype("float32")
    pad = [(0, 0)] + [(k - 1, k - 1) for k in kernel] + [(0, 0)]
    y_t = keras.ops.convert_to_numpy(t_model(x))
    y_c = keras.ops.convert_to_numpy(c_model(np.pad(x, pad)))
    np.testing.assert_allclose(y_c, y_t, rtol=1e-4, atol=1e-5)  # the same function
    ours = analyze(t_model, min_evals=1)
    ref = analyze(c_model, min_evals=1)
    assert list(ours.layer_type) == list(ref.layer_type) == [f"conv{dims}d"]
    for col in METRICS:
        assert ours[col][0] == pytest.approx(ref[col][0], rel=1e-9), col
