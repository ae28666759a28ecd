"""The sizes figures (demo/metrics): which lesions count as misses, the agreement
with truth as a measurement states it, and the model card's sentence on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from demo.card import lesion_section
from demo.metrics import size_agreement, size_figures, size_misses

MANIFEST = Path(__file__).resolve().parents[2] / "models/clinibox-demo-lesion/1.0.0/manifest.json"


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


def test_the_agreement_gives_bias_limits_and_a_lower_bound_from_the_signed_errors():
    # twenty lesions over 5 mm: errors of the long axis -10 % to +9 %, short axis +5 %
    rows = [row(10, 6, (10 * (1 + e / 100), 6.3)) for e in range(-10, 10)]
    rows += [row(4, 3, (8.0, 3.0)), row(20, 10, None)]  # under 5 mm, unfound: left out
    agreement = size_agreement(rows)
    assert agreement["measured"] == 20
    long = agreement["long_axis"]
    assert long["bias_pct"] == pytest.approx(-0.5, abs=1e-6)
    sd = 100 * float(np.std(np.arange(-10, 10) / 100, ddof=1))
    assert long["limits_of_agreement_pct"] == pytest.approx(
        [-0.5 - 1.96 * sd, -0.5 + 1.96 * sd], abs=0.01)
    assert long["central_95pct_of_errors_pct"] == pytest.approx([-9.53, 8.53], abs=0.01)
    assert agreement["short_axis"]["bias_pct"] == pytest.approx(5.0, abs=1e-6)
    assert agreement["short_axis"]["limits_of_agreement_pct"] == pytest.approx([5.0, 5.0])
    assert agreement["both_within_15pct"] == 1.0
    # all 20 within: the bound is what 20 lesions can show, not 100 %
    assert 0.85 < agreement["both_within_15pct_lower_95pct_bound"] < 0.9


def test_a_miss_lowers_the_share_and_its_bound():
    rows = [row(10, 6, (10.0, 6.0))] * 90 + [row(10, 6, (13.0, 6.0))] * 10  # long +30 %
    agreement = size_agreement(rows)
    assert agreement["both_within_15pct"] == 0.9
    assert agreement["both_within_15pct_lower_95pct_bound"] == pytest.approx(0.8396, abs=1e-4)
    assert agreement["long_axis"]["central_95pct_of_errors_pct"][1] == pytest.approx(30.0)


def test_the_model_card_states_the_agreement_when_the_build_measured_it():
    rows = [row(10, 6, (10 * (1 + e / 100), 6.3)) for e in range(-10, 10)]
    built = json.loads(MANIFEST.read_text())["provenance"]["steps"]["lesions"]
    lesions = {**built, "sizes": size_figures(rows), "agreement": size_agreement(rows)}
    card = lesion_section(lesions)
    assert "bias long axis -0.5 %, short axis 5.0 %" in card
    assert "-9.53 to 8.53 % (long)" in card
    assert "both axes within 15 % for at least" in card
    earlier = lesion_section({**built, "sizes": lesions["sizes"]})  # a package built before it
    assert "As a measurement" not in earlier and "both for 100.0 %" in earlier
