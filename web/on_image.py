"""What the study page's image tools need from the box: calibration, lesion rows, a prior study.

The distance tool reads the pixel spacing the worker stored with the image's
previews (the calibration the lesions were measured with); the browser is
never asked for it. The lesion table lists the instance's lesion records
(``inference/lesions.py``) in words. The previous study is the latest earlier
study of the same Patient ID on this box (``storage.studies.previous_study``):
the comparison is made here and nothing of it leaves the box.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from clinibox_common.i18n import formats, gettext
from firmware_app.storage import growth, priors
from firmware_app.storage import studies as queries
from firmware_app.words import growth_words, labels, wording

_ = gettext


def spacing_attributes(spacing: tuple[float, float] | None) -> dict[str, str]:
    """The viewer's ``data-`` values for the distance tool: row and column mm per pixel
    ("" when the image has no calibration, so lengths are said in pixels)."""
    if not spacing:
        return {"row_mm": "", "column_mm": ""}
    return {"row_mm": repr(float(spacing[0])), "column_mm": repr(float(spacing[1]))}


def _area(lesion: dict[str, Any]) -> str:
    if lesion.get("units") == "mm" and lesion.get("area_mm2") is not None:
        return f"{formats.decimal(lesion['area_mm2'])} mm²"
    return _("%(area)s pixels", area=formats.decimal(lesion.get("area_px2"), 0))


def lesion_rows(lesions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per lesion record, in the order of the findings: its number, label and
    probability, axes, area, frame (0-based ``frame`` and 1-based ``frame_shown``) and box."""
    rows = []
    for number, lesion in enumerate(lesions, start=1):
        box = [float(v) for v in lesion.get("box", (0, 0, 0, 0))]
        rows.append({
            "number": number,
            "label": labels.class_label(lesion.get("label")),
            "probability": wording.percent(lesion.get("probability")),
            "size": wording.size(lesion),
            "area": _area(lesion),
            "frame": int(lesion.get("frame", 0)),
            "frame_shown": int(lesion.get("frame", 0)) + 1,
            "box": box,
        })
    return rows


def volume_rows(volumes: Any) -> list[dict[str, Any]]:
    """One row per 3-D lesion of the study's series read as volumes
    (``storage/volumes.StudyVolumes``): its number, label and confidence, axes, depth,
    volume (and whether it was estimated from boxes), slices and its key image."""
    rows = []
    for number, lesion in enumerate(volumes.lesions, start=1):
        rows.append({
            "number": number, "label": labels.class_label(lesion.label),
            "probability": wording.percent(lesion.probability),
            "size": wording.axes_mm(lesion.long_axis_mm, lesion.short_axis_mm)
            or formats.MISSING,
            "depth": f"{formats.decimal(lesion.z_extent_mm)} mm",
            "volume": f"{formats.decimal(lesion.volume_mm3, 0)} mm³",
            "from_boxes": lesion.volume_from == "box",
            "slices": lesion.slices, "key_instance_id": lesion.key_instance_id,
            "instance_ids": list(lesion.instance_ids),
        })
    return rows


def previous_study(conn: sqlite3.Connection, study_id: int) -> dict[str, Any] | None:
    """The same patient's latest earlier study on this box, ready to show beside the current
    one (date, modality, description, headline, summary, key image), or None."""
    found = queries.previous_study(conn, study_id)
    if found is None:
        return None
    full = queries.study(conn, found["id"])
    summary, headline = "", ""
    if full is not None and full["instances"]:
        top = full["instances"][0]
        headline = wording.verdict(top.alert, top.finding, top.assessment,
                                   top.assessment_reason)[1]
        summary = wording.study_summary(full["summary"])
    return {**found, "headline": headline, "summary": summary}


def earlier_comparison(conn: sqlite3.Connection, study_id: int, study_key: str
                       ) -> dict[str, Any]:
    """Each lesion against its earlier self (``storage/growth.py``), where the question to
    the PACS for earlier studies stands, and, on an earlier study fetched from the PACS, why
    it is here: the sentences the study page shows."""
    fetched_for = priors.fetched_for(conn, study_key)
    for_date = ""
    if fetched_for is not None:
        row = queries.study_id(conn, fetched_for)
        found = None if row is None else queries.study(conn, row)
        for_date = (found or {}).get("study_date") or ""
    return {"growth": growth_words.growth_lines(growth.study_growth(conn, study_id)),
            "lookup": growth_words.lookup_line(priors.lookup(conn, study_key)),
            "fetched": growth_words.fetched_line(for_date) if fetched_for is not None else ""}
