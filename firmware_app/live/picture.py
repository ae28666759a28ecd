"""What the live picture itself says before any model reads it: no signal, probe not on
the skin, frozen.

The box's own quality checks (``imaging/quality.py``: blank, too dark, saturated, low
contrast) run on the image area of each frame, the same checks a pushed image gets. Two
more belong to a live picture: a *blank* image area is no signal (the machine's output
off, a capture card's plain screen); an ultrasound area *too dark* to read is the probe off
the skin. And a picture that has not changed for ``[live] frozen_seconds`` is frozen (the
machine's freeze key, a stuck capture): its frames are not analysed again.
"""

from __future__ import annotations

import numpy as np

from firmware_app.contracts.reasons import ReasonCode
from firmware_app.contracts.statuses import LiveState
from firmware_app.imaging.quality import pixel_warnings

#: a picture whose subsample moved less than this (mean absolute grey difference, 0-255)
#: is the same picture
STILL_DIFFERENCE = 0.4
#: the subsample's step: frozen is judged on every STEP-th pixel each way
STEP = 8


class PictureWatch:
    """Judge each frame's image area: the source's state it implies, and its warnings."""

    def __init__(self, frozen_seconds: float, modality: str) -> None:
        self.frozen_seconds = frozen_seconds
        self.modality = modality
        self._previous: np.ndarray | None = None
        self._still_since: float | None = None
        self._previous_at = 0.0

    def judge(self, area: np.ndarray, now: float) -> tuple[LiveState, list[ReasonCode]]:
        """(the state the frame implies, its quality warnings) for a grey uint8 image area."""
        sample = area[::STEP, ::STEP].astype(np.int16)
        if self._previous is not None and self._previous.shape == sample.shape and float(
                np.abs(sample - self._previous).mean()) < STILL_DIFFERENCE:
            if self._still_since is None:
                self._still_since = self._previous_at  # the picture has not moved since
        else:
            self._still_since = None
        self._previous, self._previous_at = sample, now
        warnings = [reason.code for reason in pixel_warnings(area.astype(np.float32) / 255.0)]
        if ReasonCode.BLANK in warnings:
            return LiveState.NO_SIGNAL, warnings
        if self.frozen(now):
            return LiveState.FROZEN, warnings
        if self.modality == "US" and ReasonCode.TOO_DARK in warnings:
            return LiveState.NO_CONTACT, warnings
        return LiveState.RUNNING, warnings

    def frozen(self, now: float) -> bool:
        """Whether the picture has not changed for ``frozen_seconds``."""
        return self._still_since is not None and now - self._still_since >= self.frozen_seconds
