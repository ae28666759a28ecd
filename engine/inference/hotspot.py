"""Flag a heatmap whose hot spot lies on burned-in text or a ruler, not on tissue.

Ultrasound and other screen-captured images carry burned-in annotations:
text, depth rulers, calipers and markers, drawn as thin, nearly white strokes
on dark background. A model that has learnt to look at them is looking at
the wrong thing. The box looks at the window around the heatmap's hottest
cell; when most of its bright pixels have a dark neighbour right beside them
(the edge of a stroke, not of tissue, whose brightness falls off gradually
through speckle and blur), the instance gets the warning
``heatmap_on_annotation``.
"""

from __future__ import annotations

import numpy as np

from clinibox_common.contracts.reasons import Reason, ReasonCode

#: modalities whose images may carry burned-in annotations
ANNOTATED_MODALITIES = ("US", "OT", "SC", "XC", "ES", "IVUS")
#: the warning an instance gets (its words: ``contracts/reasons.py``)
WARNING = Reason(ReasonCode.HEATMAP_ON_ANNOTATION)
#: a heatmap cooler than this has no hot spot to judge
MIN_HEAT = 0.5
BRIGHT, DARK = 0.85, 0.35


def _has_dark_neighbour(window: np.ndarray) -> np.ndarray:
    padded = np.pad(window, 1, mode="edge")
    h, w = window.shape
    darkest = np.minimum.reduce([padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                                 for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))])
    return darkest <= DARK


def hot_spot_on_annotation(image: np.ndarray, heatmap: np.ndarray | None,
                           modality: str) -> bool:
    """True when the hottest cell of ``heatmap`` (spanning ``image``) lies on annotation."""
    if heatmap is None or modality not in ANNOTATED_MODALITIES or heatmap.size == 0:
        return False
    if float(heatmap.max()) < MIN_HEAT:
        return False
    rows, columns = image.shape
    hy, hx = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    cell_h, cell_w = rows / heatmap.shape[0], columns / heatmap.shape[1]
    y0, y1 = int(hy * cell_h - cell_h), int((hy + 2) * cell_h)
    x0, x1 = int(hx * cell_w - cell_w), int((hx + 2) * cell_w)
    window = image[max(0, y0):min(rows, y1), max(0, x0):min(columns, x1)]
    bright = window >= BRIGHT
    if int(bright.sum()) < 6:
        return False
    strokes = bright & _has_dark_neighbour(window)
    return float(strokes.sum()) / float(bright.sum()) >= 0.5
