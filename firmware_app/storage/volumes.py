"""A study's series read as volumes: their 3-D lesions, or per slice with the reason.

The study's analysed instances are grouped by series; each series' slices
(their stored geometry, ``instances.geometry_json``, and their lesion records)
go to ``inference/volume.py``. Only instances assessed ``finding`` contribute
lesions; the others are slices without any. An instance without a series UID
is a series of its own. Counts of a study are per 3-D lesion where a series is
read as a volume, per lesion record where it is read per slice.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from clinibox_common.contracts.statuses import AssessmentKind
from engine.inference.volume import (
    READ_AS_VOLUME,
    Lesion3D,
    SeriesSlice,
    SeriesVolume,
    series_volume,
)

#: the assessment whose lesion records count (``inference/assessment.py``)
FINDING = AssessmentKind.FINDING


@dataclass(frozen=True)
class StudyVolumes:
    """Every series of one study, each read as a volume or per slice."""

    study_key: str
    series: tuple[SeriesVolume, ...]

    @property
    def lesion_count(self) -> int:
        """3-D lesions of the series read as volumes plus lesion records of the others."""
        return sum(s.lesion_count for s in self.series)

    @property
    def lesions(self) -> tuple[Lesion3D, ...]:
        """The 3-D lesions of the series read as volumes, in the order they are numbered
        (from 1) on the page, in the report and in the stack."""
        return tuple(lesion for series in self.series if series.read_as == READ_AS_VOLUME
                     for lesion in series.lesions)

    def in_volume(self, instance_id: int) -> bool:
        """True when the instance is a slice of a series read as a volume."""
        return any(instance_id in series.instance_ids for series in self.series
                   if series.read_as == READ_AS_VOLUME)

    @property
    def volumes(self) -> int:
        """How many series are read as volumes."""
        return sum(1 for s in self.series if s.read_as == READ_AS_VOLUME)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {"study_key": self.study_key, "lesion_count": self.lesion_count,
                "volumes": self.volumes, "series": [s.to_dict() for s in self.series]}


def study_volumes(conn: sqlite3.Connection, study_key: str) -> StudyVolumes:
    """The study's series, each read as a volume (its 3-D lesions) or per slice (why)."""
    grouped: dict[str, list[sqlite3.Row]] = {}
    for row in _analysed_instances(conn, study_key):
        grouped.setdefault(row["series_instance_uid"] or f"instance:{row['id']}", []).append(row)
    return StudyVolumes(study_key, tuple(
        series_volume([_slice(row) for row in rows], rows[0]["series_instance_uid"] or "",
                      rows[0]["modality"] or "") for rows in grouped.values()))


def _analysed_instances(conn: sqlite3.Connection, study_key: str) -> list[sqlite3.Row]:
    """The study's instances that have a result, oldest first."""
    return conn.execute(
        "SELECT i.id, i.series_instance_uid, i.modality, i.geometry_json, r.assessment,"
        " r.lesions_json FROM instances i JOIN results r ON r.instance_id = i.id"
        " WHERE i.study_instance_uid = ? ORDER BY i.id", (study_key,)).fetchall()


def _slice(row: sqlite3.Row) -> SeriesSlice:
    """One analysed instance as a slice: its geometry and, for a finding, its lesions."""
    lesions = _json(row["lesions_json"], []) if row["assessment"] == FINDING else []
    geometry = _json(row["geometry_json"], None)
    return SeriesSlice.from_geometry(
        int(row["id"]), geometry if isinstance(geometry, dict) else None,
        [lesion for lesion in lesions if isinstance(lesion, dict)]
        if isinstance(lesions, list) else [])


def _json(text: str | None, default: Any) -> Any:
    """Stored JSON, or ``default`` when there is none or it does not parse."""
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default
