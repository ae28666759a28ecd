"""When a study is complete, and what its completion reads and records.

A study is complete when no instance of it has arrived for ``stable_seconds``
and no object still waiting in the queue could belong to it: an object's
study is known only once it is analysed, so any object not yet analysed that
arrived while the study was arriving (from its first instance less the stable
period to its last plus the stable period) holds the study open. A study
completed before is due again when a result was stored for it after its
completion (a late instance): it then gets its next version.

Its alerts (one per study and model: ``storage.study_alerts``) and its DICOM
results wait for the completion.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinibox_common.contracts.statuses import WAITING_STATUSES
from firmware_app.storage.results import ResultStore, decode_heatmap

#: statuses of an object not yet analysed (its study is not known yet)
WAITING = WAITING_STATUSES


@dataclass(frozen=True)
class DueStudy:
    """A study whose completion is due: its key, last arrival and completions so far."""

    id: int
    study_key: str
    last_received_at: float
    completions: int
    #: when a result of it was last stored
    updated_at: float = 0.0

    @property
    def version(self) -> int:
        """The version its results get at this completion (1 for the first)."""
        return self.completions + 1


def studies_due(conn: sqlite3.Connection, now: float, stable_seconds: float) -> list[DueStudy]:
    """Studies complete at ``now`` and not yet completed since their last result, oldest first."""
    return studies_completing(conn, now, stable_seconds)[0]


def studies_settling(conn: sqlite3.Connection, now: float, stable_seconds: float
                     ) -> list[DueStudy]:
    """Studies whose every object is analysed but whose stable period is still running at
    ``now``: complete at its end unless another instance arrives; oldest first."""
    return studies_completing(conn, now, stable_seconds)[1]


def studies_completing(conn: sqlite3.Connection, now: float, stable_seconds: float
                       ) -> tuple[list[DueStudy], list[DueStudy]]:
    """Studies not completed since their last result that no waiting object could belong
    to, in one read: those due at ``now`` (:func:`studies_due`) and those still settling
    (:func:`studies_settling`), each oldest first."""
    rows = conn.execute(
        "SELECT s.id, s.study_key, s.completions, s.updated_at, MIN(i.received_at) AS first,"
        " MAX(i.received_at) AS last"
        " FROM studies s JOIN instances i ON i.study_instance_uid = s.study_key"
        " WHERE s.completed_at IS NULL OR s.updated_at > s.completed_at"
        " GROUP BY s.id ORDER BY last").fetchall()
    waiting = [float(r[0]) for r in conn.execute(
        f"SELECT received_at FROM instances WHERE status IN ({','.join('?' * len(WAITING))})",
        WAITING)]
    studies = [DueStudy(int(r["id"]), str(r["study_key"]), float(r["last"]),
                        int(r["completions"]), float(r["updated_at"]))
               for r in rows
               if not any(float(r["first"]) - stable_seconds <= at <= float(r["last"])
                          + stable_seconds for at in waiting)]
    cut = now - stable_seconds
    return ([s for s in studies if s.last_received_at <= cut],
            [s for s in studies if s.last_received_at > cut])


def any_study_pending(conn: sqlite3.Connection) -> bool:
    """Whether a study may be on its way: an object waits to be analysed (its study is known
    only then), or a study has results not completed yet (still arriving, or due)."""
    return conn.execute(
        "SELECT 1 FROM studies WHERE completed_at IS NULL OR updated_at > completed_at"
        f" UNION ALL SELECT 1 FROM instances WHERE status IN ({','.join('?' * len(WAITING))})"
        " LIMIT 1", WAITING).fetchone() is not None


def analysed_instances(conn: sqlite3.Connection, study_key: str
                       ) -> list[tuple[Path, dict[str, Any], Any]]:
    """(file, result, heatmap) of each analysed instance of the study whose image is still on
    the box (retention may have deleted older ones), in arrival order."""
    present = {int(r["id"]): (Path(r["spool_path"]), r["heatmap"]) for r in conn.execute(
        "SELECT i.id, i.spool_path, r.heatmap FROM instances i"
        " JOIN results r ON r.instance_id = i.id"
        " WHERE i.study_instance_uid = ? AND i.image_deleted_at IS NULL", (study_key,))}
    return [(present[r["id"]][0], r, decode_heatmap(present[r["id"]][1]))
            for r in ResultStore(conn).instances(study_key) if r["id"] in present]


def mark_completed(conn: sqlite3.Connection, study_id: int, now: float) -> None:
    """Record a completion of the study (inside the caller's transaction)."""
    conn.execute("UPDATE studies SET completed_at = ?, completions = completions + 1"
                 " WHERE id = ?", (now, study_id))



def completions(conn: sqlite3.Connection, study_key: str) -> int:
    """How many times the study was completed (0: not yet, or no such study)."""
    row = conn.execute("SELECT completions FROM studies WHERE study_key = ?",
                       (study_key,)).fetchone()
    return int(row[0]) if row else 0
