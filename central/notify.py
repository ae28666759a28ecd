"""The webhook: every new alert POSTed, signed, to a URL the hospital chooses (its messenger).

A delivery row (``webhook_deliveries``, UNIQUE ``alert_id``) is written with the alert in
the alert's transaction, so an alert delivered twice by the broker, or stored by two
receivers racing, is announced once. :class:`Notifier` (run by ``clinibox central
serve`` beside the receiver) claims due rows in turns across the boxes (each box's oldest
due first, at most :data:`PER_BOX` of one box a pass, so a box that floods the hospital
with alerts delays another box's by a few posts at most) — a conditional UPDATE of
``claimed_until``, so two notifiers sharing one database never send the same row at
once — and POSTs the JSON body with::

    X-Clinibox-Delivery: <delivery id>
    X-Clinibox-Timestamp: <unix seconds>
    X-Clinibox-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the secret>

A 2xx answer marks it sent; anything else — another status (a redirect is not followed:
it is a failed attempt, and the signed body never goes to another address), an answer
that is not HTTP, no whole answer within ``[notify] timeout_seconds`` (a deadline for the
whole exchange, not for each read), any fault of the exchange — is a failed attempt,
logged with its reason and retried after an exponential backoff with jitter
(``retry_min_seconds`` doubling up to ``retry_max_seconds``) until ``max_attempts``,
then given up (``given_up_at``, logged). The body carries only what the box's egress
alert does, plus the hospital's own ids: never the study reference.

With ``[notify] format = "fhir"`` the body is FHIR instead (:mod:`central.fhir_notify`): each
new alert a Communication POSTed to ``<url>/Communication``, and each verdict a radiologist
gives a DiagnosticReport POSTed to ``<url>/DiagnosticReport`` (``webhook_verdicts``, queued
in the review's transaction, delivered by a second notifier on the same rules), both naming
the study by its keyed reference only, as ``application/fhir+json`` with the same signature
headers.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from central import fhir_notify
from central.config import NotifyConfig
from central.sql import Database, StoreError, Transaction
from clinibox_common.errors import CliniboxError

__all__ = ["Notifier", "NotifyError", "enqueue", "enqueue_verdict", "load_secret", "sign"]

log = logging.getLogger("clinibox.central.notify")

#: The alert fields the webhook carries (the egress alert's, less the study reference).
PAYLOAD_FIELDS = ("finding", "score", "threshold", "modality", "model", "instances")
#: Seconds a claim outlives the delivery's timeout (a notifier that died lets go after it).
CLAIM_MARGIN = 30.0
#: Rows one pass claims at most.
BATCH = 20
#: Rows of one box one pass claims at most: a box with a thousand alerts waiting takes a
#: pass of a few posts, then every other box's due alerts come first in the next.
PER_BOX = 5
#: The tables a notifier delivers from: the alerts', and the verdicts' (FHIR only)
TABLES = ("webhook_deliveries", "webhook_verdicts")
#: The due deliveries in turns across the boxes: each box's oldest first, then each box's
#: second, ... (a window over the due rows; the same SQL on SQLite and PostgreSQL).
_FAIR_CLAIM = (
    "SELECT id, payload, attempts FROM (SELECT w.id, w.payload, w.attempts, w.next_at,"
    " ROW_NUMBER() OVER (PARTITION BY a.clinic, a.device ORDER BY w.next_at, w.id) AS turn"
    " FROM {table} AS w LEFT JOIN alerts AS a ON a.id = w.alert_id"
    " WHERE w.sent_at IS NULL AND w.given_up_at IS NULL AND w.next_at <= ?"
    " AND (w.claimed_until IS NULL OR w.claimed_until < ?)) AS due"
    " WHERE turn <= ? ORDER BY turn, next_at, id LIMIT ?")


class NotifyError(CliniboxError, ValueError):
    """The webhook cannot run (no readable secret)."""

    kind = "webhook error"


def _console_url(public_url: str, alert_id: int) -> str:
    return f"{public_url.rstrip('/')}/alerts/{alert_id}" if public_url else ""


def enqueue(tx: Transaction, clinic: str, device: str, seq: int, received_at: float,
            public_url: str = "", *, fhir: bool = False) -> None:
    """Queue the webhook delivery of the alert ``clinic/device#seq`` (once per alert); with
    ``fhir``, as a FHIR Communication (one the models refuse is logged, never queued: the
    alert itself is stored all the same)."""
    row = tx.execute(
        f"SELECT a.id, c.county, a.study_ref, {', '.join('a.' + n for n in PAYLOAD_FIELDS)}"
        " FROM alerts AS a LEFT JOIN clinics AS c ON c.clinic = a.clinic"
        " WHERE a.clinic = ? AND a.device = ? AND a.seq = ?",
        (clinic, device, int(seq))).fetchone()
    if row is None:
        return
    alert_id, county, study_ref = int(row[0]), row[1] or "", str(row[2])
    body: dict[str, Any] = {"event": "alert", "alert_id": alert_id, "clinic": clinic,
                            "device": device, "county": county}
    body.update(zip(PAYLOAD_FIELDS, row[3:], strict=True))
    body["received_at"] = received_at
    if public_url:
        body["console_url"] = _console_url(public_url, alert_id)
    if fhir:
        try:
            body = fhir_notify.alert_communication(
                {**body, "id": alert_id, "study_ref": study_ref},
                _console_url(public_url, alert_id))
        except fhir_notify.FhirBodyRefused as exc:
            log.error("webhook: alert %d not queued: %s", alert_id, exc)
            return
    tx.execute(
        "INSERT INTO webhook_deliveries (alert_id, payload, created_at, next_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (alert_id) DO NOTHING",
        (alert_id, json.dumps(body, sort_keys=True, separators=(",", ":")), received_at,
         received_at))


def enqueue_verdict(tx: Transaction, alert_id: int, verdict: str,
                    follow_up_months: int | None, reviewed_at: float,
                    public_url: str = "") -> None:
    """Queue the verdict just given on ``alert_id`` as a FHIR DiagnosticReport (in the
    review's transaction; one the models refuse is logged, never queued)."""
    row = tx.execute("SELECT id, study_ref FROM alerts WHERE id = ?",
                     (int(alert_id),)).fetchone()
    if row is None:
        return
    try:
        body = fhir_notify.verdict_report({"id": int(row[0]), "study_ref": str(row[1])},
                                          verdict, follow_up_months, reviewed_at,
                                          _console_url(public_url, int(row[0])))
    except fhir_notify.FhirBodyRefused as exc:
        log.error("webhook: the verdict on alert %d not queued: %s", alert_id, exc)
        return
    tx.execute(
        "INSERT INTO webhook_verdicts (alert_id, reviewed_at, payload, created_at, next_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (alert_id, reviewed_at) DO NOTHING",
        (int(alert_id), reviewed_at, json.dumps(body, sort_keys=True, separators=(",", ":")),
         reviewed_at, reviewed_at))


def sign(body: bytes, secret: bytes, timestamp: str) -> str:
    """The ``X-Clinibox-Signature`` header value of ``body`` sent with the
    ``X-Clinibox-Timestamp`` ``timestamp``: HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    signed = timestamp.encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()


def _printable(text: str, limit: int = 200) -> str:
    """``text`` for a log line and ``last_error``: control characters (the other end's
    bytes may be anything) shown as ``?``, at most ``limit`` characters."""
    return "".join(c if c.isprintable() else "?" for c in text.strip())[:limit]


def load_secret(path: str) -> bytes:
    """The shared secret in ``path`` (surrounding whitespace dropped); NotifyError if none."""
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise NotifyError(f"[notify] secret_file: cannot read {path}: {exc}") from exc
    if not secret:
        raise NotifyError(f"[notify] secret_file: {path} is empty")
    return secret


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follow no redirect: a 3xx answer becomes an HTTPError, a failed attempt."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> None:
        """Never a new request (the signed body and headers stay with the configured URL)."""
        return None


class _Connections:
    """The connections one exchange opens, so a timer can cut them at the deadline."""

    def __init__(self) -> None:
        self.opened: list[http.client.HTTPConnection] = []
        self.expired = threading.Event()
        self._lock = threading.Lock()

    def factory(self, cls: type[http.client.HTTPConnection]
                ) -> Callable[..., http.client.HTTPConnection]:
        """A stand-in for ``cls`` in urllib's ``do_open`` that remembers each connection."""
        def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            connection = cls(host, **kwargs)
            connect = connection.connect

            def connect_in_time() -> None:
                connect()  # bounded by the timeout; the deadline may have passed meanwhile
                if self.expired.is_set():
                    self._shut(connection)
                    raise TimeoutError("the deadline passed while connecting")

            connection.connect = connect_in_time
            with self._lock:
                self.opened.append(connection)
            return connection
        return make

    def cut(self) -> None:
        """The deadline passed: shut every socket down (a blocked read returns at once)."""
        self.expired.set()
        with self._lock:
            connections = list(self.opened)
        for connection in connections:
            self._shut(connection)

    @staticmethod
    def _shut(connection: http.client.HTTPConnection) -> None:
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # closed already
                sock.shutdown(socket.SHUT_RDWR)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, connections: _Connections) -> None:
        super().__init__()
        self._connections = connections

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connections.factory(http.client.HTTPConnection), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, connections: _Connections, tls: ssl.SSLContext) -> None:
        self._tls = tls
        super().__init__(context=tls)
        self._connections = connections

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connections.factory(http.client.HTTPSConnection), req,
                            context=self._tls)


@dataclass(frozen=True)
class Delivery:
    """One claimed delivery."""

    id: int
    payload: str
    attempts: int


class Notifier:
    """Claims due webhook deliveries and POSTs them, retrying with backoff."""

    def __init__(self, database: Database, settings: NotifyConfig, secret: bytes,
                 *, poll_seconds: float = 2.0, table: str = TABLES[0]) -> None:
        """Deliver from ``database``'s ``table`` (one of :data:`TABLES`) to
        ``settings.url``, signing with ``secret``."""
        if table not in TABLES:
            raise ValueError(f"no such delivery table: {table}")
        self._db = database
        self.table = table
        self.settings = settings
        self._secret = secret
        self.poll_seconds = poll_seconds
        self._tls = ssl.create_default_context()  # once: it reads the system's CA store
        if settings.url.lower().startswith("http://"):
            log.warning("[notify] url %s is plain http: the alerts go over the network "
                        "unencrypted (use https)", settings.url)

    def claim(self, now: float | None = None, limit: int = BATCH,
              per_box: int = PER_BOX) -> list[Delivery]:
        """Claim up to ``limit`` due deliveries, at most ``per_box`` of one box, taken in
        turns across the boxes (each box's first due, then each box's second, ...), so one
        box's flood waits behind every other box's alerts (each attempt counted when
        claimed)."""
        now = time.time() if now is None else now
        until = now + self.settings.timeout_seconds + CLAIM_MARGIN
        claimed: list[Delivery] = []
        with self._db.transaction(write=True) as tx:
            rows = tx.execute(_FAIR_CLAIM.format(table=self.table),
                              (now, now, int(per_box), int(limit))).fetchall()
            for delivery_id, payload, attempts in rows:
                cursor = tx.execute(  # the WHERE again: another notifier may have it now
                    f"UPDATE {self.table} SET claimed_until = ?, attempts = attempts + 1"
                    " WHERE id = ? AND sent_at IS NULL AND given_up_at IS NULL"
                    " AND (claimed_until IS NULL OR claimed_until < ?)",
                    (until, delivery_id, now))
                if cursor.rowcount == 1:
                    claimed.append(Delivery(int(delivery_id), str(payload), int(attempts) + 1))
        return claimed

    def post(self, delivery: Delivery, now: float | None = None) -> str | None:
        """POST one delivery; None when the receiver answered 2xx, else what went wrong.

        Never raises for what the other end does: a redirect (not followed), an answer
        that is not HTTP, a deadline of ``timeout_seconds`` for the whole exchange
        missed — each is a failed attempt, described in the returned text.
        """
        body = delivery.payload.encode("utf-8")
        timestamp = str(int(time.time() if now is None else now))
        url, kind = self.settings.url, "application/json"
        if self.settings.format == "fhir":  # the FHIR create interaction: <base>/<type>
            url = f"{url.rstrip('/')}/{json.loads(delivery.payload)['resourceType']}"
            kind = "application/fhir+json"
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": kind,
            "User-Agent": "clinibox-central",
            "X-Clinibox-Delivery": str(delivery.id),
            "X-Clinibox-Timestamp": timestamp,
            "X-Clinibox-Signature": sign(body, self._secret, timestamp)})
        timeout = self.settings.timeout_seconds
        connections = _Connections()
        opener = urllib.request.build_opener(_NoRedirect(), _HTTPHandler(connections),
                                             _HTTPSHandler(connections, self._tls))
        deadline = threading.Timer(timeout, connections.cut)
        deadline.daemon = True
        deadline.start()
        try:
            with opener.open(request, timeout=timeout) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                return f"HTTP {exc.code} (redirects are not followed)"
            return f"HTTP {exc.code}"
        except Exception as exc:  # whatever the other end sent: a failed attempt
            if connections.expired.is_set():
                return f"no whole answer within {timeout:g} s"
            return _printable(f"{type(exc).__name__}: {exc}")
        finally:
            deadline.cancel()
        if connections.expired.is_set():
            return f"no whole answer within {timeout:g} s"
        return None if 200 <= status < 300 else f"HTTP {status}"

    def backoff(self, attempts: int) -> float:
        """Seconds before retrying after ``attempts`` failed attempts (with jitter)."""
        base = self.settings.retry_min_seconds * 2 ** min(max(attempts - 1, 0), 40)
        return min(self.settings.retry_max_seconds, base) * random.uniform(0.5, 1.0)

    def finish(self, delivery: Delivery, error: str | None, now: float | None = None) -> None:
        """Record one attempt's outcome: sent, retried later, or given up."""
        now = time.time() if now is None else now
        with self._db.transaction(write=True) as tx:
            if error is None:
                tx.execute(f"UPDATE {self.table} SET sent_at = ?, claimed_until = NULL,"
                           " last_error = NULL WHERE id = ?", (now, delivery.id))
            elif delivery.attempts >= self.settings.max_attempts:
                tx.execute(f"UPDATE {self.table} SET given_up_at = ?, claimed_until = NULL,"
                           " last_error = ? WHERE id = ?", (now, error, delivery.id))
                log.error("webhook delivery %d given up after %d attempts: %s", delivery.id,
                          delivery.attempts, error)
            else:
                tx.execute(f"UPDATE {self.table} SET next_at = ?, claimed_until = NULL,"
                           " last_error = ? WHERE id = ?",
                           (now + self.backoff(delivery.attempts), error, delivery.id))
                log.warning("webhook delivery %d failed (attempt %d): %s", delivery.id,
                            delivery.attempts, error)

    def run_once(self, now: float | None = None) -> int:
        """Claim and send what is due; how many were claimed."""
        deliveries = self.claim(now)
        for delivery in deliveries:
            self.finish(delivery, self.post(delivery, now), now)
        return len(deliveries)

    def serve(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set (database faults, and any other fault of a pass,
        are logged and the next pass tries again: the thread does not die of them)."""
        while not stop.is_set():
            try:
                busy = self.run_once()
            except StoreError as exc:
                log.error("webhook: database unavailable: %s", exc)
                busy = 0
            except Exception:  # a fault of ours: logged, and the loop goes on
                log.exception("webhook: a pass failed")
                busy = 0
            if not busy:
                stop.wait(self.poll_seconds)
