"""Issue 20: layers whose fit rests on fewer than ``min_evals_for_trust`` eigenvalues are left out
of the ``ww/`` means by default and counted in ``ww/layers_low_evidence``; the means over every
layer (WeightWatcher 0.7.7's summary) stay as ``ww/all/...``, and ``min_evals_for_trust=0``
restores the old ``ww/`` means. Alerts show enough digits and say when a layer has little
evidence."""

from __future__ import annotations

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from ww_callbacks.dashboard import Dashboard, two_alphas  # noqa: E402
from ww_callbacks.history import read_records  # noqa: E402
from ww_callbacks.options import OptionError  # noqa: E402
from ww_callbacks.results import AnalysisResult  # noqa: E402
from ww_callbacks.scalars import model_summary  # noqa: E402
from ww_callbacks.session import WatchSession  # noqa: E402

MEANS = {"alpha": "alpha_mean", "alpha_weighted": "alpha_weighted_mean",
         "log_norm": "log_norm_mean"}


def tiny_next_to_big() -> nn.Module:
    """Two 256x256 layers (256 eigenvalues each) and a Linear(8, 8) (8 eigenvalues: the
    smallest layer the default ``min_evals`` analyses); weights from a private generator."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256), nn.Linear(8, 8))
    with torch.no_grad():
        for layer in model:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.05)
    return model


class Keep:
    def __init__(self):
        self.results = []

    def write(self, result, scalars):
        self.results.append((result, scalars))

    def close(self):
        pass


def one_analysis(model: nn.Module, log_dir, **options) -> tuple[AnalysisResult, dict]:
    keep = Keep()
    with WatchSession(log_dir=log_dir, sinks=[keep], traps_every=0, **options) as session:
        assert session.snapshot(model, 0)
        assert session.wait_idle()
        session.poll()
    ((result, scalars),) = keep.results
    return result, scalars


@pytest.mark.reference
def test_means_leave_out_the_tiny_layer_and_ww_all_is_weightwatchers(tmp_path,
                                                                      reference_details):
    """The default (50) against WeightWatcher 0.7.7's ``get_summary`` on the same model, with
    the analysis in the child process; ``min_evals_for_trust=0`` in a thread gives
    WeightWatcher's means as ``ww/`` again."""
    ww = pytest.importorskip("weightwatcher")
    model = tiny_next_to_big()
    ref = reference_details(model)
    assert len(ref) == 3 and list(ref.num_evals) == [256, 256, 8]
    reference = ww.WeightWatcher(model=model).get_summary(ref)

    result, scalars = one_analysis(model, tmp_path / "default", analysis_in="process")
    details = result.details.set_index("longname")
    assert (details.status == "success").all() and list(details.num_evals) == [256, 256, 8]
    assert result.min_evals_for_trust == 50
    assert scalars["ww/layers_low_evidence"] == 1.0
    for metric, name in MEANS.items():
        assert scalars[f"ww/all/{name}"] == pytest.approx(reference[metric], rel=1e-6), metric
        big = details.loc[["0", "1"], metric].mean()
        assert scalars[f"ww/{name}"] == pytest.approx(big, rel=1e-12), metric
    assert scalars["ww/alpha_mean"] != pytest.approx(reference["alpha"], rel=1e-3)
    # the history record says which threshold was used, and holds the same summary
    (record,) = read_records(tmp_path / "default")
    assert record["min_evals_for_trust"] == 50
    assert record["summary"]["ww/layers_low_evidence"] == 1.0
    assert record["summary"]["ww/alpha_mean"] == pytest.approx(scalars["ww/alpha_mean"])

    result, scalars = one_analysis(model, tmp_path / "zero", analysis_in="thread",
                                   min_evals_for_trust=0)
    assert scalars["ww/layers_low_evidence"] == 0.0
    assert not [k for k in scalars if k.startswith("ww/all/")]
    for metric, name in MEANS.items():
        assert scalars[f"ww/{name}"] == pytest.approx(reference[metric], rel=1e-6), metric
    assert read_records(tmp_path / "zero")[0]["min_evals_for_trust"] == 0


def _details(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{"layer_id": i, "status": "success", "warning": "", **row}
                         for i, row in enumerate(rows)])


def test_a_model_of_small_layers_keeps_every_layer_in_its_means():
    """Nothing better to average: no NaN mean for a monitor (Lightning's EarlyStopping would
    stop on one) when every layer is low evidence; the count says so."""
    details = _details([{"longname": "a", "alpha": 3.0, "alpha_weighted": 1.0, "log_norm": 1.0,
                         "num_evals": 32},
                        {"longname": "b", "alpha": 5.0, "alpha_weighted": 2.0, "log_norm": 2.0,
                         "num_evals": 10}])
    summary = model_summary(details)
    assert summary["ww/alpha_mean"] == summary["ww/all/alpha_mean"] == 4.0
    assert summary["ww/layers_low_evidence"] == 2.0
    mixed = _details([{"longname": "a", "alpha": 3.0, "num_evals": 64},
                      {"longname": "b", "alpha": 9.0, "num_evals": 10},
                      {"longname": "c", "alpha": -1.0, "num_evals": 64, "status": "failed"}])
    summary = model_summary(mixed)
    assert summary["ww/alpha_mean"] == 3.0 and summary["ww/all/alpha_mean"] == 6.0
    assert summary["ww/layers_low_evidence"] == 1.0 and summary["ww/layers_failed"] == 1.0
    assert model_summary(mixed, min_evals_for_trust=0)["ww/alpha_mean"] == 6.0


@pytest.mark.parametrize("value", [-1, "50", 2.5, True, None])
def test_the_option_is_checked_when_the_host_is_made(value):
    from ww_callbacks.integrations.torch import Watcher

    with pytest.raises(OptionError, match=f"min_evals_for_trust={value!r}"):
        Watcher(nn.Linear(4, 4), min_evals_for_trust=value)
    with pytest.raises(OptionError, match="min_evals_for_trust"):
        WatchSession(min_evals_for_trust=value)


def _result(step: int, rows: list[dict], trust: int | None = 50) -> AnalysisResult:
    details = _details(rows)
    return AnalysisResult(step, None, details, model_summary(details), 0.0, 0.0, True,
                          min_evals_for_trust=trust)


def test_alerts_show_digits_that_differ_and_say_when_evidence_is_low():
    assert two_alphas(2.0, 1.9996) == ("2.0000", "1.9996")
    assert two_alphas(2.00004, 1.99996) == ("2.00004", "1.99996")
    assert two_alphas(6.5, 5.25) == ("6.50", "5.25")
    board = Dashboard(images_every=0)
    big = {"longname": "big", "num_evals": 256, "rand_num_spikes": 0}
    tiny = {"longname": "head", "num_evals": 10, "rand_num_spikes": 0}
    assert board.update(_result(0, [{**big, "alpha": 2.0}, {**tiny, "alpha": 3.0}])).alerts == []
    frame = board.update(_result(1, [{**big, "alpha": 1.9996},
                                     {**tiny, "alpha": 1.99, "rand_num_spikes": 5}]))
    text = "\n".join(frame.alerts)
    assert "big crossed into over-trained (alpha 2.0000 -> 1.9996)" in text
    assert "head crossed into over-trained (alpha 3.00 -> 1.99, fit on 10 eigenvalues)" in text
    assert "correlation trap appeared in head (5, on 10 eigenvalues)" in text
    assert "2.00 -> 2.00" not in text and board.low_evidence == {"head": 10}
    # a result that does not say its threshold (made by hand): nothing is marked
    quiet = Dashboard(images_every=0)
    quiet.update(_result(0, [{**tiny, "alpha": 3.0}], trust=None))
    frame = quiet.update(_result(1, [{**tiny, "alpha": 1.5}], trust=None))
    assert frame.alerts == ["step 1: head crossed into over-trained (alpha 3.00 -> 1.50)"]


def test_a_trap_is_announced_once_when_only_every_other_analysis_counts_traps():
    """``traps_every=2``: the analyses in between have no trap column; their zeros must not make
    the next counting analysis announce the same trap again (nor redraw its ESD)."""
    board = Dashboard(images_every=100)
    big = {"longname": "big", "num_evals": 256, "alpha": 3.0}
    alerts, redrawn = [], []
    for step in range(6):
        row = {**big, "rand_num_spikes": 1} if step % 2 == 0 else big
        frame = board.update(_result(step, [row]))
        alerts += frame.alerts
        redrawn += [step] if frame.summary else []  # drawn off schedule: "gained a trap"
    assert alerts == ["step 0: correlation trap appeared in big (1)"]
    assert redrawn == []
    frame = board.update(_result(6, [{**big, "rand_num_spikes": 2}]))
    assert frame.alerts == ["step 6: correlation trap appeared in big (2)"]
