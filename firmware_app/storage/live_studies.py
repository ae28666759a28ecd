"""The studies a bedside live session meets (``web/views_live.py``): the worklist study a
session is started from (its patient, to prefill the form) and the study a session's kept
frames became once the worker analysed them (found by its Study Instance UID).

``studies.study_key`` is the Study Instance UID of the study's images.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True)
class StudyPatient:
    """The patient of a stored study, as the box holds it (birth date and sex are not kept
    in ``studies``: empty)."""

    study_id: int
    study_key: str
    patient_name: str
    patient_id: str
    birth_date: str = ""
    sex: str = ""


def patient_of_study(conn: sqlite3.Connection, study_key: str) -> StudyPatient | None:
    """The patient of the study whose key (Study Instance UID) is ``study_key``, or None."""
    row = conn.execute("SELECT id, study_key, patient_name, patient_id FROM studies "
                       "WHERE study_key = ?", (study_key,)).fetchone()
    if row is None:
        return None
    return StudyPatient(int(row[0]), str(row[1]), str(row[2] or ""), str(row[3] or ""))


