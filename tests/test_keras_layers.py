"""Tests of the Keras 3 extractor ``ww_callbacks.layers.keras_models`` (torch backend)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from ww_callbacks.layers import extract_layers
from ww_callbacks.layers.base import (
    CONV,
    CONV1D,
    CONV2D,
    CONV3D,
    DENSE,
    EMBEDDING,
    MATRIX,
    LayerWeights,
)
from ww_callbacks.layers.keras_models import (
    conv_kernel,
    conv_weight,
    einsum_kernel,
    einsum_matrix,
    from_analysis_layout,
    keras_layers,
    layer_row,
    to_analysis_layout,
    walk_layers,
)
from ww_callbacks.layers.skips import Skip

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
L = keras.layers

# Keras's torch backend calls ``np.array(tensor)``, which numpy 2 flags for torch tensors.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")

D_MODEL, HEADS, KEY_DIM, VALUE_DIM, SEQ, VOCAB = 8, 2, 3, 5, 6, 20


def _np(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _by_longname(rows: list[LayerWeights]) -> dict[str, LayerWeights]:
    return {row.longname: row for row in rows}


@pytest.fixture(scope="module")
def model() -> keras.Model:
    """Embedding -> Dense -> MultiHeadAttention -> EinsumDense -> nested Sequential."""
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([
        L.Input((SEQ, 2 * 4)),
        L.Dense(7, name="dense_a"),
        L.LayerNormalization(name="ln"),
        L.Dense(D_MODEL, name="dense_b"),
    ], name="encoder")
    tokens = L.Input((SEQ,), dtype="int32", name="tokens")
    h = L.Embedding(VOCAB, D_MODEL, name="embed")(tokens)
    h = L.Dense(D_MODEL, name="proj")(h)
    h = L.MultiHeadAttention(num_heads=HEADS, key_dim=KEY_DIM, value_dim=VALUE_DIM,
                             name="mha")(h, h)
    h = L.EinsumDense("abc,cde->abde", output_shape=(SEQ, 2, 4), name="ein")(h)
    h = L.Reshape((SEQ, 2 * 4), name="flat")(h)
    h = encoder(h)
    return keras.Model(tokens, h, name="root")


def test_rows_types_and_shapes(model: keras.Model) -> None:
    rows, skipped = keras_layers(model)
    assert skipped == []
    by = _by_longname(rows)
    assert list(by) == [
        "embed", "proj", "mha.query", "mha.key", "mha.value", "mha.attention_output", "ein",
        "encoder.dense_a", "encoder.dense_b",
    ]
    assert by["embed"].layer_type == EMBEDDING and by["embed"].shape == (VOCAB, D_MODEL)
    assert by["proj"].layer_type == DENSE and by["proj"].shape == (D_MODEL, D_MODEL)
    assert by["mha.query"].shape == (D_MODEL, HEADS * KEY_DIM)
    assert by["mha.key"].shape == (D_MODEL, HEADS * KEY_DIM)
    assert by["mha.value"].shape == (D_MODEL, HEADS * VALUE_DIM)
    assert by["mha.attention_output"].shape == (HEADS * VALUE_DIM, D_MODEL)
    assert by["ein"].shape == (D_MODEL, 2 * 4)
    assert by["encoder.dense_a"].shape == (8, 7)
    for row in rows:
        assert row.layout == MATRIX
        assert row.name == row.longname.split(".")[-1]
        assert isinstance(row.weight, np.ndarray)
    assert "ln" not in {row.name for row in rows}


def test_values_match_keras(model: keras.Model) -> None:
    by = _by_longname(keras_layers(model)[0])
    mha = model.get_layer("mha")
    np.testing.assert_array_equal(by["proj"].weight, _np(model.get_layer("proj").kernel))
    np.testing.assert_array_equal(by["embed"].weight, _np(model.get_layer("embed").embeddings))
    query = _np(mha.query_dense.kernel)  # (d_model, heads, key_dim)
    np.testing.assert_array_equal(by["mha.query"].weight, query.reshape(D_MODEL, -1))
    out = _np(mha.output_dense.kernel)  # (heads, value_dim, d_model)
    np.testing.assert_array_equal(by["mha.attention_output"].weight, out.reshape(-1, D_MODEL))


def test_ids_and_names(model: keras.Model) -> None:
    rows, _ = keras_layers(model)
    ids = [row.layer_id for row in rows]
    assert len(set(ids)) == len(ids) and ids == sorted(ids) and min(ids) > 0
    longnames = [row.longname for row in rows]
    assert len(set(longnames)) == len(longnames)
    # The MHA projections come out once each, as their own layers, right after the MHA itself.
    by = _by_longname(rows)
    assert by["mha.key"].layer_id == by["mha.query"].layer_id + 1
    assert by["encoder.dense_a"].layer_id > by["ein"].layer_id


def test_root_layer_and_nested_numbering() -> None:
    dense = L.Dense(3, name="solo")
    dense.build((None, 4))
    rows, skipped = keras_layers(dense)
    assert skipped == [] and len(rows) == 1
    assert (rows[0].layer_id, rows[0].name, rows[0].longname) == (0, "solo", "solo")

    inner = keras.Sequential([L.Input((4,)), L.Dense(5, name="a"), L.Dense(6, name="b")],
                             name="inner")
    outer = keras.Sequential([L.Input((4,)), inner, L.Dense(2, name="c")], name="outer")
    rows, _ = keras_layers(outer)
    # outer 0, its InputLayer 1, inner 2, inner's InputLayer 3, a 4, b 5, c 6
    assert [(r.layer_id, r.longname) for r in rows] == [(4, "inner.a"), (5, "inner.b"), (6, "c")]


def test_shared_layer_listed_once() -> None:
    shared = L.Dense(4, name="shared")
    x = L.Input((4,))
    model = keras.Model(x, shared(shared(x)))
    rows, _ = keras_layers(model)
    assert [row.longname for row in rows] == ["shared"]


CONV_CASES = [
    (L.Conv1D, (3,), (10, 4), CONV1D),
    (L.Conv2D, (3, 2), (10, 9, 4), CONV2D),
    (L.Conv3D, (3, 2, 2), (6, 7, 5, 4), CONV3D),
]


@pytest.mark.parametrize(("cls", "kernel_size", "input_shape", "layer_type"), CONV_CASES)
def test_conv_transposed_to_torch_order(cls, kernel_size, input_shape, layer_type) -> None:
    model = keras.Sequential([L.Input(input_shape), cls(5, kernel_size, name="conv")])
    (row,), skipped = keras_layers(model)
    assert skipped == []
    in_ch = input_shape[-1]
    assert (row.layer_type, row.layout) == (layer_type, CONV)
    assert row.shape == (5, in_ch, *kernel_size)
    kernel = _np(model.get_layer("conv").kernel)  # (*k, in, out)
    rank = len(kernel_size)
    np.testing.assert_array_equal(row.weight, np.moveaxis(kernel, (rank + 1, rank),
                                                          (0, 1)))
    index = (1, 2) + (0,) * rank  # out=1, in=2, first kernel position
    assert row.weight[index] == kernel[(0,) * rank + (2, 1)]
    n, m, rf = row.geometry()
    assert (n, m, rf) == (max(5, in_ch), min(5, in_ch), math.prod(kernel_size))


def test_conv_transpose_supported() -> None:
    model = keras.Sequential([L.Input((8, 8, 4)), L.Conv2DTranspose(5, (3, 2), name="up")])
    (row,), _ = keras_layers(model)
    kernel = _np(model.get_layer("up").kernel)  # (*k, out, in)
    assert kernel.shape == (3, 2, 5, 4)
    assert (row.layer_type, row.shape) == (CONV2D, (5, 4, 3, 2))
    np.testing.assert_array_equal(row.weight, np.transpose(kernel, (2, 3, 0, 1)))


def test_geometry_dense(model: keras.Model) -> None:
    for row in keras_layers(model)[0]:
        n, m, rf = row.geometry()
        assert n >= m and rf == 1
        assert {n, m} == set(row.shape)


def test_skips_with_reasons() -> None:
    model = keras.Sequential([
        L.Input((10, 10, 4)),
        L.DepthwiseConv2D(3, name="dw"),
        L.SeparableConv2D(6, 3, name="sep"),
        L.BatchNormalization(name="bn"),
        L.Reshape((6, 6, 6)),
        L.ConvLSTM1D(3, 3, name="clstm"),
    ])
    rows, skipped = keras_layers(model)
    assert rows == []
    reasons = {skip.longname: skip.reason for skip in skipped}
    assert "depthwise" in reasons["dw"]
    assert "separable" in reasons["sep"]
    # (issue 14: LSTM cells are analysed now, per gate; a ConvLSTM cell is still skipped)
    assert "not supported" in reasons["clstm.conv_lstm_cell"]
    assert "bn" not in reasons
    assert all(isinstance(skip, Skip) for skip in skipped)


def test_unbuilt_model_does_not_raise() -> None:
    model = keras.Sequential([L.Dense(4, name="a"), L.Conv1D(3, 2, name="c"),
                              L.MultiHeadAttention(2, 3, name="mha")])
    rows, skipped = keras_layers(model)
    assert rows == []
    assert {s.longname for s in skipped} == {"a", "c", "mha"}
    assert all("not built" in s.reason for s in skipped)


def test_lora_dense_effective_kernel() -> None:
    keras.utils.set_random_seed(1)
    model = keras.Sequential([L.Input((6,)), L.Dense(4, name="d")])
    dense = model.get_layer("d")
    base = _np(dense.kernel).copy()
    dense.enable_lora(2, lora_alpha=3)
    dense.lora_kernel_b.assign(np.random.default_rng(0).normal(size=(2, 4)).astype("float32"))
    (row,), _ = keras_layers(model)
    delta = 1.5 * _np(dense.lora_kernel_a) @ _np(dense.lora_kernel_b)
    assert np.abs(delta).max() > 1e-3
    np.testing.assert_allclose(row.weight, base + delta, rtol=1e-5, atol=1e-6)
    applied = _np(dense(np.eye(6, dtype="float32"))) - _np(dense.bias)
    np.testing.assert_allclose(row.weight, applied, rtol=1e-5, atol=1e-6)


def _applied_matrices(model: keras.Model) -> dict[str, np.ndarray]:
    """The linear map each layer applies, probed with one-hot inputs (biases are zero)."""
    dense, ein, embed = (model.get_layer(n) for n in ("dense", "ein", "embed"))
    eye = np.eye(6, dtype="float32")
    return {
        "dense": _np(dense(eye)),
        "ein": _np(ein(eye[None])).reshape(6, -1),
        "embed": _np(embed(np.arange(VOCAB))),
    }


def _quantizable_model() -> keras.Model:
    keras.utils.set_random_seed(2)
    tokens = L.Input((3,), dtype="int32")
    x = L.Input((3, 6))
    e = L.Embedding(VOCAB, 6, name="embed")(tokens)
    h = L.Dense(6, name="dense")(L.Add()([x, e]))
    h = L.EinsumDense("abc,cde->abde", output_shape=(3, 2, 5), name="ein")(h)
    return keras.Model([tokens, x], h)


@pytest.mark.parametrize("mode", ["int8", "int4", "int4-grouped", "int8-lora"])
def test_quantized_kernels_are_dequantized(mode: str) -> None:
    model = _quantizable_model()
    before = {r.longname: r.weight for r in keras_layers(model)[0]}
    if mode == "int8-lora":
        model.get_layer("dense").enable_lora(2)
        model.get_layer("embed").enable_lora(2)
    if mode == "int4-grouped":
        model.quantize(config=keras.quantizers.Int4QuantizationConfig(block_size=2))
    else:
        model.quantize(mode.split("-")[0])
    if mode == "int8-lora":
        for name in ("dense", "embed"):
            layer = model.get_layer(name)
            b = layer.lora_kernel_b if name == "dense" else layer.lora_embeddings_b
            b.assign(np.full(b.shape, 0.1, dtype="float32"))
    rows, skipped = keras_layers(model)
    assert skipped == []
    by = _by_longname(rows)
    assert set(by) == {"embed", "dense", "ein"}
    for name, applied in _applied_matrices(model).items():
        got = by[name].weight
        assert got.dtype.kind == "f"
        np.testing.assert_allclose(got, applied, rtol=1e-4, atol=1e-5, err_msg=name)
        # Close to the float weights they came from. Not for grouped int4: Keras's own
        # zero points saturate with tiny groups, the forward pass (checked above) agrees anyway.
        if mode in ("int8", "int4"):
            err = np.abs(got - before[name]).max() / np.abs(before[name]).max()
            assert err < (0.02 if mode == "int8" else 0.2), name


def test_einsum_matrix_splits() -> None:
    rng = np.random.default_rng(0)
    k = rng.normal(size=(4, 3))
    assert einsum_matrix("abc,cd->abd", k).shape == (4, 3)
    k = rng.normal(size=(4, 2, 3))
    np.testing.assert_array_equal(einsum_matrix("abc,cde->abde", k), k.reshape(4, 6))
    k = rng.normal(size=(2, 3, 4))
    np.testing.assert_array_equal(einsum_matrix("abcd,cde->abe", k), k.reshape(6, 4))
    k = rng.normal(size=(5, 4))  # output axis first in the kernel
    np.testing.assert_array_equal(einsum_matrix("...c,dc->...d", k), k.T)
    with pytest.raises(ValueError, match="neither only"):
        einsum_matrix("abc,bcd->abd", rng.normal(size=(3, 4, 5)))
    with pytest.raises(ValueError, match="no output axis"):
        einsum_matrix("abc,c->ab", rng.normal(size=(4,)))
    with pytest.raises(ValueError, match="form"):
        einsum_matrix("abc->ab", rng.normal(size=(4,)))


@pytest.mark.parametrize("equation,shape", [
    ("abc,cd->abd", (4, 3)), ("abc,cde->abde", (4, 2, 3)), ("abcd,cde->abe", (2, 3, 4)),
    ("...c,dc->...d", (5, 4)), ("abc,dce->abde", (2, 4, 3)),  # MHA query/key/value: (d, h, k)
    ("abcd,cde->abe", (3, 2, 6)),  # MHA attention_output: (heads, value_dim, d_model)
])
def test_einsum_kernel_inverts_einsum_matrix(equation, shape) -> None:
    kernel = np.random.default_rng(1).normal(size=shape)
    matrix = einsum_matrix(equation, kernel)
    np.testing.assert_array_equal(einsum_kernel(equation, matrix, shape), kernel)
    with pytest.raises(ValueError, match="does not fit"):
        einsum_kernel(equation, matrix[:-1], shape)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("shape", [(3, 4, 5), (3, 2, 4, 5), (2, 2, 3, 4, 5)])
def test_conv_kernel_inverts_conv_weight(shape, transposed) -> None:
    """Keras (*k, in, out) (transposed: (*k, out, in)) <-> torch order (out, in, *k)."""
    kernel = np.random.default_rng(2).normal(size=shape)
    weight = conv_weight(kernel, transposed=transposed)
    out, inp = (shape[-2], shape[-1]) if transposed else (shape[-1], shape[-2])
    assert weight.shape == (out, inp, *shape[:-2])
    np.testing.assert_array_equal(conv_kernel(weight, shape, transposed=transposed), kernel)
    with pytest.raises(ValueError, match="does not fit"):
        conv_kernel(weight[:, :-1], shape, transposed=transposed)


def test_analysis_layout_round_trip_on_layers(model: keras.Model) -> None:
    """For each analysed layer of the model: the row's weight is ``to_analysis_layout`` of the
    kernel, and ``from_analysis_layout`` gives the kernel back."""
    conv = keras.Sequential([L.Input((6, 6, 2)), L.Conv2D(3, 3, name="c"),
                             L.Conv2DTranspose(4, 2, name="t")])
    checked = []
    for root in (model, conv):
        for layer_id, longname, layer in walk_layers(root):
            row = layer_row(layer, layer_id, str(layer.name), longname)
            if not isinstance(row, LayerWeights):
                continue
            attr = "embeddings" if isinstance(layer, L.Embedding) else "kernel"
            kernel = _np(getattr(layer, attr))
            np.testing.assert_array_equal(to_analysis_layout(layer, kernel), row.weight)
            back = from_analysis_layout(layer, np.asarray(row.weight), kernel.shape)
            np.testing.assert_array_equal(back, kernel)
            checked.append(longname)
    assert {"embed", "mha.query", "mha.attention_output", "ein", "c", "t"} <= set(checked)


def test_unsplittable_einsum_is_skipped() -> None:
    model = keras.Sequential([L.Input((3, 4)),
                              L.EinsumDense("abc,bcd->abd", output_shape=(3, 5), name="bd")])
    rows, skipped = keras_layers(model)
    assert rows == [] and [s.longname for s in skipped] == ["bd"]
    assert "neither only" in skipped[0].reason


def test_extract_layers_dispatches_to_keras(model: keras.Model) -> None:
    # With the torch backend a Keras layer is also a ``torch.nn.Module``: ``extract_layers`` must
    # test for Keras before torch.
    rows, _ = extract_layers(model)
    expected = keras_layers(model)[0]
    assert [r.longname for r in rows] == [r.longname for r in expected], (
        "extract_layers did not dispatch a Keras model to keras_layers")
