"""The history is the whole record: the policies' actions after each analysis record, and the
compact ESDs on a schedule in the ``ww_spectra.jsonl`` sidecar (``ww_callbacks.esd``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ww_callbacks.esd import BINS, SPECTRA_FILE, EsdSchedule, compact_esd
from ww_callbacks.history import (
    HISTORY_FILE,
    HistoryWriter,
    load_history,
    read_actions,
    read_records,
    read_spectra,
)

torch = pytest.importorskip("torch")
nn = torch.nn


def test_compact_esd_histogram_fit_and_traps():
    rng = np.random.default_rng(0)
    evals = np.sort(rng.pareto(2.0, 300) + 0.01)
    rand = np.sort(rng.uniform(0.05, 2.0, 300))
    row = {"alpha": 3.21, "xmin": 0.5, "xmax": float(evals.max()), "num_pl_spikes": 40,
           "rand_bulk_max": 1.9, "rand_num_spikes": 2}
    esd = compact_esd(evals, row, rand)
    assert len(esd["counts"]) == BINS and sum(esd["counts"]) == 300
    assert len(esd["rand_counts"]) == BINS and sum(esd["rand_counts"]) == 300
    lo, hi = esd["log10_lo"], esd["log10_hi"]
    assert lo == pytest.approx(math.log10(min(evals.min(), rand.min())), rel=1e-5)
    assert hi == pytest.approx(math.log10(max(evals.max(), rand.max())), rel=1e-5)
    assert esd["alpha"] == 3.21 and esd["xmin"] == 0.5 and esd["n"] == 300
    assert esd["bulk_max"] == 1.9
    assert esd["spikes"] == pytest.approx(rand[-2:].tolist(), rel=1e-5)
    json.dumps(esd, allow_nan=False)  # plain JSON: no NaN
    # degenerate spectra never raise
    assert compact_esd([], {})["counts"] == []
    assert compact_esd(np.zeros(5), {"alpha": float("nan")})["alpha"] is None
    one = compact_esd(np.ones(4), {})
    assert sum(one["counts"]) == 4 and one["log10_lo"] < one["log10_hi"]


def test_schedule_first_cadence_change_and_final():
    import pandas as pd

    class R:
        def __init__(self, alpha, traps=0):
            self.details = pd.DataFrame([{"longname": "a", "alpha": alpha, "status": "success",
                                          "rand_num_spikes": traps}])

    s = EsdSchedule(3)
    got = [s.due(R(a, t)) for a, t in [(4, 0), (4.1, 0), (4.2, 0), (4.0, 0), (1.9, 0),
                                       (1.9, 1), (1.9, 1)]]
    # first; 3rd (cadence); 5th: band change; 6th: cadence and a new trap; 7th: nothing new
    assert got == [True, False, True, False, True, True, False]
    assert s.due(R(1.9, 1), final=True)
    with pytest.raises(ValueError, match="esd_every"):
        EsdSchedule(-1)


def _digits():
    from sklearn.datasets import load_digits
    data = load_digits()
    return torch.tensor(data.data, dtype=torch.float32) / 16.0, torch.tensor(data.target)


def test_watcher_writes_actions_and_spectra(tmp_path):
    from ww_callbacks.integrations.torch import Watcher
    from ww_callbacks.policies import HTSREarlyStopping, LayerLRBalancer

    x, y = _digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    stop = HTSREarlyStopping("fraction", patience=1, alpha_threshold=100.0,
                             fraction=0.5, verbose=False)  # stops at once: a reason
    with Watcher(model, log_dir=tmp_path, every_n_steps=10, optimizer=opt, tensorboard=False,
                 policies=[LayerLRBalancer(), stop], esd_every=2) as w:
        for _ in range(41):
            idx = torch.randint(0, len(x), (64,), generator=g)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            w.step()
            w.wait_idle()
    steps = [r["step"] for r in read_records(tmp_path)]
    assert steps == [0, 10, 20, 30, 40, 41]
    # each analysis line is followed by its actions line
    lines = [json.loads(ln) for ln in (tmp_path / HISTORY_FILE).read_text().splitlines()]
    kinds = [(ln.get("kind", "analysis"), ln["step"]) for ln in lines]
    assert kinds == [(k, s) for s in steps for k in ("analysis", "actions")]
    actions = read_actions(tmp_path)
    assert [a["step"] for a in actions] == steps
    assert set(actions[-1]["lr_scale"]) == {"0", "2"}
    assert all(v > 0 for v in actions[-1]["lr_scale"].values())
    assert actions[-1]["stop_reason"] and "consecutive" in actions[-1]["stop_reason"]
    # the analysis readers pass the actions lines over
    assert sorted(set(load_history(tmp_path).step)) == steps
    assert len(load_history(tmp_path, level="model")) == len(steps)

    stored = read_spectra(tmp_path)
    # the first, every 2nd analysis and the final one; others only on a band or trap change
    assert {0, 10, 30, 41} <= {s["step"] for s in stored} <= set(steps)
    records = {r["step"]: r for r in read_records(tmp_path)}
    for s in stored:
        assert set(s["layers"]) == {"0", "2"}
        for layer in records[s["step"]]["layers"]:
            esd = s["layers"][layer["longname"]]
            assert esd["alpha"] == pytest.approx(layer["alpha"], rel=1e-5)
            assert sum(esd["counts"]) == layer["num_evals"] if "num_evals" in layer else True
            assert len(esd["counts"]) == BINS
            assert "rand_counts" in esd and "bulk_max" in esd  # traps_every=1: randomized
    # the sidecar is truncated with the history on resume
    HistoryWriter(tmp_path / HISTORY_FILE).truncate_after(10)
    assert [s["step"] for s in read_spectra(tmp_path)] == [0, 10]
    assert [r["step"] for r in read_records(tmp_path)] == [0, 10]
    assert [a["step"] for a in read_actions(tmp_path)] == [0, 10]


def test_readers_tolerate_torn_lines_and_older_records(tmp_path):
    history = tmp_path / HISTORY_FILE
    old = {"format": 1, "step": 0, "epoch": None, "wall_time": 0.0, "duration_s": 0.1,
           "randomized": False, "summary": {}, "layers": [{"longname": "a", "alpha": 3.0}]}
    history.write_text(json.dumps(old) + "\n" + '{"kind": "actions", "step": 0, "lr_sc'
                       + "\n" + json.dumps({**old, "step": 5}) + "\n")
    (tmp_path / SPECTRA_FILE).write_text('{"step": 0, "layers": {"a": {"counts": [1]}}}\n'
                                         '{"step": 5, "lay')
    assert [r["step"] for r in read_records(tmp_path)] == [0, 5]
    assert read_actions(tmp_path) == []
    assert [s["step"] for s in read_spectra(tmp_path)] == [0]
    assert read_spectra(tmp_path / "elsewhere" / HISTORY_FILE) == []  # no sidecar: none
