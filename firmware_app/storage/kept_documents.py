"""The box's own copy of each study's result documents (``kept_documents``, v23).

With ``[dicomweb]`` on, each study completion keeps the documents it made (the SR, the SEG,
the key image: ``[dicomweb] keep``) under ``<state>/documents`` for the box's DICOMweb
service, apart from the DICOM outbox (whose files go once every PACS has them). The latest
completion's set replaces the one before; retention forgets a study's set with its last
image. The files are the caller's to write before and to delete after.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from clinibox_common.contracts.statuses import InstanceStatus


@dataclass(frozen=True)
class KeptDocument:
    """One kept document: its UIDs, kind and file."""

    sop_instance_uid: str
    study_key: str
    series_instance_uid: str
    sop_class_uid: str
    kind: str
    modality: str
    path: Path


_COLUMNS = ("sop_instance_uid", "study_key", "series_instance_uid", "sop_class_uid", "kind",
            "modality", "path")


def _document(row: tuple) -> KeptDocument:
    return KeptDocument(*row[:6], Path(row[6]))


def replace(conn: sqlite3.Connection, study_key: str, documents: Iterable[KeptDocument],
            now: float | None = None) -> list[Path]:
    """Keep ``documents`` as the study's set, in the caller's transaction; the files of the
    set they replace (none of them a file of the new set), for the caller to delete after
    the commit."""
    now = time.time() if now is None else now
    new = list(documents)
    keep = {str(d.path) for d in new}
    old = [Path(p) for (p,) in conn.execute(
        "SELECT path FROM kept_documents WHERE study_key = ?", (study_key,)) if p not in keep]
    conn.execute("DELETE FROM kept_documents WHERE study_key = ?", (study_key,))
    conn.executemany(
        f"INSERT OR REPLACE INTO kept_documents ({', '.join(_COLUMNS)}, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(d.sop_instance_uid, study_key, d.series_instance_uid, d.sop_class_uid, d.kind,
          d.modality, str(d.path), now) for d in new])
    return old


def of_study(conn: sqlite3.Connection, study_key: str) -> list[KeptDocument]:
    """The study's kept documents, by kind and UID."""
    return [_document(row) for row in conn.execute(
        f"SELECT {', '.join(_COLUMNS)} FROM kept_documents WHERE study_key = ?"
        " ORDER BY kind, sop_instance_uid", (study_key,))]


def forget_without_images(conn: sqlite3.Connection) -> list[Path]:
    """Forget the documents of every study none of whose images is still on the box (in
    the caller's transaction); their files, for the caller to delete after the commit."""
    gone = [(uid, Path(path)) for uid, path in conn.execute(
        "SELECT d.sop_instance_uid, d.path FROM kept_documents d WHERE NOT EXISTS"
        " (SELECT 1 FROM instances i WHERE i.study_instance_uid = d.study_key"
        " AND i.image_deleted_at IS NULL AND i.status = ?)", (InstanceStatus.PROCESSED,))]
    conn.executemany("DELETE FROM kept_documents WHERE sop_instance_uid = ?",
                     [(uid,) for uid, _ in gone])
    return [path for _, path in gone]
