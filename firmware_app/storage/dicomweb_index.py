"""What the box's DICOMweb service (``web/views_dicomweb.py``) may serve, found in the
database: the images still on the box that it took in (analysed, or held as not meant for a
model), by study, series and instance, and the studies a search matches.

An image is served once the box recorded its Study and Series Instance UIDs (the worker
does when it analyses it; an image no model is meant for is held without them, and an image
that came without them makes a ``local:<id>`` study): the others are not reachable over
DICOMweb. Its SOP Instance UID is
recorded when it came over DICOM; an image from a USB stick has it in its file only
(``sop_instance_uid`` empty here). Quarantined and failed objects are never served.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from clinibox_common.contracts.statuses import InstanceStatus

#: the instance status whose images DICOMweb serves (a parameter of every statement)
SERVED = InstanceStatus.PROCESSED
_SERVED = "i.status = ? AND i.image_deleted_at IS NULL AND i.study_instance_uid IS NOT NULL" \
          " AND i.series_instance_uid IS NOT NULL"


@dataclass(frozen=True)
class HeldImage:
    """One image DICOMweb may serve: its UIDs and its file."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    modality: str
    path: Path


@dataclass(frozen=True)
class StudyQuery:
    """A study search (QIDO-RS) on what the box records of its studies. ``patient_name`` is
    a DICOM wildcard (``*``, ``?``); dates are ``YYYYMMDD`` (either end may be empty)."""

    study_instance_uid: str = ""
    patient_id: str = ""
    patient_name: str = ""
    date_from: str = ""
    date_to: str = ""
    modality: str = ""


def _like(pattern: str) -> str:
    """A DICOM wildcard as a LIKE pattern (escaped with ``\\``)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def studies(conn: sqlite3.Connection, query: StudyQuery, limit: int, offset: int = 0
            ) -> list[str]:
    """The Study Instance UIDs of the studies ``query`` matches that hold an image the
    service may serve, the latest received first."""
    where: list[str] = [f"EXISTS (SELECT 1 FROM instances i WHERE i.study_instance_uid ="
                        f" s.study_key AND {_SERVED})"]
    params: list[str] = [SERVED]
    if query.study_instance_uid:
        where.append("s.study_key = ?")
        params.append(query.study_instance_uid)
    if query.patient_id:
        where.append("s.patient_id LIKE ? ESCAPE '\\'")
        params.append(_like(query.patient_id))
    if query.patient_name:
        where.append("s.patient_name LIKE ? ESCAPE '\\'")
        params.append(_like(query.patient_name))
    if query.date_from:
        where.append("s.study_date >= ?")
        params.append(query.date_from)
    if query.date_to:
        where.append("s.study_date <= ? AND s.study_date != ''")
        params.append(query.date_to)
    if query.modality:
        where.append(f"EXISTS (SELECT 1 FROM instances i WHERE i.study_instance_uid ="
                     f" s.study_key AND i.modality = ? AND {_SERVED})")
        params += [query.modality, SERVED]
    rows = conn.execute(f"SELECT s.study_key FROM studies s WHERE {' AND '.join(where)}"
                        " ORDER BY s.received_at DESC, s.id DESC LIMIT ? OFFSET ?",
                        (*params, int(limit), int(offset)))
    return [str(key) for (key,) in rows]


def images(conn: sqlite3.Connection, study_instance_uid: str, series_instance_uid: str = "",
           sop_instance_uid: str = "") -> list[HeldImage]:
    """The images of a study (of one series, or the one instance, and those whose SOP
    Instance UID is not recorded) the service may serve, in the order they arrived."""
    where, params = ["i.study_instance_uid = ?"], [SERVED, study_instance_uid]
    if series_instance_uid:
        where.append("i.series_instance_uid = ?")
        params.append(series_instance_uid)
    if sop_instance_uid:  # or unknown here: the caller reads it from the file
        where.append("(i.sop_instance_uid = ? OR i.sop_instance_uid IS NULL)")
        params.append(sop_instance_uid)
    rows = conn.execute(
        "SELECT i.study_instance_uid, i.series_instance_uid, COALESCE(i.sop_instance_uid, ''),"
        f" COALESCE(i.modality, ''), i.spool_path FROM instances i WHERE {_SERVED} AND"
        f" {' AND '.join(where)} ORDER BY i.id", params)
    return [HeldImage(*row[:4], Path(row[4])) for row in rows]


