"""Paired ratios for the overhead benches (no torch, no TensorFlow: both kinds of bench use it).

Each run with the callback is divided by the run without it of the same repeat: on the 2-core VM
the runs without the callback alone spread by 10-20%, more than the effects measured, and a pair
shares what slowed or sped up its repeat.
"""

from __future__ import annotations

import statistics


def paired_line(name: str, walls: list[float], without: list[float]) -> str:
    """``paired ratios (name): median m, quartiles q1-q3, of [sorted ratios]``."""
    paired = sorted(w / b for w, b in zip(walls, without, strict=True))
    return (f"  paired ratios ({name}): median {statistics.median(paired):.3f}, quartiles "
            f"{paired[len(paired) // 4]:.3f}-{paired[(3 * len(paired)) // 4]:.3f}, of "
            f"{[round(r, 3) for r in paired]}")
