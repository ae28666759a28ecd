"""What the live picture itself says before any model reads it: no signal, probe not on
the skin, frozen.

The box's own quality checks (``imaging/quality.py``: blank, too dark, saturated, low
contrast) run on the image area of each frame, the same checks a pushed image gets. Two
more belong to a live picture: a *blank* image area is no signal (the machine's output
off, a capture card's plain screen); an ultrasound area *too dark* to read is the probe off
the skin. And a picture that has not changed for ``[live] frozen_seconds`` is frozen (the
machine's freeze key, a stuck capture): its frames are not analysed again. "Not changed" is
the picture's: block by block against the picture as it stood when it last moved, with a
tolerance for a codec's noise, so that an encoder sending a key frame every second (or any
rate of frames) does not make a frozen picture look live.
"""

from __future__ import annotations

import numpy as np

from clinibox_common.contracts.reasons import ReasonCode
from clinibox_common.contracts.statuses import LiveState
from engine.imaging.quality import pixel_warnings

#: the picture is compared as the sums of BLOCK x BLOCK pixel blocks: a codec's noise (a
#: still picture encoded again at each key frame, its quality creeping up between them) is
#: fine-grained and averages out within a block; a moving picture (speckle, tissue, the
#: probe) changes whole blocks
BLOCK = 4
#: a block whose mean grey moved by more than this (0-255) against the still picture has
#: changed (a codec's error on a block's mean stays well below it)
BLOCK_TOLERANCE = 6.0
#: the picture moved when more than this share of its blocks changed (a blinking cursor or
#: a clock in the image area is not movement)
MOVED_SHARE = 0.005


def blocks(area: np.ndarray) -> np.ndarray:
    """A grey uint8 image area as its BLOCK x BLOCK block sums (uint16)."""
    rows, columns = area.shape[0] // BLOCK, area.shape[1] // BLOCK
    if rows == 0 or columns == 0:
        return area.astype(np.uint16)
    cropped = area[:rows * BLOCK, :columns * BLOCK]
    return cropped.reshape(rows, BLOCK, columns, BLOCK).sum(axis=(1, 3), dtype=np.uint16)


def moved(now: np.ndarray, still: np.ndarray) -> bool:
    """Whether a picture's blocks (``blocks``) moved against those of the still picture:
    more than MOVED_SHARE of them by more than BLOCK_TOLERANCE grey levels."""
    if now.shape != still.shape:
        return True
    limit = BLOCK_TOLERANCE * BLOCK * BLOCK
    changed = np.count_nonzero(np.abs(now.astype(np.int32) - still) > limit)
    return changed > MOVED_SHARE * now.size


class PictureWatch:
    """Judge each frame's image area: the source's state it implies, and its warnings."""

    def __init__(self, frozen_seconds: float, modality: str) -> None:
        self.frozen_seconds = frozen_seconds
        self.modality = modality
        #: the picture as it stood when it last moved (its blocks), and when that was
        self._still: np.ndarray | None = None
        self._still_since = 0.0

    def judge(self, area: np.ndarray, now: float) -> tuple[LiveState, list[ReasonCode]]:
        """(the state the frame implies, its quality warnings) for a grey uint8 image area.
        Frozen is the picture itself not changing (against the picture as it stood when it
        last moved, not the frame before: a codec's noise does not add up), whatever the
        encoder's key frames or the frames' rate."""
        sample = blocks(area)
        if self._still is None or moved(sample, self._still):
            self._still, self._still_since = sample, now
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
        return self._still is not None and now - self._still_since >= self.frozen_seconds
