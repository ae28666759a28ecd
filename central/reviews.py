"""A radiologist's review of an alert, the verdict queued for the box, and the console's audit.

An alert goes ``new`` → ``under_review`` (someone opened it) → ``reviewed`` (a verdict
was given). Giving a verdict writes, in one transaction, the alert's review, a
``downlinks`` row for the alert's box (the box's next downlink sequence number, the
payload :func:`clinibox_common.contracts.downlink.review_payload` checked and in canonical
JSON) and a ``console_audit`` row. A second verdict on the same alert amends it: the
alert takes the new verdict and another downlink goes to the box.

The next sequence number is ``MAX(seq) + 1`` for that box; on PostgreSQL a transaction
advisory lock per box serialises two reviews of one box's alerts, so two consoles (or a
console and the command line) never pick the same number.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

from central.sql import Transaction
from clinibox_common.contracts import downlink
from clinibox_common.contracts.egress import EgressRefused
from clinibox_common.contracts.envelope import canonical_payload
from clinibox_common.errors import CliniboxError
from clinibox_common.i18n import N_, gettext

__all__ = ["ALERT_COLUMNS", "REFUSALS", "ReviewError", "alert", "audit", "check_review",
           "open_alert", "refusal", "review_alert"]

#: The alert columns the store and the console read.
ALERT_COLUMNS = ("id", "clinic", "device", "seq", "study_ref", "finding", "score", "threshold",
                 "modality", "model", "instances", "processing_ms", "created_at", "received_at",
                 "reviewed_at", "state", "verdict", "follow_up_months", "note", "opened_by",
                 "opened_at", "reviewed_by")
#: The longest account name or address kept in the audit trail.
_NAME_LIMIT = 200
#: Namespace of the advisory locks that serialise downlink numbering (PostgreSQL).
_DOWNLINK_LOCK = 0x636C6264  # "clbd"


class ReviewError(CliniboxError, ValueError):
    """A review refused: no such alert, an unknown verdict, a bad note or follow-up.

    ``problem`` is the :class:`~clinibox_common.contracts.downlink.ReviewProblem` when the
    verdict, note or follow-up was refused, else None."""

    kind = "review refused"

    def __init__(self, *args: object, problem: downlink.ReviewProblem | None = None,
                 exit_status: int | None = None) -> None:
        super().__init__(*args, exit_status=exit_status)
        self.problem = problem


def alert(tx: Transaction, alert_id: int) -> dict[str, Any] | None:
    """One alert as a dict (its review included), or None."""
    row = tx.execute(f"SELECT {', '.join(ALERT_COLUMNS)} FROM alerts WHERE id = ?",
                     (int(alert_id),)).fetchone()
    return None if row is None else dict(zip(ALERT_COLUMNS, row, strict=True))


def _name(text: str, what: str) -> str:
    if not isinstance(text, str) or not text.strip() or len(text) > _NAME_LIMIT \
            or not text.isprintable():
        raise ReviewError(f"{what}: must be printable text of 1 to {_NAME_LIMIT} characters")
    return text


def audit(tx: Transaction, account: str, address: str, action: str, target: str = "",
          detail: str = "", now: float | None = None) -> None:
    """Append one row to the console's audit trail (in ``tx``)."""
    tx.execute(
        "INSERT INTO console_audit (at, account, address, action, target, detail)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (time.time() if now is None else now, str(account)[:_NAME_LIMIT],
         str(address)[:_NAME_LIMIT], str(action)[:_NAME_LIMIT], str(target)[:_NAME_LIMIT],
         str(detail)[:1000]))


def open_alert(tx: Transaction, alert_id: int, account: str, now: float | None = None) -> bool:
    """``new`` → ``under_review`` (who and when); False when the alert was not new."""
    _name(account, "account")
    cursor = tx.execute(
        "UPDATE alerts SET state = ?, opened_by = ?, opened_at = ? WHERE id = ? AND state = ?",
        (downlink.AlertState.UNDER_REVIEW.value, account, time.time() if now is None else now,
         int(alert_id), downlink.AlertState.NEW.value))
    return cursor.rowcount == 1


#: ``clinibox central review``'s words (and the store's refusal) for each problem the one rule
#: (:func:`clinibox_common.contracts.downlink.review_problem`) finds; the console's page says
#: them its own way (``central_console/views_alerts.py``).
REFUSALS: dict[downlink.ReviewProblem, str] = {
    downlink.ReviewProblem.NO_VERDICT: N_("verdict must be one of %(verdicts)s; got %(verdict)s"),
    downlink.ReviewProblem.NOTE_TOO_LONG: N_(
        "the note cannot be sent: at most %(n)s characters of printable text"),
    downlink.ReviewProblem.NOTE_NOT_TEXT: N_(
        "the note cannot be sent: control characters are not allowed"),
    downlink.ReviewProblem.MONTHS_MISSING: N_(
        "a follow_up verdict needs the months until the follow-up"),
    downlink.ReviewProblem.MONTHS_NOT_FOLLOW_UP: N_(
        "months are given with a follow_up verdict only"),
    downlink.ReviewProblem.MONTHS_OUT_OF_RANGE: N_("months must be between 1 and %(n)s"),
}


def refusal(problem: downlink.ReviewProblem, verdict: Any = "") -> str:
    """A review problem in the command's words, in the reader's language."""
    months = problem is downlink.ReviewProblem.MONTHS_OUT_OF_RANGE
    return gettext(REFUSALS[problem], verdicts=", ".join(downlink.VERDICTS),
                   verdict=repr(verdict),
                   n=downlink.MAX_FOLLOW_UP_MONTHS if months else downlink.MAX_NOTE)


def check_review(verdict: str, note: str, follow_up_months: int | None) -> None:
    """Refuse (ReviewError, its ``problem`` the code) a verdict, note or follow-up the
    downlink would not carry: :func:`clinibox_common.contracts.downlink.review_problem`."""
    problem = downlink.review_problem(verdict, note, follow_up_months)
    if problem is not None:
        raise ReviewError(refusal(problem, verdict), problem=problem)


def queue_downlink(tx: Transaction, clinic: str, device: str, kind: str,
                   payload: dict[str, Any], now: float, *, alert_id: int | None = None) -> int:
    """Queue one downlink for a box under its next sequence number (in ``tx``); the number.

    On PostgreSQL an advisory lock per box serialises two transactions numbering one box's
    downlinks (two reviews, a review and a rollout), so the numbers run without a gap."""
    if tx.postgres:
        box = zlib.crc32(f"{clinic}/{device}".encode()) - 2**31
        tx.execute("SELECT pg_advisory_xact_lock(?, ?)", (_DOWNLINK_LOCK, box))
    (last,) = tx.execute("SELECT COALESCE(MAX(seq), 0) FROM downlinks WHERE clinic = ?"
                         " AND device = ?", (clinic, device)).fetchone()
    seq = int(last) + 1
    tx.execute(
        "INSERT INTO downlinks (clinic, device, seq, kind, alert_id, payload, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (clinic, device, seq, kind, alert_id, canonical_payload(payload).decode("utf-8"), now))
    return seq


def review_alert(tx: Transaction, alert_id: int, verdict: str, note: str, account: str, *,
                 follow_up_months: int | None = None, now: float | None = None,
                 address: str = "") -> dict[str, Any]:
    """Give (or amend) an alert's verdict, queue its downlink and audit it, all in ``tx``.

    Returns the alert as a dict after the review; ReviewError for anything refused.
    """
    check_review(verdict, note, follow_up_months)
    _name(account, "account")
    now = time.time() if now is None else now
    found = alert(tx, alert_id)
    if found is None:
        raise ReviewError(f"no such alert: {alert_id}")
    try:
        payload = downlink.review_payload(
            study_ref=found["study_ref"], alert_seq=int(found["seq"]), verdict=verdict,
            note=note, reviewed_at=now, follow_up_months=follow_up_months, created_at=now)
    except EgressRefused as exc:
        raise ReviewError(str(exc)) from exc
    tx.execute(
        "UPDATE alerts SET state = ?, verdict = ?, follow_up_months = ?, note = ?,"
        " reviewed_by = ?, reviewed_at = ?, opened_by = COALESCE(opened_by, ?),"
        " opened_at = COALESCE(opened_at, ?) WHERE id = ?",
        (downlink.AlertState.REVIEWED.value, verdict, follow_up_months, note, account, now,
         account, now, int(alert_id)))
    queue_downlink(tx, found["clinic"], found["device"], downlink.KIND_REVIEW, payload, now,
                   alert_id=int(alert_id))
    detail = verdict if follow_up_months is None else f"{verdict}:{int(follow_up_months)}"
    audit(tx, account, address, "alert_reviewed", f"alert:{int(alert_id)}", detail, now)
    reviewed = alert(tx, alert_id)
    assert reviewed is not None
    return reviewed
