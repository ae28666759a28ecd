"""The access audit trail: an append-only record of who did what on the box, from where.

Every login and logout (and every refused login), every view of a study, an
image or a report, every report download, export, clinician's verdict,
quarantine action, account change and model change is one row of ``audit``:
when (``at``, epoch seconds), who (``account``: a viewer account's name;
``cli:<unix user>`` for a command run on the box's console (``cli:tech as
clinibox`` when technician tech ran it as the service user);
``system:<part>`` when the box acted by itself; empty for a login with an
unknown name), from which address (the client's IP address; ``local`` on the
console), what (``action``, a word of :data:`ACTIONS`), on what (``target``,
e.g. ``study:12``, ``instance:34``, ``account:carl``, ``model:name@1.1.0``)
and a short ``detail``. The rows never leave the box (only counts might:
:func:`counts`); local study ids are fine here.

In the spirit of IHE ATNA and OWASP ASVS logging: the record is made on the
box, in UTC epoch seconds, with the actor, the source address, the object
and the outcome; it never holds a password, a session token or a patient
string (targets are the box's own ids). Text is cut to a fixed length and
control characters are escaped, so a crafted name cannot forge a line.

Rows form a hash chain (``storage.audit_chain``): editing, deleting or
reordering rows shows when :func:`firmware_app.storage.audit_chain.verify`
runs. SQLite triggers (``storage.audit_schema``) refuse UPDATE and DELETE
except through :func:`prune`, which removes rows older than ``[audit]
keep_days`` from the front of the chain and moves the anchor past them.

Repeats of a high-rate act (images loaded by one page, a refresh) may be
coalesced: ``record(..., coalesce_seconds=N)`` writes nothing when the same
account did the same action on the same target from the same address within
the last N seconds.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import sqlite3
import time

from clinibox_common.errors import CliniboxError
from clinibox_common.i18n import ENGLISH, N_, use_locale
from firmware_app.storage import db, event_codes
from firmware_app.storage.audit_chain import anchor, highest_id_given, row_hash, verify

log = logging.getLogger(__name__)

DAY = 86_400.0

#: The closed vocabulary of audited acts: action -> what it means (shown on the page).
ACTIONS: dict[str, str] = {
    "login": N_("logged in to the viewer"),
    "login_failed": N_("a login refused: a wrong password (account: the account named) or an "
                       "unknown name (not kept: it may be a password typed in the wrong field)"),
    "login_throttled": N_("login tries turned away while the address must wait "
                          "(one row a minute per address)"),
    "logout": N_("logged out of the viewer"),
    "worklist_view": N_("opened the worklist, which lists patients' names (its refreshes and "
                        "the same list as JSON: one row per 5 minutes, account and address)"),
    "study_view": N_("opened a study's page (a reload within a minute adds no row)"),
    "image_view": N_("loaded an image of a study: a frame, the heatmap or the key image "
                     "(one row per instance, account and address every 10 minutes)"),
    "dicomweb_search": N_("a DICOMweb search listed a study, which names its patient (one row "
                          "per study, account and address every 5 minutes)"),
    "dicomweb_retrieve": N_("retrieved a study's images or headers over DICOMweb (one row per "
                            "study, account and address every 10 minutes)"),
    "report_view": N_("opened a study's printable report (a reload within a minute adds no row)"),
    "report_download": N_("downloaded a study's PDF report (again within a minute: no new row)"),
    "export": N_("exported a study de-identified (viewer or clinibox export-study)"),
    "feedback": N_("recorded a verdict on a finding"),
    "quarantine_requeued": N_("put a quarantined object back in the queue"),
    "quarantine_deleted": N_("deleted a quarantined object"),
    "account_created": N_("created a viewer account"),
    "password_changed": N_("set a new password for an account (its sessions end)"),
    "account_removed": N_("removed a viewer account"),
    "model_installed": N_("installed a model package (it starts its trial)"),
    "model_refused": N_("a model package was refused"),
    "model_rolled_back": N_("went back to the previous model package"),
    "model_kept": N_("a model package passed its trial and is kept"),
    "model_drift": N_("a model package crossed a drift bound and is kept for a person to "
                      "decide ([models] drift_action = \"report\")"),
    "threshold_set": N_("set the clinic's own finding threshold of a model from its confirmed "
                        "cases ([models] calibration)"),
    "audit_viewed": N_("read the audit trail (the page: once per 5 minutes and address)"),
    "audit_pruned": N_("deleted audit rows older than [audit] keep_days"),
    "hospital_review_received": N_("received the hospital's verdict on a study's alert "
                                   "(account: hospital:downlink)"),
    "model_rollout_received": N_("received the hospital's offer of a model package (account: "
                                 "hospital:rollout)"),
    "model_rollback_received": N_("received the hospital's order to go back to the previous "
                                  "model package (account: hospital:rollout)"),
    "live_view": N_("opened a live source's page, which may name the patient of its open "
                    "session (one row per 5 minutes, account and address)"),
    "live_session_started": N_("started a bedside live session for a patient on a live "
                               "source"),
    "live_session_ended": N_("ended a bedside live session"),
    "live_keep_requested": N_("asked a live session to keep the frame shown or a clip"),
}

#: who acts when the box acts by itself
SERVICE_ACTOR = "system:service"
RETENTION_ACTOR = "system:retention"
#: the address of acts on the box's console
CONSOLE_ADDRESS = "local"

#: the longest kept text of each field
LIMITS = {"account": 64, "address": 64, "target": 128, "detail": 300}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class UnknownAction(CliniboxError, ValueError):
    """An action outside :data:`ACTIONS` (a programming error: the vocabulary is closed)."""

    kind = "audit"


def console_actor() -> str:
    """Who a console command acts as: ``cli:<unix user running it>``, or ``cli:<person> as
    <unix user>`` when the person logged in at the terminal is someone else (a technician
    running ``runuser -u clinibox -- clinibox …`` is ``cli:tech as clinibox``).

    The person is the terminal's login name (``os.getlogin``), else ``SUDO_USER``: good
    enough to tell technicians apart, not proof against someone who owns the box.
    """
    try:
        effective = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        effective = str(os.geteuid())
    try:
        person = os.getlogin()
    except OSError:
        person = os.environ.get("SUDO_USER", "")
    person = clean(person, 32)
    return f"cli:{person} as {effective}" if person and person != effective \
        else f"cli:{effective}"


def clean(text: object, limit: int) -> str:
    """``text`` as one safe line: control characters escaped (``\\x0a``), cut to ``limit``."""
    value = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
    return value[:limit]


def record(conn: sqlite3.Connection, action: str, *, account: str, address: str = "",
           target: str = "", detail: str = "", at: float | None = None,
           coalesce_seconds: float = 0.0) -> int | None:
    """Append one audit row; its id, or None when it was coalesced with a recent twin.

    Runs inside the caller's transaction when one is open (the row then commits
    or rolls back with the act it records), else in its own ``BEGIN IMMEDIATE``.
    Raises :class:`UnknownAction` for an action outside the vocabulary.
    """
    if action not in ACTIONS:
        raise UnknownAction(f"unknown audit action {action!r}")
    values = (clean(account, LIMITS["account"]), clean(address, LIMITS["address"]), action,
              clean(target, LIMITS["target"]), clean(detail, LIMITS["detail"]))
    when = round(time.time() if at is None else float(at), 6)
    if conn.in_transaction:
        return _append(conn, when, values, coalesce_seconds)
    with db.transaction(conn):
        return _append(conn, when, values, coalesce_seconds)


def _append(conn: sqlite3.Connection, at: float, values: tuple[str, str, str, str, str],
            coalesce_seconds: float) -> int | None:
    account, address, action, target, _detail = values
    if coalesce_seconds > 0 and conn.execute(
            "SELECT 1 FROM audit WHERE at > ? AND action = ? AND account = ? AND address = ?"
            " AND target = ? LIMIT 1",
            (at - coalesce_seconds, action, account, address, target)).fetchone():
        return None
    anchor_id, anchor_hash = anchor(conn)
    last = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    prev_id, prev_hash = (int(last[0]), str(last[1])) if last is not None and \
        last[0] > anchor_id else (anchor_id, anchor_hash)
    row_id = max(prev_id, highest_id_given(conn)) + 1
    digest = row_hash(prev_hash, row_id, at, *values)
    conn.execute(
        "INSERT INTO audit(id, at, account, address, action, target, detail, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (row_id, at, *values, prev_hash, digest))
    return row_id


def counts(conn: sqlite3.Connection, start: float, end: float) -> dict[str, int]:
    """Rows per action in [start, end) (actions without rows left out): what may leave the
    box, if anything of the trail ever does."""
    return {str(action): int(n) for action, n in conn.execute(
        "SELECT action, COUNT(*) FROM audit WHERE at >= ? AND at < ? GROUP BY action"
        " ORDER BY action", (start, end))}


def prunable(conn: sqlite3.Connection, keep_days: float, now: float | None = None) -> int:
    """The id of the last row :func:`prune` would delete now (0: none).

    Rows go from the front of the chain only: up to the first row that is not
    older than ``keep_days`` (a clock set back cannot punch holes in the chain).
    """
    if keep_days <= 0:
        return 0
    cutoff = (time.time() if now is None else now) - keep_days * DAY
    anchor_id, _hash = anchor(conn)
    first_kept = conn.execute("SELECT MIN(id) FROM audit WHERE at >= ?", (cutoff,)).fetchone()[0]
    last = (int(first_kept) - 1 if first_kept is not None
            else int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM audit").fetchone()[0]))
    return last if last > anchor_id else 0


def would_prune(conn: sqlite3.Connection, keep_days: float, now: float | None = None) -> int:
    """How many rows :func:`prune` would delete now (for a dry run)."""
    last = prunable(conn, keep_days, now)
    return int(conn.execute("SELECT COUNT(*) FROM audit WHERE id <= ?", (last,)).fetchone()[0])


def prune(conn: sqlite3.Connection, keep_days: float, now: float | None = None) -> int:
    """Delete the rows older than ``keep_days`` (0: keep all); return how many went.

    The anchor keeps the id and hash of the last row deleted, so the rest of
    the chain still checks. The rows about to go are checked first: when they
    do not form an intact chain nothing is deleted (the evidence stays) and a
    warning event says so. Each prune is itself an ``audit_pruned`` row.
    """
    now = time.time() if now is None else now
    with db.transaction(conn):
        last = prunable(conn, keep_days, now)
        if not last:
            return 0
        with use_locale(ENGLISH):  # the event is a record: English, whoever runs the prune
            check = verify(conn, through=last)
            described = check.describe()
        if not check.intact:
            message = f"audit rows older than {keep_days:g} days kept: the chain is {described}"
            log.warning("%s", message)
            db.record_event(conn, "WARNING", "audit", message,
                            event_codes.code(event_codes.AUDIT_KEPT, f"{keep_days:g}"))
            return 0
        first, _hash = anchor(conn)
        last_hash = conn.execute("SELECT hash FROM audit WHERE id = ?", (last,)).fetchone()[0]
        conn.execute("UPDATE audit_anchor SET pruning = 1 WHERE id = 1")
        removed = conn.execute("DELETE FROM audit WHERE id <= ?", (last,)).rowcount
        conn.execute("UPDATE audit_anchor SET last_id = ?, last_hash = ?, pruned_at = ?,"
                     " pruning = 0 WHERE id = 1", (last, last_hash, now))
        day = time.strftime("%Y-%m-%d", time.localtime(now - keep_days * DAY))
        record(conn, "audit_pruned", account=RETENTION_ACTOR, address=CONSOLE_ADDRESS,
               target=f"rows:{first + 1}-{last}",
               detail=f"{removed} row(s) from before {day} ([audit] keep_days = {keep_days:g})",
               at=now)
    log.info("audit trail: %d row(s) older than %g days pruned", removed, keep_days)
    return int(removed)
