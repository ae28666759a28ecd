"""The hospital's back end against a hostile box or webhook target (red-team findings F1–F9):
unusable downlink keys, a starved publisher, late statuses, garbage, redirects and drips
from the webhook target, throttled-login floods, dates from the future, dying threads."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from central.cli import Supervisor
from central.config import CentralConfig, NotifyConfig
from central.downlink_publisher import PER_BOX, DownlinkPublisher, claim, resend_wait
from central.notify import Delivery, Notifier, sign
from central.receiver import FROM_THE_FUTURE, OUTCOMES, Receiver
from central.store import Store
from central_console.accounts import audit
from clinibox_common.contracts import downlink
from clinibox_common.contracts.envelope import Header
from tests.central_fixtures import (  # noqa: F401 (pytest fixtures)
    central_box,
    central_database,
    central_hospital,
    central_store,
)
from tests.telemetry_payloads import alert_payload, public_pem, status_payload, summary_payload
from tests.webhook_sink import WebhookSink

NOW = 1_800_000_000.0
RESEND = 1800.0
SECRET = b"s3cret-shared-with-the-messenger"
#: The all-zero X25519 key: it passes the status schema's pattern, no exchange accepts it.
ZERO_KEY = base64.b64encode(bytes(32)).decode("ascii")
#: Other low-order points of Curve25519 (u = 1, and a point of order 8).
LOW_ORDER = [(1).to_bytes(32, "little"), bytes.fromhex(
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")]


def _key() -> str:
    return downlink.key_text(X25519PrivateKey.generate().public_key())


def _rows(store: Store, sql: str, params: tuple = ()) -> list[tuple]:
    with store.database.transaction(write=False) as tx:
        return [tuple(row) for row in tx.execute(sql, params).fetchall()]


# -- F1: an unusable downlink key cannot starve the other boxes --------------------------

def test_parse_key_text_refuses_keys_no_exchange_accepts():
    good = _key()
    assert downlink.key_text(downlink.parse_key_text(good)) == good
    for raw in (bytes(32), *LOW_ORDER):
        with pytest.raises(ValueError, match="low-order"):
            downlink.parse_key_text(base64.b64encode(raw).decode("ascii"))


def test_a_refused_key_leaves_the_previous_one_and_is_logged_once(tmp_path, caplog):
    store = Store(f"sqlite:///{tmp_path}/db/central.db")
    good = _key()
    store.store(Header("clinic-a", "box-keys", "status", 1),
                status_payload(downlink_key=good, downlink_seq=0), NOW)
    with caplog.at_level(logging.WARNING, logger="clinibox.central.fleet"):
        for seq in (2, 3):
            store.store(Header("clinic-a", "box-keys", "status", seq),
                        status_payload(downlink_key=ZERO_KEY, downlink_seq=seq), NOW + seq)
    state = store.box_state("clinic-a", "box-keys")
    assert (state["downlink_key"], state["downlink_seq"]) == (good, 3)
    assert caplog.text.count("clinic-a/box-keys reported a downlink key that cannot") == 1
    # a box whose first key is refused has none: nothing is sealed to it
    store.store(Header("clinic-a", "box-new", "status", 1),
                status_payload(downlink_key=ZERO_KEY), NOW)
    assert store.box_state("clinic-a", "box-new")["downlink_key"] is None


@pytest.fixture
def starving(tmp_path) -> Iterator[Store]:
    """Box ``bad`` holding an all-zero key (written before keys were checked) and 50
    reviewed alerts, reviewed first; box ``good`` with a real key and one reviewed alert."""
    store = Store(f"sqlite:///{tmp_path}/db/central.db")
    for device in ("bad", "good"):
        store.enrol("clinic-a", device, public_pem(Ed25519PrivateKey.generate()), NOW - 10)
        store.store(Header("clinic-a", device, "status", 1),
                    status_payload(downlink_key=_key(), downlink_seq=0), NOW)
    with store.database.transaction(write=True) as tx:
        tx.execute("UPDATE box_state SET downlink_key = ? WHERE device = 'bad'", (ZERO_KEY,))
    for i in range(50):
        store.store(Header("clinic-a", "bad", "alert", 100 + i),
                    alert_payload(study_ref=f"{i:032x}"), NOW)
    store.store(Header("clinic-a", "good", "alert", 100), alert_payload(study_ref="f" * 32),
                NOW)
    for alert in sorted(store.alerts(), key=lambda a: (a["device"] != "bad", a["id"])):
        store.review_alert(alert["id"], "refer", "", "dr-li",
                           now=NOW + (1 if alert["device"] == "good" else 0))
    yield store
    store.close()


def test_one_pass_claims_at_most_a_few_rows_of_one_box(starving):
    claimed = claim(starving.database, now=NOW + 2, resend_seconds=RESEND)
    devices = [item.device for item in claimed]
    assert devices.count("bad") == PER_BOX and devices.count("good") == 1


def test_the_rows_tried_least_come_first(starving):
    first = claim(starving.database, now=NOW + 2, resend_seconds=RESEND, per_box=50)
    assert {item.device for item in first} == {"bad"}  # the 50 oldest, none tried yet
    later = NOW + 3 + resend_wait(1, RESEND)  # the bad box's 50 are due again, older
    second = claim(starving.database, now=later, resend_seconds=RESEND, limit=1, per_box=50)
    assert [(item.device, item.attempts) for item in second] == [("good", 1)]


def test_a_row_that_cannot_be_sealed_waits_the_resend_wait(starving):
    publisher = DownlinkPublisher(CentralConfig(), starving.database,
                                  Ed25519PrivateKey.generate())
    with starving.database.transaction(write=True) as tx:  # only the bad box's rows
        tx.execute("DELETE FROM downlinks WHERE device = 'good'")
    assert publisher.publish_due(NOW + 2) == 0  # all fail to seal before any publish
    rows = _rows(starving, "SELECT attempts, sent_at, last_error FROM downlinks")
    sealed_at_claim = [row for row in rows if row[0] == 1]
    assert len(sealed_at_claim) == PER_BOX
    assert all(row[1] == NOW + 2 and row[2].startswith("cannot seal") for row in sealed_at_claim)
    claimed_again = claim(starving.database, now=NOW + 4, resend_seconds=RESEND, per_box=50)
    assert {item.attempts for item in claimed_again} == {1}  # the held ones are not due
    wait = resend_wait(1, RESEND)
    later = claim(starving.database, now=NOW + 2 + wait + 1, resend_seconds=RESEND, per_box=50)
    assert any(item.attempts == 2 for item in later)


# -- F9: a late status does not take the box's state back ---------------------------------

def test_a_late_status_keeps_the_key_the_acknowledged_downlink_and_the_state(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/db/central.db")
    old, new = _key(), _key()
    store.store(Header("clinic-a", "box-1", "status", 9),
                status_payload("online", downlink_key=new, downlink_seq=7, queue_depth=2),
                NOW)
    store.store(Header("clinic-a", "box-1", "status", 5),
                status_payload("heartbeat", downlink_key=old, downlink_seq=3, queue_depth=40),
                NOW + 30)
    state = store.box_state("clinic-a", "box-1")
    assert (state["downlink_key"], state["downlink_seq"], state["state"]) == (new, 7, "online")
    assert (state["queue_depth"], state["state_at"], state["last_seen"]) == (2, NOW, NOW + 30)
    # the broker's last will was sealed when the box connected: older, but the box is gone
    store.store(Header("clinic-a", "box-1", "status", 8),
                status_payload("offline", downlink_key=old, downlink_seq=3), NOW + 60)
    state = store.box_state("clinic-a", "box-1")
    assert (state["state"], state["state_at"]) == ("offline", NOW + 60)
    assert (state["downlink_key"], state["downlink_seq"]) == (new, 7)


# -- F2, F3, F4, F9: the webhook against hostile targets ---------------------------------

class RawTarget:
    """A TCP listener that answers each connection with ``reply(connection)``."""

    def __init__(self, reply) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            with contextlib.suppress(OSError):  # the notifier hung up
                self.reply(connection)

    def close(self) -> None:
        """Stop listening."""
        self.sock.close()


def _notifier(tmp_path, url: str, *, timeout: float = 5.0) -> tuple[Store, Notifier]:
    store = Store(f"sqlite:///{tmp_path}/db/central.db", webhook=True)
    store.store(Header("clinic-a", "box-1", "alert", 1), alert_payload(), time.time())
    settings = NotifyConfig(url=url, secret_file="unused", timeout_seconds=timeout,
                            retry_min_seconds=0.05, retry_max_seconds=0.1)
    return store, Notifier(store.database, settings, SECRET, poll_seconds=0.05)


def _delivery(store: Store) -> tuple:
    [row] = _rows(store, "SELECT attempts, sent_at, last_error FROM webhook_deliveries")
    return row


def test_garbage_from_the_target_is_a_failed_attempt_and_the_thread_lives_on(tmp_path):
    target = RawTarget(lambda c: c.sendall(b"GARBAGE\r\n\x1b[31m\r\n\r\n"))
    store, notifier = _notifier(tmp_path, target.url)
    assert notifier.run_once() == 1
    attempts, sent_at, error = _delivery(store)
    assert (attempts, sent_at) == (1, None) and error.startswith("BadStatusLine")
    assert error.isprintable()
    stop = threading.Event()
    thread = threading.Thread(target=notifier.serve, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while _delivery(store)[0] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _delivery(store)[0] >= 3 and thread.is_alive()
    stop.set()
    thread.join(timeout=10)
    target.close()


def test_a_redirect_is_not_followed_and_is_a_failed_attempt(tmp_path):
    elsewhere = WebhookSink(lambda h: None)

    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", f"{elsewhere.base}/stolen")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    hook = WebhookSink(redirect)
    store, notifier = _notifier(tmp_path, hook.url)
    notifier.run_once()
    _attempts, sent_at, error = _delivery(store)
    assert (sent_at, error) == (None, "HTTP 302 (redirects are not followed)")
    assert [seen.method for seen in hook.requests] == ["POST"] and elsewhere.requests == []
    hook.close()
    elsewhere.close()


@pytest.mark.slow
def test_a_target_that_drips_is_cut_off_at_the_deadline(tmp_path):
    answer = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 30 + b"\r\nContent-Length: 0\r\n\r\n"

    def drip(connection: socket.socket) -> None:
        for byte in answer:  # a whole 200, a byte every 0.5 s: each read is in time
            connection.sendall(bytes([byte]))
            time.sleep(0.5)

    target = RawTarget(drip)
    store, notifier = _notifier(tmp_path, target.url, timeout=1.0)
    notifier.run_once()
    _attempts, sent_at, error = _delivery(store)
    assert (sent_at, error) == (None, "no whole answer within 1 s")
    target.close()


def test_the_signature_covers_the_timestamp_and_plain_http_is_warned_about(tmp_path, caplog):
    hook = WebhookSink()
    with caplog.at_level(logging.WARNING, logger="clinibox.central.notify"):
        store, notifier = _notifier(tmp_path, hook.url)
    assert "is plain http" in caplog.text
    assert notifier.run_once() == 1 and _delivery(store)[1] is not None
    [request] = hook.requests
    headers = request.headers
    [payload] = _rows(store, "SELECT payload FROM webhook_deliveries")[0]
    signed = headers["X-Clinibox-Timestamp"].encode() + b"." + payload.encode()
    assert headers["X-Clinibox-Signature"] == "sha256=" + hmac.new(
        SECRET, signed, hashlib.sha256).hexdigest()
    assert sign(payload.encode(), SECRET, "1") != sign(payload.encode(), SECRET, "2")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="clinibox.central.notify"):
        Notifier(store.database, NotifyConfig(url="https://hook.example/", secret_file="x"),
                 SECRET)
    assert "plain http" not in caplog.text
    hook.close()


def test_post_never_raises_for_an_unreachable_target(tmp_path):
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    _store, notifier = _notifier(tmp_path, f"http://127.0.0.1:{port}/hook")
    error = notifier.post(Delivery(1, "{}", 1))
    assert error is not None and "refused" in error.lower()


# -- F2: serve starts a dead worker again ------------------------------------------------

def test_the_supervisor_starts_a_dead_worker_again(caplog):
    stop = threading.Event()
    runs: list[int] = []
    running = threading.Event()

    def worker(event: threading.Event) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("a fault of ours")
        running.set()
        event.wait()

    supervisor = Supervisor(stop, first_wait=10.0, max_wait=40.0)
    supervisor.add("webhook", worker)
    with caplog.at_level(logging.ERROR, logger="clinibox.central"):
        supervisor.start(watch=False)
        supervisor.join(timeout=10)  # the first run died
        assert supervisor.check(now=time.monotonic()) == []  # waits first_wait
        assert supervisor.check(now=time.monotonic() + 11) == ["webhook"]
        assert running.wait(timeout=10)
    assert "the webhook thread died" in caplog.text and "RuntimeError" in caplog.text
    assert supervisor.restarts == {"webhook": 1} and len(runs) == 2
    stop.set()
    supervisor.join(timeout=10)


# -- F5: throttled logins coalesce ---------------------------------------------------------

def test_throttled_logins_write_one_row_per_address_a_minute(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/db/central.db")
    for step in range(5):
        audit(store.database, "", "10.0.0.9", "login_throttled", detail="wait 8 s",
              now=NOW + step)
    audit(store.database, "", "10.0.0.7", "login_throttled", now=NOW + 5)
    audit(store.database, "", "10.0.0.9", "login_throttled", now=NOW + 61)
    for step in range(2):
        audit(store.database, "", "10.0.0.9", "login_failed", now=NOW + step)
    rows = _rows(store, "SELECT address, action, at FROM console_audit ORDER BY at, address")
    assert rows == [("10.0.0.9", "login_throttled", NOW), ("10.0.0.9", "login_failed", NOW),
                    ("10.0.0.9", "login_failed", NOW + 1),
                    ("10.0.0.7", "login_throttled", NOW + 5),
                    ("10.0.0.9", "login_throttled", NOW + 61)]


# -- F6: times from the future are refused --------------------------------------------------

def test_a_message_dated_in_the_future_is_refused(store, hospital, box):
    receiver = Receiver(CentralConfig(), store, hospital[0])
    now = time.time()
    far = box.envelope("summary", summary_payload(period_end=2**40 - 1))
    assert receiver.handle(*far, received_at=now) == FROM_THE_FUTURE
    ahead = box.envelope("alert", alert_payload(created_at=int(now + 2 * 86400)))
    assert receiver.handle(*ahead, received_at=now) == FROM_THE_FUTURE
    fast_clock = box.envelope("alert", alert_payload(created_at=int(now + 3600)))
    assert receiver.handle(*fast_clock, received_at=now) == "stored"
    assert [r["reason"] for r in store.rejections()] == [FROM_THE_FUTURE] * 2
    assert len(store.dead_letters()) == 2  # kept, like every refusal
    assert FROM_THE_FUTURE in OUTCOMES and receiver.counts[FROM_THE_FUTURE] == 2
    assert _rows(store, "SELECT COUNT(*) FROM drift_points") == [(0,)]
