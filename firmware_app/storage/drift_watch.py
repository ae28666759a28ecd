"""What the box's drift watch reads of one package's results: the clinicians' reviews of its
findings and its confidences, since it was installed (``models/drift_watch.py``)."""

from __future__ import annotations

import sqlite3

from clinibox_common.contracts.statuses import Verdict


def reviews_since(conn: sqlite3.Connection, model_id: str, since: float) -> tuple[int, int]:
    """(disagreements, reviews) of the clinicians' verdicts on ``model_id``'s results since
    ``since`` (results made, and reviews given, since then; an unsure verdict counts as
    neither, as on the console)."""
    counts = dict(conn.execute(
        "SELECT f.verdict, COUNT(*) FROM feedback f JOIN results r "
        "ON r.instance_id = f.instance_id WHERE r.model_id = ? AND f.at >= ? "
        "AND r.created_at >= ? GROUP BY f.verdict", (model_id, since, since)).fetchall())
    disagree = int(counts.get(Verdict.DISAGREE, 0))
    return disagree, disagree + int(counts.get(Verdict.AGREE, 0))


def confidences(conn: sqlite3.Connection, model_id: str, since: float, count: int,
                latest: bool) -> list[float]:
    """The first (``latest`` False) or latest ``count`` finding probabilities of ``model_id``'s
    results since ``since``, oldest first."""
    order = "DESC" if latest else "ASC"
    rows = conn.execute(
        f"SELECT probability FROM results WHERE model_id = ? AND created_at >= ? "
        f"ORDER BY created_at {order}, instance_id {order} LIMIT ?",
        (model_id, since, count)).fetchall()
    values = [float(r[0]) for r in rows]
    return values[::-1] if latest else values


def results_since(conn: sqlite3.Connection, model_id: str, since: float) -> int:
    """How many results ``model_id`` gave since ``since``."""
    return int(conn.execute("SELECT COUNT(*) FROM results WHERE model_id = ? AND created_at >= ?",
                            (model_id, since)).fetchone()[0])
