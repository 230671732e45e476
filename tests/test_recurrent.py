"""torch recurrent layers (issue 14): every layer and direction of nn.LSTM / nn.GRU / nn.RNN split
into its gate matrices, the same rows from the module, its state dict and a safetensors file, and
each gate equal to the hand-cut block of the stacked weight."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from ww_callbacks import analyze  # noqa: E402
from ww_callbacks.layers import extract_layers  # noqa: E402

METRICS = ["alpha", "D", "lambda_max", "log_norm", "stable_rank", "entropy", "sv_min"]


def _filled(module: nn.Module, seed: int = 0) -> nn.Module:
    """Weights drawn from a private generator (never the global torch seed)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module


def _model(seed: int = 0) -> nn.Module:
    return _filled(nn.ModuleDict({
        "lstm": nn.LSTM(24, 32, num_layers=2, bidirectional=True),
        "lstm_proj": nn.LSTM(16, 40, num_layers=2, proj_size=12),
        "gru": nn.GRU(20, 24, num_layers=2, bidirectional=True),
        "rnn": nn.RNN(10, 18),
        "head": nn.Linear(24, 5),
    }), seed)


@pytest.fixture(scope="module")
def model():
    return _model()


def test_every_layer_direction_and_gate(model):
    df = analyze(model, min_evals=1)
    names = list(df.longname)
    for layer in (0, 1):
        for suffix in ("", "_reverse"):
            for kind in ("ih", "hh"):
                for gate in ("input", "forget", "cell", "output"):
                    assert f"lstm.weight_{kind}_l{layer}{suffix}.{gate}" in names
                for gate in ("reset", "update", "new"):
                    assert f"gru.weight_{kind}_l{layer}{suffix}.{gate}" in names
        assert f"lstm_proj.weight_hr_l{layer}" in names
    assert "lstm.weight_hh_l0.forget" in names and "rnn.weight_hh_l0" in names
    assert len(df[df.layer_type == "lstm"]) == 2 * 2 * 2 * 4 + 2 * (2 * 4 + 1)
    assert len(df[df.layer_type == "gru"]) == 2 * 2 * 2 * 3
    assert len(df[df.layer_type == "rnn"]) == 2
    by = df.set_index("longname")
    assert (by.loc["lstm.weight_ih_l0.input", ["N", "M"]] == [32, 24]).all()
    assert (by.loc["lstm.weight_ih_l1.input", ["N", "M"]] == [64, 32]).all()  # 2H inputs
    # proj_size: hh is (4H, P), hr is (P, H)
    assert (by.loc["lstm_proj.weight_hh_l0.cell", ["N", "M"]] == [40, 12]).all()
    assert (by.loc["lstm_proj.weight_ih_l1.cell", ["N", "M"]] == [40, 12]).all()
    assert (by.loc["lstm_proj.weight_hr_l1", ["N", "M"]] == [40, 12]).all()


@pytest.mark.parametrize("longname, param, gate, gates", [
    ("lstm.weight_hh_l1_reverse.forget", "lstm.weight_hh_l1_reverse", 1, 4),
    ("lstm.weight_ih_l0.output", "lstm.weight_ih_l0", 3, 4),
    ("lstm_proj.weight_hh_l1.cell", "lstm_proj.weight_hh_l1", 2, 4),
    ("gru.weight_ih_l1_reverse.reset", "gru.weight_ih_l1_reverse", 0, 3),
    ("gru.weight_hh_l0.new", "gru.weight_hh_l0", 2, 3),
])
def test_gate_equals_hand_cut_block(model, longname, param, gate, gates):
    """The row of a gate = a plain nn.Linear holding torch's block of the stacked weight (torch's
    gate order: LSTM i, f, g, o; GRU r, z, n)."""
    stacked = dict(model.named_parameters())[param].detach()
    rows = stacked.shape[0] // gates
    block = stacked[gate * rows:(gate + 1) * rows]
    linear = nn.Linear(block.shape[1], block.shape[0])
    with torch.no_grad():
        linear.weight.copy_(block)
    ours = analyze(model, min_evals=1).set_index("longname").loc[longname]
    ref = analyze(linear, min_evals=1).iloc[0]
    for col in METRICS:
        assert ours[col] == pytest.approx(ref[col], rel=1e-12), col
    w = block.double().numpy()
    assert ours.lambda_max == pytest.approx(np.linalg.eigvalsh(w.T @ w)[-1], rel=1e-10)


def test_gate_rows_are_views_of_the_parameter(model):
    rows, _ = extract_layers(model)
    by = {row.longname: row for row in rows}
    forget = by["lstm.weight_hh_l0.forget"]
    assert forget.params == ("lstm.weight_hh_l0",)
    assert forget.weight.data_ptr() == model["lstm"].weight_hh_l0.data_ptr() + 32 * 32 * 4


def test_state_dict_and_safetensors_give_the_same_rows(model, tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    direct = analyze(model, min_evals=1)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    from_state = analyze(state, min_evals=1)
    path = tmp_path / "rnn.safetensors"
    safetensors_torch.save_file(state, str(path))
    from_file = analyze(path, min_evals=1)
    for other in (from_state, from_file):
        other = other.set_index("longname").loc[list(direct.longname)]
        assert list(other.layer_type) == list(direct.layer_type)
        assert list(other.N) == list(direct.N) and list(other.M) == list(direct.M)
        for col in METRICS:
            np.testing.assert_allclose(other[col], direct[col], rtol=1e-12, err_msg=col)


def test_biases_are_listed_as_skipped(model):
    df = analyze(model, min_evals=1)
    skipped = {s["longname"]: s["reason"] for s in df.attrs["skipped"]}
    assert "1-D" in skipped["lstm.bias_hh_l1_reverse"]
    assert "1-D" in skipped["gru.bias_ih_l0"]


def test_a_trained_lstm_moves_away_from_init():
    """A real forward/backward pass trains the LSTM; its gate rows follow the parameters."""
    g = torch.Generator().manual_seed(1)
    lstm = _filled(nn.LSTM(8, 16, batch_first=True), seed=2)
    head = _filled(nn.Linear(16, 1), seed=3)
    before = analyze(lstm, min_evals=1)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=0.05)
    x = torch.randn(64, 10, 8, generator=g)
    y = x.sum(dim=(1, 2), keepdim=False)[:, None]
    for _ in range(30):
        opt.zero_grad()
        out, _ = lstm(x)
        loss = ((head(out[:, -1]) - y) ** 2).mean()
        loss.backward()
        opt.step()
    after = analyze(lstm, min_evals=1)
    assert list(after.longname) == list(before.longname)
    assert not np.allclose(after.lambda_max, before.lambda_max)
