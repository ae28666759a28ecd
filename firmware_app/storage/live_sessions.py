"""Bedside live sessions: a sonographer's session on one live source, what was asked of it,
and what it kept (``live_sessions``, ``live_requests``, ``live_kept``; migration v19).

The viewer opens and ends a session and files requests (keep this frame, keep a clip); the
source's live process reads the open session and its requests, lands what it keeps in the
spool (the normal path: results, SR/SEG to the PACS, telemetry) and records it here. Nothing
is kept for a source without an open session.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass

from clinibox_common.contracts.statuses import LiveKept, LiveRequest
from clinibox_common.errors import CliniboxError


class SessionAlreadyOpen(CliniboxError):
    """The source already has an open session (one at a time per source)."""


@dataclass(frozen=True)
class LiveSession:
    """One session, as stored."""

    id: int
    source: str
    study_uid: str
    series_uid: str
    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    from_study: str
    started_by: str
    started_at: float
    ended_at: float | None
    #: the scheduled procedure the patient was picked from (the clinic's worklist), or ''
    accession_number: str = ""
    sps_id: str = ""

    @property
    def open(self) -> bool:
        """Whether the session is still open."""
        return self.ended_at is None


_COLUMNS = ("id, source, study_uid, series_uid, patient_name, patient_id, birth_date, sex, "
            "from_study, started_by, started_at, ended_at, accession_number, sps_id")


def new_uid() -> str:
    """A DICOM UID derived from a random UUID (``2.25.<uuid>``, PS3.5 B.2)."""
    return f"2.25.{uuid.uuid4().int}"


def start(conn: sqlite3.Connection, *, source: str, started_by: str, patient_name: str = "",
          patient_id: str = "", birth_date: str = "", sex: str = "", from_study: str = "",
          accession_number: str = "", sps_id: str = "",
          now: float | None = None) -> LiveSession:
    """Open a session on ``source`` (a new study); SessionAlreadyOpen when one is open.
    ``accession_number`` and ``sps_id``: the worklist's scheduled step it was picked from."""
    try:
        with conn:
            cursor = conn.execute(
                "INSERT INTO live_sessions(source, study_uid, series_uid, patient_name, "
                "patient_id, birth_date, sex, from_study, started_by, started_at, "
                "accession_number, sps_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (source, new_uid(), new_uid(), patient_name, patient_id, birth_date, sex,
                 from_study, started_by, time.time() if now is None else now,
                 accession_number, sps_id))
    except sqlite3.IntegrityError as exc:
        raise SessionAlreadyOpen(f"live source {source} already has an open session") from exc
    session = get(conn, int(cursor.lastrowid))
    assert session is not None
    return session


def end(conn: sqlite3.Connection, session_id: int, now: float | None = None) -> bool:
    """End an open session; False when it was not open."""
    with conn:
        cursor = conn.execute("UPDATE live_sessions SET ended_at = ? WHERE id = ? AND "
                              "ended_at IS NULL", (time.time() if now is None else now,
                                                   session_id))
    return cursor.rowcount == 1


def get(conn: sqlite3.Connection, session_id: int) -> LiveSession | None:
    """A session by id."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM live_sessions WHERE id = ?",
                       (session_id,)).fetchone()
    return LiveSession(*row) if row else None


def open_session(conn: sqlite3.Connection, source: str) -> LiveSession | None:
    """The source's open session, if any."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM live_sessions WHERE source = ? AND "
                       "ended_at IS NULL", (source,)).fetchone()
    return LiveSession(*row) if row else None


def recent(conn: sqlite3.Connection, source: str, limit: int = 10) -> list[LiveSession]:
    """The source's latest sessions, newest first."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM live_sessions WHERE source = ? "
                        "ORDER BY id DESC LIMIT ?", (source, limit)).fetchall()
    return [LiveSession(*row) for row in rows]


@dataclass(frozen=True)
class Request:
    """A sonographer's request to an open session."""

    id: int
    session: int
    kind: LiveRequest
    requested_by: str
    requested_at: float
    #: the frame shown when it was asked (a frozen, stepped-back page); None: the newest
    seq: int | None = None


def ask(conn: sqlite3.Connection, session_id: int, kind: LiveRequest, requested_by: str,
        now: float | None = None, seq: int | None = None) -> int:
    """File a request (keep this frame, keep a clip) for the live process; its id. ``seq``
    names the frame the page showed (kept if the live process still holds it)."""
    with conn:
        cursor = conn.execute(
            "INSERT INTO live_requests(session, kind, seq, requested_by, requested_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (session_id, str(LiveRequest(kind)), seq, requested_by,
             time.time() if now is None else now))
    return int(cursor.lastrowid)


def open_requests(conn: sqlite3.Connection, session_id: int) -> list[Request]:
    """The session's requests not yet done, oldest first."""
    rows = conn.execute("SELECT id, session, kind, requested_by, requested_at, seq FROM "
                        "live_requests WHERE session = ? AND done_at IS NULL ORDER BY id",
                        (session_id,)).fetchall()
    return [Request(r[0], r[1], LiveRequest(r[2]), r[3], r[4], r[5]) for r in rows]


def finish_request(conn: sqlite3.Connection, request_id: int, outcome: str,
                   now: float | None = None) -> None:
    """Mark a request done with what came of it (a LiveKept word, or why not)."""
    with conn:
        conn.execute("UPDATE live_requests SET done_at = ?, outcome = ? WHERE id = ?",
                     (time.time() if now is None else now, outcome, request_id))


@dataclass(frozen=True)
class Kept:
    """One object a session kept."""

    kind: LiveKept
    #: the landed object's row in ``instances``
    instance_id: int
    sop_uid: str
    frames: int
    score: float | None
    kept_at: float


def record_kept(conn: sqlite3.Connection, session_id: int, kept: Kept) -> None:
    """Record what a session kept (after it landed in the spool)."""
    with conn:
        conn.execute("INSERT INTO live_kept(session, kind, instance_id, sop_uid, frames, score, "
                     "kept_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (session_id, str(kept.kind), kept.instance_id, kept.sop_uid, kept.frames,
                      kept.score, kept.kept_at))


def kept_by(conn: sqlite3.Connection, session_id: int) -> list[Kept]:
    """What a session kept, in order."""
    rows = conn.execute("SELECT kind, instance_id, sop_uid, frames, score, kept_at FROM live_kept "
                        "WHERE session = ? ORDER BY id", (session_id,)).fetchall()
    return [Kept(LiveKept(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]
