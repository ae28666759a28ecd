"""The validated range: projection of wide features and the Mahalanobis range."""

from __future__ import annotations

import numpy as np
import pytest

from clinibox_common.contracts.heads import parse_validated_range
from converters.ood import (
    MAX_FEATURES,
    fit_projection,
    fit_validated_range,
    flagged_share,
    projection_size,
)


def test_projection_size_keeps_four_rows_per_dimension():
    assert projection_size(16, 256) == 0  # few enough: kept as they are
    assert projection_size(512, 256) == MAX_FEATURES - 1  # plus the residual norm
    assert projection_size(32, 24) == 5  # 6 dimensions for 24 rows
    assert projection_size(128, 2) == 1
    # values beside the pooled features (the input's own statistics) take their share
    assert projection_size(512, 256, reserved=8) == MAX_FEATURES - 8 - 1
    assert projection_size(16, 256, reserved=8) == 0
    assert projection_size(128, 24, reserved=8) == 1  # at least one direction


def test_fit_projection_finds_the_directions_of_largest_spread():
    rng = np.random.default_rng(0)
    directions = np.linalg.qr(rng.normal(size=(10, 2)))[0]
    rows = rng.normal(size=(200, 2)) * [5.0, 2.0] @ directions.T + 3.0
    rows += rng.normal(scale=0.01, size=rows.shape)
    mean, basis = fit_projection(rows, 2)
    assert basis.shape == (10, 2) and mean.shape == (10,)
    np.testing.assert_allclose(mean, rows.mean(0), atol=1e-5)
    # the basis spans the two directions drawn
    assert np.linalg.norm(directions - basis @ (basis.T @ directions)) < 0.01


def test_the_range_flags_shifted_images_and_few_held_out_ones():
    rng = np.random.default_rng(1)
    fit, held = rng.normal(size=(300, 6)), rng.normal(size=(400, 6))
    section = fit_validated_range(fit, held)
    assert section["held_out"]["flagged"] <= 0.01
    parse_validated_range(section)  # the box reads it
    assert flagged_share(rng.normal(size=(300, 6)), section) < 0.02
    assert flagged_share(rng.normal(size=(300, 6)) + 3.0, section) > 0.95
    with pytest.raises(ValueError, match="more than 6 images"):
        fit_validated_range(fit[:6], held)
