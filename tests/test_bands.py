"""The alpha bands shared by every picture."""

import math

from ww_callbacks.bands import BAND_COLOURS, NO_FIT, OVER, UNDER, WELL, band, band_colour


def test_bands_follow_the_htsr_thresholds():
    assert band(1.5) == OVER and band(2.0) == WELL and band(6.0) == WELL and band(6.5) == UNDER
    assert band(math.nan) == NO_FIT and band(None) == NO_FIT and band(math.inf) == NO_FIT
    assert band_colour(3.0) == BAND_COLOURS[WELL]
    assert len(set(BAND_COLOURS.values())) == len(BAND_COLOURS)
