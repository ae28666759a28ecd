"""The sizes figure's misses (converters/demo_metrics.size_misses): which lesions count."""

from __future__ import annotations

import pytest

from converters.demo_metrics import size_figures, size_misses


def row(long_mm: float, short_mm: float, measured: tuple[float, float] | None) -> dict:
    out = {"image": 0, "kind": "ct", "class": "benign", "long_mm": long_mm,
           "short_mm": short_mm, "centre_p": 0.1, "found": measured is not None}
    if measured is not None:
        out.update(measured_long=measured[0], measured_short=measured[1])
    return out


def test_a_miss_is_a_measured_lesion_over_5_mm_with_an_axis_off_by_more_than_15_percent():
    rows = [row(10, 6, (11.4, 6.5)),   # +14 %, +8 %: within
            row(10, 6, (12.0, 6.0)),   # long +20 %: a miss
            row(10, 6, (10.0, 4.8)),   # short -20 %: a miss
            row(4, 3, (6.0, 3.0)),     # under 5 mm: not held to the tolerance
            row(20, 10, None)]         # not found: no measurement, no miss
    misses = size_misses(rows)
    assert [(m["long_error"], m["short_error"]) for m in misses] == [
        pytest.approx((0.2, 0.0)), pytest.approx((0.0, -0.2))]
    figures = size_figures(rows)
    assert figures["measured"] == 3
    assert figures["both_within_15pct"] == pytest.approx(1 / 3, abs=1e-4)
    assert figures["both_within_15pct_of_all_over_5mm"] == pytest.approx(1 / 4, abs=1e-4)
