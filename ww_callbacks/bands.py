"""The alpha bands of HTSR and how every picture shows them: one home for thresholds, names and
colours, shared by the live figures (TensorBoard, W&B), the command line's plots and the HTML
report, so a layer is the same colour wherever a user looks at it.

A layer whose fitted ``alpha`` is below 2 is over-trained (over-fit, very heavy-tailed), between 2
and 6 well trained, above 6 under-trained (close to random). A failed fit has no band.
"""

from __future__ import annotations

import math

from .powerlaw import OVER_TRAINED_ALPHA, UNDER_TRAINED_ALPHA

OVER = "over-trained"
WELL = "well-trained"
UNDER = "under-trained"
NO_FIT = "no fit"

#: Band name -> colour (colour-blind-safe: Okabe-Ito vermillion, bluish green, blue; grey).
BAND_COLOURS: dict[str, str] = {
    OVER: "#D55E00",
    WELL: "#009E73",
    UNDER: "#0072B2",
    NO_FIT: "#999999",
}
#: Colour of a correlation-trap marker (Okabe-Ito reddish purple).
TRAP_COLOUR = "#CC79A7"

#: The continuous alpha colour scale of the heatmaps, in the figures and the browser views alike
#: (``ww_callbacks/views/heatmap.js`` holds the same stops; ``tests/test_figures.py`` checks
#: that they agree): (alpha, RGB) stops from dark red at 1 through the over-trained reds to 2,
#: greens over the well-trained 2-6, blues above 6. Alphas outside :data:`ALPHA_SCALE_RANGE`
#: take the end colours; a drift from 4.1 to 2.45 changes colour, not only a crossing of 2.
ALPHA_SCALE: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (1.0, (103, 0, 31)), (2.0, (214, 96, 77)), (2.6, (244, 165, 130)), (3.5, (166, 219, 160)),
    (4.5, (90, 174, 97)), (6.0, (27, 120, 55)), (7.0, (67, 147, 195)), (8.0, (33, 102, 172)),
)
ALPHA_SCALE_RANGE = (ALPHA_SCALE[0][0], ALPHA_SCALE[-1][0])
#: Colour of a heatmap cell without a fit (the views' ``NO_FIT``).
NO_FIT_CELL = "#d9d9d9"

#: Fits resting on fewer eigenvalues than this get a caveat in every picture (WeightWatcher's
#: own warning for small fits starts below 50 tail eigenvalues in its notebooks' advice).
FEW_EIGENVALUES = 50


def band(alpha: float | None) -> str:
    """The band of one ``alpha`` (``NO_FIT`` for None / NaN / inf)."""
    if alpha is None or not math.isfinite(float(alpha)):
        return NO_FIT
    if alpha < OVER_TRAINED_ALPHA:
        return OVER
    if alpha > UNDER_TRAINED_ALPHA:
        return UNDER
    return WELL


def band_colour(alpha: float | None) -> str:
    """The colour of the band of ``alpha``."""
    return BAND_COLOURS[band(alpha)]


__all__ = ["ALPHA_SCALE", "ALPHA_SCALE_RANGE", "BAND_COLOURS", "FEW_EIGENVALUES", "NO_FIT",
           "NO_FIT_CELL", "OVER", "OVER_TRAINED_ALPHA", "TRAP_COLOUR", "UNDER",
           "UNDER_TRAINED_ALPHA", "WELL", "band", "band_colour"]
