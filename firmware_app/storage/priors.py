"""The patient's earlier studies, asked of the PACS for a study with a finding.

A study with a finding gets one lookup (``prior_lookups``) when it is first due to complete
and ``[priors]`` is enabled (``service/study_completion.py``); the prior fetcher
(``ingest/priors.py``) asks the PACS, fetches what it found into the box's ordinary intake
and ends the lookup: ``fetched`` (with the images' queue ids, so the completion waits for
their analysis), ``none`` or ``failed`` (``reason``: a code of ``FAILURE_REASONS``). Each
earlier study fetched is noted in ``prior_studies``: it is analysed like any study, shown
on the viewer as an earlier study, and never sent anywhere (no SR, report or alert).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from clinibox_common.contracts.statuses import WAITING_STATUSES, PriorLookupState

#: the origin of every image fetched for a lookup (then the PACS's AE title): a study is an
#: earlier study only while each of its images came so (one a modality sent itself is not)
FETCHED_ORIGIN_PREFIX = "C-GET:"

#: why a lookup failed (codes a program reads back; the page says one sentence)
FAILURE_REASONS = ("unreachable", "refused", "failed", "timeout", "too_large", "no_patient_id")


@dataclass(frozen=True)
class PriorLookup:
    """One study's lookup of its earlier studies."""

    study_key: str
    state: PriorLookupState
    reason: str
    asked_at: float
    ended_at: float | None
    studies: int
    images: int
    instance_ids: tuple[int, ...]

    @property
    def ended(self) -> bool:
        """The fetcher is done with it (whatever it found)."""
        return self.state is not PriorLookupState.ASKING


def ask(conn: sqlite3.Connection, study_key: str, now: float) -> bool:
    """Open the study's lookup; False when it has one already (a lookup is made once)."""
    return conn.execute(
        "INSERT OR IGNORE INTO prior_lookups (study_key, state, asked_at) VALUES (?, ?, ?)",
        (study_key, PriorLookupState.ASKING.value, now)).rowcount == 1


def lookup(conn: sqlite3.Connection, study_key: str) -> PriorLookup | None:
    """The study's lookup, or None when it has none."""
    row = conn.execute("SELECT * FROM prior_lookups WHERE study_key = ?",
                       (study_key,)).fetchone()
    if row is None:
        return None
    return PriorLookup(str(row["study_key"]), PriorLookupState(row["state"]), row["reason"],
                       float(row["asked_at"]), row["ended_at"], int(row["studies"]),
                       int(row["images"]), tuple(int(i) for i in json.loads(row["instance_ids"])))


def asking(conn: sqlite3.Connection) -> list[str]:
    """The studies whose lookup waits for the fetcher, oldest first."""
    return [str(r[0]) for r in conn.execute(
        "SELECT study_key FROM prior_lookups WHERE state = ? ORDER BY asked_at",
        (PriorLookupState.ASKING.value,))]


def end(conn: sqlite3.Connection, study_key: str, state: PriorLookupState, now: float, *,
        reason: str = "", studies: int = 0, instance_ids: tuple[int, ...] = ()) -> None:
    """Record how the study's lookup ended."""
    conn.execute(
        "UPDATE prior_lookups SET state = ?, reason = ?, ended_at = ?, studies = ?, images = ?,"
        " instance_ids = ? WHERE study_key = ?",
        (state.value, reason, now, studies, len(instance_ids), json.dumps(list(instance_ids)),
         study_key))


def note_prior(conn: sqlite3.Connection, prior_key: str, for_study_key: str, study_date: str,
               now: float) -> None:
    """Note ``prior_key`` as an earlier study fetched for ``for_study_key`` (the first
    study it was fetched for is kept)."""
    conn.execute("INSERT OR IGNORE INTO prior_studies (study_key, for_study_key, study_date,"
                 " fetched_at) VALUES (?, ?, ?, ?)", (prior_key, for_study_key, study_date, now))


#: the rule, in SQL, for the prior_studies row ``p``: every image of its study was fetched
ONLY_FETCHED_SQL = (
    "NOT EXISTS (SELECT 1 FROM instances i WHERE i.study_instance_uid = p.study_key"
    f" AND coalesce(substr(i.origin, 1, {len(FETCHED_ORIGIN_PREFIX)}), '')"
    f" != '{FETCHED_ORIGIN_PREFIX}')")
#: a studies row ``s`` is an earlier study fetched for another (the worklist marks it)
EARLIER_STUDY_SQL = (f"EXISTS (SELECT 1 FROM prior_studies p WHERE p.study_key = s.study_key"
                     f" AND {ONLY_FETCHED_SQL})")


def fetched_for(conn: sqlite3.Connection, prior_key: str) -> str | None:
    """The study an earlier study was fetched for, or None when it came on its own: not
    noted as fetched, or holding an image that was not fetched (the study itself arrived
    later from a modality, or a PACS named a study it was not asked for)."""
    row = conn.execute(f"SELECT p.for_study_key FROM prior_studies p WHERE p.study_key = ?"
                       f" AND {ONLY_FETCHED_SQL}", (prior_key,)).fetchone()
    return None if row is None else str(row[0])


def study_on_box(conn: sqlite3.Connection, study_key: str) -> bool:
    """Whether the box holds an analysed or waiting image of the study."""
    return conn.execute("SELECT 1 FROM instances WHERE study_instance_uid = ? LIMIT 1",
                        (study_key,)).fetchone() is not None


def still_waiting(conn: sqlite3.Connection, instance_ids: tuple[int, ...]) -> int:
    """How many of the fetched images still wait to be analysed."""
    if not instance_ids:
        return 0
    waiting = tuple(WAITING_STATUSES)
    count = 0
    for start in range(0, len(instance_ids), 500):
        chunk = instance_ids[start:start + 500]
        count += int(conn.execute(
            f"SELECT COUNT(*) FROM instances WHERE id IN ({','.join('?' * len(chunk))})"
            f" AND status IN ({','.join('?' * len(waiting))})",
            (*chunk, *waiting)).fetchone()[0])
    return count


def has_finding(conn: sqlite3.Connection, study_key: str) -> bool:
    """Whether the study has a finding (the lookup is made for those alone)."""
    row = conn.execute("SELECT findings FROM studies WHERE study_key = ?",
                       (study_key,)).fetchone()
    return row is not None and int(row[0]) > 0


def mark_alerts_done(conn: sqlite3.Connection, study_id: int, completed_at: float) -> None:
    """An earlier study's completion owes no alert: noted as if its alerts were queued."""
    conn.execute("UPDATE studies SET alerts_done_at = ? WHERE id = ?", (completed_at, study_id))
