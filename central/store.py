"""The hospital's record: enrolled devices, received messages, alerts and refusals.

One :class:`Store` works over SQLite or PostgreSQL (chosen by URL) with the
same SQL. Messages are de-duplicated by ``(device, seq)``: the primary key
does it, so several receivers sharing one PostgreSQL database may race on the
same message and exactly one of them stores it. A message and its alert row
are written in one transaction. Refused envelopes are logged by reason, size
and claimed sender only; their bytes are never kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from central.sql import Database, StoreError
from firmware_app.signing import key_id
from firmware_app.telemetry.envelope import Header, canonical_payload
from firmware_app.telemetry.schema import check_identity

__all__ = ["Device", "EnrolmentConflict", "Store", "StoreError", "StoredMessage"]

#: Serialises schema creation when several receivers start on one PostgreSQL database.
_SCHEMA_LOCK = 0x636C6278  # "clbx"
_TEXT_LIMIT = 200

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS devices (
        device      TEXT PRIMARY KEY,
        clinic      TEXT NOT NULL,
        public_key  TEXT NOT NULL,
        key_id      TEXT NOT NULL,
        enrolled_at DOUBLE PRECISION NOT NULL,
        revoked_at  DOUBLE PRECISION
    )""",
    """CREATE TABLE IF NOT EXISTS messages (
        device      TEXT NOT NULL,
        seq         BIGINT NOT NULL,
        kind        TEXT NOT NULL,
        clinic      TEXT NOT NULL,
        model       TEXT,
        created_at  BIGINT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        payload     TEXT NOT NULL,
        PRIMARY KEY (device, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS messages_by_kind ON messages (device, kind, seq)",
    """CREATE TABLE IF NOT EXISTS alerts (
        id            {id},
        device        TEXT NOT NULL,
        seq           BIGINT NOT NULL,
        clinic        TEXT NOT NULL,
        study_ref     TEXT NOT NULL,
        finding       TEXT NOT NULL,
        score         DOUBLE PRECISION NOT NULL,
        threshold     DOUBLE PRECISION NOT NULL,
        modality      TEXT NOT NULL,
        model         TEXT NOT NULL,
        instances     BIGINT NOT NULL,
        processing_ms DOUBLE PRECISION NOT NULL,
        created_at    BIGINT NOT NULL,
        received_at   DOUBLE PRECISION NOT NULL,
        reviewed_at   DOUBLE PRECISION,
        UNIQUE (device, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS alerts_waiting ON alerts (reviewed_at, id)",
    """CREATE TABLE IF NOT EXISTS rejections (
        id             {id},
        at             DOUBLE PRECISION NOT NULL,
        reason         TEXT NOT NULL,
        topic          TEXT NOT NULL,
        claimed_device TEXT,
        size_bytes     BIGINT NOT NULL
    )""",
)

_ALERT_FIELDS = ("study_ref", "finding", "score", "threshold", "modality", "model",
                 "instances", "processing_ms")
_ALERT_COLUMNS = ("id", "device", "seq", "clinic", *_ALERT_FIELDS, "created_at",
                  "received_at", "reviewed_at")


class EnrolmentConflict(ValueError):
    """An enrolment that would silently replace another device's identity."""


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

    device: str
    seq: int
    kind: str
    received_at: float
    payload: dict[str, Any]


def _parse_key(pem: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError("not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key (the device's signing .pub file)")
    return key


def _clean(text: str | None) -> str | None:
    """A bounded, printable copy of an untrusted string (topic, claimed device)."""
    if text is None:
        return None
    cleaned = "".join(c if c.isprintable() else "?" for c in text[:_TEXT_LIMIT])
    return cleaned + ("…" if len(text) > _TEXT_LIMIT else "")


class Store:
    """Devices, messages, alerts and rejections in SQLite or PostgreSQL.

    The schema is created on first use (idempotent; on PostgreSQL serialised
    by an advisory lock, so receivers may start together). Database faults
    raise :class:`StoreError`.
    """

    def __init__(self, url: str) -> None:
        """Open (lazily) the database at ``url`` and make sure the schema exists."""
        self._db = Database(url)
        self._create_schema()

    @property
    def where(self) -> str:
        """The database, for messages (no password)."""
        return self._db.where

    def _create_schema(self) -> None:
        with self._db.transaction(write=True) as tx:
            if self._db.postgres:
                tx.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                tx.execute(self._db.ddl(statement))

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
        """Enrol a device (again with the same key: idempotent, a revocation lifted).

        An enrolled device id with another key or in another clinic is refused with
        EnrolmentConflict unless ``replace``: a second clinic's ``box-1`` must never
        silently take over the first one's identity.
        """
        check_identity(clinic, "clinic")
        check_identity(device, "device")
        key = _parse_key(public_key_pem)
        record = Device(device, clinic, public_key_pem, key_id(key),
                        time.time() if now is None else now, None)
        with self._db.transaction(write=True) as tx:
            row = tx.execute("SELECT clinic, key_id FROM devices WHERE device = ?",
                             (device,)).fetchone()
            if row is not None and tuple(row) != (clinic, record.key_id) and not replace:
                raise EnrolmentConflict(
                    f"device {device} is enrolled as {row[0]}/{device} with key {row[1]}; "
                    f"enrolling {clinic}/{device} with key {record.key_id} would replace it "
                    "(use --replace if the box was really replaced or moved)")
            tx.execute(
                "INSERT INTO devices (device, clinic, public_key, key_id, enrolled_at, revoked_at)"
                " VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT (device) DO UPDATE SET"
                " clinic = excluded.clinic, public_key = excluded.public_key,"
                " key_id = excluded.key_id, enrolled_at = excluded.enrolled_at,"
                " revoked_at = NULL",
                (device, clinic, public_key_pem, record.key_id, record.enrolled_at))
        return record

    def revoke(self, device: str, now: float | None = None) -> bool:
        """Refuse the device's messages from now on; False if it was never enrolled."""
        with self._db.transaction(write=True) as tx:
            cursor = tx.execute(
                "UPDATE devices SET revoked_at = COALESCE(revoked_at, ?) WHERE device = ?",
                (time.time() if now is None else now, device))
            return cursor.rowcount > 0

    def device(self, device: str) -> Device | None:
        """The enrolment record of ``device`` (revoked ones included), or None."""
        with self._db.transaction(write=False) as tx:
            row = tx.execute(
                "SELECT device, clinic, public_key, key_id, enrolled_at, revoked_at"
                " FROM devices WHERE device = ?", (device,)).fetchone()
        return Device(*row) if row else None

    def device_key(self, device: str) -> tuple[str, Ed25519PublicKey] | None:
        """(clinic, public key) of an enrolled, unrevoked device; None otherwise."""
        record = self.device(device)
        if record is None or record.revoked_at is not None:
            return None
        return record.clinic, record.public_key()

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

        Returns True when it is new, False when ``(device, seq)`` was already
        stored (a replay or a redelivery), in which case nothing changes.
        """
        created_at = payload.get("created_at", 0)
        model = payload.get("model")
        text = canonical_payload(payload).decode("utf-8")
        with self._db.transaction(write=True) as tx:
            cursor = tx.execute(
                "INSERT INTO messages (device, seq, kind, clinic, model, created_at,"
                " received_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (header.device, header.seq, header.kind, header.clinic, model, created_at,
                 received_at, text))
            if cursor.rowcount != 1:
                return False
            if header.kind == "alert":
                tx.execute(
                    "INSERT INTO alerts (device, seq, clinic, study_ref, finding, score,"
                    " threshold, modality, model, instances, processing_ms, created_at,"
                    " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (header.device, header.seq, header.clinic,
                     *(payload[name] for name in _ALERT_FIELDS), created_at, received_at))
        return True

    def reject(self, reason: str, topic: str, claimed_device: str | None, size: int,
               at: float | None = None) -> None:
        """Log a refused envelope: reason, topic, claimed sender and size, never its bytes."""
        with self._db.transaction(write=True) as tx:
            tx.execute(
                "INSERT INTO rejections (at, reason, topic, claimed_device, size_bytes)"
                " VALUES (?, ?, ?, ?, ?)",
                (time.time() if at is None else at, reason, _clean(topic) or "",
                 _clean(claimed_device), int(size)))

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
        """Mark alerts as reviewed; return how many were waiting (others are left as they are)."""
        ids = sorted({int(i) for i in alert_ids})
        if not ids:
            return 0
        marks = ", ".join("?" for _ in ids)
        with self._db.transaction(write=True) as tx:
            cursor = tx.execute(
                f"UPDATE alerts SET reviewed_at = ? WHERE reviewed_at IS NULL AND id IN ({marks})",
                (time.time() if now is None else now, *ids))
            return cursor.rowcount

    def existing_alert_ids(self, alert_ids: Iterable[int]) -> set[int]:
        """Which of ``alert_ids`` exist."""
        ids = sorted({int(i) for i in alert_ids})
        if not ids:
            return set()
        marks = ", ".join("?" for _ in ids)
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(f"SELECT id FROM alerts WHERE id IN ({marks})", ids).fetchall()
        return {int(row[0]) for row in rows}

    def alert_counts(self) -> dict[str, tuple[int, int]]:
        """Per device: (alerts waiting for review, alerts in total)."""
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                "SELECT device, SUM(CASE WHEN reviewed_at IS NULL THEN 1 ELSE 0 END), COUNT(*)"
                " FROM alerts GROUP BY device").fetchall()
        return {row[0]: (int(row[1]), int(row[2])) for row in rows}

    # -- what the report reads ------------------------------------------------
    def last_seen(self) -> dict[str, float]:
        """Per device: when its latest message of any kind was received."""
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                "SELECT device, MAX(received_at) FROM messages GROUP BY device").fetchall()
        return {row[0]: float(row[1]) for row in rows}

    def latest(self, device: str, kind: str) -> StoredMessage | None:
        """The device's latest ``kind`` message.

        Latest by sequence number, except for status: a box's last-will
        "offline" is sealed when it connects (so it has an older sequence number
        than the heartbeats after it) and published by the broker when the box
        vanishes, so the status that arrived last is the current one.
        """
        order = "received_at DESC, seq DESC" if kind == "status" else "seq DESC"
        with self._db.transaction(write=False) as tx:
            row = tx.execute(
                "SELECT device, seq, kind, received_at, payload FROM messages"
                f" WHERE device = ? AND kind = ? ORDER BY {order} LIMIT 1",
                (device, kind)).fetchone()
        return _message(row) if row else None

    def summaries(self, device: str, model: str, *, limit: int,
                  newest: bool) -> list[StoredMessage]:
        """Up to ``limit`` summaries of ``device`` running ``model``, in sequence order.

        ``newest`` picks the latest ones, otherwise the first ones.
        """
        order = "DESC" if newest else "ASC"
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                "SELECT device, seq, kind, received_at, payload FROM messages"
                " WHERE device = ? AND kind = 'summary' AND model = ?"
                f" ORDER BY seq {order} LIMIT ?", (device, model, int(limit))).fetchall()
        messages = [_message(row) for row in rows]
        return sorted(messages, key=lambda m: m.seq)

    def rejections(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest refusals, newest first."""
        columns = ("id", "at", "reason", "topic", "claimed_device", "size_bytes")
        with self._db.transaction(write=False) as tx:
            rows = tx.execute(
                f"SELECT {', '.join(columns)} FROM rejections ORDER BY id DESC LIMIT ?",
                (int(limit),)).fetchall()
        return [dict(zip(columns, row, strict=True)) for row in rows]

    def counts(self) -> dict[str, int]:
        """How many devices, messages, alerts and rejections are stored."""
        out: dict[str, int] = {}
        with self._db.transaction(write=False) as tx:
            for table in ("devices", "messages", "alerts", "rejections"):
                out[table] = int(tx.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        return out


def _message(row: tuple[Any, ...]) -> StoredMessage:
    device, seq, kind, received_at, payload = row
    return StoredMessage(device, int(seq), kind, float(received_at), json.loads(payload))
