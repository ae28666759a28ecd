"""The hospital's record: devices, messages, alerts, refusals, dead letters and audit heads.

One :class:`Store` works over SQLite or PostgreSQL (chosen by URL) with the
same SQL (tables in :mod:`central.schema`). A box is identified by
``(clinic, device)``: two clinics may each have a ``box-1``. Messages are
de-duplicated by ``(clinic, device, seq)``: the primary key does it, so
several receivers sharing one PostgreSQL database may race on the same
message and exactly one of them stores it. A message and its alert row
are written in one transaction. Refused envelopes are logged in ``rejections``
by reason, size and claimed sender only; their bytes go, in the same
transaction and only when the receiver asks, to ``dead_letters``, which is
kept under a size bound by dropping the oldest. A status message that carries
the box's audit-trail head is witnessed in ``audit_heads`` with its verdict
(:mod:`central.audit_witness`), in the message's transaction, and every message
updates its box's row in ``box_state`` (a summary adds a drift point; :mod:`central.fleet`).
A new alert queues its webhook delivery in its transaction (:mod:`central.notify`);
a verdict queues its downlink in the review's (:mod:`central.reviews`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from central import audit_witness, box_clock, fleet, notify, reviews
from central.config import HealthConfig
from central.schema import TABLES, create_or_migrate
from central.sql import Database, StoreError
from clinibox_common.contracts.egress import check_identity
from clinibox_common.contracts.envelope import Header, canonical_payload
from clinibox_common.contracts.signing import key_id
from clinibox_common.errors import CliniboxError
from clinibox_common.i18n import N_, gettext

__all__ = ["Device", "EnrolmentConflict", "Store", "StoreError", "StoredMessage"]

log = logging.getLogger("clinibox.central")

_TEXT_LIMIT = 200

_ALERT_FIELDS = ("study_ref", "finding", "score", "threshold", "modality", "model",
                 "instances", "processing_ms")
_ALERT_COLUMNS = reviews.ALERT_COLUMNS
_DEAD_LETTER_COLUMNS = ("id", "received_at", "topic", "clinic", "device", "reason", "size")
#: audit_heads columns as the API names them (row, hash) and as the table does.
_HEAD_FIELDS = ("clinic", "device", "seq", "row", "hash", "since_row", "since_hash", "at",
                "received_at", "verdict")
_HEAD_COLUMNS = ("clinic, device, seq, head_row, head_hash, since_row, since_hash, head_at,"
                 " received_at, verdict")
#: What one dead letter costs against the bound beyond its bytes: its row (an empty payload
#: is not free, or a box could keep a million of them under any bound).
DEAD_LETTER_ROW_BYTES = 256
#: Dead letters kept per topic (one box's, the broker's ACL says) an hour; beyond, only the
#: refusal is recorded: one box gone bad cannot fill the table or slow every refusal.
DEAD_LETTERS_PER_TOPIC_HOUR = 100
#: Drops the oldest dead letters beyond a total size (newest kept first).
_PRUNE_DEAD_LETTERS = (
    "DELETE FROM dead_letters WHERE id IN (SELECT id FROM (SELECT id, SUM(size + "
    f"{DEAD_LETTER_ROW_BYTES}) OVER (ORDER BY id DESC) AS kept FROM dead_letters)"
    " AS newest_first WHERE kept > ?)")


class EnrolmentConflict(CliniboxError, ValueError):
    """An enrolment that would silently replace another device's identity."""

    kind = N_("enrolment refused")


@dataclass(frozen=True)
class Device:
    """An enrolled device and its signing key."""

    device: str
    clinic: str
    public_key_pem: str
    key_id: str
    enrolled_at: float
    revoked_at: float | None

    def public_key(self) -> Ed25519PublicKey:
        """The device's Ed25519 public key."""
        return _parse_key(self.public_key_pem)


@dataclass(frozen=True)
class StoredMessage:
    """One stored message as the report reads it."""

    clinic: str
    device: str
    seq: int
    kind: str
    received_at: float
    payload: dict[str, Any]


def _parse_key(pem: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(gettext("not a PEM public key")) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(gettext("not an Ed25519 public key (the device's signing .pub file)"))
    return key


def _clean(text: str | None) -> str | None:
    """A bounded, printable copy of an untrusted string (topic, claimed device)."""
    if text is None:
        return None
    cleaned = "".join(c if c.isprintable() else "?" for c in text[:_TEXT_LIMIT])
    return cleaned + ("…" if len(text) > _TEXT_LIMIT else "")


class Store:
    """Devices, messages, alerts and rejections in SQLite or PostgreSQL.

    The schema is created, or an older one migrated, on opening (idempotent;
    on PostgreSQL serialised by an advisory lock, so receivers may start
    together). Database faults raise :class:`StoreError`. ``health`` sets the drift
    thresholds and windows of the fleet's drift points; ``webhook`` queues a webhook
    delivery with each new alert, linking to ``public_url`` (the console) when given.
    """

    def __init__(self, url: str, *, health: HealthConfig | None = None,
                 webhook: bool = False, public_url: str = "",
                 webhook_format: str = "json") -> None:
        """Open (lazily) the database at ``url`` and make sure the schema exists."""
        self._db = Database(url)
        self.health = health or HealthConfig()
        self.webhook = webhook
        self.public_url = public_url
        #: "fhir": alerts as FHIR Communications, and verdicts queued as DiagnosticReports
        self.webhook_fhir = webhook and webhook_format == "fhir"
        self.migrated_from = create_or_migrate(self._db)
        if 1 <= self.migrated_from < 4:
            self.rebuild_box_state()

    @property
    def database(self) -> Database:
        """The database layer under this store (the console's read queries use it)."""
        return self._db

    @property
    def where(self) -> str:
        """The database, for messages (no password)."""
        return self._db.where

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self._db.transaction(write=False) as tx:
                tx.execute("SELECT 1").fetchone()
        except StoreError:
            return False
        return True

    # -- devices ----------------------------------------------------------
    def enrol(self, clinic: str, device: str, public_key_pem: str,
              now: float | None = None, *, replace: bool = False) -> Device:
        """Enrol ``clinic/device`` (again with the same key: idempotent, a revocation lifted).

        Refused with :class:`EnrolmentConflict`: the identity enrolled with
        another key, unless ``replace`` (the box was really replaced); and the
        key already trusted as another identity that is not revoked (one box
        must not speak for two).
        """
        check_identity(clinic, "clinic")
        check_identity(device, "device")
        key = _parse_key(public_key_pem)
        record = Device(device, clinic, public_key_pem, key_id(key),
                        time.time() if now is None else now, None)
        with self._db.transaction(write=True) as tx:
            row = tx.execute("SELECT key_id FROM devices WHERE clinic = ? AND device = ?",
                             (clinic, device)).fetchone()
            if row is not None and row[0] != record.key_id and not replace:
                raise EnrolmentConflict(gettext(
                    "%(box)s is enrolled with key %(old)s; enrolling it with key %(new)s would "
                    "replace it (use --replace if the box was really replaced)",
                    box=f"{clinic}/{device}", old=row[0], new=record.key_id))
            other = tx.execute(
                "SELECT clinic, device FROM devices WHERE key_id = ? AND revoked_at IS NULL"
                " AND NOT (clinic = ? AND device = ?)", (record.key_id, clinic, device)
            ).fetchone()
            if other is not None:
                raise EnrolmentConflict(gettext(
                    "key %(key)s is already enrolled as %(box)s; revoke that first "
                    "(%(command)s) if the box moved to %(clinic)s", key=record.key_id,
                    box=f"{other[0]}/{other[1]}", clinic=clinic,
                    command=f"clinibox central revoke --clinic {other[0]} --device {other[1]}"))
            tx.execute(
                "INSERT INTO devices (clinic, device, public_key, key_id, enrolled_at, revoked_at)"
                " VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT (clinic, device) DO UPDATE SET"
                " public_key = excluded.public_key, key_id = excluded.key_id,"
                " enrolled_at = excluded.enrolled_at, revoked_at = NULL",
                (clinic, device, public_key_pem, record.key_id, record.enrolled_at))
        return record

    def revoke(self, clinic: str, device: str, now: float | None = None) -> bool:
        """Refuse ``clinic/device``'s messages from now on; False if it was never enrolled."""
        with self._db.transaction(write=True) as tx:
            cursor = tx.execute(
                "UPDATE devices SET revoked_at = COALESCE(revoked_at, ?)"
                " WHERE clinic = ? AND device = ?",
                (time.time() if now is None else now, clinic, device))
            return cursor.rowcount > 0

    def device(self, clinic: str, device: str) -> Device | None:
        """The enrolment record of ``clinic/device`` (revoked ones included), or None."""
        with self._db.transaction(write=False) as tx:
            row = tx.execute(
                "SELECT device, clinic, public_key, key_id, enrolled_at, revoked_at"
                " FROM devices WHERE clinic = ? AND device = ?", (clinic, device)).fetchone()
        return Device(*row) if row else None

    def device_key(self, clinic: str, device: str) -> Ed25519PublicKey | None:
        """The public key of an enrolled, unrevoked ``clinic/device``; None otherwise."""
        record = self.device(clinic, device)
        if record is None or record.revoked_at is not None:
            return None
        return record.public_key()

    def devices(self) -> list[Device]:
        """Every enrolled device, by clinic then device."""
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                "SELECT device, clinic, public_key, key_id, enrolled_at, revoked_at"
                " FROM devices ORDER BY clinic, device").fetchall()
        return [Device(*row) for row in rows]

    # -- ingest ------------------------------------------------------------
    def store(self, header: Header, payload: dict[str, Any], received_at: float) -> bool:
        """Keep a verified message (and its alert row) in one transaction.

        Returns True when it is new, False when ``(clinic, device, seq)`` was already
        stored (a replay or a redelivery), in which case nothing changes.
        """
        created_at = payload.get("created_at", 0)
        model = payload.get("model")
        text = canonical_payload(payload).decode("utf-8")
        with self._db.transaction(write=True) as tx:
            cursor = tx.execute(
                "INSERT INTO messages (clinic, device, seq, kind, model, created_at,"
                " received_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (header.clinic, header.device, header.seq, header.kind, model, created_at,
                 received_at, text))
            if cursor.rowcount != 1:
                return False
            if header.kind == "alert":
                tx.execute(
                    "INSERT INTO alerts (clinic, device, seq, study_ref, finding, score,"
                    " threshold, modality, model, instances, processing_ms, created_at,"
                    " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (header.clinic, header.device, header.seq,
                     *(payload[name] for name in _ALERT_FIELDS), created_at, received_at))
                if self.webhook:
                    notify.enqueue(tx, header.clinic, header.device, header.seq, received_at,
                                   self.public_url, fhir=self.webhook_fhir)
            head = audit_witness.audit_head(payload) if header.kind == "status" else None
            verdict = None
            if head is not None:
                verdict = self._witness(tx, header, head, received_at,
                                        float(created_at or received_at))
            fleet.record(tx, header, payload, received_at, self.health, verdict)
        return True

    def notice_clock(self, header: Header, payload: dict[str, Any],
                     received_at: float) -> int | None:
        """Queue the hospital's time for a box whose authentic status is behind its clock
        (``central/box_clock.py``); the downlink's sequence number, or None. A status that
        does not ask for it takes no write lock."""
        if not box_clock.wanted(payload, received_at):
            return None
        with self._db.transaction(write=True) as tx:
            return box_clock.notice(tx, header.clinic, header.device, payload, received_at)

    @staticmethod
    def _witness(tx: Any, header: Header, head: audit_witness.AuditHead,
                 received_at: float, made_at: float) -> str:
        """The verdict on ``head``, kept with it. ``made_at``: when the box made the status,
        on the box's clock, the one its ``keep_days`` and its rows' ``at`` are counted by."""
        previous = tx.execute(
            "SELECT head_row, head_hash FROM audit_heads WHERE clinic = ? AND device = ?"
            " AND seq < ? ORDER BY seq DESC LIMIT 1",
            (header.clinic, header.device, header.seq)).fetchone()
        verdict = audit_witness.verdict(
            None if previous is None else (int(previous[0]), str(previous[1])), head)
        if verdict == audit_witness.EXTENDS and head.anchor_row:  # every heartbeat
            witnessed = tx.execute(
                "SELECT head_row, head_at FROM audit_heads WHERE clinic = ? AND device = ?"
                " AND seq < ? AND head_row > 0 AND head_row <= ? AND head_at IS NOT NULL"
                " ORDER BY head_at DESC LIMIT 1",
                (header.clinic, header.device, header.seq, head.anchor_row)).fetchall()
            if audit_witness.pruned_early(head, [(int(r), int(a)) for r, a in witnessed],
                                          made_at) is not None:
                verdict = audit_witness.PRUNED_EARLY
        tx.execute(
            f"INSERT INTO audit_heads ({_HEAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            (header.clinic, header.device, header.seq, head.row, head.hash, head.since_row,
             head.since_hash, head.at, received_at, verdict))
        if verdict in audit_witness.ALARMS:
            log.warning("audit trail of %s/%s: %s at seq %d (row %d, since row %d, anchor"
                        " row %s)", header.clinic, header.device, verdict, header.seq,
                        head.row, head.since_row, head.anchor_row)
        return verdict

    def reject(self, reason: str, topic: str, claimed: tuple[str, str] | None, size: int,
               at: float | None = None, *, dead_letter: bytes | None = None,
               dead_letter_max_bytes: int = 64 << 20) -> None:
        """Log a refusal: reason, topic, claimed (clinic, device) and size, never the bytes.

        With ``dead_letter``, those bytes are kept in ``dead_letters`` in the same
        transaction (at most :data:`DEAD_LETTERS_PER_TOPIC_HOUR` a topic an hour), and
        with each letter kept the oldest beyond ``dead_letter_max_bytes`` in all (each row
        counted :data:`DEAD_LETTER_ROW_BYTES` beyond its bytes) are dropped: the table is
        never over its bound.
        """
        clinic, device = claimed if claimed is not None else (None, None)
        at = time.time() if at is None else at
        topic_text, clinic_text, device_text = _clean(topic) or "", _clean(clinic), _clean(device)
        with self._db.transaction(write=True) as tx:
            tx.execute(
                "INSERT INTO rejections (at, reason, topic, claimed_clinic, claimed_device,"
                " size_bytes) VALUES (?, ?, ?, ?, ?, ?)",
                (at, reason, topic_text, clinic_text, device_text, int(size)))
            if dead_letter is None:
                return
            (recent,) = tx.execute(  # counts no further than the cap (the index's range)
                "SELECT COUNT(*) FROM (SELECT 1 FROM dead_letters WHERE topic = ?"
                " AND received_at > ? LIMIT ?) AS recent",
                (topic_text, at - 3600, DEAD_LETTERS_PER_TOPIC_HOUR)).fetchone()
            if recent >= DEAD_LETTERS_PER_TOPIC_HOUR:
                return  # the refusal is recorded above; its bytes are not kept
            tx.execute(
                "INSERT INTO dead_letters (received_at, topic, clinic, device, reason, size,"
                " payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (at, topic_text, clinic_text, device_text, reason, len(dead_letter),
                 bytes(dead_letter)))
            tx.execute(_PRUNE_DEAD_LETTERS, (int(dead_letter_max_bytes),))

    # -- dead letters and audit heads --------------------------------------------
    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest dead letters, newest first, without their bytes."""
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                f"SELECT {', '.join(_DEAD_LETTER_COLUMNS)} FROM dead_letters"
                " ORDER BY id DESC LIMIT ?", (int(limit),)).fetchall()
        return [dict(zip(_DEAD_LETTER_COLUMNS, row, strict=True)) for row in rows]

    def dead_letter_bytes(self, letter_id: int) -> bytes | None:
        """The bytes of one dead letter, or None when there is no such letter."""
        with self._db.transaction(write=False) as tx:
            row = tx.execute("SELECT payload FROM dead_letters WHERE id = ?",
                             (int(letter_id),)).fetchone()
        return None if row is None else bytes(row[0])

    def waiting_letters(self, clinic: str, device: str,
                        reason: str = "unknown-device") -> list[tuple[int, str, float, bytes]]:
        """The dead letters a box sent before it was enrolled (refused as ``reason``), oldest
        first: (id, topic, received_at, bytes)."""
        with self._db.transaction(write=False) as tx:
            rows = tx.execute("SELECT id, topic, received_at, payload FROM dead_letters"
                              " WHERE clinic = ? AND device = ? AND reason = ? ORDER BY id",
                              (clinic, device, reason)).fetchall()
        return [(int(r[0]), str(r[1]), float(r[2]), bytes(r[3])) for r in rows]

    def drop_dead_letter(self, letter_id: int) -> None:
        """Remove one dead letter (received again since: its outcome is recorded anew)."""
        with self._db.transaction(write=True) as tx:
            tx.execute("DELETE FROM dead_letters WHERE id = ?", (int(letter_id),))

    def dead_letter_totals(self) -> tuple[int, int]:
        """(dead letters kept, their bytes in all)."""
        with self._db.transaction(write=False) as tx:
            row = tx.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM dead_letters"
                             ).fetchone()
        return int(row[0]), int(row[1])

    def audit_heads(self, clinic: str | None = None,
                    device: str | None = None) -> list[dict[str, Any]]:
        """Witnessed audit heads (of one ``clinic/device`` when given), by device then seq."""
        sql = f"SELECT {_HEAD_COLUMNS} FROM audit_heads"
        params: tuple[Any, ...] = ()
        if clinic is not None and device is not None:
            sql += " WHERE clinic = ? AND device = ?"
            params = (clinic, device)
        sql += " ORDER BY clinic, device, seq"
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(sql, params).fetchall()
        return [_head(row) for row in rows]

    def latest_audit_heads(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Per (clinic, device): its latest witnessed head (by sequence number)."""
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                f"SELECT {_HEAD_COLUMNS} FROM audit_heads AS h WHERE seq = (SELECT MAX(seq)"
                " FROM audit_heads AS m WHERE m.clinic = h.clinic AND m.device = h.device)"
                " ORDER BY clinic, device").fetchall()
        return {(row[0], row[1]): _head(row) for row in rows}

    def latest_audit_alarms(self, since: float) -> dict[tuple[str, str], dict[str, Any]]:
        """Per (clinic, device): its latest head received after ``since`` whose verdict is
        an alarm (``rewritten``, ``rewound``, ``gap``), even when later heads extend it."""
        marks = ", ".join("?" for _ in audit_witness.ALARMS)
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                f"SELECT {_HEAD_COLUMNS} FROM audit_heads WHERE verdict IN ({marks})"
                " AND received_at > ? ORDER BY clinic, device, seq",
                (*audit_witness.ALARMS, since)).fetchall()
        return {(row[0], row[1]): _head(row) for row in rows}  # the latest one wins

    # -- alerts --------------------------------------------------------------
    def alerts(self, *, waiting: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
        """Alerts, newest first; ``waiting`` keeps only the unreviewed ones."""
        sql = f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts"
        if waiting:
            sql += " WHERE reviewed_at IS NULL"
        sql += " ORDER BY received_at DESC, id DESC"
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (int(limit),)
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(sql, params).fetchall()
        return [dict(zip(_ALERT_COLUMNS, row, strict=True)) for row in rows]

    def review(self, alert_ids: Iterable[int], now: float | None = None) -> int:
        """Mark alerts reviewed without a verdict (nothing goes to the box); how many waited.

        The console and ``central review`` give verdicts (:meth:`review_alert`).
        """
        ids = sorted({int(i) for i in alert_ids})
        if not ids:
            return 0
        marks = ", ".join("?" for _ in ids)
        with self._db.transaction(write=True) as tx:
            cursor = tx.execute(
                f"UPDATE alerts SET reviewed_at = ?, state = 'reviewed' WHERE reviewed_at IS NULL"
                f" AND id IN ({marks})", (time.time() if now is None else now, *ids))
            return cursor.rowcount

    def alert(self, alert_id: int) -> dict[str, Any] | None:
        """One alert as a dict (its review included), or None."""
        with self._db.transaction(write=False) as tx:
            return reviews.alert(tx, alert_id)

    def open_alert(self, alert_id: int, account: str, now: float | None = None) -> bool:
        """``new`` → ``under_review`` (opened_by, opened_at); False when it was not new."""
        with self._db.transaction(write=True) as tx:
            return reviews.open_alert(tx, alert_id, account, now)

    def review_alert(self, alert_id: int, verdict: str, note: str, account: str, *,
                     follow_up_months: int | None = None, now: float | None = None,
                     address: str = "") -> dict[str, Any]:
        """Give (or amend) an alert's verdict; its downlink and audit row in the same
        transaction (:func:`central.reviews.review_alert`), and with a FHIR webhook its
        DiagnosticReport queued in it too. ReviewError when refused."""
        now = time.time() if now is None else now
        with self._db.transaction(write=True) as tx:
            reviewed = reviews.review_alert(tx, alert_id, verdict, note, account,
                                            follow_up_months=follow_up_months, now=now,
                                            address=address)
            if self.webhook_fhir:
                notify.enqueue_verdict(tx, alert_id, verdict, follow_up_months, now,
                                       self.public_url)
            return reviewed

    def audit(self, account: str, address: str, action: str, target: str = "",
              detail: str = "", now: float | None = None) -> None:
        """Append a row to the console's audit trail (in a transaction of its own)."""
        with self._db.transaction(write=True) as tx:
            reviews.audit(tx, account, address, action, target, detail, now)

    def downlinks(self, clinic: str, device: str) -> list[dict[str, Any]]:
        """A box's downlinks, by sequence number (payload as a dict)."""
        columns = ("clinic", "device", "seq", "kind", "alert_id", "payload", "created_at",
                   "sent_at", "attempts", "last_error")
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(f"SELECT {', '.join(columns)} FROM downlinks WHERE clinic = ?"
                              " AND device = ? ORDER BY seq", (clinic, device)).fetchall()
        out = [dict(zip(columns, row, strict=True)) for row in rows]
        for item in out:
            item["payload"] = json.loads(item["payload"])
        return out

    # -- fleet --------------------------------------------------------------
    def box_state(self, clinic: str, device: str) -> dict[str, Any] | None:
        """One box's latest state (``box_state`` row as a dict), or None."""
        rows = self._box_states("WHERE clinic = ? AND device = ?", (clinic, device))
        return rows[0] if rows else None

    def box_states(self) -> list[dict[str, Any]]:
        """Every box's latest state, by clinic then device."""
        return self._box_states("", ())

    def _box_states(self, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        columns = fleet.BOX_STATE_COLUMNS
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(f"SELECT {', '.join(columns)} FROM box_state {where}"
                              " ORDER BY clinic, device", params).fetchall()
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def rebuild_box_state(self) -> int:
        """Fill ``box_state`` from the stored messages (after a migration); how many boxes."""
        with self._db.transaction(write=True) as tx:
            return fleet.rebuild(tx, self.health)

    def set_clinic(self, clinic: str, name: str, county: str) -> None:
        """Name a clinic and its county (the fleet page's)."""
        check_identity(clinic, "clinic")
        for text, what in ((name, N_("name")), (county, N_("county"))):
            if len(text) > _TEXT_LIMIT or not text.isprintable():
                raise ValueError(gettext("%(what)s: must be printable text of at most %(n)s "
                                         "characters", what=gettext(what), n=_TEXT_LIMIT))
        with self._db.transaction(write=True) as tx:
            tx.execute("INSERT INTO clinics (clinic, name, county) VALUES (?, ?, ?)"
                       " ON CONFLICT (clinic) DO UPDATE SET name = excluded.name,"
                       " county = excluded.county", (clinic, name, county))

    def clinics(self) -> list[dict[str, str]]:
        """Every named clinic (clinic, name, county), by clinic."""
        with self._db.transaction(write=False) as tx:
            rows = tx.execute("SELECT clinic, name, county FROM clinics ORDER BY clinic"
                              ).fetchall()
        return [{"clinic": r[0], "name": r[1], "county": r[2]} for r in rows]

    def existing_alert_ids(self, alert_ids: Iterable[int]) -> set[int]:
        """Which of ``alert_ids`` exist."""
        ids = sorted({int(i) for i in alert_ids})
        if not ids:
            return set()
        marks = ", ".join("?" for _ in ids)
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(f"SELECT id FROM alerts WHERE id IN ({marks})", ids).fetchall()
        return {int(row[0]) for row in rows}

    def alert_counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Per (clinic, device): (alerts waiting for review, alerts in total)."""
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                "SELECT clinic, device, SUM(CASE WHEN reviewed_at IS NULL THEN 1 ELSE 0 END),"
                " COUNT(*) FROM alerts GROUP BY clinic, device").fetchall()
        return {(row[0], row[1]): (int(row[2]), int(row[3])) for row in rows}

    # -- what the report reads ------------------------------------------------
    def last_seen(self) -> dict[tuple[str, str], float]:
        """Per (clinic, device): when its latest message of any kind was received."""
        with self._db.transaction(write=False) as tx:
            rows = tx.execute("SELECT clinic, device, MAX(received_at) FROM messages"
                              " GROUP BY clinic, device").fetchall()
        return {(row[0], row[1]): float(row[2]) for row in rows}

    def latest(self, clinic: str, device: str, kind: str) -> StoredMessage | None:
        """The latest ``kind`` message of ``clinic/device``.

        Latest by sequence number, except for status: a box's last-will
        "offline" is sealed when it connects (so it has an older sequence number
        than the heartbeats after it) and published by the broker when the box
        vanishes, so the status that arrived last is the current one.
        """
        order = "received_at DESC, seq DESC" if kind == "status" else "seq DESC"
        with self._db.transaction(write=False) as tx:
            row = tx.execute(
                "SELECT clinic, device, seq, kind, received_at, payload FROM messages"
                f" WHERE clinic = ? AND device = ? AND kind = ? ORDER BY {order} LIMIT 1",
                (clinic, device, kind)).fetchone()
        return _message(row) if row else None

    def summaries(self, clinic: str, device: str, model: str, *, limit: int,
                  newest: bool) -> list[StoredMessage]:
        """Up to ``limit`` summaries of ``clinic/device`` running ``model``, in sequence order.

        ``newest`` picks the latest ones, otherwise the first ones.
        """
        with self._db.transaction(write=False) as tx:
            rows = fleet.summaries(tx, clinic, device, model, limit=limit, newest=newest)
        messages = [_message(row) for row in rows]
        return sorted(messages, key=lambda m: m.seq)

    def rejections(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest refusals, newest first."""
        columns = ("id", "at", "reason", "topic", "claimed_clinic", "claimed_device",
                   "size_bytes")
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                f"SELECT {', '.join(columns)} FROM rejections ORDER BY id DESC LIMIT ?",
                (int(limit),)).fetchall()
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def counts(self) -> dict[str, int]:
        """How many devices, messages, alerts and rejections are stored."""
        out: dict[str, int] = {}
        with self._db.transaction(write=False) as tx:
            for table in TABLES:
                out[table] = int(tx.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        return out


def _head(row: tuple[Any, ...]) -> dict[str, Any]:
    head = dict(zip(_HEAD_FIELDS, row, strict=True))
    for name in ("seq", "row", "since_row"):
        head[name] = int(head[name])
    head["at"] = None if head["at"] is None else int(head["at"])
    head["received_at"] = float(head["received_at"])
    return head


def _message(row: tuple[Any, ...]) -> StoredMessage:
    clinic, device, seq, kind, received_at, payload = row
    return StoredMessage(clinic, device, int(seq), kind, float(received_at), json.loads(payload))
