"""The hospital's verdicts on the box's alerts (``hospital_reviews``, schema v17).

The downlink (``telemetry/downlink.py``) keeps each message once, by the hospital's
sequence number for this box (``seq``); a study's current verdict is its review with the
highest ``seq`` (a later review amends an earlier one). The watermark is what the box
reports in its status messages (``downlink_seq``): the highest n such that every
downlink 1 … n is kept, so the hospital sends again whatever came after it. A verdict
that arrived after the downlink's freshness window (the box was offline for over a
month) is kept all the same with ``late`` set, and counts in the watermark like any other:
a late verdict never leaves a gap.

Each review kept adds an audit row (action ``hospital_review_received``, actor
:data:`ACTOR`) in the same transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

from firmware_app.storage import audit

#: who the audit trail names for a verdict that came down from the hospital
ACTOR = "hospital:downlink"
#: study keys looked up per query (SQLite's variable limit is far above it)
_CHUNK = 500


@dataclass(frozen=True)
class HospitalReview:
    """One verdict of the hospital's radiologist, as the box keeps it."""

    seq: int
    study_key: str | None
    study_ref: str
    alert_seq: int
    verdict: str
    follow_up_months: int | None
    note: str
    reviewed_at: float
    received_at: float
    late: bool = False

    def as_json(self) -> dict[str, object]:
        """The review as ``clinibox results --json`` prints it."""
        return {"verdict": self.verdict, "note": self.note, "reviewed_at": self.reviewed_at,
                "follow_up_months": self.follow_up_months, "late": self.late}


_COLUMNS = ("seq, study_key, study_ref, alert_seq, verdict, follow_up_months, note, "
            "reviewed_at, received_at, late")
#: the same columns of the ``hospital_reviews`` table aliased ``h`` (a join's)
_JOINED_COLUMNS = ", ".join(f"h.{name.strip()}" for name in _COLUMNS.split(","))


def _review(row: sqlite3.Row | tuple) -> HospitalReview:
    seq, key, ref, alert_seq, verdict, months, note, reviewed, received, late = tuple(row)
    return HospitalReview(int(seq), key, ref, int(alert_seq), verdict,
                          None if months is None else int(months), note, float(reviewed),
                          float(received), bool(late))


def add(conn: sqlite3.Connection, *, seq: int, study_key: str | None, study_ref: str,
        alert_seq: int, verdict: str, follow_up_months: int | None, note: str,
        reviewed_at: float, late: bool = False) -> bool:
    """Keep one review and its audit row (in the caller's transaction); False when ``seq`` is
    kept already (a redelivery: nothing written). ``late``: it arrived after the downlink's
    freshness window (kept and counted all the same)."""
    inserted = conn.execute(
        f"INSERT OR IGNORE INTO hospital_reviews({_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, study_key, study_ref, alert_seq, verdict, follow_up_months, note,
         float(reviewed_at), time.time(), int(late)),
    ).rowcount == 1
    if inserted:
        audit.record(conn, "hospital_review_received", account=ACTOR,
                     target=f"study:{study_key or study_ref}", detail=verdict)
    return inserted


#: every downlink sequence number the box keeps: the verdicts', the model offers' (v18),
#: the hospital's link checks' (v20) and its times' (v22)
_KEPT = ("SELECT seq FROM hospital_reviews UNION ALL SELECT seq FROM model_offers"
         " UNION ALL SELECT seq FROM link_checks UNION ALL SELECT seq FROM hospital_clock")


def watermark(conn: sqlite3.Connection) -> int:
    """The highest n such that every downlink 1 … n is kept, verdicts, model offers, link
    checks and times alike (0 while downlink 1 is missing)."""
    row = conn.execute(
        f"WITH kept(seq) AS ({_KEPT}) SELECT MIN(r.seq) FROM kept r WHERE NOT EXISTS"
        " (SELECT 1 FROM kept n WHERE n.seq = r.seq + 1)"
        " AND EXISTS (SELECT 1 FROM kept WHERE seq = 1)").fetchone()
    return int(row[0] or 0)


def latest(conn: sqlite3.Connection, study_key: str) -> HospitalReview | None:
    """The study's current verdict (its review with the highest seq), or None."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM hospital_reviews WHERE study_key = ?"
                       " ORDER BY seq DESC LIMIT 1", (study_key,)).fetchone()
    return None if row is None else _review(row)


def latest_for(conn: sqlite3.Connection, study_keys: Iterable[str]) -> dict[str, HospitalReview]:
    """The current verdict of each of ``study_keys`` that has one (one query per 500 keys)."""
    keys = list(dict.fromkeys(study_keys))
    found: dict[str, HospitalReview] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start:start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        for row in conn.execute(
                f"SELECT {_COLUMNS} FROM hospital_reviews WHERE seq IN (SELECT MAX(seq) FROM"
                f" hospital_reviews WHERE study_key IN ({marks}) GROUP BY study_key)", chunk):
            review = _review(row)
            assert review.study_key is not None
            found[review.study_key] = review
    return found


def latest_by_study_id(conn: sqlite3.Connection,
                       study_ids: Iterable[int]) -> dict[int, HospitalReview]:
    """The current verdict of each study of ``study_ids`` (``studies.id``, the worklist's
    rows) that has one: one query per 500 studies, not one per row."""
    ids = list(dict.fromkeys(int(i) for i in study_ids))
    found: dict[int, HospitalReview] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        for row in conn.execute(
                f"SELECT s.id, {_JOINED_COLUMNS} FROM studies s JOIN hospital_reviews h"
                " ON h.seq = (SELECT MAX(seq) FROM hospital_reviews WHERE study_key = s.study_key)"
                f" WHERE s.id IN ({marks})", chunk):
            found[int(row[0])] = _review(tuple(row)[1:])
    return found


def last_received(conn: sqlite3.Connection) -> HospitalReview | None:
    """The review received last (the device page shows it), or None."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM hospital_reviews"
                       " ORDER BY received_at DESC, seq DESC LIMIT 1").fetchone()
    return None if row is None else _review(row)


def unresolved(conn: sqlite3.Connection) -> int:
    """How many reviews name a study reference no study on the box has."""
    return int(conn.execute("SELECT COUNT(*) FROM hospital_reviews WHERE study_key IS NULL")
               .fetchone()[0])
