"""peft LoRA layers (issue 14): the effective weight ``W0 + scaling * B @ A`` equals what
``merge_and_unload()`` writes, ``adapters="only"`` / ``"both"``, WeightWatcher 0.7.7's
``peft=True`` rows, and snapshots that copy the frozen base once and the adapters every time."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from ww_callbacks import analyze  # noqa: E402
from ww_callbacks.layers import extract_layers  # noqa: E402
from ww_callbacks.layers.composite import LoraWeight  # noqa: E402
from ww_callbacks.snapshot import Snapshotter  # noqa: E402

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

PREFIX = "base_model.model."
METRICS = ["alpha", "D", "lambda_max", "log_norm", "stable_rank", "entropy", "log_alpha_norm"]


def _randomize_adapters(model: nn.Module, seed: int = 0, scale: float = 0.1) -> nn.Module:
    """Non-zero A and B (peft starts B at 0), from a private generator."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return model


def _tiny_bert() -> nn.Module:
    config = transformers.BertConfig(vocab_size=96, hidden_size=48, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=96,
                                     max_position_embeddings=32)
    with torch.random.fork_rng():  # transformers initialises from the global generator
        torch.manual_seed(0)
        return transformers.BertModel(config).double()


def _tiny_gpt2() -> nn.Module:
    config = transformers.GPT2Config(vocab_size=96, n_embd=48, n_layer=2, n_head=2,
                                     n_positions=32)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return transformers.GPT2Model(config).double()


class ConvEmbed(nn.Module):
    """An embedding, a 3x3 and a 1x1 convolution and a dense layer, all LoRA targets."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        with torch.random.fork_rng():
            self._layers()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)

    def _layers(self) -> None:
        self.emb = nn.Embedding(80, 24)
        self.conv = nn.Conv2d(6, 16, 3)
        self.point = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(24, 40)


def _peft(model: nn.Module, targets: list[str], r: int = 8, alpha: int = 16,
          seed: int = 0) -> nn.Module:
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0,
                             fan_in_fan_out="c_attn" in targets)
    wrapped = peft.get_peft_model(model, config)
    return _randomize_adapters(wrapped, seed)


CASES = {
    "bert": lambda: _peft(_tiny_bert(), ["query", "value", "dense"]),
    "gpt2": lambda: _peft(_tiny_gpt2(), ["c_attn"]),  # Conv1D: fan_in_fan_out
    "conv_embed": lambda: _peft(ConvEmbed().double(), ["emb", "conv", "point", "fc"], r=4,
                                alpha=12),
}


@pytest.fixture(scope="module", params=list(CASES))
def lora_model(request):
    return CASES[request.param]()


def _merged_state(model: nn.Module) -> dict[str, np.ndarray]:
    merged = copy.deepcopy(model).merge_and_unload()
    return {k: v.detach().numpy() for k, v in merged.state_dict().items()}


def test_effective_weight_equals_merge_and_unload(lora_model):
    rows, _ = extract_layers(lora_model)
    lora = [row for row in rows if row.layer_type == "lora"]
    assert lora, "the LoRA layers are found"
    merged = _merged_state(lora_model)
    for row in lora:
        assert isinstance(row.weight, LoraWeight)
        key = row.longname[len(PREFIX):] + ".weight"
        np.testing.assert_allclose(row.weight.to_numpy(), merged[key], rtol=0, atol=1e-9,
                                   err_msg=row.longname)
        assert np.abs(row.weight.to_numpy() - merged[key]).max() <= 1e-9
    # and the lora_A / lora_B / base_layer modules are not analysed on their own
    assert not any(".lora_A" in r.longname or "base_layer" in r.longname for r in rows)


def test_effective_rows_equal_the_merged_model(lora_model):
    ours = analyze(lora_model, min_evals=1)
    merged = copy.deepcopy(lora_model).merge_and_unload()
    ref = analyze(merged, min_evals=1).set_index("longname")
    lora = ours[ours.layer_type == "lora"]
    assert len(lora) > 0
    for _, row in lora.iterrows():
        other = ref.loc[row.longname[len(PREFIX):]]
        assert (row.N, row.M, row.rf) == (other.N, other.M, other.rf)
        for col in METRICS:
            assert row[col] == pytest.approx(other[col], rel=1e-9), (row.longname, col)
    # every other layer is the same as in the merged model
    rest = ours[ours.layer_type != "lora"]
    np.testing.assert_allclose(rest.alpha, ref.loc[[n[len(PREFIX):] for n in rest.longname]].alpha,
                               rtol=1e-12)


def test_adapters_only_is_the_scaled_update(lora_model):
    both = analyze(lora_model, adapters="both", min_evals=1)
    only = analyze(lora_model, adapters="only", min_evals=1)
    effective = analyze(lora_model, min_evals=1)
    updates = both[both.longname.str.contains(".lora_BA.default", regex=False)]
    assert list(updates.longname) == list(only[only.layer_type == "lora"].longname)
    n_lora = len(effective[effective.layer_type == "lora"])
    assert len(both[both.layer_type == "lora"]) == 2 * n_lora
    rows, skipped = extract_layers(lora_model, adapters="only")
    merged = _merged_state(lora_model)
    originals = {k: v.detach().numpy() for k, v in lora_model.state_dict().items()}
    for row in (r for r in rows if r.layer_type == "lora"):
        module = row.longname.split(".lora_BA.")[0]
        base = originals[module + ".base_layer.weight"]
        update = merged[module[len(PREFIX):] + ".weight"] - base
        np.testing.assert_allclose(row.weight.to_numpy(), update, atol=1e-12)
    reasons = {s.longname: s.reason for s in skipped}
    assert any("frozen base weight" in reason for reason in reasons.values())


def test_adapters_option_is_checked():
    with pytest.raises(ValueError, match="adapters"):
        analyze(nn.Linear(10, 10), adapters="merged")


@pytest.mark.reference
def test_only_equals_weightwatcher_peft(reference_details):
    """WeightWatcher 0.7.7 ``peft=True`` analyses ``B @ A`` (no scaling: lora_alpha = r makes
    scaling 1), keeping its top r eigenvalues; ww_callbacks keeps all M (the zeros add nothing to
    the fit, which uses eigenvalues > 1e-5, nor to the norms): num_evals and rank_loss differ."""
    model = _peft(ConvEmbed().double(), ["fc"], r=8, alpha=8)
    ours = analyze(model, adapters="only")
    ours = ours[ours.layer_type == "lora"]
    ref = reference_details(model, peft=True)
    merged = ours.merge(ref, on="longname", suffixes=("", "_ref"))
    assert len(merged) == 1 and merged.longname[0] == PREFIX + "fc.lora_BA.default"
    for col in ("alpha", "D", "lambda_max", "log_norm", "entropy", "log_spectral_norm",
                "alpha_weighted", "matrix_rank", "N", "M"):
        assert merged[col][0] == pytest.approx(float(merged[col + "_ref"][0]), rel=1e-6), col
    assert merged.num_evals[0] == 24 and merged.num_evals_ref[0] == 8


def test_snapshot_copies_the_frozen_base_once(lora_model):
    rows, _ = extract_layers(lora_model, adapters="both")
    lora = [row for row in rows if row.layer_type == "lora" and row.weight.parts.get("base")
            is not None]
    frozen_plain = [row for row in rows if row.layer_type != "lora"]
    snapshotter = Snapshotter(rows)
    first = snapshotter.take(0, None, False)
    # a training step changes the adapters only
    with torch.no_grad():
        for name, p in lora_model.named_parameters():
            if "lora_" in name:
                p.add_(0.01)
    second = snapshotter.take(1, None, False)
    by1 = {row.longname: row.weight for row in first.layers}
    by2 = {row.longname: row.weight for row in second.layers}
    for row in lora:
        w1, w2 = by1[row.longname], by2[row.longname]
        assert w1.parts["base"] is w2.parts["base"], "the frozen base is copied once"
        for name in w1.parts:
            if name != "base":
                assert w1.parts[name] is not w2.parts[name]
        assert not np.allclose(w1.to_numpy(), w2.to_numpy())
        np.testing.assert_allclose(w2.to_numpy(), row.weight.to_numpy(), atol=1e-12)
    for row in frozen_plain:  # the rest of the base model is frozen by peft: copied once too
        assert by1[row.longname] is by2[row.longname]
    snapshotter.close()


def test_hf_trainer_watches_the_adapters(tmp_path, one_torch_thread):
    """A real LoRA fine-tune with the Hugging Face ``Trainer``: the callback records the
    effective weights and the updates, the updates start at zero (peft's B = 0) and grow, and
    the last analysis is of the final weights."""
    from ww_callbacks.history import load_history
    from ww_callbacks.integrations.transformers import WeightWatcherCallback

    model = peft.get_peft_model(_tiny_bert(), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0))
    model = model.float()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 96, (64, 12), generator=g)

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return len(ids)

        def __getitem__(self, i):
            return {"input_ids": ids[i]}

    class Head(nn.Module):  # a regression loss on the pooled output, to train the adapters
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, input_ids):
            pooled = self.body(input_ids=input_ids).last_hidden_state.mean(dim=(1, 2))
            return {"loss": ((pooled - input_ids.float().mean(1) / 96) ** 2).mean()}

    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=6,
                                          per_device_train_batch_size=16, learning_rate=1e-2,
                                          report_to=[], use_cpu=True, save_strategy="no",
                                          disable_tqdm=True, logging_steps=50)
    callback = WeightWatcherCallback(every_n_steps=2, every_n_epochs=None, log_dir=tmp_path,
                                     tensorboard=False, adapters="both", traps_every=0,
                                     wait="always", min_evals=1)
    wrapped = Head(model)
    transformers.Trainer(model=wrapped, args=args, train_dataset=Data(),
                         callbacks=[callback]).train()
    history = load_history(tmp_path)
    updates = history[history.longname.str.contains(".lora_BA.default", regex=False)]
    assert sorted(set(updates.step)) == [0, 2, 4, 6]
    first = updates[updates.step == 0]
    assert (first.lambda_max == 0).all() and (first.status == "failed").all()
    last = history[history.step == 6].set_index("longname")
    direct = analyze(wrapped, adapters="both", min_evals=1).set_index("longname")
    lora = direct[direct.layer_type == "lora"]
    assert len(lora) == 8 and (lora.lambda_max > 0).all()
    np.testing.assert_allclose(last.loc[lora.index].lambda_max, lora.lambda_max, rtol=1e-9)


def test_frozen_base_written_in_place_is_copied_again():
    model = _peft(ConvEmbed().double(), ["fc"])
    rows, _ = extract_layers(model)
    row = next(r for r in rows if r.layer_type == "lora")
    snapshotter = Snapshotter([row])
    first = snapshotter.take(0, None, False).layers[0].weight
    with torch.no_grad():
        model.base_model.model.fc.base_layer.weight.mul_(2.0)  # bumps the version counter
    second = snapshotter.take(1, None, False).layers[0].weight
    assert first.parts["base"] is not second.parts["base"]
    np.testing.assert_allclose(second.to_numpy(), row.weight.to_numpy(), atol=1e-12)
