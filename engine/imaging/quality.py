"""Plain-language image quality warnings for clinic staff.

``check_quality`` looks at one display-ready grey frame (float in [0, 1], as
``decode`` produces) and says when it is blank, too dark, saturated, low in
contrast or too small to read reliably. The checks are cheap statistics on a
subsample (at most ``SAMPLE_SIDE`` pixels per side), so they cost well under a
millisecond even for large radiographs.

Thresholds are module constants, tuned so that ordinary CT, MR, CR, US and
secondary-capture images (pydicom's test files included) raise no warning:
ultrasound is mostly black and collimated radiographs are up to half white,
so "too dark" and "saturated" need most of the image to be dark or white.
"""

from __future__ import annotations

import numpy as np

from clinibox_common.contracts.reasons import Reason, ReasonCode

#: Largest subsample side used for the statistics.
SAMPLE_SIDE = 256
#: Blank: the 1st-99th percentile range and the spread are both below these.
BLANK_RANGE = 0.02
BLANK_STD = 0.02
#: Too dark: even the brightest 1 % is below DARK_P99 and the mean below DARK_MEAN.
DARK_P99 = 0.25
DARK_MEAN = 0.10
#: Saturated: more than SATURATED_FRACTION of pixels at or above SATURATED_LEVEL,
#: or the darkest 5 % already above BRIGHT_P5.
SATURATED_LEVEL = 0.98
SATURATED_FRACTION = 0.60
BRIGHT_P5 = 0.85
#: Low contrast: the 1st-99th percentile range below this.
LOW_CONTRAST_RANGE = 0.20


def check_quality(
    image: np.ndarray, rows: int, columns: int, min_rows: int
) -> list[Reason]:
    """Quality warnings for one display-ready [0, 1] frame, as reasons (``blank``,
    ``too_dark``, ``saturated``, ``low_contrast``, ``too_small``: their words are the reason
    table's, ``contracts/reasons.py``); an empty list when it looks fine.

    ``rows`` and ``columns`` are the image's original size (for the size check);
    ``min_rows`` is the smallest side accepted without a warning.
    """
    return size_warnings(rows, columns, min_rows) + pixel_warnings(image)


def size_warnings(rows: int, columns: int, min_rows: int) -> list[Reason]:
    """The size check alone: ``too_small`` when a side is below ``min_rows``."""
    if rows < min_rows or columns < min_rows:
        return [Reason(ReasonCode.TOO_SMALL, {"columns": columns, "rows": rows})]
    return []


def pixel_warnings(image: np.ndarray) -> list[Reason]:
    """The checks on the frame's grey values (blank, too dark, saturated, low contrast);
    the decoder sandbox runs them where it decodes the frame (``imaging/decode.py``)."""
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"the quality checks take a 2-D frame, got shape {image.shape}")
    warnings: list[Reason] = []
    step_y = max(1, image.shape[0] // SAMPLE_SIDE)
    step_x = max(1, image.shape[1] // SAMPLE_SIDE)
    # one copy of the subsample, cleaned in place
    sample = np.array(image[::step_y, ::step_x], dtype=np.float32).reshape(-1)
    np.nan_to_num(sample, copy=False, nan=0.0)
    np.clip(sample, 0.0, 1.0, out=sample)
    std, mean = float(sample.std()), float(sample.mean())
    saturated = float(np.count_nonzero(sample >= SATURATED_LEVEL)) / sample.size
    # the order of the pixels no longer matters: the percentiles may partition in place
    p1, p5, p99 = np.percentile(sample, [1, 5, 99], overwrite_input=True)
    spread = p99 - p1
    if spread < BLANK_RANGE and std < BLANK_STD:
        warnings.append(Reason(ReasonCode.BLANK))
        return warnings
    if p99 < DARK_P99 and mean < DARK_MEAN:
        warnings.append(Reason(ReasonCode.TOO_DARK))
    if saturated > SATURATED_FRACTION or p5 > BRIGHT_P5:
        warnings.append(Reason(ReasonCode.SATURATED))
    if spread < LOW_CONTRAST_RANGE:
        warnings.append(Reason(ReasonCode.LOW_CONTRAST))
    return warnings


def grey_statistics(image: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of a frame's grey values (the drift figures)."""
    return float(np.mean(image)), float(np.std(image))
