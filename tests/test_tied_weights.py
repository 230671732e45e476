"""Tied weights (one matrix shared by two modules, ``lm_head.weight is wte.weight``): analysed
once, the other names in ``aliases`` and skipped as "tied to <name>"; ``tied="each"`` gives
WeightWatcher 0.7.7's rows (checked against it)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import ww_callbacks  # noqa: E402
from ww_callbacks.checkpoints import open_checkpoint  # noqa: E402
from ww_callbacks.layers.tied import memory_key  # noqa: E402


class TiedLM(nn.Module):
    """Embedding, one block, a head tied to the embedding (GPT-2 / nanoGPT style)."""

    def __init__(self, vocab: int = 65, dim: int = 32):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.wte = nn.Embedding(vocab, dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.proj = nn.Linear(4 * dim, dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.lm_head.weight = self.wte.weight


def test_tied_weight_is_one_row_with_aliases_and_a_skip():
    model = TiedLM()
    df = ww_callbacks.analyze(model, progress=None)
    assert list(df.longname) == ["wte", "fc", "proj"]
    assert list(df.aliases) == ["lm_head", "", ""]
    tied = [s for s in df.attrs["skipped"] if s["longname"] == "lm_head"]
    assert len(tied) == 1 and tied[0]["reason"] == "tied to wte"
    each = ww_callbacks.analyze(model, progress=None, tied="each")
    assert list(each.longname) == ["wte", "fc", "proj", "lm_head"] and "aliases" not in each
    assert each.alpha[3] == each.alpha[0] == df.alpha[0]
    # the means count the matrix once
    assert ww_callbacks.summarize(df)["alpha"] == pytest.approx(df.alpha.mean())
    assert ww_callbacks.summarize(each)["alpha"] != pytest.approx(df.alpha.mean())
    with pytest.raises(ValueError, match="tied must be one of"):
        ww_callbacks.analyze(model, tied="twice")


def test_untied_model_has_no_aliases_column_and_transposed_tie_is_found():
    untied = nn.Sequential(nn.Linear(32, 64), nn.Linear(64, 32))
    assert "aliases" not in ww_callbacks.analyze(untied, progress=None).columns
    w = torch.randn(64, 32)
    assert memory_key(w) == memory_key(w.T) != memory_key(w[:32])
    assert memory_key(torch.empty(3, 3, device="meta")) is None
    sd = {"enc.weight": w, "dec.weight": w.T, "other.weight": torch.randn(64, 32)}
    df = ww_callbacks.analyze(sd, progress=None)
    assert list(df.longname) == ["enc", "other"] and df.aliases[0] == "dec"


def test_checkpoint_keeps_the_tie_and_the_models_first_name(tmp_path):
    model = TiedLM()
    torch.save({"model": model.state_dict(), "iter_num": 1}, tmp_path / "ckpt.pt")
    weights = open_checkpoint(tmp_path / "ckpt.pt")
    assert list(weights)[0] == "fc.bias"  # natural order: lm_head before wte ...
    from_file = ww_callbacks.analyze(weights, progress=None)
    # ... yet the row is under the model's first name, as the watcher records it
    row = from_file.set_index("longname").loc["wte"]
    assert row.aliases == "lm_head" and "lm_head" not in set(from_file.longname)
    live = ww_callbacks.analyze(model, progress=None).set_index("longname")
    np.testing.assert_allclose(row.alpha, live.loc["wte"].alpha, rtol=1e-12)
    api = ww_callbacks.analyze(str(tmp_path / "ckpt.pt"), progress=None)
    assert sorted(api.longname) == sorted(live.index)


def test_watcher_history_has_the_tied_matrix_once(tmp_path):
    from ww_callbacks.history import load_history
    from ww_callbacks.integrations.torch import Watcher

    model = TiedLM()
    with Watcher(model, log_dir=tmp_path, tensorboard=False, every_n_steps=1, wait="always") as ww:
        ww.step()
    hist = load_history(tmp_path)
    assert "lm_head" not in set(hist.longname)
    assert set(hist[hist.longname == "wte"].aliases) == {"lm_head"}
    assert any(s.reason == "tied to wte" for s in ww.skipped)
    each = tmp_path / "each"
    with Watcher(model, log_dir=each, tensorboard=False, every_n_steps=1, wait="always",
                 tied="each") as ww:
        ww.step()
    assert "lm_head" in set(load_history(each).longname)


@pytest.mark.reference
def test_tied_each_equals_weightwatcher_rows(reference_details):
    model = TiedLM()
    ref = reference_details(model)
    each = ww_callbacks.analyze(model, progress=None, tied="each")
    assert list(ref.longname) == list(each.longname)  # the reference: one row per module
    np.testing.assert_allclose(each.alpha, ref.alpha.astype(float), rtol=1e-6)
    once = ww_callbacks.analyze(model, progress=None)
    assert len(once) == len(ref) - 1
