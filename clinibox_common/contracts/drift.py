"""The drift measures the box and the hospital both judge by: the same histogram of the
model's confidence and the same population stability index (PSI).

The box sends :func:`histogram` counts in its hourly summaries, and the hospital's console
and report compare a baseline window with a recent one by :func:`psi`
(``central/drift.py``). The box itself watches a package it installed with the same two
(``firmware_app/models/drift_watch.py``), so "drift" means one thing on the console and on the
box.

PSI = Σ (q_i − p_i) · ln(q_i / p_i) over the bins of two normalised histograms; 0 means
identical, above about 0.25 is usually read as a shift worth a look.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: equal bins over 0 … 1 of a confidence histogram
HISTOGRAM_BINS = 10
#: floor on a bin's share, so an empty bin does not make the index infinite
EPSILON = 1e-4


def histogram(values: Sequence[float]) -> list[int]:
    """Counts of values in :data:`HISTOGRAM_BINS` equal bins over [0, 1] (values outside are
    clipped)."""
    if len(values) == 0:
        return [0] * HISTOGRAM_BINS
    clipped = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    counts, _ = np.histogram(clipped, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return [int(c) for c in counts]


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = EPSILON) -> float:
    """Population stability index between two histograms of counts (same bins).

    Each histogram is normalised to shares and every share is floored at
    ``epsilon``. Raises ValueError on differing lengths or an empty histogram.
    """
    if len(expected) != len(actual) or not expected:
        raise ValueError("histograms must have the same, non-zero number of bins")
    total_e, total_a = float(sum(expected)), float(sum(actual))
    if total_e <= 0 or total_a <= 0:
        raise ValueError("a histogram with no counts has no distribution")
    index = 0.0
    for e, a in zip(expected, actual, strict=True):
        p = max(e / total_e, epsilon)
        q = max(a / total_a, epsilon)
        index += (q - p) * math.log(q / p)
    return index
