"""Each lesion of a study beside its earlier self: "15 mm, was 12 mm on 2026-03-02 (+25 %)".

The earlier study is the same patient's latest earlier study on the box
(``studies.previous_study``: one the box received, or fetched from the PACS by
``ingest/priors.py``). The lesions compared are those the study page lists: the most
suspicious image's (``wording.finding_lines``), numbered as on the page, against the
earlier study's most suspicious image's. Two studies are not registered to each other, so
a lesion's earlier self is the earlier lesion of the same label whose centre lies nearest
in the image, as a share of its width and height, within ``MATCH_DISTANCE``; each earlier
lesion is matched once (nearest pairs first). A lesion with none was not seen then.

Sizes are compared in millimetres only, the long axes (RECIST's diameter): a lesion or an
image without calibration gets no number. Series read as 3-D volumes are not compared
here (their lesions are not matched across studies).
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from typing import Any

from firmware_app.storage import studies as queries

#: the farthest two centres may lie apart (a share of the image's size) to be one lesion
MATCH_DISTANCE = 0.15


@dataclass(frozen=True)
class LesionGrowth:
    """One lesion of the study against its earlier self."""

    number: int  # as the page numbers it (1: the first area)
    label: str
    size_mm: float | None  # its long axis now
    was_mm: float | None  # then (None: not seen on the earlier study, or not measured)
    seen_before: bool

    @property
    def percent(self) -> float | None:
        """The change of the long axis, in per cent of the earlier one (None without both)."""
        if self.size_mm is None or self.was_mm is None or self.was_mm <= 0:
            return None
        return round((self.size_mm - self.was_mm) / self.was_mm * 100.0, 1)


@dataclass(frozen=True)
class StudyGrowth:
    """A study's lesions against the same patient's earlier study."""

    earlier_study_id: int
    earlier_date: str  # YYYYMMDD ('' when the earlier study has no date)
    lesions: tuple[LesionGrowth, ...]
    #: the study's lesion records compared (``inference/lesions.py``), in ``lesions``' order
    records: tuple[dict[str, Any], ...] = ()
    #: the instance (queue id) whose lesions were compared: the study's most suspicious
    instance_id: int = 0

    def to_dict(self) -> dict[str, Any]:
        """As JSON-ready values (the records' report keeps them)."""
        return {"earlier_date": self.earlier_date,
                "lesions": [{"number": g.number, "label": g.label, "size_mm": g.size_mm,
                             "was_mm": g.was_mm, "seen_before": g.seen_before,
                             "percent": g.percent} for g in self.lesions]}


def _centre(lesion: dict[str, Any], rows: int, columns: int) -> tuple[float, float]:
    x0, y0, x1, y1 = (float(v) for v in lesion.get("box", (0, 0, 0, 0)))
    return ((x0 + x1) / 2 / max(1, columns), (y0 + y1) / 2 / max(1, rows))


def _mm(lesion: dict[str, Any]) -> float | None:
    value = lesion.get("long_axis_mm")
    return float(value) if lesion.get("units") == "mm" and value is not None else None


def match(current: list[dict[str, Any]], current_size: tuple[int, int],
          earlier: list[dict[str, Any]], earlier_size: tuple[int, int]) -> dict[int, int]:
    """Index of each current lesion → index of its earlier self (nearest pairs first)."""
    pairs = []
    for i, now in enumerate(current):
        cx, cy = _centre(now, *current_size)
        for j, then in enumerate(earlier):
            if then.get("label") != now.get("label"):
                continue
            ex, ey = _centre(then, *earlier_size)
            distance = math.hypot(cx - ex, cy - ey)
            if distance <= MATCH_DISTANCE:
                pairs.append((distance, i, j))
    matched: dict[int, int] = {}
    for _distance, i, j in sorted(pairs):
        if i not in matched and j not in matched.values():
            matched[i] = j
    return matched


def _shown_lesions(instance: Any) -> list[dict[str, Any]]:
    """The lesions the page numbers: those drawn on the key frame (one per box)."""
    return list(instance.lesions[:len(instance.boxes)])


def study_growth(conn: sqlite3.Connection, study_id: int) -> StudyGrowth | None:
    """The study's lesions against the same patient's earlier study on the box; None when
    there is no earlier study of the same modality, the study has no lesion on a placed
    image, or either study's lesions are read as a volume."""
    now = queries.study(conn, study_id)
    if now is None or not now["instances"]:
        return None
    earlier_row = queries.previous_study(conn, study_id, modality=now["modality"] or "")
    then = None if earlier_row is None else queries.study(conn, earlier_row["id"])
    if earlier_row is None or then is None or not then["instances"]:
        return None
    top, earlier_top = now["instances"][0], then["instances"][0]
    if not earlier_top.judged:
        return None  # the earlier image cannot be judged: nothing to say was not there
    if now["volumes"].in_volume(top.id) or then["volumes"].in_volume(earlier_top.id):
        return None
    sizes = [(i.image_rows or 0, i.image_columns or 0) for i in (top, earlier_top)]
    current, earlier = _shown_lesions(top), _shown_lesions(earlier_top)
    if not current or not all(rows and columns for rows, columns in sizes):
        return None
    matched = match(current, sizes[0], earlier, sizes[1])
    lesions = tuple(
        LesionGrowth(number=i + 1, label=str(lesion.get("label", "")), size_mm=_mm(lesion),
                     was_mm=_mm(earlier[matched[i]]) if i in matched else None,
                     seen_before=i in matched)
        for i, lesion in enumerate(current))
    return StudyGrowth(int(earlier_row["id"]), str(earlier_row["study_date"] or ""), lesions,
                       tuple(current), top.id)
