"""DICOM windowing (PS3.3 C.11.2.1.2), numpy only: the decoder's model view and the
viewer's rendering use this one function."""

from __future__ import annotations

import numpy as np


def window(values: np.ndarray, centre: float, width: float,
           function: str = "LINEAR") -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing onto [0, 1] (LINEAR, LINEAR_EXACT or SIGMOID)."""
    function = function.upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (values - centre) / width, -500, 500)))
    if function == "LINEAR_EXACT":
        shift, scale = centre, width
    elif width <= 1:
        return (values > centre - 0.5).astype(np.float64)
    else:
        shift, scale = centre - 0.5, width - 1
    out = np.subtract(values, shift, dtype=np.float64)  # in place from here: one copy
    out /= scale
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)
