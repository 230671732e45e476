"""Nothing is passed over silently (issue 10, item 8): for real models, every entry of
``named_parameters()`` (or of a state dict) is either read by an analysed row or listed in
``skipped`` with a reason, biases and norms included; an embedding skipped for ``N > max_N`` is
recorded, by ``analyze`` and by the watcher."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from tests.models import zoo  # noqa: E402
from ww_callbacks import analyze  # noqa: E402
from ww_callbacks.layers import extract_layers, select_layers  # noqa: E402
from ww_callbacks.session import WatchSession as Watcher  # noqa: E402

transformers = pytest.importorskip("transformers")


def _gpt2_lm() -> nn.Module:
    """A tiny GPT-2 with a language-model head tied to the token embedding."""
    config = transformers.GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=2,
                                     n_positions=16)
    with torch.random.fork_rng():
        return transformers.GPT2LMHeadModel(config)


def _bert() -> nn.Module:
    config = transformers.BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=16, num_labels=3)
    with torch.random.fork_rng():
        return transformers.BertForSequenceClassification(config)


def _mixed() -> nn.Module:
    with torch.random.fork_rng():
        return nn.Sequential(nn.LSTM(8, 16, num_layers=2, bidirectional=True, proj_size=4),
                             nn.GRU(8, 8), nn.MultiheadAttention(16, 2, kdim=8, vdim=12),
                             nn.ConvTranspose2d(4, 8, 3), nn.BatchNorm2d(8), nn.PReLU(),
                             nn.Conv2d(8, 8, 3, groups=2), nn.Bilinear(4, 5, 6))


def _lora() -> nn.Module:
    peft = pytest.importorskip("peft")
    return peft.get_peft_model(_bert(), peft.LoraConfig(r=4, target_modules=["query", "value"]))


MODELS = {"zoo": zoo, "gpt2_tied": _gpt2_lm, "bert": _bert, "mixed": _mixed, "lora": _lora}


def _accounted(model, **options) -> tuple[set[str], set[str], list]:
    adapters = options.pop("adapters", "effective")
    found, skipped = extract_layers(model, adapters=adapters)
    kept, filtered = select_layers(found, **options)
    read = {p for row in kept for p in row.params}
    passed = {p for skip in skipped + filtered for p in skip.params}
    return read, passed, skipped + filtered


@pytest.mark.parametrize("name, adapters", [(name, "effective") for name in MODELS]
                         + [("lora", "only"), ("lora", "both")])
def test_every_parameter_is_analysed_or_skipped(name, adapters):
    model = MODELS[name]()
    read, passed, skipped = _accounted(model, adapters=adapters)
    assert read | passed == {n for n, _ in model.named_parameters()}
    assert read, "something is analysed"
    assert all(skip.reason for skip in skipped)
    for skip in skipped:
        if skip.longname.endswith("bias"):
            assert "1-D" in skip.reason


def test_mixed_model_reasons():
    model = _mixed()
    df = analyze(model, min_evals=1)
    reasons = {s["longname"]: s["reason"] for s in df.attrs["skipped"]}
    assert "1-D" in reasons["4.weight"] and "BatchNorm2d" in reasons["4.weight"]
    assert "1-D" in reasons["5.weight"]  # PReLU's slope
    assert "(6, 4, 5) is not supported" in reasons["7"]  # Bilinear: a 3-D "linear" weight
    assert "0.weight_hh_l1_reverse.forget" in set(df.longname)  # the LSTM is analysed now
    assert {"2.q_proj", "2.k_proj", "2.v_proj"} <= set(df.longname)  # separate q/k/v weights


def test_tied_embedding_is_listed_once():
    model = _gpt2_lm()
    read, passed, _ = _accounted(model)
    assert "transformer.wte.weight" in read
    assert "lm_head.weight" not in {n for n, _ in model.named_parameters()}  # tied: one param


def test_state_dict_entries_are_all_accounted_for():
    model = _bert()
    state = model.state_dict()
    read, passed, skipped = _accounted(state)
    assert read | passed == set(state)
    reasons = {s.longname: s.reason for s in skipped}
    assert "1-D" in reasons["bert.embeddings.LayerNorm.bias"]


def test_embedding_over_max_n_is_recorded(tmp_path):
    model = _gpt2_lm()
    df = analyze(model, max_N=90)
    skipped = {s["longname"]: s for s in df.attrs["skipped"]}
    assert skipped["transformer.wte"]["reason"] == "N 96 > max_N 90"
    assert skipped["transformer.wte"]["params"] == ["transformer.wte.weight"]
    with Watcher(log_dir=tmp_path, max_N=90, max_duty=None, traps_every=0) as watcher:
        watcher.snapshot(model, step=0)
        watcher.wait_idle()
        watcher.poll()
        assert any(s.longname == "transformer.wte" and "max_N" in s.reason
                   for s in watcher.skipped)
        details = watcher.last_result.details
        assert "transformer.wte" in {s["longname"] for s in details.attrs["skipped"]}
        assert "transformer.wte" not in set(details.longname)
