"""Reading TensorBoard event files back in tests, with TensorBoard's own reader, once every
sink's last pictures are written (they are drawn after training returns)."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ww_callbacks.picture_queue import wait_for_pictures

#: Keep every event (TensorBoard's default samples them).
GUIDANCE = {"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}


def read_events(log_dir) -> EventAccumulator:
    """Every event of ``log_dir``'s files, after the pictures still being drawn are written."""
    assert wait_for_pictures(120), "the last pictures were not written within 2 minutes"
    acc = EventAccumulator(str(log_dir), size_guidance=GUIDANCE)
    acc.Reload()
    return acc
