"""Lesions followed from frame to frame as the video plays, and held before they are shown.

The online form of ``inference/tracking.py`` (which links a stored cine's boxes after the
fact): each analysed frame's boxes are linked to the open tracks by overlap (IoU at least
``tracking.MIN_IOU``); a track not seen for ``max_gap`` analysed frames is closed. A track
is *held* once it has been seen on ``hold_frames`` analysed frames without such a gap: only
held tracks are drawn and only they make the hint (one frame's box is never shown: the
picture would flicker with every stray detection). Each track remembers its best frame (its
highest score): a session keeps that frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.inference.postprocess import Box, iou
from engine.inference.tracking import MIN_IOU

#: a track stays open this many analysed frames after it was last seen
MAX_GAP = 3


@dataclass
class Track:
    """One lesion followed across frames."""

    number: int
    box: Box
    #: analysed frames it was seen on since it opened
    seen: int = 1
    #: analysed frames since it was last seen (0: on the latest)
    missed: int = 0
    best_score: float = 0.0
    best_seq: int = -1
    #: whether it has been held (seen on ``hold_frames`` frames): stays so until it closes
    held: bool = False


class LiveTracker:
    """Link each analysed frame's boxes to the open tracks."""

    def __init__(self, hold_frames: int, max_gap: int = MAX_GAP) -> None:
        self.hold_frames = hold_frames
        self.max_gap = max_gap
        self.tracks: list[Track] = []
        self._next = 1

    def update(self, seq: int, boxes: list[Box]) -> tuple[list[Track], list[Track]]:
        """Add one analysed frame (``seq``) and its boxes; (the tracks on it, the tracks that
        closed with it)."""
        taken: set[int] = set()
        on_frame: list[Track] = []
        for box in sorted(boxes, key=lambda b: -b.score):
            best, best_iou = None, MIN_IOU
            for track in self.tracks:
                if track.number in taken:
                    continue
                overlap = iou(box, track.box)
                if overlap >= best_iou:
                    best, best_iou = track, overlap
            if best is None:
                best = Track(self._next, box)
                self._next += 1
                self.tracks.append(best)
            else:
                best.box, best.seen, best.missed = box, best.seen + 1, 0
            taken.add(best.number)
            if box.score > best.best_score:
                best.best_score, best.best_seq = box.score, seq
            best.held = best.held or best.seen >= self.hold_frames
            on_frame.append(best)
        closed = []
        for track in self.tracks:
            if track.number not in taken:
                track.missed += 1
                if track.missed > self.max_gap:
                    closed.append(track)
        self.tracks = [t for t in self.tracks if t not in closed]
        return on_frame, closed

    def clear(self) -> list[Track]:
        """Close every track (the picture froze, the source changed); the closed ones."""
        closed, self.tracks = self.tracks, []
        return closed
