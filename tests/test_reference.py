"""ww_callbacks.analyze against WeightWatcher 0.7.7 (the oracle), on the float64 CPU path."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import ww_callbacks  # noqa: E402
from tests.models import trapped, zoo  # noqa: E402

pytestmark = pytest.mark.reference

EXACT_METRICS = ["alpha", "D", "alpha_weighted", "log_norm", "log_spectral_norm",
                 "log_alpha_norm", "stable_rank", "sigma", "xmax", "norm", "spectral_norm",
                 "entropy", "sv_max", "sv_min", "lambda_max", "detX_val", "detX_val_unrescaled"]
SAME_COUNTS = ["num_pl_spikes", "num_evals", "matrix_rank", "rank_loss", "weak_rank_loss",
               "detX_num", "ERG_gap"]


@pytest.fixture(scope="module")
def zoo_model():
    return zoo()


def _joined(ours, ref):
    merged = ours.merge(ref, on="layer_id", suffixes=("", "_ref"))
    assert len(merged) == len(ref)
    return merged


def _assert_same_xmin(merged):
    """The same eigenvalue is chosen as xmin: equal up to the last bits that separate a Gram
    eigenvalue from the reference's SVD one, and the same number of tail values."""
    np.testing.assert_allclose(merged.xmin, merged.xmin_ref.astype(float), rtol=1e-10)
    assert (merged.num_pl_spikes == merged.num_pl_spikes_ref).all()


def test_zoo_has_ten_kinds_of_layers(zoo_model):
    df = ww_callbacks.analyze(zoo_model)
    assert len(df) >= 10
    assert {"dense", "conv2d", "embedding"} <= set(df.layer_type)
    assert set(df.rf) >= {1, 4, 9, 25}
    assert (df.num_evals < 20).any(), "a small-N layer uses the reference's small-sample fit"


def test_metrics_equal_reference(zoo_model, reference_details):
    ours = ww_callbacks.analyze(zoo_model)
    ref = reference_details(zoo_model, detX=True)
    merged = _joined(ours, ref)
    _assert_same_xmin(merged)
    for col in EXACT_METRICS:
        np.testing.assert_allclose(merged[col], merged[col + "_ref"].astype(float), rtol=1e-6,
                                   err_msg=col)
    for col in SAME_COUNTS:
        assert (merged[col] == merged[col + "_ref"]).all(), col
    assert (merged.status == merged.status_ref).all()
    assert (merged.warning == merged.warning_ref).all()
    assert (merged.name == merged.name_ref).all() and (merged.longname == merged.longname_ref).all()


def test_fix_fingers_equal_reference(zoo_model, reference_details):
    ours = ww_callbacks.analyze(zoo_model, fix_fingers="clip_xmax")
    ref = reference_details(zoo_model, fix_fingers="clip_xmax")
    merged = _joined(ours, ref)
    _assert_same_xmin(merged)
    for col in ("alpha", "raw_alpha", "D", "xmax"):
        np.testing.assert_allclose(merged[col], merged[col + "_ref"].astype(float), rtol=1e-6,
                                   err_msg=col)
    assert (merged.num_fingers == merged.num_fingers_ref).all()


def test_traps_equal_reference(reference_details):
    model = trapped()
    ours = ww_callbacks.analyze(model, randomize=True)
    ref = reference_details(model, randomize=True)
    merged = _joined(ours, ref)
    assert list(merged.rand_num_spikes) == list(merged.rand_num_spikes_ref)
    assert merged.rand_num_spikes.tolist()[0] == 0 and merged.rand_num_spikes.sum() >= 3
    assert (merged.num_traps == merged.rand_num_spikes).all()
    # shuffles differ (private generator vs the global one), the statistics agree closely
    np.testing.assert_allclose(merged.max_rand_eval, merged.max_rand_eval_ref, rtol=0.1)


def test_mp_fit_equal_reference(reference_details):
    model = trapped()
    ours = ww_callbacks.analyze(model, mp_fit=True)
    ref = reference_details(model, mp_fit=True)
    merged = _joined(ours, ref)
    assert list(merged.num_spikes) == list(merged.num_spikes_ref)
    np.testing.assert_allclose(merged.sigma_mp, merged.sigma_mp_ref, rtol=0.01)
    np.testing.assert_allclose(merged.bulk_max, merged.bulk_max_ref, rtol=0.02)


def test_documented_difference_conv_n_m_swap(reference_details):
    """The reference reports N and M swapped for Conv2d with out < in and an even number of
    kernel positions; ww_callbacks reports N = max, M = min. The spectrum is the same."""
    model = nn.Sequential(nn.Conv2d(64, 32, 2))
    ours = ww_callbacks.analyze(model)
    ref = reference_details(model)
    assert (ours.N[0], ours.M[0]) == (64, 32)
    assert (ref.N[0], ref.M[0]) == (32, 64)
    assert ours.alpha[0] == pytest.approx(ref.alpha[0], rel=1e-6)


def test_documented_difference_conv1d(reference_details):
    """The reference treats a Conv1d weight (out, in, k) as one matrix with M = k; ww_callbacks
    takes one (out x in) matrix per kernel position, like Conv2d (M = min(out, in), rf = k)."""
    model = nn.Sequential(nn.Conv1d(16, 32, 9))
    ours = ww_callbacks.analyze(model)
    ref = reference_details(model)
    assert (ref.M[0], ref.rf[0], ref.num_evals[0]) == (9, 1, 9)
    assert (ours.M[0], ours.rf[0], ours.num_evals[0]) == (16, 9, 144)
