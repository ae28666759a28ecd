"""What the de-identified export reads and writes in the box's database.

It finds the study asked for (by the box's local study id, its Study Instance
UID, or among every study key when a hospital's study reference is matched),
lists the study's received instances with where their files are (or when
retention deleted them), and records each export in ``exports``: who, when,
from which address, which study, how many files, and where they went. The
de-identification itself is ``firmware_app/dicom_out/``.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from firmware_app.storage import audit
from firmware_app.storage.db import transaction


@dataclass(frozen=True)
class ExportStudy:
    """A study of the box as the export names it: its local id and its key."""

    id: int
    study_key: str


@dataclass(frozen=True)
class ExportInstance:
    """One received instance of a study: where its file is, and whether it is still there."""

    id: int
    spool_path: str
    status: str
    modality: str
    image_deleted_at: float | None


def study_by_id(conn: sqlite3.Connection, study_id: int) -> ExportStudy | None:
    """The study with this local id (``studies.id``), or None."""
    row = conn.execute("SELECT id, study_key FROM studies WHERE id = ?", (study_id,)).fetchone()
    return None if row is None else ExportStudy(int(row[0]), str(row[1]))


def study_by_key(conn: sqlite3.Connection, study_key: str) -> ExportStudy | None:
    """The study with this key (its Study Instance UID, or ``local:<id>``), or None."""
    row = conn.execute("SELECT id, study_key FROM studies WHERE study_key = ?",
                       (study_key,)).fetchone()
    return None if row is None else ExportStudy(int(row[0]), str(row[1]))


def all_studies(conn: sqlite3.Connection) -> list[ExportStudy]:
    """Every study on the box (to match a study reference against)."""
    return [ExportStudy(int(row[0]), str(row[1]))
            for row in conn.execute("SELECT id, study_key FROM studies ORDER BY id")]


def study_instances(conn: sqlite3.Connection, study_key: str) -> list[ExportInstance]:
    """The study's received instances in the order they arrived."""
    return [ExportInstance(int(row[0]), str(row[1]), str(row[2]), row[3] or "", row[4])
            for row in conn.execute(
                "SELECT id, spool_path, status, modality, image_deleted_at FROM instances"
                " WHERE study_instance_uid = ? ORDER BY received_at, id", (study_key,))]


def record_export(conn: sqlite3.Connection, *, account: str, address: str, study_key: str,
                  files: int, target: str, at: float | None = None) -> int:
    """Record one export, in ``exports`` and in the audit trail (committed together before
    this returns); its row id."""
    at = time.time() if at is None else at
    with transaction(conn):
        cursor = conn.execute(
            "INSERT INTO exports(at, account, address, study_key, files, target)"
            " VALUES (?, ?, ?, ?, ?, ?)", (at, account, address, study_key, files, target))
        study = study_by_key(conn, study_key)
        audit.record(conn, "export", account=account, address=address,
                     target=f"study:{study.id}" if study else "study:?",
                     detail=f"export {cursor.lastrowid}: {files} file(s) to {target}", at=at)
        return int(cursor.lastrowid)


def exports_of_study(conn: sqlite3.Connection, study_key: str) -> list[dict[str, object]]:
    """The study's recorded exports, newest first (id, at, account, address, files, target)."""
    return [dict(row) for row in conn.execute(
        "SELECT id, at, account, address, files, target FROM exports WHERE study_key = ?"
        " ORDER BY at DESC, id DESC", (study_key,))]
